"""playbooks/alerts.yml end to end through ansible-runner, against a real loopback receiver.

No swarm is needed: the relay only reads and moves files and speaks HTTP.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from support.ansible import dump, run_playbook
from support.http_receiver import HttpReceiver

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertStore


def private(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def names(directory: str) -> list[str]:
    return (
        sorted(p.name for p in Path(directory).glob("*.json")) if os.path.isdir(directory) else []
    )


def alert_payloads(rx: HttpReceiver) -> list[dict]:
    """The alert JSON each POST carried (apprise's json:// body: title, message, ...)."""
    out = []
    for post in rx.posts():
        body = post.json()
        out.append(json.loads(body["message"].split("alert JSON:\n", 1)[1]))
    return out


def test_alerts_play_delivers_archives_and_retries_when_the_receiver_was_down(state_dir, tmp_path):
    store = AlertStore(str(state_dir))
    first = store.write(
        "rollback", "warm-kc", "2.1.0+26.1", "2.0.0+26.0", True, "gate failed; restored"
    )
    second = store.write(
        "held-manual-migration",
        "warm-proxy",
        "3.1.0+3.1",
        "3.0.0+3.0",
        None,
        {"3.1.0+3.1": "A manual migration is needed."},
    )
    both = sorted(map(os.path.basename, (first, second)))

    rx = HttpReceiver().start()
    port = rx.port
    url = f"json://127.0.0.1:{port}/hook"
    extravars = {"ccci_state_dir": str(state_dir), "ccci_alert_urls": [url]}
    try:
        # 1. receiver down: nothing archived, non-zero, and the output says why
        rx.stop()
        down = run_playbook("alerts.yml", extravars, private_dir=private(tmp_path, "r1"))
        assert down.rc != 0, dump(down)
        failed = down.task("Deliver every unseen alert and archive it to alerts/seen/")
        assert os.path.basename(first) in failed["msg"]
        assert f"json://127.0.0.1:{port}" in failed["msg"] and "Connection" in failed["msg"]
        assert "stay unseen" in down.stdout and "next relay retries" in down.stdout
        assert names(store.alerts_dir) == both and names(store.seen_dir) == []

        # 2. receiver back: both delivered, in order, then archived; exit 0
        rx.start()
        assert rx.port == port
        ok = run_playbook("alerts.yml", extravars, private_dir=private(tmp_path, "r2"))
        assert ok.rc == 0, dump(ok)
        assert [p.path for p in rx.posts()] == ["/hook", "/hook"]
        got = alert_payloads(rx)
        assert [(a["kind"], a["target"]) for a in got] == [
            ("rollback", "warm-kc"),
            ("held-manual-migration", "warm-proxy"),
        ]
        assert got[0]["recovered"] is True and got[0]["attempted"] == "2.1.0+26.1"
        assert got[1]["notes"] == {"3.1.0+3.1": "A manual migration is needed."}
        assert rx.posts()[0].json()["title"] == "coopcloud.ci rollback: warm-kc 2.1.0+26.1"
        assert names(store.alerts_dir) == [] and names(store.seen_dir) == both
        assert "ALERTS RELAYED: 2 delivered of 2 waiting" in ok.stdout

        # 3. nothing left: a second run delivers nothing and changes nothing
        again = run_playbook("alerts.yml", extravars, private_dir=private(tmp_path, "r3"))
        assert again.rc == 0, dump(again)
        assert len(rx.posts()) == 2
        relayed = again.task("Deliver every unseen alert and archive it to alerts/seen/")
        assert relayed["changed"] is False
    finally:
        rx.stop()


def test_alerts_play_receiver_answering_500_keeps_alerts_and_hides_the_token(state_dir, tmp_path):
    store = AlertStore(str(state_dir))
    path = store.write("disk-low", "docker-root", notes="12% free")
    with HttpReceiver() as rx:
        rx.status = 500
        url = f"json://ops:Zs3cretZ@127.0.0.1:{rx.port}/hook/Ztok3nZ"
        result = run_playbook(
            "alerts.yml",
            {"ccci_state_dir": str(state_dir), "ccci_alert_urls": [url]},
            private_dir=private(tmp_path, "r"),
        )
        assert len(rx.posts()) == 1
    assert result.rc != 0, dump(result)
    assert "500" in result.stdout and os.path.basename(path) in result.stdout
    assert "Zs3cretZ" not in result.stdout and "Ztok3nZ" not in result.stdout
    # what the run left behind (events, stdout), not its own input (env/extravars)
    artifacts = "".join(
        p.read_text(errors="replace")
        for p in (tmp_path / "r" / "artifacts").rglob("*")
        if p.is_file()
    )
    assert "ALERT" in artifacts or "500" in artifacts
    assert "Zs3cretZ" not in artifacts and "Ztok3nZ" not in artifacts
    assert names(store.alerts_dir) == [os.path.basename(path)]
