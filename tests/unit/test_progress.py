"""_progress: the lines a long step appends for the ci_log callback, and reading them back."""

from __future__ import annotations

import json

from ansible_collections.coopcloud.ci.plugins.module_utils._progress import (
    ENV,
    Progress,
    human,
    line,
    read_lines,
)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_step_writes_a_line_per_interval_with_done_total_and_rate(tmp_path):
    path, clock = tmp_path / "progress.jsonl", Clock()
    progress = Progress("snapshot of app_data", total=8 << 20, path=str(path), clock=clock)
    for _ in range(8):  # 1 MiB per second; a line every 4 s
        clock.now += 1
        progress.add(1 << 20)
    clock.now += 0.5
    progress.finish()
    entries = [json.loads(raw) for raw in path.read_text().splitlines()]
    assert [e["done"] for e in entries] == [4 << 20, 8 << 20, 8 << 20]
    assert entries[0]["line"] == "snapshot of app_data: 4.0 MiB of 8.0 MiB (50 %), 1.0 MiB/s"
    assert entries[-1]["elapsed"] == 8.5 and entries[-1]["total"] == 8 << 20
    texts, offset = read_lines(str(path), 0)
    assert texts == [e["line"] for e in entries] and offset == path.stat().st_size
    assert read_lines(str(path), offset) == ([], offset)


def test_a_short_step_and_a_step_without_the_file_stay_quiet(tmp_path, monkeypatch):
    path, clock = tmp_path / "progress.jsonl", Clock()
    short = Progress("verify", total=10, path=str(path), clock=clock)
    clock.now += 1
    short.add(10)
    short.finish()
    assert not path.exists() and short.lines == 0
    monkeypatch.delenv(ENV, raising=False)
    assert not Progress("extract").enabled
    monkeypatch.setenv(ENV, str(path))
    assert Progress("extract").path == str(path)
    # a file that cannot be written never fails the step
    broken = Progress(
        "extract", path=str(tmp_path / "missing" / "p.jsonl"), interval=0, clock=clock
    )
    broken.add(5)
    assert not broken.enabled and broken.lines == 0


def test_a_wait_reads_in_seconds_with_its_last_observation():
    assert line("waiting for stack s to converge", 12.4, 300, "s", None, "1/2 tasks running") == (
        "waiting for stack s to converge: 12s of 300s (4 %) - 1/2 tasks running"
    )
    assert [human(n, "B") for n in (512, 1536, 3 << 30)] == ["512 B", "1.5 KiB", "3.0 GiB"]
    assert human(3, "files") == "3 files" and human(2.5, "") == "2.5"


def test_reading_skips_half_written_and_foreign_lines(tmp_path):
    path = tmp_path / "progress.jsonl"
    path.write_text('not json\n{"line": "extract: 1 B"}\n["x"]\n{"line": "half')
    texts, offset = read_lines(str(path), 0)
    assert texts == ["extract: 1 B"]
    assert offset == len('not json\n{"line": "extract: 1 B"}\n["x"]\n')
    assert read_lines(str(tmp_path / "gone"), 7) == ([], 7)
