"""Alert files (SPEC §3) and their relay through apprise to a real loopback receiver."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from support.fixtures import free_port
from support.http_receiver import HttpReceiver

from ansible_collections.coopcloud.ci.plugins.module_utils import _state
from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import (
    AlertError,
    AlertStore,
    apprise_send,
    describe_url,
    level_of,
    raise_unit_failed,
    redact,
    relay,
    render,
    url_id,
)

NAME_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-rollback-keycloak-[0-9a-f]{6}\.json$")


@pytest.fixture
def store(tmp_path) -> AlertStore:
    return AlertStore(str(tmp_path / "state"))


def files(directory: str) -> list[str]:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


# --- writing ------------------------------------------------------------------------


def test_write_carries_the_fixed_fields_and_a_sortable_name(store):
    path = store.write("rollback", "keycloak", "2.0.0+26.0", "1.1.0+25.0", True, "gate failed")
    assert os.path.dirname(path) == store.alerts_dir
    assert NAME_RE.match(os.path.basename(path)), path
    data = json.loads(Path(path).read_bytes())
    assert {k: data[k] for k in ("kind", "target", "attempted", "last_good", "recovered")} == {
        "kind": "rollback",
        "target": "keycloak",
        "attempted": "2.0.0+26.0",
        "last_good": "1.1.0+25.0",
        "recovered": True,
    }
    assert data["notes"] == "gate failed"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", data["at"])
    # only the alert itself: no temporary file is left beside it
    assert files(store.alerts_dir) == [os.path.basename(path)]


def test_extra_fields_are_kept_and_may_not_clash(store):
    path = store.write("disk-low", "docker-root", notes=None, free_bytes=123, needed_bytes=456)
    data = json.loads(Path(path).read_bytes())
    assert data["free_bytes"] == 123 and data["needed_bytes"] == 456
    assert data["attempted"] is None
    with pytest.raises(AlertError, match="clash"):
        store.write("disk-low", "x", at="yesterday")


@pytest.mark.parametrize("kind", ["", "Rollback", "roll back", "-x", "a/b", "x" * 41, None])
def test_bad_kind_refused_and_nothing_written(store, kind):
    with pytest.raises(AlertError, match="alert kind"):
        store.write(kind, "keycloak")
    assert files(store.alerts_dir) == []


@pytest.mark.parametrize("target", ["", "a/b", "../x", ".hidden", "a b", "x" * 64, None])
def test_bad_target_refused(store, target):
    with pytest.raises(AlertError, match="alert target"):
        store.write("rollback", target)
    assert files(store.alerts_dir) == []


def test_custom_kind_matching_pattern_is_accepted(store):
    path = store.write("cert-expiry", "traefik")
    assert "-cert-expiry-traefik-" in path


def test_non_json_extra_is_refused(store):
    with pytest.raises(AlertError, match="not JSON-serialisable"):
        store.write("rollback", "keycloak", blob=object())
    assert files(store.alerts_dir) == []


def test_a_failed_write_leaves_nothing(store, monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_state.os, "replace", boom)
    with pytest.raises(AlertError, match=r"cannot write alert .*No space left"):
        store.write("rollback", "keycloak", "2.0.0+26.0")
    assert files(store.alerts_dir) == []  # neither the alert nor its temporary file


# --- dedup --------------------------------------------------------------------------


def test_a_failed_unit_alert_says_what_systemd_told_and_does_not_pile_up(store):
    env = {"MONITOR_SERVICE_RESULT": "timeout", "MONITOR_INVOCATION_ID": "77ab", "HOME": "/x"}
    path = raise_unit_failed(store, "ccci-sweep", env)
    data = json.loads(Path(path).read_text())
    assert (data["kind"], data["target"], data["unit"]) == (
        "unit-failed",
        "ccci-sweep",
        "ccci-sweep.service",
    )
    assert data["service_result"] == "timeout" and "exit_status" not in data
    assert "service result timeout" in data["notes"]
    assert "journalctl -u ccci-sweep.service _SYSTEMD_INVOCATION_ID=77ab" in data["notes"]
    assert raise_unit_failed(store, "ccci-sweep.service", {}) == path  # still unseen
    with pytest.raises(AlertError, match="target 'ccci/x' is invalid"):
        raise_unit_failed(store, "ccci/x", {})
    assert files(store.alerts_dir) == [os.path.basename(path)]


def test_same_open_condition_does_not_pile_up(store):
    first = store.write("held-major", "keycloak", "2.0.0+26.0", "1.1.0+25.0", notes="a")
    again = store.write("held-major", "keycloak", "2.0.0+26.0", "1.1.0+25.0", notes="b")
    assert again == first
    assert len(files(store.alerts_dir)) == 1
    assert json.loads(Path(first).read_bytes())["notes"] == "a"  # untouched
    assert store.find_open("held-major", "keycloak", "2.0.0+26.0").path == first


def test_different_attempted_kind_or_target_is_a_new_alert(store):
    a = store.write("held-major", "keycloak", "2.0.0+26.0")
    b = store.write("held-major", "keycloak", "3.0.0+27.0")
    c = store.write("rollback", "keycloak", "2.0.0+26.0")
    d = store.write("held-major", "traefik", "2.0.0+26.0")
    assert len({a, b, c, d}) == 4
    assert len(files(store.alerts_dir)) == 4


def test_after_relay_the_condition_alerts_again_unless_quiet_for(store):
    first = store.write("held-major", "keycloak", "2.0.0+26.0")
    store.archive(first)
    assert store.find_open("held-major", "keycloak", "2.0.0+26.0") is None
    quiet = store.write("held-major", "keycloak", "2.0.0+26.0", quiet_for=3600)
    assert quiet.startswith(store.seen_dir)  # the recently relayed one stands for it
    assert [a.name for a in store.list_unseen()] == []
    second = store.write("held-major", "keycloak", "2.0.0+26.0")
    assert second != first and second.startswith(store.alerts_dir)


# --- listing, corrupt files, archive ------------------------------------------------


def test_list_unseen_is_oldest_first(store):
    paths = [store.write("rollback", f"t{i}", "1.0.0") for i in range(5)]
    assert [a.path for a in store.list_unseen()] == paths
    assert [a.data["target"] for a in store.list_unseen()] == [f"t{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"kind": "rollback", "tar', "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind": "rollback"}', "no target string"),
    ],
)
def test_corrupt_alert_is_named_and_kept(store, content, why):
    good = store.write("rollback", "keycloak", "2.0.0")
    bad = Path(store.alerts_dir) / "20200101T000000.000000Z-rollback-x-abcdef.json"
    bad.write_bytes(content)
    alerts = store.list_unseen()
    assert [a.corrupt for a in alerts] == [True, False]
    assert str(bad) in alerts[0].error and why in alerts[0].error
    assert alerts[1].path == good
    # the relay delivers the good one and names the bad one, which stays byte for byte
    sent = []
    report = relay(store, ["json://x"], send=lambda u, t, b, lvl: sent.append(t))
    assert len(sent) == 1 and report.delivered == [os.path.basename(good)]
    assert not report.ok and str(bad) in report.message()
    assert bad.read_bytes() == content
    assert files(store.alerts_dir) == [".relay.lock", bad.name, "seen"]


def test_archive_moves_by_rename(store):
    path = store.write("rollback", "keycloak", "2.0.0")
    before = Path(path).read_bytes()
    ino = os.stat(path).st_ino
    dest = store.archive(path)
    assert dest == os.path.join(store.seen_dir, os.path.basename(path))
    assert not os.path.exists(path)
    assert Path(dest).read_bytes() == before and os.stat(dest).st_ino == ino
    assert store.list_unseen() == [] and store.count_seen() == 1


def test_archive_refuses_foreign_paths_and_existing_targets(store, tmp_path):
    with pytest.raises(AlertError, match="not an unseen alert"):
        store.archive(str(tmp_path / "elsewhere.json"))
    path = store.write("rollback", "keycloak", "2.0.0")
    os.makedirs(store.seen_dir)
    clash = Path(store.seen_dir) / os.path.basename(path)
    clash.write_text("{}")
    with pytest.raises(AlertError, match="already exists; nothing was moved"):
        store.archive(path)
    assert os.path.exists(path) and clash.read_text() == "{}"


# --- rendering and URLs -------------------------------------------------------------


def test_render_is_readable_and_carries_the_json(store):
    path = store.write(
        "held-manual-migration",
        "keycloak",
        "1.2.0+26.1",
        "1.1.0+26.0",
        None,
        {"1.2.0+26.1": "Run a manual migration first."},
        reasons=["notes of 1.2.0+26.1"],
    )
    (alert,) = store.list_unseen()
    title, body = render(alert)
    assert title == "coopcloud.ci held-manual-migration: keycloak 1.2.0+26.1"
    assert "last good: 1.1.0+26.0" in body and "recovered: -" in body
    assert "--- 1.2.0+26.1 ---\nRun a manual migration first." in body
    assert f"file: {os.path.basename(path)}" in body
    payload = json.loads(body.split("alert JSON:\n", 1)[1])
    assert payload["kind"] == "held-manual-migration" and payload["reasons"] == [
        "notes of 1.2.0+26.1"
    ]


def test_render_not_recovered_is_loud(store):
    store.write("rollback", "keycloak", "2.0.0", "1.0.0", False)
    alert = store.list_unseen()[0]
    title, body = render(alert)
    assert title.endswith("(NOT RECOVERED)") and "recovered: NO" in body
    assert level_of(alert) == "failure"
    with HttpReceiver() as rx:
        assert relay(store, [f"json://127.0.0.1:{rx.port}/h"]).ok
    assert rx.posts()[0].json()["type"] == "failure"


@pytest.mark.parametrize(
    ("url", "shown", "secrets"),
    [
        ("json://127.0.0.1:8080/hook", "json://127.0.0.1:8080", ["hook"]),
        (
            "jsons://user:p4ssw0rd@hooks.example.org/x/SECRETTOKEN?k=v",
            "jsons://hooks.example.org",
            ["p4ssw0rd", "SECRETTOKEN", "user"],
        ),
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "slack://T...2",
            ["T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ"],
        ),
        (
            "mailto://ops:m41lpw@example.org?to=ops@example.org",
            "mailto://example.org",
            ["m41lpw"],
        ),
        ("nonsense", "a URL without a scheme", ["nonsense"]),
    ],
)
def test_describe_url_hides_secrets(url, shown, secrets):
    assert describe_url(url) == shown
    for secret in secrets:
        assert secret not in shown
        assert secret not in redact(f"error talking to {url}", url, shown)


def test_url_id_is_stable_and_not_the_url():
    assert url_id("json://h/tok") == url_id("json://h/tok") != url_id("json://h/tok2")
    assert "tok" not in url_id("json://h/tok")


# --- relay through apprise to a real receiver --------------------------------------


def test_relay_delivers_every_alert_as_json_and_archives(store):
    a = store.write("rollback", "keycloak", "2.0.0+26.0", "1.1.0+25.0", True)
    b = store.write("held-major", "traefik", "3.0.0+3.0", "2.9.0+2.9")
    with HttpReceiver() as rx:
        report = relay(store, [f"json://127.0.0.1:{rx.port}/hook"])
    assert report.ok and report.failed == []
    assert report.delivered == [os.path.basename(a), os.path.basename(b)]
    posts = rx.posts()
    assert [p.path for p in posts] == ["/hook", "/hook"]
    bodies = [p.json() for p in posts]
    assert bodies[0]["title"] == "coopcloud.ci rollback: keycloak 2.0.0+26.0"
    assert [b["type"] for b in bodies] == ["warning", "warning"]
    first = json.loads(bodies[0]["message"].split("alert JSON:\n", 1)[1])
    second = json.loads(bodies[1]["message"].split("alert JSON:\n", 1)[1])
    assert (first["kind"], first["target"]) == ("rollback", "keycloak")
    assert (second["kind"], second["target"]) == ("held-major", "traefik")
    assert store.list_unseen() == []
    assert sorted(os.listdir(store.seen_dir)) == sorted(map(os.path.basename, (a, b)))


def test_relay_receiver_500_keeps_alerts_unseen_and_says_why(store):
    store.write("rollback", "keycloak", "2.0.0")
    store.write("rollback", "traefik", "2.0.0")
    with HttpReceiver() as rx:
        rx.status = 500
        url = f"json://127.0.0.1:{rx.port}/hook/s3cr3tpath"
        report = relay(store, [url])
        assert len(rx.posts()) == 1  # the broken URL is not hammered for the second alert
        assert not report.ok and report.delivered == []
        msg = report.message()
        assert f"json://127.0.0.1:{rx.port}" in msg and "500" in msg
        assert "s3cr3tpath" not in msg and "s3cr3tpath" not in json.dumps(report.failed)
        assert len(store.list_unseen()) == 2 and store.count_seen() == 0
        rx.status = 200
        report = relay(store, [url])
    assert report.ok and len(report.delivered) == 2 and store.count_seen() == 2


def test_relay_receiver_down_then_back(store):
    store.write("rollback", "keycloak", "2.0.0")
    rx = HttpReceiver().start()
    port = rx.port
    rx.stop()
    try:
        report = relay(store, [f"json://127.0.0.1:{port}/hook"])
        assert not report.ok
        assert "Connection" in report.failed[0]["error"]
        assert len(store.list_unseen()) == 1
        rx.start()
        assert rx.port == port
        report = relay(store, [f"json://127.0.0.1:{port}/hook"])
        assert report.ok and len(rx.posts()) == 1
    finally:
        rx.stop()


def test_relay_partial_success_never_sends_twice_to_the_url_that_took_it(store):
    path = store.write("rollback", "keycloak", "2.0.0")
    with HttpReceiver() as good:
        down = f"json://127.0.0.1:{free_port()}/hook"
        urls = [f"json://127.0.0.1:{good.port}/a", down]
        report = relay(store, urls)
        assert not report.ok and len(good.posts()) == 1
        data = json.loads(Path(path).read_bytes())
        assert data["relayed_to"] == [url_id(urls[0])]
        with HttpReceiver() as late:
            urls[1] = f"json://127.0.0.1:{late.port}/hook"
            report = relay(store, urls)
            assert report.ok
            assert len(good.posts()) == 1 and len(late.posts()) == 1


def test_relay_with_nothing_unseen_is_a_noop(store):
    report = relay(store, ["json://127.0.0.1:9/x"], send=lambda *a: pytest.fail("sent"))
    assert report.ok and report.delivered == [] and report.archived == []


def test_apprise_send_refuses_unknown_url():
    with pytest.raises(AlertError, match="apprise does not understand this URL"):
        apprise_send("bogus://host/x", "t", "b")


def test_relay_lock_times_out_with_a_clear_message(store):
    with store.relay_lock():
        other = AlertStore(store.state_dir)
        with pytest.raises(AlertError, match="another alert relay holds"), other.relay_lock(0.3):
            pass


def test_an_exception_inside_apprise_becomes_one_masked_sentence(monkeypatch):
    import apprise

    def broken(self, **kwargs):
        raise RuntimeError("plugin blew up near /hook/Kt0kenK")

    monkeypatch.setattr(apprise.Apprise, "notify", broken)
    with pytest.raises(AlertError) as exc:
        apprise_send("json://127.0.0.1:9/hook/Kt0kenK", "t", "b")
    assert "json://127.0.0.1:9: delivery failed inside apprise: RuntimeError" in str(exc.value)
    assert "Kt0kenK" not in str(exc.value)
