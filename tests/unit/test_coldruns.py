"""Cold runs: the stack pattern, grouping by namespace label, alive/dead rules, removal."""

from __future__ import annotations

import datetime
import json
import os
import socket

import pytest
from support.fake_docker import FakeAPI, FakeClient
from support.fixtures import dead_pid

from ansible_collections.coopcloud.ci.plugins.module_utils import _coldruns as cr
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import process_start
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import RunRecord

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
HOST = socket.gethostname()


# --- the pattern -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        ("cust-a1b2c3_ci_test", ("cust", "a1b2c3", "ci.test")),
        ("note-0f0f0f_ci_example_org", ("note", "0f0f0f", "ci.example.org")),
        ("ab-deadbe_x", ("ab", "deadbe", "x")),
        ("a-000000_ci", ("a", "000000", "ci")),
        ("abc--a1b2c3_ci_test", ("abc-", "a1b2c3", "ci.test")),  # recipe "abc-..."
        ("k8s-123abc_a-b_c", ("k8s", "123abc", "a-b.c")),
    ],
)
def test_cold_stack_positives(stack, expected):
    assert cr.parse_cold_stack(stack) == expected
    assert cr.is_cold_stack(stack)


@pytest.mark.parametrize(
    "stack",
    [
        "warm-custom-html_x",
        "warm-custom-html_ci_test",
        "warm-a1b2c3_ci_test",  # canonical of a recipe named a1b2c3: fits the shape, never cold
        "cust-a1b2c3",  # no suffix
        "cust-a1b2c3_",
        "cust-a1b2c3_ci__test",
        "cust-a1b2c3_ci_test_",
        "custo-a1b2c3_ci_test",  # prefix of five
        "cust-a1b2c_ci_test",  # five hex
        "cust-a1b2c3d_ci_test",  # seven hex
        "cust-A1B2C3_ci_test",
        "cust-g1b2c3_ci_test",
        "Cust-a1b2c3_ci_test",
        "-ust-a1b2c3_ci_test",
        "cust_a1b2c3_ci_test",
        "cust-a1b2c3_-ci_test",
        "teb5abc_ccci_test",
        "ex_a",
        "",
        None,
        42,
    ],
)
def test_cold_stack_negatives(stack):
    assert cr.parse_cold_stack(stack) is None
    assert not cr.is_cold_stack(stack)


@pytest.mark.parametrize(
    "recipe", ["custom-html", "notes", "ab", "a", "abc-def", "k8s-thing", "a1b2c3"]
)
@pytest.mark.parametrize("suffix", ["ci.test", "ci.example.org", "x-y.z"])
def test_pattern_agrees_with_the_domains_the_lanes_use(recipe, suffix):
    stack = stack_name(cold_domain(recipe, "c0ffee", suffix))
    assert cr.parse_cold_stack(stack) == (recipe[:4], "c0ffee", suffix)
    assert cr.parse_cold_stack(stack_name(canonical_domain(recipe, suffix))) is None


def test_docker_times():
    assert cr.parse_docker_time("2026-03-01T11:00:00.123456789Z") == datetime.datetime(
        2026, 3, 1, 11, 0, 0, 123456, tzinfo=datetime.UTC
    )
    assert cr.parse_docker_time("2026-03-01T12:00:00+01:00") == datetime.datetime(
        2026, 3, 1, 11, 0, tzinfo=datetime.UTC
    )
    assert cr.parse_docker_time(1772362800) == datetime.datetime(
        2026, 3, 1, 11, 0, tzinfo=datetime.UTC
    )
    for bad in ("0001-01-01T00:00:00Z", "", "yesterday", None, True, 0):
        assert cr.parse_docker_time(bad) is None


# --- grouping by label only --------------------------------------------------------------


def _engine() -> FakeAPI:
    api = FakeAPI(NOW)
    # a warm canonical: never a cold run
    api.add_service("warm-custom-html_x_app", "warm-custom-html_x", hours=100)
    api.add_volume("warm-custom-html_x_content", "warm-custom-html_x", hours=100)
    # a real cold run, everything labelled
    stack = "cust-a1b2c3_ci_test"
    api.add_service(f"{stack}_app", stack, hours=10)
    api.add_volume(f"{stack}_content", stack, hours=10)
    api.add_secret(f"{stack}_pw_v1", stack, hours=10)
    api.add_config(f"{stack}_conf_v1", stack, hours=10)
    api.add_network(f"{stack}_default", stack, hours=10)
    api.add_container(f"{stack}_app.1.x", stack, state="running", hours=10)
    # named like a cold run, but unlabelled
    api.add_volume("cust-b0b0b0_ci_test_content", None, hours=100)
    # named like a cold run, labelled for another stack
    api.add_volume("cust-c0c0c0_ci_test_content", "other_stack", hours=100)
    # named like a cold run, labelled for a warm canonical
    api.add_volume("cust-d0d0d0_ci_test_content", "warm-custom-html_x", hours=100)
    # some other stack
    api.add_service("teb5abc_ccci_test_app", "teb5abc_ccci_test", hours=100)
    return api


def test_objects_are_grouped_by_their_namespace_label_only(tmp_path):
    api = _engine()
    runs = cr.find_cold_runs(FakeClient(api), str(tmp_path), now=NOW)
    assert [r.stack for r in runs] == ["cust-a1b2c3_ci_test"]
    run = runs[0]
    assert (run.run_id, run.recipe_prefix, run.domain) == ("a1b2c3", "cust", "cust-a1b2c3.ci.test")
    assert run.services == ["cust-a1b2c3_ci_test_app"]
    assert run.volumes == ["cust-a1b2c3_ci_test_content"]
    assert run.secrets == ["cust-a1b2c3_ci_test_pw_v1"]
    assert run.configs == ["cust-a1b2c3_ci_test_conf_v1"]
    assert run.networks == ["cust-a1b2c3_ci_test_default"]
    assert len(run.containers) == 1
    assert run.mountpoints == {
        "cust-a1b2c3_ci_test_content": "/var/lib/docker/volumes/cust-a1b2c3_ci_test_content/_data"
    }
    assert run.created_at == NOW - datetime.timedelta(hours=10)
    summary = run.summary()
    json.dumps(summary)
    assert summary["alive"] is False and summary["age_hours"] == 10.0


def test_a_volume_labelled_for_a_cold_stack_joins_it_whatever_its_name(tmp_path):
    api = FakeAPI(NOW)
    api.add_volume("some-odd-name", "cust-a1b2c3_ci_test", hours=9)
    runs = cr.find_cold_runs(FakeClient(api), str(tmp_path), now=NOW)
    assert [(r.stack, r.volumes) for r in runs] == [("cust-a1b2c3_ci_test", ["some-odd-name"])]


def test_run_ids_limit_the_answer(tmp_path):
    api = FakeAPI(NOW)
    api.add_volume("cust-a1b2c3_ci_v", "cust-a1b2c3_ci", hours=9)
    api.add_volume("cust-b1b2c3_ci_v", "cust-b1b2c3_ci", hours=9)
    runs = cr.find_cold_runs(FakeClient(api), str(tmp_path), now=NOW, run_ids={"b1b2c3"})
    assert [r.run_id for r in runs] == ["b1b2c3"]


# --- alive or dead -----------------------------------------------------------------------


def _record(state_dir, run_id, recipe="custom-html", *, pid, host=HOST, finished=False, hours=10):
    started = (NOW - datetime.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rec = RunRecord.start(
        str(state_dir), run_id, "cold", recipe, "1.0.0", started_at=started, pid=pid, host=host
    )
    if finished:
        rec.stage("install", "pass", started_at=started, finished_at=started)
        rec.finish(finished_at=started)
    return rec


def _write_lock(state_dir, recipe, run_id, pid, start):
    folder = state_dir / recipe
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lock").write_text(
        json.dumps(
            {
                "recipe": recipe,
                "run_id": run_id,
                "pid": pid,
                "start": start,
                "host": HOST,
                "since": "2026-03-01T00:00:00Z",
            }
        )
    )


def _one(api, state_dir, **kw):
    runs = cr.find_cold_runs(FakeClient(api), str(state_dir), now=NOW, **kw)
    assert len(runs) == 1
    return runs[0]


def _old_run(run_id="a1b2c3", hours=10):
    api = FakeAPI(NOW)
    api.add_volume(f"cust-{run_id}_ci_v", f"cust-{run_id}_ci", hours=hours)
    return api


def test_no_record_no_lock_old_objects_is_dead(tmp_path):
    run = _one(_old_run(), tmp_path)
    assert not run.alive
    assert run.record is None
    assert "no run record" in run.reason


def test_recent_objects_are_alive_within_grace(tmp_path):
    run = _one(_old_run(hours=1), tmp_path)
    assert run.alive and "grace" in run.reason
    assert not _one(_old_run(hours=1), tmp_path, grace_hours=0.5).alive


def test_running_record_with_live_pid_is_alive(tmp_path):
    _record(tmp_path, "a1b2c3", pid=os.getpid())
    run = _one(_old_run(), tmp_path)
    assert run.alive and "runs" in run.reason
    assert run.record["status"] == "running"


def test_running_record_with_dead_pid_is_dead(tmp_path):
    _record(tmp_path, "a1b2c3", pid=dead_pid())
    run = _one(_old_run(), tmp_path)
    assert not run.alive and "process is gone" in run.reason


def test_running_record_on_another_host_falls_back_to_grace(tmp_path):
    _record(tmp_path, "a1b2c3", pid=os.getpid(), host="elsewhere")
    assert not _one(_old_run(), tmp_path).alive
    # ... and its start counts as activity
    api = _old_run(hours=30)
    _record(tmp_path, "b1b2c3", pid=os.getpid(), host="elsewhere", hours=2)
    api.add_volume("cust-b1b2c3_ci_v", "cust-b1b2c3_ci", hours=30)
    run = _one(api, tmp_path, run_ids={"b1b2c3"})
    assert run.alive and run.age_hours == 2.0


def test_finished_record_is_dead_after_grace(tmp_path):
    _record(tmp_path, "a1b2c3", pid=os.getpid(), finished=True, hours=8)
    run = _one(_old_run(hours=9), tmp_path)
    assert not run.alive
    assert run.record["status"] == "finished"
    assert run.age_hours == 8.0
    assert "finished" in run.reason


def test_record_of_another_recipe_with_the_same_run_id_is_ignored(tmp_path):
    _record(tmp_path, "a1b2c3", recipe="notes", pid=os.getpid())  # "note", not "cust"
    run = _one(_old_run(), tmp_path)
    assert run.record is None and not run.alive


def test_held_lock_keeps_it_alive(tmp_path):
    _write_lock(tmp_path, "custom-html", "a1b2c3", os.getpid(), process_start(os.getpid()))
    run = _one(_old_run(), tmp_path)
    assert run.alive and "lock" in run.reason


def test_stale_lock_does_not(tmp_path):
    _write_lock(tmp_path, "custom-html", "a1b2c3", dead_pid(), 1)
    assert not _one(_old_run(), tmp_path).alive


def test_lock_of_another_run_does_not(tmp_path):
    _write_lock(tmp_path, "custom-html", "ffffff", os.getpid(), process_start(os.getpid()))
    assert not _one(_old_run(), tmp_path).alive


def test_unreadable_record_falls_back_to_the_other_rules(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a1b2c3.json").write_text("{trunc")
    run = _one(_old_run(), tmp_path)
    assert run.record is None and not run.alive


def test_missing_state_dir_is_fine(tmp_path):
    assert not _one(_old_run(), tmp_path / "nothing-here").alive


# --- removal -----------------------------------------------------------------------------


def test_remove_takes_exactly_that_runs_objects_services_first(tmp_path):
    api = _engine()
    other = "cust-ffffff_ci_test"
    api.add_volume(f"{other}_content", other, hours=10)
    run = cr.find_cold_runs(FakeClient(api), str(tmp_path), now=NOW, run_ids={"a1b2c3"})[0]
    removed = cr.remove_cold_run(FakeClient(api), run, timeout=5)
    assert removed["services"] == ["cust-a1b2c3_ci_test_app"]
    assert removed["volumes"] == ["cust-a1b2c3_ci_test_content"]
    assert removed["secrets"] == ["cust-a1b2c3_ci_test_pw_v1"]
    assert removed["configs"] == ["cust-a1b2c3_ci_test_conf_v1"]
    assert removed["networks"] == ["cust-a1b2c3_ci_test_default"]
    assert removed["kept"] == []
    kinds = [k for k, _ in api.calls]
    assert kinds.index("service") < kinds.index("volume")
    assert api.volume_names() == [
        "cust-b0b0b0_ci_test_content",
        "cust-c0c0c0_ci_test_content",
        "cust-d0d0d0_ci_test_content",
        f"{other}_content",
        "warm-custom-html_x_content",
    ]
    # a second removal finds nothing and is fine
    again = cr.remove_cold_run(FakeClient(api), run.stack, timeout=5)
    assert all(not v for v in again.values())


def test_remove_refuses_warm_and_foreign_stacks():
    api = _engine()
    for stack in ("warm-custom-html_x", "teb5abc_ccci_test", "warm-a1b2c3_ci_test"):
        with pytest.raises(cr.ColdRunError, match="not a cold run"):
            cr.remove_cold_run(FakeClient(api), stack, timeout=1)
    assert api.calls == []


def test_remove_never_takes_a_warm_named_volume_or_one_used_by_another_stack():
    api = FakeAPI(NOW)
    stack = "cust-a1b2c3_ci"
    api.add_volume("warm-custom-html_ci_content", stack, hours=10)
    api.add_volume(f"{stack}_shared", stack, hours=10)
    api.add_volume(f"{stack}_mine", stack, hours=10)
    api.add_container("someone", "other_stack", state="running", volumes=[f"{stack}_shared"])
    removed = cr.remove_cold_run(FakeClient(api), stack, timeout=1)
    assert removed["volumes"] == [f"{stack}_mine"]
    assert any("warm-custom-html_ci_content" in k for k in removed["kept"])
    assert any(f"{stack}_shared" in k for k in removed["kept"])
    assert "warm-custom-html_ci_content" in api.volume_names()


def test_remove_retries_a_volume_still_in_use_then_takes_it():
    api = FakeAPI(NOW)
    stack = "cust-a1b2c3_ci"
    api.add_volume(f"{stack}_v", stack)
    api.in_use[f"{stack}_v"] = "409 Client Error: volume is in use - [abc]"
    removed = cr.remove_cold_run(FakeClient(api), stack, timeout=5)
    assert removed["volumes"] == [f"{stack}_v"]


def test_remove_reports_an_engine_error_in_one_sentence():
    api = FakeAPI(NOW)
    stack = "cust-a1b2c3_ci"
    api.add_volume(f"{stack}_v", stack)
    api.in_use[f"{stack}_v"] = "500 Server Error: disk on fire"
    with pytest.raises(cr.ColdRunError, match=r"removing cold run cust-a1b2c3_ci failed: .*fire"):
        cr.remove_cold_run(FakeClient(api), stack, timeout=1)


def test_remove_takes_stopped_leftover_containers_and_refuses_running_ones(monkeypatch):
    monkeypatch.setattr(cr.time, "sleep", lambda _s: None)
    api = FakeAPI(NOW)
    stack = "cust-a1b2c3_ci"
    left = api.add_container("leftover", stack, state="exited")
    removed = cr.remove_cold_run(FakeClient(api), stack, timeout=0)
    assert removed["containers"] == [left[:12]]
    api.add_container("still-up", stack, state="running")
    with pytest.raises(cr.ColdRunError, match="still runs"):
        cr.remove_cold_run(FakeClient(api), stack, timeout=0)
