"""warm_lock's main(): results, check mode, diff, idempotence, failures."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.fixtures import dead_pid, lock_owner
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils import _lock
from ansible_collections.coopcloud.ci.plugins.modules import warm_lock

ME = os.getpid()


@pytest.fixture
def run(capsys, state_dir):
    def _run(check: bool = False, diff: bool = False, **args) -> dict:
        args.setdefault("recipe", "custom-html")
        args.setdefault("state_dir", str(state_dir))
        return run_main(warm_lock, args, capsys, check=check, diff=diff)[1]

    return _run


def lock_path(state_dir) -> Path:
    return Path(state_dir) / "custom-html" / "lock"


def plant(state_dir, **fields) -> dict:
    record = lock_owner(**fields)
    lock_path(state_dir).parent.mkdir(exist_ok=True)
    lock_path(state_dir).write_text(json.dumps(record))
    return record


def warnings(result: dict) -> list[str]:
    """Warning texts (ansible-core 2.19 modules return them as structured summaries)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


def test_acquire_then_again_is_ok(run, state_dir):
    first = run(run_id="a1b2c3", owner_pid=ME, play="quick.yml")
    assert first["changed"] is True
    assert first["holder"]["run_id"] == "a1b2c3"
    assert first["holder"]["pid"] == ME
    assert first["holder"]["play"] == "quick.yml"
    assert first["broken"] is None and first["stale"] is False
    assert first["lock_path"] == str(lock_path(state_dir))
    assert "uid" not in first  # no file attributes mixed into the result
    assert json.loads(lock_path(state_dir).read_text()) == first["holder"]
    second = run(run_id="a1b2c3", owner_pid=ME)
    assert second["changed"] is False
    assert second["holder"] == first["holder"]


def test_check_mode_predicts_and_touches_nothing(run, state_dir):
    predicted = run(check=True, diff=True, run_id="a1b2c3", owner_pid=ME)
    assert predicted["changed"] is True
    assert predicted["diff"] == {
        "before": {"holder": None},
        "after": {"holder": {"run_id": "a1b2c3"}},
    }
    assert not lock_path(state_dir).parent.exists()
    real = run(run_id="a1b2c3", owner_pid=ME)
    assert real["changed"] is True
    again = run(check=True, run_id="a1b2c3", owner_pid=ME)
    assert again["changed"] is False
    assert "diff" not in again


def test_check_mode_never_waits_for_a_held_lock(run, state_dir):
    holder = plant(state_dir)
    began = time.monotonic()
    predicted = run(check=True, run_id="a1b2c3", owner_pid=ME, timeout=600)
    assert time.monotonic() - began < 5
    assert predicted["changed"] is True
    assert predicted["holder"] == holder
    assert any("a real run would wait up to 600 s" in w for w in warnings(predicted))
    assert json.loads(lock_path(state_dir).read_text()) == holder


def test_a_held_lock_fails_naming_the_holder(run, state_dir):
    holder = plant(state_dir, run_id="0f0f0f")
    result = run(run_id="a1b2c3", owner_pid=ME, timeout=0.3, poll=0.1)
    assert result["failed"] is True
    assert result["msg"].startswith(
        f"custom-html is locked by run 0f0f0f (pid {ME} on host {_lock.host_name()}, "
        "since 2026-01-01T00:00:00Z); waited 0.3"
    )
    assert result["holder"] == holder
    assert result["waited"] >= 0.3


def test_a_stale_lock_is_broken_with_a_warning(run, state_dir):
    old = plant(state_dir, run_id="dead00", pid=dead_pid())
    result = run(run_id="a1b2c3", owner_pid=ME)
    assert result["changed"] is True
    assert result["broken"] == old
    assert any("broke the lock of custom-html held by run dead00" in w for w in warnings(result))
    assert json.loads(lock_path(state_dir).read_text())["run_id"] == "a1b2c3"


def test_check_mode_predicts_the_stale_break(run, state_dir):
    old = plant(state_dir, run_id="dead00", pid=dead_pid())
    result = run(check=True, run_id="a1b2c3", owner_pid=ME)
    assert result["changed"] is True
    assert result["broken"] == old
    assert result["stale"] is True
    assert json.loads(lock_path(state_dir).read_text()) == old


def test_release_own_then_again_is_ok(run, state_dir):
    run(run_id="a1b2c3", owner_pid=ME)
    predicted = run(check=True, state="released", run_id="a1b2c3")
    assert predicted["changed"] is True and predicted["released"] is True
    assert lock_path(state_dir).exists()
    released = run(diff=True, state="released", run_id="a1b2c3")
    assert released["changed"] is True
    assert released["holder"]["run_id"] == "a1b2c3"
    assert released["diff"]["after"] == {"holder": None}
    assert not lock_path(state_dir).exists()
    again = run(state="released", run_id="a1b2c3")
    assert again["changed"] is False and again["released"] is False


def test_release_of_another_runs_lock_is_refused_unless_forced(run, state_dir):
    holder = plant(state_dir, run_id="0f0f0f", host="elsewhere.example")
    refused = run(state="released", run_id="a1b2c3")
    assert refused["failed"] is True
    assert "refusing to release the lock of custom-html: it is held by run 0f0f0f" in refused["msg"]
    refused_check = run(check=True, state="released", run_id="a1b2c3")
    assert refused_check["failed"] is True
    assert json.loads(lock_path(state_dir).read_text()) == holder
    forced = run(state="released", run_id="a1b2c3", force=True)
    assert forced["changed"] is True
    assert not lock_path(state_dir).exists()


def test_another_hosts_lock_says_how_to_get_out(run, state_dir):
    plant(state_dir, run_id="0f0f0f", host="elsewhere.example")
    result = run(run_id="a1b2c3", owner_pid=ME, timeout=0)
    assert result["failed"] is True
    assert "never broken automatically" in result["msg"]
    assert "force" in result["msg"]
    forced = run(run_id="a1b2c3", owner_pid=ME, force=True)
    assert forced["changed"] is True
    assert forced["broken"]["host"] == "elsewhere.example"


def test_info_reports_and_changes_nothing(run, state_dir):
    assert run(state="info")["holder"] is None
    holder = plant(state_dir)
    info = run(state="info")
    assert info["changed"] is False
    assert info["holder"] == holder
    assert info["stale"] is False
    plant(state_dir, pid=dead_pid())
    assert run(state="info")["stale"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"run_id": "a1b2c3", "recipe": "Bad/Name"}, "recipe name 'Bad/Name' is invalid"),
        ({"run_id": "a1b2c"}, "run id 'a1b2c' is invalid"),
        ({}, "state is acquired but all of the following are missing: run_id"),
        ({"run_id": "a1b2c3", "state_dir": "relative/state"}, "is relative"),
        ({"run_id": "a1b2c3", "timeout": -1}, "timeout must be >= 0"),
        ({"run_id": "a1b2c3"}, "no ansible-playbook process was found"),
    ],
)
def test_bad_arguments_fail_with_one_sentence_and_create_nothing(run, state_dir, args, message):
    result = run(**args)
    assert result["failed"] is True
    assert message in result["msg"]
    assert os.listdir(state_dir) == [".ccci-state"]  # only the marker


def test_check_mode_fails_where_a_real_run_would(run, state_dir):
    result = run(check=True, run_id="a1b2c3")  # no ansible-playbook parent, no owner_pid
    assert result["failed"] is True
    assert "no ansible-playbook process was found" in result["msg"]
    gone = run(check=True, run_id="a1b2c3", owner_pid=dead_pid())
    assert "does not run" in gone["msg"]
    assert os.listdir(state_dir) == [".ccci-state"]  # only the marker
