"""Results on the pull request: _forge over a real HTTP receiver, and forge_report's main()."""

from __future__ import annotations

import json

import pytest
from support.http_receiver import HttpReceiver
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils._forge import (
    ForgeClient,
    plan,
    report,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError
from ansible_collections.coopcloud.ci.plugins.modules import forge_report

SHA = "0f42faf170a10445ed7c2153ca150898fab3560f"
TOKEN = "s3cr3t-forge-token"
COLD_PASS = {
    "run_id": "c0ffee",
    "mode": "cold",
    "recipe": "custom-html",
    "commit": SHA,
    "version": None,
    "verdict": "PASS",
    "error": None,
    "stage_order": ["install", "upgrade", "serving", "overlay"],
    "stages": {"install": "pass", "upgrade": "pass", "serving": "pass", "overlay": "skip"},
}
QUICK_FAIL = dict(
    COLD_PASS,
    mode="quick",
    verdict="FAIL",
    stage_order=["upgrade", "serving"],
    stages={"upgrade": "pass", "serving": "fail"},
    error="health gate timed out after 60s: password=hunter2 " + "x" * 200,
)


@pytest.fixture
def forge():
    with HttpReceiver() as rx:
        rx.status = 201
        yield rx


def test_what_is_posted_for_each_lane_and_verdict():
    pending = plan("quick")
    assert pending["status"] == {
        "state": "pending",
        "context": "coopcloud-ci/quick (lower confidence)",
        "description": "quick run (lower confidence, does not gate merge) started",
    }
    assert pending["comment"] is None

    cold = plan("cold", COLD_PASS, pr=7, target_url="https://drone.example/r/1")
    assert cold["status"] == {
        "state": "success",
        "context": "coopcloud-ci/cold",
        "description": "PASS: install pass, upgrade pass, serving pass, overlay skip",
    }
    body = cold["comment"]
    assert body.startswith("**coopcloud-ci/cold: PASS** (authoritative, gates merge)\n")
    assert (
        "custom-html at `0f42faf170a1`, run `c0ffee`, [build log](https://drone.example/r/1)"
        in body
    )
    assert "| overlay | skip |" in body

    # the record's own mode wins (a quick request that fell back to cold is cold)
    quick = plan("cold", QUICK_FAIL, pr=7)
    status = quick["status"]
    assert status["state"] == "failure" and status["context"].startswith("coopcloud-ci/quick")
    assert status["description"].startswith("FAIL: upgrade pass, serving fail; health gate")
    assert len(status["description"]) == 140 and status["description"].endswith("...")
    assert "hunter2" not in json.dumps(quick)  # secrets scrubbed, as in records
    assert plan("cold", dict(COLD_PASS, verdict=None, stages={}))["status"]["state"] == "error"
    assert plan("cold", COLD_PASS)["comment"] is None  # no PR number, no comment
    with pytest.raises(ValidationError, match="mode 'warm' is invalid"):
        plan("warm")


def test_posts_reach_the_forge_api_with_the_token(forge):
    client = ForgeClient(f"http://127.0.0.1:{forge.port}/", TOKEN, "coop-cloud/custom-html")
    result = report(
        client, mode="cold", commit=SHA, record=COLD_PASS, pr=7, target_url="https://d/1"
    )
    assert result["posted"] == ["status", "comment"] and result["errors"] == []
    status, comment = forge.posts()
    assert status.path == f"/api/v1/repos/coop-cloud/custom-html/statuses/{SHA}"
    assert status.headers["Authorization"] == f"token {TOKEN}"
    assert status.json() == {
        "state": "success",
        "context": "coopcloud-ci/cold",
        "description": "PASS: install pass, upgrade pass, serving pass, overlay skip",
        "target_url": "https://d/1",
    }
    assert comment.path == "/api/v1/repos/coop-cloud/custom-html/issues/7/comments"
    assert comment.json() == {"body": result["comment"]}
    # a base URL that already ends in /api/v1 is not doubled
    again = ForgeClient(f"http://127.0.0.1:{forge.port}/api/v1", TOKEN, "o/r")
    again.post_status(SHA, "pending", "coopcloud-ci/cold", "cold run started")
    assert forge.posts()[-1].path == f"/api/v1/repos/o/r/statuses/{SHA}"


def test_a_failed_post_is_an_error_never_an_exception(forge):
    client = ForgeClient(f"http://127.0.0.1:{forge.port}", TOKEN, "o/r")
    forge.status = 403
    result = report(client, mode="cold", commit=SHA, record=COLD_PASS, pr=7)
    assert result["posted"] == []
    assert result["errors"][0].startswith(
        f"could not post the commit status 'coopcloud-ci/cold' at http://127.0.0.1:{forge.port}"
        f"/api/v1/repos/o/r/statuses/{SHA}: HTTP 403 "
    )
    assert "receiver told to fail" in result["errors"][0]  # the forge's answer, as evidence
    assert "comment on #7" in result["errors"][1]
    forge.stop()
    down = report(client, mode="quick", commit=SHA)
    assert down["posted"] == [] and "ConnectError" in down["errors"][0]
    assert TOKEN not in json.dumps([result, down])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"repo": "just-a-name"}, "forge repo 'just-a-name' is invalid"),
        ({"repo": "o/../r"}, "forge repo 'o/../r' is invalid"),
        ({"url": "ftp://forge"}, "forge url 'ftp://forge' is invalid"),
        ({"url": "https://me:pw@forge"}, "no credentials"),
        ({"token": "two words"}, "forge token is missing"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_sent(args, message):
    settings = {"url": "https://forge.example", "token": TOKEN, "repo": "o/r", **args}
    with pytest.raises(ValidationError, match=message):
        ForgeClient(settings["url"], settings["token"], settings["repo"])


def run(args: dict, capsys) -> tuple[int, dict]:
    return run_main(forge_report, args, capsys)


def test_module_check_real_token_from_env_and_forge_down(forge, capsys, monkeypatch):
    monkeypatch.setenv("CCCI_FORGE_TOKEN", TOKEN)
    args = {
        "url": f"http://127.0.0.1:{forge.port}",
        "repo": "o/r",
        "commit": SHA,
        "mode": "cold",
        "record": COLD_PASS,
        "pr": 3,
    }
    rc, checked = run({**args, "_ansible_check_mode": True}, capsys)
    assert rc == 0 and checked["changed"] is False and forge.posts() == []
    assert checked["status"]["state"] == "success" and "| install | pass |" in checked["comment"]

    rc, real = run(args, capsys)
    assert rc == 0 and real["changed"] is True and real["posted"] == ["status", "comment"]
    assert [p.headers["Authorization"] for p in forge.posts()] == [f"token {TOKEN}"] * 2
    for key in ("status", "comment"):  # check mode predicted the real posts
        assert real[key] == checked[key]
    assert real["invocation"]["module_args"]["token"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"

    forge.stop()
    rc, down = run(args, capsys)
    assert rc == 0 and down["changed"] is False and len(down["errors"]) == 2
    assert TOKEN not in json.dumps([checked, real, down])

    monkeypatch.delenv("CCCI_FORGE_TOKEN")
    rc, missing = run(args, capsys)
    assert rc == 1 and missing["msg"].startswith("forge token is missing")
    assert "CCCI_FORGE_TOKEN" in missing["msg"]
    monkeypatch.setenv("CCCI_FORGE_TOKEN", TOKEN)
    rc, bad = run({**args, "commit": "abc1234"}, capsys)
    assert rc == 1 and bad["msg"] == "commit 'abc1234' is invalid: give the full 40-hex commit id"
