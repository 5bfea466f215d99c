"""The Docker engine stops or restarts in the middle of a quick run (issue 15, item 5).

On the two-node bed of scripts/multinode (restarting the machine's own engine would take
every other test down with it). The canonical of custom-html is seeded on the worker, as
in tests/integration/test_multinode.py: the host cannot see a node's volumes, so only the
worker's data goes through an engine's API as the bed intends. An outage is both engines
at once, the manager the plays talk to and the worker that runs the app and holds its
volume: on a single machine, the one engine is both. Each case starts a quick run held at
a crash point (``CCCI_PAUSE_AT``) inside a module at work, stops the engines, and then:

* ``restart``: starts them again and lets the run go on (the module meets restarted
  engines: its connections cut, the app's containers lost);
* ``stop-20``: lets the run go on with the engines stopped, and starts them 20 s later.

Each case asserts: the run ends ERROR (never FAIL: the change under test did nothing
wrong), exit non-zero, its record's error naming the engine; no stage is recorded as
failed; the next quick run of the recipe puts the canonical back and PASSes; the
known-good (registry, manifest, the volume's tree on the node) is exactly as before.
"""

from __future__ import annotations

import json
import os
import threading
import time

import docker
import pytest
from support.ansible import dump, run_playbook
from support.fixtures import environ, init_state, lane_vars
from support.multinode import (
    ADDRESS,
    KNOWN_GOOD_KEYS,
    ON_THE_BED,
    WORKER,
    bed,
    bed_up,
    record_of,
    sock,
    tree_on,
)

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    stack_name,
)

pytestmark = ON_THE_BED

HTML = "custom-html"
ENGINES = (sock("mn1"), sock("mn2"))

# (case, play, recipe, moment, outage): `moment` a crash point of _faults.POINTS (with
# @n, its n-th pass), `outage` a key of reliability/table.py's OUTAGES.
CASES = [
    ("upgrade, engine restarted", "quick", HTML, "deploy.converged@2", "restart"),
    ("upgrade, engine stopped 20 s", "quick", HTML, "deploy.converged@2", "stop-20"),
    ("put-back, engine restarted", "quick", HTML, "canonical.undeployed", "restart"),
    ("put-back, engine stopped 20 s", "quick", HTML, "canonical.undeployed", "stop-20"),
]
DOWN_FOR = {"restart": 0, "stop-20": 20}


@pytest.fixture(scope="module")
def seeded(examples, examples_root, tmp_path_factory):
    """The bed up and a canonical of custom-html seeded on the worker by a green cold run."""
    tmp = tmp_path_factory.mktemp("engine-restart")
    env = {
        "tmp": tmp,
        "state_dir": init_state(tmp / "state"),
        "recipes_dir": examples_root,
        "suffix": f"e{os.urandom(3).hex()}.ccci.test",
    }
    with bed_up():
        env["manager"] = docker.DockerClient(base_url=ENGINES[0])
        env["worker"] = docker.DockerClient(base_url=ENGINES[1])
        rid, res = play(env, "cold.yml", examples[HTML]["latest"],
                        ccci_constraints=[f"node.hostname == {WORKER}"])  # fmt: skip
        assert res.rc == 0, dump(res)
        assert record_of(env, rid)["verdict"] == "PASS"
        yield env


def play(env: dict, book: str, ref: str, **more):
    rid = os.urandom(3).hex()
    more.setdefault("ccci_published_host", ADDRESS[WORKER])  # host-mode ports: the app's node
    args = lane_vars(env["recipes_dir"], env["state_dir"], env["suffix"], HTML, ref, rid, **more)
    private = env["tmp"] / f"runner-{rid}"
    private.mkdir()
    return rid, run_playbook(book, args, private_dir=private)


def known_good(env: dict) -> dict:
    """The canonical as it rests: registry, manifest bytes, and its volume's tree on the worker."""
    registry = json.loads((env["state_dir"] / HTML / "canonical.json").read_text())
    manifest = (env["state_dir"] / HTML / "snapshot" / "manifest.json").read_bytes()
    stack = stack_name(canonical_domain(HTML, env["suffix"]))
    label = {"label": f"com.docker.stack.namespace={stack}"}
    return {
        "registry": {key: registry[key] for key in (*KNOWN_GOOD_KEYS, "status")},
        "manifest": manifest,
        "tree": tree_on(env["worker"], f"{stack}_content"),
        "known_good": json.loads(manifest)["volumes"]["content"]["tree_digest"],
        "services": [s.name for s in env["manager"].services.list(filters=label)],
    }


def held_run(env: dict, ref: str, moment: str, outage: str) -> tuple[str, object, float]:
    """A quick run held at ``moment``; the engines stopped there, then ``outage`` played."""
    pause_dir = env["tmp"] / f"pause-{os.urandom(3).hex()}"
    pause_dir.mkdir()
    marker = pause_dir / f"{moment}.reached"
    out: dict = {}

    def run() -> None:
        out["rid"], out["res"] = play(env, "quick.yml", ref)

    with environ(CCCI_PAUSE_AT=moment, CCCI_PAUSE_DIR=str(pause_dir), CCCI_PAUSE_TIMEOUT="600"):
        runner = threading.Thread(target=run)
        runner.start()
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert runner.is_alive() and time.monotonic() < deadline, f"{moment} never reached"
            time.sleep(0.1)
    started = time.monotonic()
    bed("stop", "mn2")
    bed("stop", "mn1")
    try:
        if outage == "restart":
            bed("start", "mn1")
            bed("start", "mn2")
            marker.unlink()  # the module goes on, against restarted engines
        else:
            marker.unlink()  # the module goes on, against no engine at all
            time.sleep(DOWN_FOR[outage])
    finally:
        if marker.exists():
            marker.unlink()
        bed("start", "mn1")  # idempotent: up whatever happened above
        bed("start", "mn2")
    runner.join(900)
    assert not runner.is_alive(), "the held run never ended"
    return out["rid"], out["res"], time.monotonic() - started


@pytest.fixture(scope="module")
def outcomes(seeded, examples):
    """Every case in turn on the one canonical: (before, the held run, the next run, after)."""
    ref = examples[HTML]["previous"]
    found = {}
    for case, _play, _recipe, moment, outage in CASES:
        before = known_good(seeded)
        rid, res, seconds = held_run(seeded, ref, moment, outage)
        held = (record_of(seeded, rid), res)
        next_rid, next_res = play(seeded, "quick.yml", ref)
        found[case] = {"before": before, "held": held, "seconds": seconds,
                       "next": (record_of(seeded, next_rid), next_res),
                       "after": known_good(seeded)}  # fmt: skip
        print(f"{case}: held run {held[0]['verdict']} in {seconds:.0f} s after the stop")
    return found


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_an_engine_outage_ends_the_run_error_and_the_next_run_passes(outcomes, case):
    out = outcomes[case]
    record, res = out["held"]
    assert res.rc != 0, dump(res)
    assert record["verdict"] == "ERROR", (record["verdict"], record["error"], record["stages"])
    assert "fail" not in record["stages"].values(), record["stages"]
    # the sentence names the engine: its socket, and the node when it is another node's
    assert "Docker engine" in record["error"], record["error"]
    assert any(engine in record["error"] for engine in ENGINES), record["error"]
    assert [seen["address"] for seen in record["engines"]] == list(ENGINES), record["engines"]

    record, res = out["next"]
    assert res.rc == 0, dump(res)
    assert (record["mode"], record["verdict"]) == ("quick", "PASS"), record
    assert record["engine_fault"] is False and record["error"] is None, record

    before, after = out["before"], out["after"]
    assert before["registry"]["status"] == after["registry"]["status"] == "idle"
    assert after["registry"] == before["registry"]
    assert after["manifest"] == before["manifest"]
    assert after["tree"] == after["known_good"] == before["known_good"]
    assert after["services"] == []
