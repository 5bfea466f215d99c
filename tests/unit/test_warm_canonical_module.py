"""warm_canonical's main(): arguments, check mode, diff, failures as one sentence.

Only the engine is a stand-in (tests/support/fake_canonical_engine.py); the registry and
the snapshot are real files.
"""

from __future__ import annotations

import json
import os

import pytest
from support.fake_canonical_engine import FakeDriver, FakeEngine, corrupt_snapshot
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore
from ansible_collections.coopcloud.ci.plugins.modules import warm_canonical

RECIPE = "custom-html"


@pytest.fixture
def engine(tmp_path, monkeypatch) -> FakeEngine:
    eng = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(warm_canonical, "get_driver", lambda name: FakeDriver(eng))
    return eng


def run(args: dict, capsys, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    return run_main(warm_canonical, {"recipe": RECIPE, **args}, capsys, check=check, diff=diff)


def snapshot(state_dir, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.html").write_text("<h1>known good</h1>\n")
    SnapshotStore(str(state_dir), RECIPE).take(
        {"content": str(src)}, version="1.1.0+1.29", commit="a" * 40
    )


def test_info_without_canonical_is_ok(engine, state_dir, capsys):
    rc, out = run({"state_dir": str(state_dir)}, capsys)
    assert rc == 0 and out["changed"] is False
    assert out["exists"] is False and out["registry"] is None and out["domain"] is None


def test_seeded_check_then_real_then_idle_with_diff(engine, state_dir, tmp_path, capsys):
    snapshot(state_dir, tmp_path)
    args = {"state": "seeded", "state_dir": str(state_dir), "domain_suffix": "example.org",
            "run_id": "abc123"}  # fmt: skip
    rc, out = run(args, capsys, check=True, diff=True)
    assert rc == 0 and out["changed"] is True and out["exists"] is True
    assert out["diff"] == {
        "before": {},
        "after": {"status": "idle", "version": "1.1.0+1.29", "commit": "a" * 40,
                  "snapshot_digest": out["manifest_digest"], "promoted_by": "abc123",
                  "node": engine.node_id},
    }  # fmt: skip
    assert not (state_dir / RECIPE / "canonical.json").exists()
    rc, out = run(args, capsys)
    assert rc == 0 and out["changed"] is True and out["status"] == "idle"
    assert out["run_id"] == "abc123" and out["registry"]["promoted_by"] == "abc123"
    rc, out = run({"state": "idle", "state_dir": str(state_dir)}, capsys)
    assert rc == 0 and out["changed"] is False
    assert len(out["run_id"]) == 6  # a random one when none is given


def test_absent_without_confirm_is_refused_in_one_sentence(engine, state_dir, tmp_path, capsys):
    snapshot(state_dir, tmp_path)
    rc, out = run({"state": "absent", "state_dir": str(state_dir)}, capsys)
    assert rc == 1 and out["failed"] is True and out["changed"] is False
    assert out["msg"].startswith("refusing to remove the canonical of custom-html")
    assert "\n" not in out["msg"]
    assert (state_dir / RECIPE / "snapshot" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"state": "deployed"}, "has no canonical"),
        ({"state": "idle", "run_id": "XYZ"}, "run id 'XYZ' is invalid"),
        ({"state": "seeded"}, "domain_suffix is required"),
        ({"state": "seeded", "domain_suffix": "example.org"}, "no snapshot to seed"),
        ({"state": "info", "recipe": "Bad/Name"}, "recipe name 'Bad/Name' is invalid"),
        ({"state": "info", "state_dir": "relative/dir"}, "is relative"),
        ({"state": "seeded", "domain_suffix": "-bad-.org"}, "is invalid"),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(engine, state_dir, tmp_path, capsys,
                                                          args, words):  # fmt: skip
    rc, out = run({"state_dir": str(state_dir), **args}, capsys)
    assert rc == 1 and out["failed"] is True, out
    assert words in out["msg"] and "\n" not in out["msg"]
    assert "Traceback" not in json.dumps(out)
    assert os.listdir(state_dir) == [".ccci-state"]  # only the marker


def test_failure_midway_reports_what_was_done(engine, state_dir, tmp_path, capsys):
    snapshot(state_dir, tmp_path)
    base = {"state_dir": str(state_dir), "domain_suffix": "example.org", "run_id": "abc123"}
    assert run({"state": "seeded", **base}, capsys)[0] == 0
    mount = engine.api.volume_list["warm-custom-html_example_org_content"]["Mountpoint"]
    with open(os.path.join(mount, "index.html"), "w") as handle:
        handle.write("changed\n")
    archive = corrupt_snapshot(state_dir, RECIPE)
    rc, out = run({"state": "idle", **base}, capsys)
    assert rc == 1 and out["changed"] is True
    assert out["actions"] == ["status restoring"]
    assert str(archive) in out["msg"] and out["msg"].startswith("canonical of custom-html: ")
