"""The status gathering (_status) and module warm_status: real state files, no Docker."""

from __future__ import annotations

import json
import os
import time

import pytest
from support import modules
from support.fixtures import dead_pid
from support.status_state import catalog

from ansible_collections.coopcloud.ci.plugins.module_utils import _status
from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertStore
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import AppLock
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import RunRecord
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore
from ansible_collections.coopcloud.ci.plugins.modules import warm_status

COMMIT = "2a927ef4fd1d5b0c7a3e9f6d1c2b3a4f5e6d7c8b"


def seed(state_dir, recipe, tmp_path, data=b"hello"):
    """A real snapshot of a small tree and a registry that records it."""
    volume = tmp_path / f"vol-{recipe}"
    volume.mkdir()
    (volume / "index.html").write_bytes(data)
    store = SnapshotStore(str(state_dir), recipe)
    store.take({"content": str(volume)}, version="1.1.0+1.29", commit=COMMIT)
    return Registry(str(state_dir), recipe).seed(
        f"warm-{recipe}.ci.test", "1.1.0+1.29", COMMIT, "7a0f13", store.manifest_digest()
    )


# ------------------------------------------------------------------------------ order


def test_sweep_order_never_seeded_first_by_name_then_oldest_known_good(state_dir, tmp_path):
    seed(state_dir, "zeta", tmp_path)
    time.sleep(1.1)  # seeded_at has a resolution of one second
    seed(state_dir, "alpha", tmp_path)
    (state_dir / "broken").mkdir()
    (state_dir / "broken" / "canonical.json").write_text("{not json")
    order = _status.sweep_order(str(state_dir), ["alpha", "zeta", "notes", "broken", "beta"])
    assert [o["recipe"] for o in order] == ["beta", "broken", "notes", "zeta", "alpha"]
    assert order[0] == {"recipe": "beta", "seeded_at": None, "reason": "never seeded"}
    assert order[1]["reason"].startswith("unreadable: ")
    assert order[3]["seeded_at"] < order[4]["seeded_at"]


def test_sweep_order_ties_by_name_and_duplicates_once(state_dir, tmp_path):
    for name in ("b", "a"):
        seed(state_dir, name, tmp_path)
        data = json.loads((state_dir / name / "canonical.json").read_text())
        data["seeded_at"] = "2026-01-01T00:00:00Z"
        (state_dir / name / "canonical.json").write_text(json.dumps(data))
    assert [o["recipe"] for o in _status.sweep_order(str(state_dir), ["b", "a", "b"])] == [
        "a",
        "b",
    ]


# ------------------------------------------------------------------------------ rows


def test_canonical_row_reads_registry_snapshot_lock_and_runs(state_dir, tmp_path, sleeper):
    seed(state_dir, "custom-html", tmp_path, data=b"x" * 5000)
    AppLock(str(state_dir), "custom-html").acquire("0f0f0f", timeout=0, owner_pid=sleeper.pid)
    for run_id, mode in (("aaaaa1", "cold"), ("aaaaa2", "quick")):
        rec = RunRecord.start(str(state_dir), run_id, mode, "custom-html", "main")
        rec.stage("install", "pass")
        rec.finish()
        time.sleep(1.1)
    RunRecord.start(str(state_dir), "bbbbb1", "cold", "notes", "main")
    runs = _status.list_runs(str(state_dir))
    row = _status.canonical_row(str(state_dir), "custom-html", runs, enrolled=True, last_runs=1)
    assert row["canonical"] is True
    assert row["version"] == "1.1.0+1.29"
    assert row["commit_short"] == COMMIT[:12]
    assert row["status"] == "idle"
    assert row["promoted_by"] == "7a0f13"
    snap = row["snapshot"]
    assert snap["exists"] and snap["matches_registry"] is True
    assert snap["volumes"] == ["content"]
    archive = state_dir / "custom-html" / "snapshot" / "content.tar"
    assert snap["bytes"] == archive.stat().st_size
    assert row["lock"]["run_id"] == "0f0f0f" and row["lock"]["stale"] is False
    assert row["runs_total"] == 2
    assert [r["run_id"] for r in row["last_runs"]] == ["aaaaa2"]
    assert row["last_runs"][0]["mode"] == "quick" and row["last_runs"][0]["verdict"] == "PASS"
    assert row["errors"] == []


def test_canonical_row_reports_a_corrupt_registry_and_a_foreign_snapshot(state_dir, tmp_path):
    seed(state_dir, "notes", tmp_path)
    data = json.loads((state_dir / "notes" / "canonical.json").read_text())
    data["snapshot_digest"] = "0" * 64
    (state_dir / "notes" / "canonical.json").write_text(json.dumps(data))
    row = _status.canonical_row(str(state_dir), "notes")
    assert row["snapshot"]["matches_registry"] is False
    lines = _status.render_lines({**_status.gather(str(state_dir)), "recipes": [row]})
    assert any("(not the registry's!)" in line for line in lines)

    del data["commit"]
    (state_dir / "notes" / "canonical.json").write_text(json.dumps(data))
    row = _status.canonical_row(str(state_dir), "notes")
    assert row["canonical"] is False and row["version"] is None
    assert "lacks commit" in row["errors"][0]


def test_stale_lock_is_marked(state_dir):
    AppLock(str(state_dir), "notes").acquire("0f0f0f", timeout=0, owner_pid=os.getpid())
    path = state_dir / "notes" / "lock"
    record = json.loads(path.read_text())
    record["pid"] = dead_pid()
    path.write_text(json.dumps(record))
    lock = _status.lock_summary(str(state_dir), "notes")
    assert lock["stale"] is True and lock["run_id"] == "0f0f0f"


# ------------------------------------------------------------------------------ live runs


def test_live_run_ids_from_locks_and_running_records(state_dir, sleeper):
    AppLock(str(state_dir), "a").acquire("111111", timeout=0, owner_pid=sleeper.pid)
    AppLock(str(state_dir), "b").acquire("222222", timeout=0, owner_pid=sleeper.pid)
    lock_b = state_dir / "b" / "lock"
    record = json.loads(lock_b.read_text())
    record["pid"] = dead_pid()
    lock_b.write_text(json.dumps(record))  # stale: not live
    RunRecord.start(str(state_dir), "333333", "cold", "c", pid=sleeper.pid)  # running, alive
    RunRecord.start(str(state_dir), "444444", "cold", "c", pid=dead_pid())  # running, dead
    RunRecord.start(str(state_dir), "555555", "cold", "c", host="elsewhere", pid=1)  # other host
    done = RunRecord.start(str(state_dir), "666666", "cold", "c", pid=sleeper.pid)
    done.stage("install", "pass")
    done.finish()
    assert _status.live_run_ids(str(state_dir)) == ["111111", "333333", "555555"]


# ------------------------------------------------------------------------------ gather


def test_gather_whole_document(state_dir, tmp_path):
    seed(state_dir, "custom-html", tmp_path)
    cat = catalog(tmp_path, {"custom-html": True, "notes": True, "other": False})
    alerts = AlertStore(str(state_dir))
    alerts.write("rollback", "keycloak", attempted="2.0.0", last_good="1.0.0", recovered=True)
    alerts.write("disk-low", "sweep")
    (state_dir / "alerts" / "zz-corrupt.json").write_text("{")
    sweeps = state_dir / "sweeps"
    sweeps.mkdir()
    (sweeps / "sweep-20260101T000000Z.json").write_text(json.dumps({"result": "failed"}))
    (sweeps / "sweep-20260102T000000Z.json").write_text(
        json.dumps(
            {
                "result": "ok",
                "started_at": "2026-01-02T00:00:00Z",
                "recipes": [{"recipe": "notes", "run_id": "abcdef", "verdict": "PASS"}],
            }
        )
    )
    doc = _status.gather(str(state_dir), catalog_dir=str(cat), docker_root=str(tmp_path))
    assert [r["recipe"] for r in doc["recipes"]] == ["custom-html", "notes"]
    assert [r["enrolled"] for r in doc["recipes"]] == [True, True]
    assert doc["alerts"]["unseen"] == 3
    assert doc["alerts"]["corrupt"] == 1
    assert doc["alerts"]["kinds"] == {"corrupt": 1, "disk-low": 1, "rollback": 1}
    assert doc["alerts"]["latest"][0]["file"] == "zz-corrupt.json"
    assert doc["disk"]["docker_root"]["free"] > 0
    assert doc["disk"]["state_dir"]["total"] >= doc["disk"]["state_dir"]["free"]
    assert doc["last_sweep"]["result"] == "ok"
    assert doc["last_sweep"]["recipes"][0]["run_id"] == "abcdef"
    assert [o["recipe"] for o in doc["sweep_order"]] == ["notes", "custom-html"]
    assert doc["cold_runs"] is None
    json.dumps(doc)  # one JSON document
    text = "\n".join(_status.render_lines(doc))
    assert "custom-html  yes" in text
    assert "alerts: 3 unseen (corrupt 1, disk-low 1, rollback 1)" in text
    assert "last sweep: ok" in text


def test_gather_without_engine_reports_instead_of_failing(state_dir):
    doc = _status.gather(str(state_dir), cold_runs=True, client_error="no engine here")
    assert doc["disk"]["docker_root"]["error"] == "no engine here"
    assert doc["cold_runs"] is None
    assert "cold runs: no engine here" in doc["errors"]
    assert doc["recipes"] == [] and doc["sweep_order"] is None


def test_gather_refuses_a_bad_state_dir(tmp_path):
    with pytest.raises(_status.StatusError):
        _status.gather("relative/path")
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(_status.StatusError, match="not a directory"):
        _status.gather(str(afile))


def test_table_is_fixed_width():
    lines = _status.table(["a", "bbb"], [["xxxx", None], ["y", "z"]])
    assert lines == ["a     bbb", "----  ---", "xxxx  -", "y     z"]


# ------------------------------------------------------------------------------ module


def run_main(args, capsys):
    return modules.run_main(warm_status, args, capsys)[1]


def test_module_reads_only_and_works_in_check_mode(state_dir, tmp_path, capsys, monkeypatch):
    seed(state_dir, "custom-html", tmp_path)
    cat = catalog(tmp_path, {"custom-html": True})

    def no_engine():
        raise RuntimeError("no socket")

    monkeypatch.setattr(warm_status, "docker_client", no_engine)
    before = sorted((p, p.stat().st_mtime_ns) for p in state_dir.rglob("*"))
    for check in (False, True):
        out = run_main(
            {
                "state_dir": str(state_dir),
                "catalog_dir": str(cat),
                "_ansible_check_mode": check,
            },
            capsys,
        )
        assert out["changed"] is False
        assert out["status"]["recipes"][0]["version"] == "1.1.0+1.29"
        assert "the Docker engine does not answer: no socket" in out["status"]["errors"]
        assert out["lines"][0].startswith("coopcloud.ci status of ")
    assert sorted((p, p.stat().st_mtime_ns) for p in state_dir.rglob("*")) == before


def test_module_refuses_bad_run_ids(state_dir, capsys):
    out = run_main({"state_dir": str(state_dir), "run_ids": ["XYZ"]}, capsys)
    assert out["failed"] is True and out["msg"].startswith("run_ids: ")
