"""Two swarm nodes for real (SPEC §7, issue 18), on the bed of scripts/multinode.

One module-scoped bed: a manager (ccci-mn1) and a worker (ccci-mn2), each a dockerd in its
own namespaces whose data root the host's file system cannot see, so everything about
the worker's volumes must go through the worker's Docker API (docs/multinode.md). The
plays talk to the manager (``DOCKER_HOST``) and know the nodes' engines from
``CCCI_NODE_ENGINES``. The tests run in order on one canonical:

1. a green cold run whose app is placed on the worker seeds a canonical pinned to the
   worker (the snapshot taken there, the known-good restored there) and tears its own app
   down on both nodes;
2. a quick PASS and a quick FAIL on that canonical leave the worker's known-good tree
   exact and the registry and snapshot unmoved;
3. a remote restore killed once every archive is staged beside its volume on the worker
   leaves the old tree whole; the next restore puts the known-good back and clears up;
4. the worker drained: quick and restore stop with one sentence naming the node and the
   way back, and nothing is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from support.ansible import ROOT, dump, run_playbook
from support.fixtures import init_state, lane_vars
from support.multinode import (
    ADDRESS,
    KNOWN_GOOD_KEYS,
    ON_THE_BED,
    RUN,
    WORKER,
    bed_up,
    record_of,
    sock,
    tree_on,
)

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
)

pytestmark = ON_THE_BED

WORKER_ADDR = ADDRESS[WORKER]
HTML = "custom-html"
LABEL = "com.docker.stack.namespace"


@pytest.fixture(scope="module")
def bed(examples, examples_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    init_state(tmp / "state")
    with bed_up():
        yield {
            "tmp": tmp,
            "state_dir": tmp / "state",
            "recipes_dir": examples_root,
            "suffix": f"m{os.urandom(3).hex()}.ccci.test",
            "manager": docker.DockerClient(base_url=sock("mn1")),
            "worker": docker.DockerClient(base_url=sock("mn2")),
        }


def play(env: dict, book: str, recipe: str, ref: str | None, **more):
    rid = os.urandom(3).hex()
    # host-mode ports answer on the node the app runs on: the worker's address
    more.setdefault("ccci_published_host", WORKER_ADDR)
    args = lane_vars(env["recipes_dir"], env["state_dir"], env["suffix"], recipe, ref, rid, **more)
    private = env["tmp"] / f"runner-{rid}"
    private.mkdir()
    return rid, run_playbook(book, args, private_dir=private)


def slowest(res, n: int = 6) -> str:
    """The run's slowest tasks (for the test's output: where the bed's minutes go)."""
    found = []
    for path in (res.artifacts or Path("/nonexistent")).glob("job_events/*.json"):
        data = json.loads(path.read_text())
        if data.get("event") in ("runner_on_ok", "runner_on_failed"):
            found.append((data["event_data"].get("duration") or 0, data["event_data"]["task"]))
    return "; ".join(f"{task} {sec:.0f} s" for sec, task in sorted(found, reverse=True)[:n])


def registry_of(env: dict) -> dict:
    return json.loads((env["state_dir"] / HTML / "canonical.json").read_text())


def manifest_bytes(env: dict) -> bytes:
    return (env["state_dir"] / HTML / "snapshot" / "manifest.json").read_bytes()


def labelled(client, stack: str) -> dict:
    label = {"label": f"{LABEL}={stack}"}
    out = {"volumes": sorted(v.name for v in client.volumes.list(filters=label))}
    if client.info()["Swarm"].get("ControlAvailable"):
        out["services"] = [s.name for s in client.services.list(filters=label)]
        out["secrets"] = [s.name for s in client.secrets.list(filters=label)]
    return out


def at_rest(env: dict) -> dict:
    stack = stack_name(canonical_domain(HTML, env["suffix"]))
    manifest = json.loads(manifest_bytes(env))
    return {
        "registry": registry_of(env),
        "manifest": manifest_bytes(env),
        "tree": tree_on(env["worker"], f"{stack}_content"),
        "known_good": manifest["volumes"]["content"]["tree_digest"],
        "manager": labelled(env["manager"], stack),
        "worker_volumes": labelled(env["worker"], stack)["volumes"],
    }


def assert_unmoved(before: dict, after: dict) -> None:
    for key in KNOWN_GOOD_KEYS:
        assert after["registry"][key] == before["registry"][key], key
    assert after["registry"]["status"] == "idle"
    assert after["manifest"] == before["manifest"]
    assert after["tree"] == after["known_good"]  # the worker's volume is the known-good
    assert after["manager"]["services"] == [] and after["manager"]["volumes"] == []


def test_cold_run_on_the_worker_seeds_a_canonical_pinned_there(bed, examples):
    html = examples[HTML]
    started = time.monotonic()
    rid, res = play(
        bed, "cold.yml", HTML, html["latest"], ccci_constraints=[f"node.hostname == {WORKER}"]
    )
    print(f"cold run on the worker in {time.monotonic() - started:.0f} s: {slowest(res)}")
    assert res.rc == 0, dump(res)
    record = record_of(bed, rid)
    assert record["verdict"] == "PASS", record
    assert any(n.startswith("promote: promoted") for n in record["notes"]), record["notes"]

    # the cold app is gone from both nodes: no stack, volume or secret
    cold = stack_name(cold_domain(HTML, rid, bed["suffix"]))
    assert labelled(bed["manager"], cold) == {"volumes": [], "services": [], "secrets": []}
    assert labelled(bed["worker"], cold) == {"volumes": []}

    # the canonical is pinned to the worker, its snapshot was taken there
    worker_id = bed["worker"].info()["Swarm"]["NodeID"]
    registry = registry_of(bed)
    assert (registry["node"], registry["status"]) == (worker_id, "idle"), registry
    manifest = json.loads(manifest_bytes(bed))
    assert (manifest["node"], manifest["archiver"]) == (WORKER, "docker-engine-api")
    state = at_rest(bed)
    assert state["worker_volumes"] == [
        f"{stack_name(canonical_domain(HTML, bed['suffix']))}_content"
    ]
    assert state["manager"]["volumes"] == []  # never a second copy on the manager
    assert state["tree"] == state["known_good"]
    # the snapshot's file holds what the worker's volume holds
    assert (bed["state_dir"] / HTML / "snapshot" / "content.tar").stat().st_size > 1024


def test_quick_pass_and_fail_on_the_worker_leave_the_known_good_exact(bed, examples):
    html = examples[HTML]
    before = at_rest(bed)
    assert before["tree"] == before["known_good"]

    started = time.monotonic()
    rid, res = play(bed, "quick.yml", HTML, html["previous"])
    print(f"quick PASS on the worker in {time.monotonic() - started:.0f} s: {slowest(res)}")
    assert res.rc == 0, dump(res)
    record = record_of(bed, rid)
    assert (record["mode"], record["verdict"]) == ("quick", "PASS"), record
    assert record["stages"]["upgrade"] == "pass" and record["stages"]["serving"] == "pass"
    # the upgrade marker was written and read back on the worker, through its engine
    volume = f"{stack_name(canonical_domain(HTML, bed['suffix']))}_content"
    message = record["stage_details"]["upgrade"]["message"]
    assert f"in volume {volume} on node {WORKER} intact after the upgrade" in message, message
    assert_unmoved(before, at_rest(bed))

    started = time.monotonic()
    rid, res = play(bed, "quick.yml", HTML, html["broken_branch"])
    print(f"quick FAIL on the worker in {time.monotonic() - started:.0f} s: {slowest(res)}")
    assert res.rc != 0, dump(res)
    record = record_of(bed, rid)
    assert (record["mode"], record["verdict"]) == ("quick", "FAIL"), record
    assert record["stages"]["upgrade"] == "fail"
    assert_unmoved(before, at_rest(bed))


def on_worker(env: dict, volume: str, script: str) -> str:
    """Run ``script`` on the worker with ``volume``'s directory (beside ``_data``) at /p."""
    parent = os.path.dirname(env["worker"].api.inspect_volume(volume)["Mountpoint"])
    out = env["worker"].containers.run(
        "ccci/busybox:latest", ["sh", "-c", script], volumes={parent: {"bind": "/p", "mode": "rw"}},
        remove=True,
    )  # fmt: skip
    return out.decode()


KILLED_RESTORE = """
import sys
from ansible_collections.coopcloud.ci.plugins.module_utils._remote import app_snapshot
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore
import docker
app = app_snapshot(docker.from_env(), SnapshotStore(sys.argv[1], sys.argv[2]), sys.argv[3])
plan = app.plan_restore(None, True)
app.restore(plan["mounts"])
"""


def test_remote_restore_killed_midway_leaves_a_whole_tree(bed, tmp_path):
    before = at_rest(bed)
    domain = canonical_domain(HTML, bed["suffix"])
    volume = f"{stack_name(domain)}_content"
    on_worker(bed, volume, "echo dirt > /p/_data/dirt.txt")
    dirty = tree_on(bed["worker"], volume)
    assert dirty != before["known_good"]
    env = dict(os.environ, CCCI_PAUSE_AT="remote.staged", CCCI_PAUSE_DIR=str(tmp_path),
               PYTHONPATH=str(ROOT / "collections"))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RESTORE, str(bed["state_dir"]), HTML, domain], env=env
    )
    try:
        for _ in range(600):
            if (tmp_path / "remote.staged.reached").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "remote.staged.reached").exists(), proc.poll()
    finally:
        proc.kill()
        proc.wait()
    # killed with the new tree staged: the old one is whole in place, the new one beside it
    assert tree_on(bed["worker"], volume) == dirty
    assert on_worker(bed, volume, "ls -a /p").split() == [".", "..", ".ccci-staging", "_data"]

    _rid, res = play(bed, "restore.yml", HTML, None)
    assert res.rc == 0, dump(res)
    after = at_rest(bed)
    assert after["tree"] == before["known_good"]
    assert on_worker(bed, volume, "ls -a /p").split() == [".", "..", "_data"]
    helpers = bed["worker"].containers.list(all=True, filters={"label": "coopcloud.ci.helper"})
    assert helpers == []
    assert after["manifest"] == before["manifest"]


def test_worker_drained_stops_quick_and_restore_touching_nothing(bed, examples):
    html = examples[HTML]
    before = at_rest(bed)
    subprocess.run(
        ["docker", "-H", sock("mn1"), "node", "update", "--availability", "drain", WORKER],
        check=True,
        capture_output=True,
    )
    try:
        for book, ref in (("quick.yml", html["previous"]), ("restore.yml", None)):
            _rid, res = play(bed, book, HTML, ref)
            assert res.rc != 0, dump(res)
            text = res.stdout
            assert f"pinned to swarm node {WORKER}" in text, dump(res)
            assert "which is drained" in text
            assert f"docker node update --availability active {WORKER}" in text
            assert "no copy is made elsewhere" in text
            after = at_rest(bed)
            assert after["registry"] == before["registry"], book  # not even the status
            assert after["manifest"] == before["manifest"] and after["tree"] == before["tree"]
            assert after["manager"] == before["manager"]  # nothing seeded on the manager
            assert after["worker_volumes"] == before["worker_volumes"]
    finally:
        subprocess.run(
            ["docker", "-H", sock("mn1"), "node", "update", "--availability", "active", WORKER],
            check=True,
            capture_output=True,
        )


def test_the_default_engine_never_saw_the_bed(bed):
    """The plays ran against the bed only: nothing of this module's suffix on the default engine."""
    default = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    stack = stack_name(canonical_domain(HTML, bed["suffix"]))
    assert labelled(default, stack) == {"volumes": [], "services": [], "secrets": []}
    assert Path(RUN, "mn2", "docker.sock").exists()
