"""run_record's main(): each state through check -> real -> again, diff, JUnit, errors."""

from __future__ import annotations

import datetime
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.modules import run_record

RUN = "c0ffee"


def run(args: dict, capsys) -> tuple[int, dict]:
    return run_main(run_record, args, capsys)


def record_file(state_dir: Path) -> Path:
    return state_dir / "runs" / f"{RUN}.json"


def base(state_dir: Path, **kw) -> dict:
    return {"state_dir": str(state_dir), "run_id": RUN, **kw}


START = {"state": "started", "mode": "cold", "recipe": "custom-html", "ref": "1.1.0+1.29"}


def test_started_check_real_again(state_dir, capsys):
    args = base(state_dir, **START, domain="cust-c0ffee.ci.example")
    rc, checked = run({**args, "_ansible_check_mode": True, "_ansible_diff": True}, capsys)
    assert rc == 0, checked
    assert checked["changed"] is True
    assert checked["record"]["status"] == "running"
    assert checked["diff"]["before"] == {} and checked["diff"]["after"]["run_id"] == RUN
    assert not record_file(state_dir).exists()

    rc, real = run(args, capsys)
    assert rc == 0 and real["changed"] is True
    on_disk = json.loads(record_file(state_dir).read_text())
    assert on_disk == real["record"]
    assert on_disk["confidence"] == "authoritative" and on_disk["verdict"] is None
    assert real["verdict"] is None and real["summary"][-1] == "verdict: (running)"
    assert real["path"] == str(record_file(state_dir))

    rc, again = run(args, capsys)
    assert rc == 0 and again["changed"] is False
    rc, again_check = run({**args, "_ansible_check_mode": True}, capsys)
    assert again_check["changed"] is False
    assert json.loads(record_file(state_dir).read_text()) == on_disk


def test_started_again_fills_in_and_refuses_another_identity(state_dir, capsys):
    run(base(state_dir, **START), capsys)
    rc, out = run(
        base(
            state_dir,
            **START,
            version="1.1.0+1.29",
            commit="abcdef1",
            notes=["falling back to COLD"],
            canonical_before={"version": "1.0.0+1.28", "admin_password": "hunter2"},
        ),
        capsys,
    )
    assert rc == 0 and out["changed"] is True
    data = json.loads(record_file(state_dir).read_text())
    assert data["version"] == "1.1.0+1.29" and data["commit"] == "abcdef1"
    assert data["notes"] == ["falling back to COLD"]
    assert data["canonical_before"] == {"version": "1.0.0+1.28"}
    assert "hunter2" not in record_file(state_dir).read_text()

    rc, out = run(base(state_dir, **{**START, "mode": "quick"}), capsys)
    assert rc == 1
    assert "already exists with mode 'cold', not 'quick'" in out["msg"]


def test_quick_is_labelled_lower_confidence(state_dir, capsys):
    rc, out = run(base(state_dir, **{**START, "mode": "quick"}), capsys)
    assert rc == 0
    assert out["record"]["confidence"] == "lower"
    assert "lower confidence" in out["record"]["label"]
    assert "lower confidence, never gates merge" in out["summary"][1]


def test_stage_check_real_again(state_dir, capsys):
    run(base(state_dir, **START), capsys)
    args = base(state_dir, state="stage", stage="install", result="fail", message="no such image")
    rc, checked = run({**args, "_ansible_check_mode": True, "_ansible_diff": True}, capsys)
    assert rc == 0 and checked["changed"] is True
    assert checked["diff"]["after"]["stages"] == {"install": "fail"}
    assert json.loads(record_file(state_dir).read_text())["stages"] == {}

    rc, real = run(args, capsys)
    assert rc == 0 and real["changed"] is True
    assert json.loads(record_file(state_dir).read_text())["stages"] == {"install": "fail"}

    rc, again = run(args, capsys)
    assert again["changed"] is False
    rc, changed_result = run({**args, "result": "pass", "message": None}, capsys)
    assert changed_result["changed"] is True
    assert changed_result["record"]["stages"] == {"install": "pass"}


def test_finished_writes_verdict_and_junit(state_dir, tmp_path, capsys):
    run(base(state_dir, **START), capsys)
    run(base(state_dir, state="stage", stage="install", result="pass"), capsys)
    run(base(state_dir, state="stage", stage="overlay", result="skip", message="none"), capsys)
    junit = tmp_path / "out" / "junit.xml"
    args = base(
        state_dir,
        state="finished",
        junit=str(junit),
        canonical_after={"version": "1.1.0+1.29", "token": "t0k"},
        docker_seconds=12.5,
    )
    rc, checked = run({**args, "_ansible_check_mode": True}, capsys)
    assert rc == 0 and checked["changed"] is True and checked["verdict"] == "PASS"
    assert not junit.exists()
    assert json.loads(record_file(state_dir).read_text())["status"] == "running"

    rc, real = run(args, capsys)
    assert rc == 0 and real["changed"] is True and real["verdict"] == "PASS"
    assert real["junit"] == str(junit)
    data = json.loads(record_file(state_dir).read_text())
    assert data["status"] == "finished" and data["verdict"] == "PASS"
    assert data["canonical_after"] == {"version": "1.1.0+1.29"}
    assert data["timings"]["docker_seconds"] == 12.5
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "1")
    assert real["summary"][-2] == "verdict: PASS"

    rc, again = run(args, capsys)
    assert rc == 0 and again["changed"] is False and again["verdict"] == "PASS"
    junit.unlink()
    rc, rewrite = run(args, capsys)
    assert rewrite["changed"] is True and junit.exists()


def test_finished_with_error_and_a_stage_after_finish(state_dir, capsys):
    run(base(state_dir, **START), capsys)
    rc, out = run(base(state_dir, state="finished", error="no checkout at ref nope"), capsys)
    assert rc == 0 and out["verdict"] == "ERROR"
    assert out["record"]["error"] == "no checkout at ref nope"
    rc, out = run(base(state_dir, state="stage", stage="install", result="pass"), capsys)
    assert rc == 1 and "already finished with verdict ERROR" in out["msg"]


def test_info(state_dir, capsys):
    run(base(state_dir, **START), capsys)
    rc, out = run(base(state_dir), capsys)
    assert rc == 0 and out["changed"] is False and out["record"]["run_id"] == RUN
    assert out["verdict"] is None and out["verdict_so_far"] == "ERROR"  # no stage passed yet


@pytest.mark.parametrize(
    ("stages", "error", "verdict"),
    [
        ({"upgrade": "pass", "serving": "pass", "overlay": "skip"}, None, "PASS"),
        ({"upgrade": "pass", "serving": "fail"}, None, "FAIL"),
        ({"upgrade": "fail"}, "the run broke off", "FAIL"),  # a failed stage wins
        ({"upgrade": "pass"}, "the run broke off", "ERROR"),
        ({"upgrade": "skip", "serving": "skip"}, None, "ERROR"),  # nothing passed
        ({}, None, "ERROR"),
    ],
)
def test_info_says_the_verdict_so_far(state_dir, capsys, stages, error, verdict):
    run(base(state_dir, **{**START, "mode": "quick"}), capsys)
    for name, result in stages.items():
        run(base(state_dir, state="stage", stage=name, result=result), capsys)
    rc, out = run(base(state_dir, error=error), capsys)
    assert rc == 0 and out["changed"] is False
    assert (out["verdict"], out["verdict_so_far"]) == (None, verdict)
    rc, closed = run(base(state_dir, state="finished", error=error), capsys)
    assert closed["verdict"] == closed["verdict_so_far"] == verdict


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"state": "stage", "stage": "install", "result": "pass"}, "does not exist; start it"),
        ({"state": "finished"}, "does not exist; start it"),
        ({"state": "info"}, "does not exist; start it"),
        ({"state": "started", "mode": "cold"}, "state is started but all of the following"),
        ({"state": "stage", "stage": "install"}, "state is stage but all of the following"),
    ],
)
def test_input_errors(state_dir, capsys, args, message):
    rc, out = run(base(state_dir, **args), capsys)
    assert rc == 1 and message in out["msg"], out


def test_bad_run_id_and_state_dir(state_dir, capsys):
    rc, out = run({"state_dir": str(state_dir), "run_id": "../x", **START}, capsys)
    assert rc == 1 and "run id '../x' is invalid" in out["msg"]
    rc, out = run({"state_dir": "relative", "run_id": RUN, **START}, capsys)
    assert rc == 1 and "is relative" in out["msg"]


def test_bad_stage_values_fail_cleanly(state_dir, capsys):
    run(base(state_dir, **START), capsys)
    rc, out = run(
        base(state_dir, state="stage", stage="install", result="pass", finished_at="soon"), capsys
    )
    assert rc == 1 and "finished_at 'soon' is not an ISO-8601 time" in out["msg"]


def test_check_mode_on_a_record_whose_start_was_only_predicted(state_dir, capsys):
    rc, out = run(
        base(state_dir, state="stage", stage="install", result="pass", _ansible_check_mode=True),
        capsys,
    )
    assert rc == 0 and out["changed"] is True and out["record"] is None
    assert not (state_dir / "runs").exists()


def test_mark_verdict_returns_the_line_and_keeps_the_first_moment(state_dir, capsys):
    quick = {**START, "mode": "quick", "commit": "0123456789abcdef0123456789abcdef01234567"}
    run(base(state_dir, **quick), capsys)
    run(base(state_dir, state="stage", stage="upgrade", result="fail", message="no"), capsys)
    marked = base(state_dir, **quick, mark=["verdict"], error="the serving stage broke off")
    rc, check = run({**marked, "_ansible_check_mode": True}, capsys)
    assert rc == 0 and check["changed"] is True
    assert "verdict_at" not in json.loads(record_file(state_dir).read_text())["timings"]
    rc, out = run(marked, capsys)
    assert rc == 0 and out["changed"] is True
    assert out["verdict_line"] == (
        "QUICK VERDICT: FAIL - custom-html at 1.1.0+1.29 (0123456789ab); stages upgrade fail"
        " (lower confidence, never gates merge)"
    )
    timings = json.loads(record_file(state_dir).read_text())["timings"]
    assert timings["verdict_reported"] == "FAIL" and timings["verdict_seconds"] >= 0
    rc, again = run(marked, capsys)
    assert again["changed"] is False and again["verdict_line"] == out["verdict_line"]
    rc, rest = run(base(state_dir, **quick, mark=["rest"]), capsys)
    rc, done = run(base(state_dir, state="finished"), capsys)
    timings = done["record"]["timings"]
    assert timings["verdict_at"] <= timings["rest_at"] == rest["record"]["timings"]["rest_at"]
    assert "verdict_line" not in rest
    rc, bad = run(base(state_dir, state="info", mark=["rest"]), capsys)
    assert rc == 1 and bad["msg"].startswith(
        "mark is only for state=started or finished, not state=info"
    )


def test_the_close_notes_the_moment_of_rest_it_is_handed(state_dir, capsys):
    def ago(seconds: int) -> str:
        moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    quick = {**START, "mode": "quick", "started_at": ago(120)}
    run(base(state_dir, **quick), capsys)
    run(base(state_dir, state="stage", stage="upgrade", result="pass"), capsys)
    rest = ago(60)
    rc, done = run(
        base(state_dir, state="finished", mark=["rest"], marked_at=rest,
             notes=["lock released at " + rest]),
        capsys,
    )  # fmt: skip
    assert rc == 0, done
    timings = done["record"]["timings"]
    assert (timings["rest_at"], timings["rest_seconds"]) == (rest, 60)
    assert timings["verdict_seconds"] >= 120  # noted at the finish: now
    assert done["record"]["notes"][-1] == "lock released at " + rest


def test_stages_put_aside_as_skipped_are_recorded_in_order_with_the_next_write(state_dir, capsys):
    run(base(state_dir, **START), capsys)
    run(base(state_dir, state="stage", stage="install", result="pass"), capsys)
    aside = [{"stage": "upgrade", "message": "no earlier version to upgrade from",
              "at": "2099-01-01T00:00:00.250000Z"}]  # fmt: skip
    rc, out = run(
        base(state_dir, state="stage", stage="serving", result="pass", skipped=aside), capsys
    )
    assert rc == 0, out
    record = out["record"]
    assert record["stage_order"] == ["install", "upgrade", "serving"]
    assert record["stages"] == {"install": "pass", "upgrade": "skip", "serving": "pass"}
    upgrade = record["stage_details"]["upgrade"]
    assert upgrade["message"] == "no earlier version to upgrade from"
    assert upgrade["finished_at"].startswith("2099-01-01T00:00:00")
    assert upgrade["started_at"] == record["stage_details"]["install"]["finished_at"]
    # handed again with more: what is recorded already stays as it is
    aside.append({"stage": "custom", "message": "the catalog entry has no tests", "at": None})
    rc, done = run(base(state_dir, state="finished", skipped=aside), capsys)
    assert done["record"]["stage_details"]["upgrade"] == upgrade
    assert done["record"]["stage_order"] == ["install", "upgrade", "serving", "custom"]
    assert done["verdict"] == "PASS"
    rc, bad = run(base(state_dir, state="info", skipped=aside), capsys)
    assert rc == 1 and bad["msg"].startswith("skipped is only for state=started, stage or")
