"""Run records: lifecycle, verdict rules, JUnit, summary, atomic writes, secret scrubbing."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _runs, _state
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import (
    RunError,
    RunRecord,
    junit_xml,
    list_runs,
    load,
    scrub,
    scrub_text,
    summary_lines,
    verdict_line,
    verdict_of,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import StateError

T0 = "2026-11-26T10:00:00Z"


def on_disk(state_dir, run_id: str) -> dict:
    return json.loads((state_dir / "runs" / f"{run_id}.json").read_text())


def started(state_dir, run_id="a1b2c3", mode="cold", **kw) -> RunRecord:
    kw.setdefault("started_at", T0)
    return RunRecord.start(state_dir, run_id, mode, "custom-html", "1.1.0+1.29", **kw)


# --- lifecycle ----------------------------------------------------------------------------


def test_start_writes_a_running_record(state_dir):
    rec = started(
        state_dir,
        version="1.1.0+1.29",
        commit="0123456789abcdef0123456789abcdef01234567",
        domain="cust-a1b2c3.ci.example",
        canonical_before={"version": "1.0.0+1.28", "status": "idle"},
        notes=["falling back to COLD"],
        host="ci-1",
        pid=4242,
    )
    data = on_disk(state_dir, "a1b2c3")
    assert data == rec.to_dict()
    assert data["status"] == "running"
    assert data["verdict"] is None and data["finished_at"] is None
    assert data["mode"] == "cold" and data["confidence"] == "authoritative"
    assert data["gates_merge"] is True
    assert data["label"] == "cold run: authoritative"
    assert data["started_at"] == T0
    assert data["recipe"] == "custom-html" and data["ref"] == "1.1.0+1.29"
    assert data["version"] == "1.1.0+1.29"
    assert data["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert data["domain"] == "cust-a1b2c3.ci.example"
    assert data["host"] == "ci-1" and data["pid"] == 4242
    assert data["canonical_before"] == {"version": "1.0.0+1.28", "status": "idle"}
    assert data["canonical_after"] is None
    assert data["notes"] == ["falling back to COLD"]
    assert data["stages"] == {} and data["stage_details"] == {}


def test_every_stage_and_the_finish_are_written(state_dir):
    rec = started(state_dir)
    rec.stage("install", "pass", finished_at="2026-11-26T10:00:40Z")
    assert on_disk(state_dir, "a1b2c3")["stages"] == {"install": "pass"}
    rec.stage("upgrade", "fail", "version did not move", finished_at="2026-11-26T10:01:10Z")
    rec.stage("overlay", "skip", "no overlays", finished_at="2026-11-26T10:01:10Z")
    data = on_disk(state_dir, "a1b2c3")
    assert data["stage_order"] == ["install", "upgrade", "overlay"]
    assert data["stage_details"]["install"] == {
        "result": "pass",
        "started_at": T0,  # the run's start: the first stage
        "finished_at": "2026-11-26T10:00:40Z",
        "seconds": 40,
        "message": None,
    }
    assert data["stage_details"]["upgrade"]["started_at"] == "2026-11-26T10:00:40Z"
    assert data["stage_details"]["upgrade"]["seconds"] == 30
    assert data["stage_details"]["upgrade"]["message"] == "version did not move"
    assert data["timings"]["stages_seconds"] == 70
    assert data["status"] == "running"

    verdict = rec.finish(
        canonical_after={"version": "1.0.0+1.28"},
        docker_seconds=51.5,
        finished_at="2026-11-26T10:01:30Z",
    )
    assert verdict == "FAIL"
    data = on_disk(state_dir, "a1b2c3")
    assert data["status"] == "finished" and data["verdict"] == "FAIL"
    assert data["finished_at"] == "2026-11-26T10:01:30Z"
    # never marked: the verdict and the rest are both the finish
    assert data["timings"] == {
        "total_seconds": 90,
        "stages_seconds": 70,
        "docker_seconds": 51.5,
        "verdict_at": "2026-11-26T10:01:30Z",
        "verdict_seconds": 90,
        "verdict_reported": "FAIL",
        "rest_at": "2026-11-26T10:01:30Z",
        "rest_seconds": 90,
    }
    assert data["canonical_after"] == {"version": "1.0.0+1.28"}
    assert load(state_dir, "a1b2c3").to_dict() == data


def test_the_verdict_and_the_rest_are_marked_once_and_kept_by_the_finish(state_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    rec = started(state_dir, mode="quick", version="1.1.0+1.29", commit=commit)
    rec.stage("upgrade", "pass", finished_at="2026-11-26T10:00:40Z")
    assert verdict_line(rec) is None  # running, and no verdict given
    assert rec.mark("verdict", "2026-11-26T10:00:42Z", error="the serving stage broke off")
    timings = on_disk(state_dir, "a1b2c3")["timings"]
    assert timings["verdict_at"] == "2026-11-26T10:00:42Z" and timings["verdict_seconds"] == 42
    assert timings["verdict_reported"] == "ERROR"  # the error given counts
    line = verdict_line(rec, timings["verdict_reported"])
    assert line.startswith("QUICK VERDICT: ERROR - custom-html at 1.1.0+1.29 (0123456789ab)")
    assert line.endswith("stages upgrade pass (lower confidence, never gates merge)")
    assert not rec.mark("verdict", "2026-11-26T10:00:50Z")  # the first moment stays
    assert rec.mark("rest", "2026-11-26T10:01:05Z")
    with pytest.raises(RunError, match="mark 'later' is invalid: use verdict or rest"):
        rec.mark("later")
    rec.finish(finished_at="2026-11-26T10:01:10Z")
    timings = on_disk(state_dir, "a1b2c3")["timings"]
    assert (timings["verdict_seconds"], timings["rest_seconds"], timings["total_seconds"]) == (
        42,
        65,
        70,
    )
    assert rec.verdict == "PASS" and timings["verdict_reported"] == "ERROR"
    assert "; verdict after 42s, at rest after 65s" in summary_lines(rec)[-1]
    with pytest.raises(RunError, match="already finished"):
        rec.mark("rest")


def test_explicit_stage_times_and_offsets(state_dir):
    rec = started(state_dir)
    rec.stage(
        "serving", "pass", started_at="2026-11-26T11:00:00+01:00", finished_at="2026-11-26T10:00:05"
    )
    detail = rec.data["stage_details"]["serving"]
    assert detail["started_at"] == T0
    assert detail["finished_at"] == "2026-11-26T10:00:05Z"
    assert detail["seconds"] == 5
    with pytest.raises(RunError, match=r"started_at .* is after its finished_at"):
        rec.stage("custom", "pass", started_at="2026-11-26T10:10:00Z", finished_at=T0)
    with pytest.raises(RunError, match="not an ISO-8601 time"):
        rec.stage("custom", "pass", finished_at="yesterday")


def test_recording_a_stage_again_replaces_it_in_place(state_dir):
    rec = started(state_dir)
    rec.stage("install", "fail", "first try")
    rec.stage("serving", "pass")
    rec.stage("install", "pass")
    assert rec.data["stage_order"] == ["install", "serving"]
    assert rec.data["stages"] == {"install": "pass", "serving": "pass"}
    assert rec.data["stage_details"]["install"]["message"] is None


def test_bad_stage_input_is_refused(state_dir):
    rec = started(state_dir)
    with pytest.raises(RunError, match="result 'ok' is invalid"):
        rec.stage("install", "ok")
    with pytest.raises(RunError, match=r"stage name '\.\./x' is invalid"):
        rec.stage("../x", "pass")
    assert on_disk(state_dir, "a1b2c3")["stages"] == {}


def test_a_finished_record_is_closed(state_dir):
    rec = started(state_dir)
    rec.stage("install", "pass")
    assert rec.finish() == "PASS"
    before = on_disk(state_dir, "a1b2c3")
    with pytest.raises(RunError, match="already finished with verdict PASS"):
        rec.stage("serving", "pass")
    with pytest.raises(RunError, match="already finished"):
        rec.finish()
    with pytest.raises(RunError, match="already finished"):
        load(state_dir, "a1b2c3").update(version="2.0.0")
    assert on_disk(state_dir, "a1b2c3") == before


def test_start_refuses_an_existing_record_and_bad_input(state_dir):
    started(state_dir)
    with pytest.raises(RunError, match="already exists"):
        started(state_dir)
    with pytest.raises(RunError, match="mode 'warm' is invalid"):
        started(state_dir, run_id="b1b2b3", mode="warm")
    with pytest.raises(RunError, match=r"run id '\.\./\.\./etc' is invalid"):
        RunRecord.start(state_dir, "../../etc", "cold", "custom-html")
    with pytest.raises(RunError, match="recipe is required"):
        RunRecord.start(state_dir, "c1c2c3", "cold", "")
    with pytest.raises(RunError, match="printable"):
        RunRecord.start(state_dir, "c1c2c3", "cold", "x\ny")
    assert sorted(os.listdir(state_dir / "runs")) == ["a1b2c3.json"]


def test_a_bad_recipe_name_is_recorded_for_an_error_verdict(state_dir):
    """The run could not run (bad input): the record still says what was asked."""
    rec = RunRecord.start(state_dir, "d1d2d3", "cold", "Not A Recipe!", "main")
    assert rec.finish(error="recipe name 'Not A Recipe!' is invalid") == "ERROR"
    data = on_disk(state_dir, "d1d2d3")
    assert data["recipe"] == "Not A Recipe!"
    assert data["verdict"] == "ERROR" and "is invalid" in data["error"]


def test_update_fills_in_later_knowledge(state_dir):
    rec = started(state_dir)
    rec.update(version="1.1.0+1.29", commit="abcdef1")
    rec.note("falling back to COLD")
    rec.note("falling back to COLD")
    data = on_disk(state_dir, "a1b2c3")
    assert data["version"] == "1.1.0+1.29" and data["commit"] == "abcdef1"
    assert data["notes"] == ["falling back to COLD"]


def test_load_errors(state_dir):
    with pytest.raises(StateError, match="does not exist"):
        load(state_dir, "ffffff")
    (state_dir / "runs").mkdir()
    (state_dir / "runs" / "eeeeee.json").write_text('{"run_id": "other"}')
    with pytest.raises(StateError, match="not a run record of run eeeeee"):
        load(state_dir, "eeeeee")


def test_autosave_off_writes_nothing(state_dir):
    rec = RunRecord.start(state_dir, "a1b2c3", "quick", "notes", autosave=False)
    rec.stage("install", "pass")
    rec.finish()
    assert not (state_dir / "runs").exists()


# --- verdicts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stages", "error", "verdict"),
    [
        ({"install": "pass", "serving": "pass"}, None, "PASS"),
        ({"install": "pass", "overlay": "skip", "custom": "pass"}, None, "PASS"),
        ({"install": "pass", "upgrade": "fail", "custom": "pass"}, None, "FAIL"),
        ({"install": "fail"}, "teardown failed too", "FAIL"),
        ({}, None, "ERROR"),
        ({"install": "skip", "serving": "skip"}, None, "ERROR"),
        ({}, "no checkout of notes at ref main", "ERROR"),
        ({"install": "pass"}, "the play was interrupted", "ERROR"),
    ],
)
def test_verdict_rules(stages, error, verdict):
    assert verdict_of(stages, error) == verdict


def test_finish_without_any_stage_is_error(state_dir):
    rec = started(state_dir)
    assert rec.finish() == "ERROR"
    assert on_disk(state_dir, "a1b2c3")["error"] is None


# --- quick labelling ----------------------------------------------------------------------


def test_quick_records_say_lower_confidence_everywhere(state_dir):
    rec = started(state_dir, mode="quick")
    rec.stage("upgrade", "pass")
    rec.finish()
    data = on_disk(state_dir, "a1b2c3")
    assert data["mode"] == "quick"
    assert data["confidence"] == "lower"
    assert data["gates_merge"] is False
    assert "lower confidence" in data["label"]
    lines = summary_lines(data)
    assert "lower confidence, never gates merge" in "\n".join(lines)
    root = ET.fromstring(junit_xml(data))
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["confidence"] == "lower"
    assert "lower confidence" in props["label"]
    assert root.find("testsuite").get("name") == "custom-html [quick]"


def test_confidence_cannot_be_passed():
    with pytest.raises(TypeError):
        RunRecord.start("/tmp", "a1b2c3", "quick", "notes", confidence="authoritative")


# --- JUnit --------------------------------------------------------------------------------


def test_junit_counts_failures_and_skips(state_dir):
    rec = started(state_dir)
    rec.stage("install", "pass", finished_at="2026-11-26T10:00:30Z")
    rec.stage(
        "upgrade",
        "fail",
        "content lost: /var/www/marker missing",
        finished_at="2026-11-26T10:01:00Z",
    )
    rec.stage("serving", "pass", finished_at="2026-11-26T10:01:05Z")
    rec.stage("overlay", "skip", "no overlays listed", finished_at="2026-11-26T10:01:05Z")
    rec.stage("custom", "fail", finished_at="2026-11-26T10:01:20Z")
    rec.finish(finished_at="2026-11-26T10:01:40Z")

    root = ET.fromstring(junit_xml(rec))
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite.get("name") == "custom-html [cold]"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "2", "1")
    assert suite.get("errors") == "0"
    assert suite.get("time") == "100"
    assert suite.get("timestamp") == T0
    assert root.get("tests") == "5" and root.get("failures") == "2"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [
        "install [cold]",
        "upgrade [cold]",
        "serving [cold]",
        "overlay [cold]",
        "custom [cold]",
    ]
    assert {c.get("classname") for c in cases} == {"ccci.custom-html.cold"}
    assert [c.get("time") for c in cases] == ["30", "30", "5", "0", "15"]
    upgrade = cases[1].find("failure")
    assert upgrade.get("message") == "content lost: /var/www/marker missing"
    assert upgrade.text == "content lost: /var/www/marker missing"
    assert cases[4].find("failure").get("message") == "stage custom failed"
    assert cases[3].find("skipped").get("message") == "no overlays listed"
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["verdict"] == "FAIL" and props["mode"] == "cold"
    assert props["confidence"] == "authoritative"


def test_junit_of_an_error_run_has_an_error_case(state_dir):
    rec = started(state_dir)
    rec.finish(error="no checkout of custom-html at ref nope")
    suite = ET.fromstring(junit_xml(rec)).find("testsuite")
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    error = suite.find("testcase/error")
    assert error.get("message") == "no checkout of custom-html at ref nope"


def test_junit_escapes_markup_in_messages(state_dir):
    rec = started(state_dir)
    rec.stage("install", "fail", 'body was <h1>"x" & y</h1>')
    rec.finish()
    failure = ET.fromstring(junit_xml(rec)).find("testsuite/testcase/failure")
    assert failure.text == 'body was <h1>"x" & y</h1>'


# --- summary ------------------------------------------------------------------------------


def test_summary_lines(state_dir):
    rec = started(state_dir, version="1.1.0+1.29", commit="0123456789abcdef")
    rec.stage("install", "pass", finished_at="2026-11-26T10:00:12Z")
    rec.stage("upgrade", "fail", "version did not move\nmore", finished_at="2026-11-26T10:00:42Z")
    running = summary_lines(rec)
    assert running[-1] == "verdict: (running)"
    rec.note("falling back to COLD")
    rec.finish(docker_seconds=20, finished_at="2026-11-26T10:01:00Z")
    lines = summary_lines(rec)
    assert lines[0] == "run a1b2c3: custom-html @ 1.1.0+1.29 commit 0123456789ab"
    assert lines[1] == "mode: cold (confidence: authoritative)"
    assert lines[2] == "  install  pass    12s"
    assert lines[3] == "  upgrade  fail    30s  version did not move"
    assert lines[4] == "verdict: FAIL"
    assert lines[5] == "time: 60s total, 20.0s docker"
    assert lines[6] == "note: falling back to COLD"


# --- listing ------------------------------------------------------------------------------


def test_list_runs_newest_first_and_by_recipe(state_dir):
    assert list_runs(state_dir) == []
    RunRecord.start(state_dir, "aaaaa1", "cold", "notes", started_at="2026-11-26T09:00:00Z")
    RunRecord.start(state_dir, "aaaaa2", "quick", "custom-html", started_at="2026-11-26T11:00:00Z")
    RunRecord.start(state_dir, "aaaaa3", "cold", "notes", started_at="2026-11-26T10:00:00Z")
    (state_dir / "runs" / ".aaaaa4.json.123.tmp").write_text("{")
    (state_dir / "runs" / "README").write_text("x")
    assert [r["run_id"] for r in list_runs(state_dir)] == ["aaaaa2", "aaaaa3", "aaaaa1"]
    assert [r["run_id"] for r in list_runs(state_dir, recipe="notes")] == ["aaaaa3", "aaaaa1"]


def test_list_runs_reports_corrupt_records(state_dir):
    RunRecord.start(state_dir, "aaaaa1", "cold", "notes")
    (state_dir / "runs" / "bbbbbb.json").write_text('{"run_id": "bbb')
    with pytest.raises(StateError, match=r"bbbbbb\.json is not valid JSON"):
        list_runs(state_dir)
    errors: list[str] = []
    assert [r["run_id"] for r in list_runs(state_dir, errors=errors)] == ["aaaaa1"]
    assert len(errors) == 1 and "bbbbbb.json" in errors[0]


# --- atomic writes ------------------------------------------------------------------------


def test_writes_are_atomic_and_leave_no_temp_files(state_dir, monkeypatch):
    rec = started(state_dir)
    rec.stage("install", "pass")
    good = (state_dir / "runs" / "a1b2c3.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_state.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        rec.stage("serving", "fail")
    monkeypatch.undo()
    # The old record is intact, and no temporary sibling is left behind.
    assert (state_dir / "runs" / "a1b2c3.json").read_bytes() == good
    assert os.listdir(state_dir / "runs") == ["a1b2c3.json"]


def test_records_go_through_state_write_json(state_dir, monkeypatch):
    calls = []
    real = _runs.write_json
    monkeypatch.setattr(
        _runs, "write_json", lambda path, obj: (calls.append(path), real(path, obj))
    )
    rec = started(state_dir)
    rec.stage("install", "pass")
    rec.finish()
    path = str(state_dir / "runs" / "a1b2c3.json")
    assert calls == [path, path, path]  # start, stage, finish


# --- secrets ------------------------------------------------------------------------------


def test_scrub_drops_secret_looking_keys_deeply():
    value = {
        "version": "1.0.0+1.28",
        "admin_password": "hunter2",
        "DB_PASSWORD": "x",
        "client_secret": "y",
        "Token": "z",
        "api-key": "k",
        "private_key": "p",
        "pwd": "w",
        "snapshot": {"digest": "sha256:ab", "oidc": {"refresh_token": "r", "issuer": "i"}},
        "items": [{"secret": "s", "name": "n"}],
    }
    clean, dropped = scrub(value)
    assert clean == {
        "version": "1.0.0+1.28",
        "snapshot": {"digest": "sha256:ab", "oidc": {"issuer": "i"}},
        "items": [{"name": "n"}],
    }
    assert sorted(dropped) == sorted(
        [
            "admin_password",
            "DB_PASSWORD",
            "client_secret",
            "Token",
            "api-key",
            "private_key",
            "pwd",
            "snapshot.oidc.refresh_token",
            "items[0].secret",
        ]
    )
    assert value["admin_password"] == "hunter2"  # the input is not mutated


def test_scrub_refuses_non_json_values():
    with pytest.raises(RunError, match="x is a set"):
        scrub({"x": {1}})


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("login failed: password=hunter2 for admin", "hunter2"),
        ('got {"client_secret": "s3cr3t-value"}', "s3cr3t-value"),
        ("KEYCLOAK_ADMIN_PASSWORD: 'pa ss'", "pa ss"),
        ("GET https://admin:hunter2@kc.example/realms", "hunter2"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc", "eyJhbGciOiJIUzI1NiJ9"),
        ("access_token=abc.def.ghi&x=1", "abc.def.ghi"),
    ],
)
def test_scrub_text_masks_secrets(text, leak):
    masked = scrub_text(text)
    assert leak not in masked
    assert "***" in masked


def test_scrub_text_keeps_ordinary_text():
    text = "health gate timed out after 120s: GET http://127.0.0.1:3000/ answered 503"
    assert scrub_text(text) == text


def test_records_never_hold_secrets(state_dir):
    rec = started(
        state_dir,
        canonical_before={"version": "1", "keycloak": {"admin_password": "hunter2"}},
        notes=["retried with token=abcdef123456"],
    )
    rec.stage("install", "fail", "deploy failed: DB_PASSWORD=hunter2 rejected")
    rec.finish(
        canonical_after={"client_secret": "hunter2", "version": "1"}, error="x password: hunter2"
    )
    raw = (state_dir / "runs" / "a1b2c3.json").read_text()
    assert "hunter2" not in raw and "abcdef123456" not in raw
    data = json.loads(raw)
    assert data["canonical_before"] == {"version": "1", "keycloak": {}}
    assert data["canonical_after"] == {"version": "1"}
    assert data["scrubbed"] == [
        "canonical_before.keycloak.admin_password",
        "canonical_after.client_secret",
    ]
    assert "hunter2" not in junit_xml(data)
    assert "hunter2" not in "\n".join(summary_lines(data))


def test_canonical_must_be_an_object(state_dir):
    with pytest.raises(RunError, match="canonical_before must be an object"):
        started(state_dir, canonical_before="idle")


def test_verdict_line_names_mode_verdict_version_commit_domain_and_stages(state_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    rec = started(state_dir, version="1.1.0+1.29", commit=commit, domain="cust-a1b2c3.ci.example")
    rec.stage("install", "pass", finished_at="2026-11-26T10:00:30Z")
    rec.stage("overlay", "skip", "no overlays")
    assert verdict_line(rec) is None  # still running
    rec.finish()
    assert verdict_line(rec) == (
        "COLD VERDICT: PASS - custom-html at 1.1.0+1.29 (0123456789ab) on "
        "cust-a1b2c3.ci.example; stages install pass, overlay skip"
    )
    quick = started(state_dir, run_id="d4e5f6", mode="quick")
    quick.finish(error="the canonical could not be reattached")
    line = verdict_line(quick)
    assert line.startswith("QUICK VERDICT: ERROR - custom-html at 1.1.0+1.29; stages none")
    assert line.endswith("(lower confidence, never gates merge)")
