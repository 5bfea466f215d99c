"""The Docker engine stops or restarts in the middle of a quick run (issue 15, item 5).

On the two-node bed of scripts/multinode (restarting the machine's own engine would take
every other test down with it). Two canonicals of custom-html, each in a state dir of its
own, are seeded on the worker, as in tests/integration/test_multinode.py: the host cannot
see a node's volumes, so only the worker's data goes through an engine's API as the bed
intends. An outage is both engines at once, the manager the plays talk to and the worker
that runs the app and holds its volume: on a single machine, the one engine is both.
Each outage is played once for two cases, one on each canonical: a quick run of each held
at its crash point (``CCCI_PAUSE_AT``) inside a module at work, the engines stopped once
both are held, and then:

* ``restart``: starts them again and lets the runs go on (the modules meet restarted
  engines: their connections cut, the apps' containers lost);
* ``stop-20``: lets the runs go on with the engines stopped, and starts them 20 s later.

Each case asserts: the run ends ERROR (never FAIL: the change under test did nothing
wrong), exit non-zero, its record's error naming the engine; no stage is recorded as
failed; the next quick run of the recipe puts the canonical back and PASSes; the
known-good (registry, manifest, the volume's tree on the node) is exactly as before.
The plays use the battery's catalog (tests/support/warmbed.py: the ``install`` and
``upgrade`` stages, health looked at every second): the warm layer is under test here,
not the example recipe's own tests.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest
from support.multinode import (
    ADDRESS,
    KNOWN_GOOD_KEYS,
    ON_THE_BED,
    WORKER,
    bed,
    bed_up,
    sock,
    tree_on,
)
from support.warmbed import Bed, make_catalog, run_id

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
#: The canonical each moment's runs use (an index into ``seeded["canonicals"]``): the two
#: cases of one outage never share a canonical.
CANONICAL = {"deploy.converged@2": 0, "canonical.undeployed": 1}
#: The bed's settings that bed_up() puts in the environment and a play must inherit
#: (Bed.start hands a play none of the CCCI_* variables of ours but those it is given).
BED_ENV = ("CCCI_NODE_ENGINES", "CCCI_HELPER_IMAGE")


@pytest.fixture(scope="module")
def seeded(examples, examples_root, tmp_path_factory):
    """The bed up and two canonicals of custom-html seeded on the worker, each by a green
    cold run in a state dir of its own (the two runs at once)."""
    tmp = tmp_path_factory.mktemp("engine-restart")
    canonicals = []
    for n in range(len(set(CANONICAL.values()))):
        one = Bed.make(tmp / f"c{n}", examples_root, f"e{os.urandom(3).hex()}",
                       ["install", "upgrade"])  # fmt: skip
        one.catalog = make_catalog(one.tmp / "catalog", ["install", "upgrade"], 120)
        one.deploy_timeout = 300  # the deploy after an outage waits for the swarm to re-form
        canonicals.append(one)
    with bed_up():
        env = {"canonicals": canonicals, "env": {key: os.environ[key] for key in BED_ENV},
               "manager": docker.DockerClient(base_url=ENGINES[0]),
               "worker": docker.DockerClient(base_url=ENGINES[1])}  # fmt: skip
        started = time.monotonic()
        seeding = [start(env, one, "cold.yml", examples[HTML]["latest"],
                         ccci_constraints=[f"node.hostname == {WORKER}"])
                   for one in canonicals]  # fmt: skip
        for one, (rid, running) in zip(canonicals, seeding, strict=True):
            assert running.wait(900) == 0, running.output()[-8000:]
            assert one.record(rid)["verdict"] == "PASS"
        print(f"two canonicals seeded in {time.monotonic() - started:.0f} s")
        yield env


def start(env: dict, one: Bed, book: str, ref: str, point: str | None = None, **more):
    """``book`` at ``ref`` on canonical ``one``'s state dir, started: (run id, play)."""
    rid = run_id()
    more.setdefault("ccci_published_host", ADDRESS[WORKER])  # host-mode ports: the app's node
    return rid, one.start(book, one.extravars(HTML, ref, rid, **more), point=point,
                          env=env["env"])  # fmt: skip


def known_good(env: dict, one: Bed) -> dict:
    """The canonical as it rests: registry, manifest bytes, and its volume's tree on the worker."""
    registry = one.registry(HTML)
    manifest = one.manifest_bytes(HTML)
    stack = one.stack(HTML)
    label = {"label": f"com.docker.stack.namespace={stack}"}
    return {
        "registry": {key: registry[key] for key in (*KNOWN_GOOD_KEYS, "status")},
        "manifest": manifest,
        "tree": tree_on(env["worker"], f"{stack}_content"),
        "known_good": json.loads(manifest)["volumes"]["content"]["tree_digest"],
        "services": [s.name for s in env["manager"].services.list(filters=label)],
    }


def held_runs(env: dict, cases: list[tuple], ref: str, outage: str) -> dict:
    """A quick run for each case, on its canonical, held at its moment; once all are held,
    the engines stopped there, then ``outage`` played. Each case's (run id, rc, output)."""
    runs = {case[0]: start(env, env["canonicals"][CANONICAL[case[3]]], "quick.yml", ref,
                           point=case[3])
            for case in cases}  # fmt: skip
    try:
        for _rid, running in runs.values():
            running.wait_point(600)
    except AssertionError:
        for _rid, running in runs.values():
            running.kill()
        raise
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # the two engines stop (and start) side by side
        list(pool.map(lambda node: bed("stop", node), ("mn2", "mn1")))
        try:
            if outage == "restart":
                list(pool.map(lambda node: bed("start", node), ("mn1", "mn2")))
                for _rid, running in runs.values():
                    running.marker().unlink()  # the modules go on, against restarted engines
            else:
                for _rid, running in runs.values():
                    running.marker().unlink()  # the modules go on, against no engine at all
                time.sleep(DOWN_FOR[outage])
        finally:
            for _rid, running in runs.values():
                running.marker().unlink(missing_ok=True)
            # idempotent: up whatever happened above
            list(pool.map(lambda node: bed("start", node), ("mn1", "mn2")))
    ended = {case: (rid, running.wait(900), running.output()) for case, (rid, running)
             in runs.items()}  # fmt: skip
    seconds = time.monotonic() - started
    print(f"{outage}: {len(runs)} held runs ended {seconds:.0f} s after the stop")
    return ended


@pytest.fixture(scope="module")
def outcomes(seeded, examples):
    """Each outage once, over one case of each canonical: (before, the held run, the next
    run, after) of every case."""
    ref = examples[HTML]["previous"]
    found = {}
    for outage in DOWN_FOR:
        cases = [case for case in CASES if case[4] == outage]
        ones = {case[0]: seeded["canonicals"][CANONICAL[case[3]]] for case in cases}
        before = {name: known_good(seeded, one) for name, one in ones.items()}
        held = held_runs(seeded, cases, ref, outage)
        started = time.monotonic()
        following = {name: start(seeded, one, "quick.yml", ref) for name, one in ones.items()}
        for name, (rid, running) in following.items():
            one = ones[name]
            rc = running.wait(900)  # its record is written by the end of the play
            found[name] = {
                "before": before[name],
                "held": (one.record(held[name][0]), held[name][1], held[name][2]),
                "next": (one.record(rid), rc, running.output()),
                "after": known_good(seeded, one),
            }
        print(f"{outage}: the next runs ended in {time.monotonic() - started:.0f} s")
    return found


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_an_engine_outage_ends_the_run_error_and_the_next_run_passes(outcomes, case):
    out = outcomes[case]
    record, rc, output = out["held"]
    assert rc != 0, output[-8000:]
    assert record["verdict"] == "ERROR", (record["verdict"], record["error"], record["stages"])
    assert "fail" not in record["stages"].values(), record["stages"]
    # the sentence names the engine: its socket, and the node when it is another node's
    assert "Docker engine" in record["error"], record["error"]
    assert any(engine in record["error"] for engine in ENGINES), record["error"]
    assert [seen["address"] for seen in record["engines"]] == list(ENGINES), record["engines"]

    record, rc, output = out["next"]
    assert rc == 0, output[-8000:]
    assert (record["mode"], record["verdict"]) == ("quick", "PASS"), record
    assert record["engine_fault"] is False and record["error"] is None, record

    before, after = out["before"], out["after"]
    assert before["registry"]["status"] == after["registry"]["status"] == "idle"
    assert after["registry"] == before["registry"]
    assert after["manifest"] == before["manifest"]
    assert after["tree"] == after["known_good"] == before["known_good"]
    assert after["services"] == []
