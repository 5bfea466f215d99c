"""warm_alert's main(): present (check, diff, dedup), relayed (real loopback receiver), info."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.fixtures import free_port
from support.http_receiver import HttpReceiver
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertStore
from ansible_collections.coopcloud.ci.plugins.modules import warm_alert

ROLLBACK = {
    "kind": "rollback",
    "target": "keycloak",
    "attempted": "2.1.0+26.1",
    "last_good": "2.0.0+26.0",
    "recovered": True,
    "notes": "health gate failed; snapshot restored",
}


def run(args: dict, capsys) -> tuple[int, dict]:
    return run_main(warm_alert, args, capsys)


def alert_files(state_dir: Path) -> list[str]:
    d = state_dir / "alerts"
    return sorted(p.name for p in d.glob("*.json")) if d.is_dir() else []


def test_present_check_then_real_then_again(state_dir, capsys):
    args = {"state_dir": str(state_dir), **ROLLBACK}
    rc, checked = run({**args, "_ansible_check_mode": True, "_ansible_diff": True}, capsys)
    assert rc == 0 and checked["changed"] is True and checked["path"] is None
    assert checked["diff"]["after"]["kind"] == "rollback"
    assert alert_files(state_dir) == []  # check mode wrote nothing

    rc, real = run(args, capsys)
    assert rc == 0 and real["changed"] is True and real["deduplicated"] is False
    assert os.path.basename(real["path"]) in alert_files(state_dir)
    on_disk = json.loads(Path(real["path"]).read_text())
    assert on_disk == real["alert"]
    assert {k: on_disk[k] for k in ROLLBACK} == ROLLBACK
    assert real["unseen_count"] == 1

    rc, again = run(args, capsys)
    assert rc == 0 and again["changed"] is False and again["deduplicated"] is True
    assert again["path"] == real["path"] and len(alert_files(state_dir)) == 1
    rc, again_check = run({**args, "_ansible_check_mode": True}, capsys)
    assert again_check["changed"] is False


def test_present_extra_fields_and_a_new_attempt(state_dir, capsys):
    rc, out = run(
        {"state_dir": str(state_dir), **ROLLBACK, "extra": {"run_id": "abc123", "rc": 1}}, capsys
    )
    assert rc == 0 and out["alert"]["run_id"] == "abc123" and out["alert"]["rc"] == 1
    rc, other = run({"state_dir": str(state_dir), **ROLLBACK, "attempted": "2.2.0+26.2"}, capsys)
    assert other["changed"] is True and len(alert_files(state_dir)) == 2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"kind": "Roll Back"}, "alert kind 'Roll Back' is invalid"),
        ({"target": "../etc"}, "alert target '../etc' is invalid"),
        ({"extra": {"kind": "x"}}, "clash with the fixed fields"),
        ({"state_dir": "relative/dir"}, "is relative"),
        ({"state_dir": "/"}, "'/' is refused"),
    ],
)
def test_present_bad_input_fails_and_writes_nothing(state_dir, capsys, args, says):
    rc, out = run({"state_dir": str(state_dir), **ROLLBACK, **args}, capsys)
    assert rc == 1 and says in out["msg"] and out["changed"] is False
    assert alert_files(state_dir) == []


def test_present_requires_kind_and_target(state_dir, capsys):
    rc, out = run({"state_dir": str(state_dir), "kind": "rollback"}, capsys)
    assert rc == 1 and "target" in out["msg"]


def test_relayed_delivers_archives_and_hides_urls(state_dir, capsys):
    store = AlertStore(str(state_dir))
    store.write(**ROLLBACK)
    store.write("held-major", "traefik", "3.0.0+3.0", "2.9.0+2.9")
    with HttpReceiver() as rx:
        url = f"json://127.0.0.1:{rx.port}/hook/t0k3nPart"
        args = {"state_dir": str(state_dir), "state": "relayed", "urls": [url]}
        rc, checked = run({**args, "_ansible_check_mode": True}, capsys)
        assert rc == 0 and checked["changed"] is True and len(checked["delivered"]) == 2
        assert rx.posts() == [] and len(alert_files(state_dir)) == 2
        rc, out = run(args, capsys)
        assert rc == 0 and out["changed"] is True
        assert len(out["delivered"]) == 2 and len(out["archived"]) == 2
        assert [p.path for p in rx.posts()] == ["/hook/t0k3nPart"] * 2
        kinds = [p.json()["message"] for p in rx.posts()]
        assert "kind:      rollback" in kinds[0] and "kind:      held-major" in kinds[1]
        assert alert_files(state_dir) == [] and out["seen_count"] == 2
        assert "t0k3nPart" not in json.dumps({k: v for k, v in out.items() if k != "invocation"})
        assert out["invocation"]["module_args"]["urls"] != [url]  # no_log masks it
        rc, again = run(args, capsys)
        assert rc == 0 and again["changed"] is False and again["delivered"] == []


def test_relayed_failure_keeps_alerts_and_names_alert_url_and_answer(state_dir, capsys):
    store = AlertStore(str(state_dir))
    path = store.write(**ROLLBACK)
    with HttpReceiver() as rx:
        rx.status = 500
        url = f"json://user:pw5ecret@127.0.0.1:{rx.port}/hook"
        rc, out = run({"state_dir": str(state_dir), "state": "relayed", "urls": [url]}, capsys)
    assert rc == 1 and out["changed"] is False
    assert os.path.basename(path) in out["msg"]
    assert f"json://127.0.0.1:{rx.port}" in out["msg"] and "500" in out["msg"]
    assert "pw5ecret" not in json.dumps(out)
    assert out["failures"][0]["file"] == os.path.basename(path)
    assert alert_files(state_dir) == [os.path.basename(path)]


def test_relayed_receiver_down_fails_then_retry_delivers(state_dir, capsys):
    AlertStore(str(state_dir)).write(**ROLLBACK)
    port = free_port()
    args = {"state_dir": str(state_dir), "state": "relayed", "urls": [f"json://127.0.0.1:{port}/h"]}
    rc, out = run(args, capsys)
    assert rc == 1 and "Connection" in out["msg"] and "next relay retries" in out["msg"]
    assert len(alert_files(state_dir)) == 1
    with HttpReceiver(port=port) as rx:
        rc, out = run(args, capsys)
        assert rc == 0 and len(rx.posts()) == 1 and alert_files(state_dir) == []


def test_relayed_takes_urls_from_the_environment_when_none_are_given(
    state_dir, capsys, monkeypatch
):
    AlertStore(str(state_dir)).write(**ROLLBACK)
    with HttpReceiver() as one, HttpReceiver() as two:
        urls = f"json://127.0.0.1:{one.port}/a,json://127.0.0.1:{two.port}/b"
        monkeypatch.setenv("CCCI_ALERT_URLS", urls)
        rc, out = run({"state_dir": str(state_dir), "state": "relayed"}, capsys)
        assert rc == 0, out
        assert [p.path for p in one.posts()] == ["/a"] and [p.path for p in two.posts()] == ["/b"]
    assert alert_files(state_dir) == []


def test_relayed_without_urls_fails_only_when_something_waits(state_dir, capsys, monkeypatch):
    monkeypatch.delenv("CCCI_ALERT_URLS", raising=False)
    rc, out = run({"state_dir": str(state_dir), "state": "relayed"}, capsys)
    assert rc == 0 and out["changed"] is False
    AlertStore(str(state_dir)).write(**ROLLBACK)
    rc, out = run({"state_dir": str(state_dir), "state": "relayed"}, capsys)
    assert rc == 1 and "no alert URL is configured" in out["msg"]
    assert len(alert_files(state_dir)) == 1


def test_relayed_corrupt_file_is_named_and_kept_in_check_and_real(state_dir, capsys):
    store = AlertStore(str(state_dir))
    good = store.write(**ROLLBACK)
    bad = Path(store.alerts_dir) / "20200101T000000.000000Z-rollback-old-abcdef.json"
    bad.write_bytes(b"{truncated")
    with HttpReceiver() as rx:
        args = {
            "state_dir": str(state_dir),
            "state": "relayed",
            "urls": [f"json://127.0.0.1:{rx.port}/h"],
        }
        rc, out = run({**args, "_ansible_check_mode": True}, capsys)
        assert rc == 1 and str(bad) in out["msg"] and rx.posts() == []
        rc, out = run(args, capsys)
        assert rc == 1 and str(bad) in out["msg"] and "left in place" in out["msg"]
        assert out["delivered"] == [os.path.basename(good)] and out["changed"] is True
        assert len(rx.posts()) == 1
    assert bad.read_bytes() == b"{truncated"
    assert alert_files(state_dir) == [bad.name]


def test_info_counts_and_lists(state_dir, capsys):
    store = AlertStore(str(state_dir))
    first = store.write(**ROLLBACK)
    store.write("disk-low", "docker-root")
    store.archive(first)
    (Path(store.alerts_dir) / "20200101T000000.000000Z-x-y-abcdef.json").write_text("[]")
    rc, out = run({"state_dir": str(state_dir), "state": "info"}, capsys)
    assert rc == 0 and out["changed"] is False
    assert out["unseen_count"] == 2 and out["seen_count"] == 1
    assert [(a["kind"], a["target"]) for a in out["unseen"]] == [("disk-low", "docker-root")]
    assert "not a JSON object" in out["corrupt"][0]["error"]
