"""The comment bridge, run as a real process (bin/ccci bridge) between the forge and Drone doubles.

Each test asserts what the doubles received: builds and their parameters (Drone), replies and
API calls (forge). Every exchange with the forge double is validated against Gitea's OpenAPI
document (the ``forge`` fixture's ``check()`` at teardown).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from support.bridge_process import BridgeProcess
from support.drone_double import DroneDouble
from support.forge_double import Delivery, ForgeDouble

from ansible_collections.coopcloud.ci.plugins.module_utils._bridge import (
    BridgeConfig,
    ConfigError,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._bridge import main as bridge_main
from ansible_collections.coopcloud.ci.plugins.module_utils._trigger import is_near_miss

SECRET = "webhook-s3cret"
FORGE_TOKEN = "forge-t0ken-xyz"
DRONE_TOKEN = "drone-t0ken-xyz"
SHA = "c0ffee" + "1" * 34
FORK_SHA = "f0f0f0" + "2" * 34


@pytest.fixture
def forge():
    with ForgeDouble(token=FORGE_TOKEN) as double:
        double.add_repo("coop", "recipe")
        double.set_permission("coop", "recipe", "alice", "write")
        double.set_permission("coop", "recipe", "dora", "admin")
        double.user("bob")  # a user of the forge: read access to the public repository
        yield double
        double.check()


@pytest.fixture
def drone():
    with DroneDouble(token=DRONE_TOKEN) as double:
        double.add_repo("coop", "recipe")
        yield double


@pytest.fixture
def bridge(forge, drone, tmp_path):
    with BridgeProcess(forge, drone, tmp_path / "bridge", SECRET, allow="carol") as proc:
        yield proc
        log = proc.log()
        assert not any(s in log for s in (SECRET, FORGE_TOKEN, DRONE_TOKEN)), "secret logged"
        assert "HTTP Request" not in log  # one line per delivery, not one per request


def bridge_calls(forge: ForgeDouble) -> list[str]:
    return [f"{e.method} {e.path}" for e in forge.exchanges]


def replies(forge: ForgeDouble, number: int) -> list[str]:
    return [
        c["body"]
        for c in forge.comments("coop", "recipe", number)
        if c["user"]["login"] == "ci-bot"
    ]


def decisions(bridge: BridgeProcess) -> list[str]:
    return [w.split("=", 1)[1] for w in bridge.log().split() if w.startswith("decision=")]


def test_a_bad_or_missing_signature_is_refused_and_nothing_happens(forge, drone, bridge):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA)
    for secret, signature in (("wrong-secret", None), (None, None), (SECRET, "00" * 32)):
        d = forge.deliver_comment(
            bridge.hook_url, secret, "coop", "recipe", pr["number"], "!testme", signature=signature
        )
        assert d.response.status_code == 401, d.response.text
    assert drone.builds == [] and drone.exchanges == []
    assert bridge_calls(forge) == []  # not even a look-up
    assert decisions(bridge) == ["rejected"] * 3


def test_a_cold_run_from_a_writer_and_redeliveries_make_exactly_one_build(forge, drone, bridge):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA, head_ref="fix-db")
    first = forge.deliver_comment(
        bridge.hook_url, SECRET, "coop", "recipe", pr["number"], " !testme\n"
    )
    assert first.response.status_code == 200, first.response.text
    assert first.response.json()["decision"] == "built"
    [build] = drone.builds
    assert build["after"] == SHA and build["ref"] == f"refs/pull/{pr['number']}/head"
    assert build["params"] == {
        "CCCI_MODE": "cold",
        "CCCI_PR": str(pr["number"]),
        "CCCI_HEAD_REF": "fix-db",
        "CCCI_HEAD_REPO": "coop/recipe",
        "CCCI_HEAD_SHA": SHA,
        "CCCI_COMMENT": str(first.payload["comment"]["id"]),
        "CCCI_COMMENTER": "alice",
    }
    [reply] = replies(forge, pr["number"])
    assert "**cold** lane" in reply and drone.build_url("coop", "recipe", 1) in reply
    # The forge sends the same delivery again; an admin presses "Replay" (Gitea resends the
    # stored payload under a new delivery id): the same comment, so no second build.
    again = forge.redeliver(bridge.hook_url, first)
    headers = {**first.headers, "X-Gitea-Delivery": "replayed-1", "X-Gogs-Delivery": "replayed-1"}
    replay = forge.redeliver(
        bridge.hook_url, Delivery("replayed-1", headers, first.body, first.response)
    )
    assert again.response.json()["decision"] == replay.response.json()["decision"] == "duplicate"
    assert len(drone.builds) == 1 and len(replies(forge, pr["number"])) == 1
    assert len(forge.requests_to("POST", "/comments")) == 1


def test_who_may_start_a_run(forge, drone, bridge):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA)
    n = pr["number"]
    refused = forge.deliver_comment(
        bridge.hook_url, SECRET, "coop", "recipe", n, "!testme", commenter="bob"
    )
    assert refused.response.json()["decision"] == "refused"
    assert drone.builds == []
    [reply] = replies(forge, n)
    assert reply.startswith("@bob: only people with write access") and "read" in reply
    assert (
        forge.requests_to("GET", "/collaborators/bob/permission")[0].answer["permission"] == "read"
    )
    # An admin may; so may someone on the allow-list who has no access at all.
    forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", n, "!testme", commenter="dora")
    forge.user("carol")
    forge.deliver_comment(
        bridge.hook_url, SECRET, "coop", "recipe", n, "!testme --quick", commenter="carol"
    )
    assert [b["params"]["CCCI_COMMENTER"] for b in drone.builds] == ["dora", "carol"]
    assert decisions(bridge) == ["refused", "built", "built"]


def test_near_misses_get_told_what_is_accepted_and_the_rest_is_ignored(forge, drone, bridge):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA)
    n = pr["number"]
    for text in ("!testme --quik", "!testme quick", "!TESTME"):
        d = forge.deliver_comment(
            bridge.hook_url, SECRET, "coop", "recipe", n, text, commenter="bob"
        )
        assert d.response.json()["decision"] == "near-miss"
    said = replies(forge, n)
    assert len(said) == 3 and all(
        "`!testme --quick`" in r and "nothing was started" in r for r in said
    )
    assert "`!testme --quik`" in said[0]
    issue = forge.add_issue("coop", "recipe")
    closed = forge.add_pull("coop", "recipe", head_sha=SHA, state="closed")
    ignored = [
        forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", n, "please !testme"),
        forge.deliver_comment(
            bridge.hook_url, SECRET, "coop", "recipe", n, "!testme", action="edited"
        ),
        forge.deliver_comment(
            bridge.hook_url, SECRET, "coop", "recipe", n, "!testme", action="deleted"
        ),
        forge.deliver_comment(
            bridge.hook_url, SECRET, "coop", "recipe", issue["number"], "!testme"
        ),
        forge.deliver_comment(
            bridge.hook_url, SECRET, "coop", "recipe", closed["number"], "!testme"
        ),
        forge.deliver_comment(
            bridge.hook_url,
            SECRET,
            "coop",
            "recipe",
            n,
            "!testme\n\n<!-- ccci-bridge -->",
            commenter="dora",
        ),
    ]
    assert [d.response.json()["decision"] for d in ignored] == ["ignored"] * 6
    assert drone.builds == [] and len(replies(forge, n)) == 3
    # No permission look-up for a near miss or anything ignored.
    assert forge.requests_to("GET", "/permission") == []


def test_a_fork_pull_request_builds_the_fork_head_in_the_quick_lane(forge, drone, bridge):
    pr = forge.add_pull(
        "coop", "recipe", head_sha=FORK_SHA, head_ref="mal-fix", head_repo="mallory/recipe"
    )
    d = forge.deliver_comment(
        bridge.hook_url,
        SECRET,
        "coop",
        "recipe",
        pr["number"],
        "!testme \t --quick",
        commenter="alice",
        flavour="forgejo",
    )
    assert d.response.json()["decision"] == "built"
    [build] = drone.builds
    assert build["after"] == FORK_SHA
    assert build["ref"] == f"refs/pull/{pr['number']}/head"  # the base repository has it
    assert {k: build["params"][k] for k in ("CCCI_MODE", "CCCI_HEAD_REF", "CCCI_HEAD_REPO")} == {
        "CCCI_MODE": "quick",
        "CCCI_HEAD_REF": "mal-fix",
        "CCCI_HEAD_REPO": "mallory/recipe",
    }
    [reply] = replies(forge, pr["number"])
    assert "**quick** lane: lower confidence" in reply and "never gates merge" in reply
    assert drone.build_url("coop", "recipe", 1) in reply


def test_forge_or_drone_unreachable_answers_5xx_then_a_retry_does_everything_once(
    forge, drone, bridge
):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA)
    n = pr["number"]
    # 1. The forge is down: bounded tries, a clear line, 503; nothing done.
    forge.down()
    started = time.monotonic()
    d = forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", n, "!testme")
    assert d.response.status_code == 503 and time.monotonic() - started < 5
    assert "bridge: forge unreachable (try 3 of 3): ConnectError" in bridge.log()
    assert "decision=failed" in bridge.log() and drone.builds == []
    forge.up()
    # 2. Drone is down: the permission and the head were read, no build, no reply.
    drone.down()
    assert forge.redeliver(bridge.hook_url, d).response.status_code == 503
    assert "bridge: drone unreachable (try 3 of 3)" in bridge.log()
    assert replies(forge, n) == []
    drone.up()
    # 3. Drone fails once (then makes the build on the next try), the reply fails every try.
    drone.fail_next(1, 500, match="POST")
    forge.fail_next(3, 502, match="POST /api/v1/repos/coop/recipe/issues")
    assert forge.redeliver(bridge.hook_url, d).response.status_code == 503
    assert len(drone.builds) == 1 and replies(forge, n) == []
    # 4. Everything is back: the reply is posted, the build is not made again.
    ok = forge.redeliver(bridge.hook_url, d)
    assert ok.response.status_code == 200, bridge.log()
    assert len(drone.builds) == 1 and len(replies(forge, n)) == 1
    assert forge.redeliver(bridge.hook_url, d).response.json()["decision"] == "duplicate"
    assert len(drone.builds) == 1 and len(replies(forge, n)) == 1


def test_a_build_whose_answer_was_lost_is_found_not_doubled(forge, drone, bridge):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA)
    # Drone makes the build but its answer is lost (a 502 from a proxy): the bridge must
    # find the build in Drone's list instead of making another.
    drone.lose_next_answers(1)
    d = forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", pr["number"], "!testme")
    assert d.response.status_code == 200, bridge.log()
    assert len(drone.builds) == 1 and len(drone.requests_to("POST", "/builds")) == 1
    assert drone.requests_to("GET", "/builds")  # it looked
    assert f"Build #1: {drone.build_url('coop', 'recipe', 1)}" in replies(forge, pr["number"])[0]


def test_the_bridge_killed_and_restarted_loses_nothing_and_doubles_nothing(forge, drone, bridge):
    pr = forge.add_pull("coop", "recipe", head_sha=SHA)
    n = pr["number"]
    first = forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", n, "!testme")
    assert first.response.json()["decision"] == "built"
    # Second comment: the build is made, the reply fails, then the bridge is SIGKILLed.
    forge.fail_next(3, 503, match="POST /api/v1/repos/coop/recipe/issues")
    second = forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", n, "!testme --quick")
    assert second.response.status_code == 503
    assert len(drone.builds) == 2 and len(replies(forge, n)) == 1
    bridge.kill()
    bridge.start()
    for d in (first, second, first, second):
        assert forge.redeliver(bridge.hook_url, d).response.status_code == 200
    third = forge.deliver_comment(bridge.hook_url, SECRET, "coop", "recipe", n, "!testme")
    assert third.response.json()["decision"] == "built"
    assert [b["params"]["CCCI_MODE"] for b in drone.builds] == ["cold", "quick", "cold"]
    said = replies(forge, n)
    assert len(said) == 3 and "Build #2" in said[1] and "**quick**" in said[1]
    records = sorted((bridge.state_dir / "comments").glob("*.json"))
    assert len(records) == 3 and all(json.loads(p.read_text())["done"] for p in records)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in records)


def test_health_and_settings(forge, drone, bridge, tmp_path):
    assert httpx.get(f"{bridge.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(bridge.hook_url).status_code == 405
    too_big = httpx.post(bridge.hook_url, content=b"x" * (2 << 20))
    assert too_big.status_code == 413


@pytest.mark.parametrize(
    ("text", "near"),
    [
        ("!testme --quik", True),
        ("!testme quick", True),
        ("  !TESTME\n", True),
        ("!testme\n--quick", True),
        ("!testme", False),
        ("!testme --quick", False),
        ("please !testme", False),
        ("LGTM", False),
        (None, False),
    ],
)
def test_the_near_miss_rule(text, near):
    assert is_near_miss(text) is near


def test_settings_from_a_file_and_the_environment(tmp_path, capsys):
    path = tmp_path / "bridge.env"
    path.write_text(
        "# the role writes this file\n"
        'CCCI_BRIDGE_SECRET="a\\"b\\$c"\n'
        "CCCI_BRIDGE_FORGE_URL=https://git.example.org/\n"
        "CCCI_BRIDGE_FORGE_TOKEN='ft'\n"
        "CCCI_BRIDGE_DRONE_URL=https://drone.example.org\n"
        "CCCI_BRIDGE_DRONE_TOKEN=from-file\n"
        "CCCI_BRIDGE_ALLOW=carol, dave\n"
        f"CCCI_BRIDGE_STATE_DIR={tmp_path}/bridge-state\n"
    )
    (tmp_path / "bridge-state").mkdir()
    config = BridgeConfig.load({"CCCI_BRIDGE_DRONE_TOKEN": "env-wins"}, str(path))
    assert (config.secret, config.forge_token, config.drone_token) == ('a"b$c', "ft", "env-wins")
    assert config.forge_url == "https://git.example.org" and config.allow == {"carol", "dave"}
    assert "env-wins" not in repr(config) and "ft" not in repr(config)
    assert bridge_main(["--check", "--config", str(path)], env={}) == 0
    # a mistyped state dir: refused in one line, and not created
    typo = tmp_path / "bridge-stat"
    assert bridge_main(["--check", "--config", str(path)],
                       env={"CCCI_BRIDGE_STATE_DIR": str(typo)}) == 2  # fmt: skip
    assert f"CCCI_BRIDGE_STATE_DIR {typo} is not a directory" in capsys.readouterr().err
    assert not typo.exists()
    assert bridge_main(["--check"], env={"CCCI_BRIDGE_SECRET": "s3cr3t"}) == 2
    err = capsys.readouterr().err
    assert "CCCI_BRIDGE_FORGE_URL" in err and "s3cr3t" not in err
    path.write_text("CCCI_BRIDGE_SECRET\n")
    with pytest.raises(ConfigError, match=r"bridge.env:1: expected KEY=value"):
        BridgeConfig.load({}, str(path))
    env = {f"CCCI_BRIDGE_{k}": "x" for k in ("SECRET", "FORGE_URL", "FORGE_TOKEN", "DRONE_URL")}
    with pytest.raises(ConfigError, match="LISTEN must be HOST:PORT"):
        BridgeConfig.load({**env, "CCCI_BRIDGE_DRONE_TOKEN": "x", "CCCI_BRIDGE_LISTEN": "8089"})
