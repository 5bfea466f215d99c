"""What the processes of a run did, read from the events each play writes (issue 15).

A play started with ``CCCI_EVENT_LOG=<file>`` appends one JSON line per event
(plugins/module_utils/_faults.py ``event``): ``work-start`` and ``work-end`` when a module
of the play takes and drops the recipe's work lock (``_lock.working``), ``lock-wait`` each
time its lock look finds the lock held (``orphan``: the holder's play is gone but a task
of it still works), ``lock-taken`` when it holds the lock. Each play has its own file, so
a line names its run even when the process that wrote it outlived its play.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.warmbed import processes_with


def events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_event(path: Path, name: str, timeout: float = 300, **fields) -> dict:
    """The first ``name`` event (with ``fields``) of the play logging to ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in events(path):
            if found["event"] == name and all(found.get(k) == v for k, v in fields.items()):
                return found
        time.sleep(0.1)
    raise AssertionError(f"no {name} {fields} in {path} after {timeout:g} s: {events(path)}")


def work_spans(path: Path) -> list[tuple[int, float, float | None]]:
    """``(pid, start, end)`` of every hold of the work lock; ``end`` None while held."""
    spans, open_ = [], {}
    for found in events(path):
        if found["event"] == "work-start":
            open_[found["pid"]] = found["at"]
        elif found["event"] == "work-end" and found["pid"] in open_:
            spans.append((found["pid"], open_.pop(found["pid"]), found["at"]))
    spans += [(pid, start, None) for pid, start in open_.items()]
    return spans


def wait_gone(tag: str, timeout: float = 600, exclude: tuple[str, ...] = ()) -> float:
    """Wait until no process carries ``tag`` (see :func:`processes_with`); seconds waited."""
    began = time.monotonic()
    while processes_with(tag, exclude):
        if time.monotonic() - began > timeout:
            raise AssertionError(f"processes with {tag} still run: {processes_with(tag)}")
        time.sleep(0.2)
    return time.monotonic() - began


def never_overlapped(first: Path, second: Path) -> list[str]:
    """The second run never held the lock while a process of the first still worked.

    Every hold of the work lock by the first run's processes ended before the second run
    took the lock, and none was still held when the check ran.
    """
    taken = [e["at"] for e in events(second) if e["event"] == "lock-taken"]
    if not taken:
        return [f"the second run never took the lock: {events(second)}"]
    problems = []
    spans = work_spans(first)
    if not spans:
        problems.append("no work of the first run was recorded")
    for pid, _start, end in spans:
        if end is None:
            problems.append(f"pid {pid} of the first run still holds the work lock")
        elif end > taken[0]:
            problems.append(
                f"pid {pid} of the first run worked until {end:.3f}, after the second run "
                f"took the lock at {taken[0]:.3f}"
            )
    return problems
