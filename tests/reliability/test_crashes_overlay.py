"""Crashes of the overlay mechanism (issue 14): SIGKILL ``warm_canonical`` at each crash
point of plugins/module_utils/_overlay.py; nothing known-good is lost and the next call
(what the next run's "bring it to rest first" does) leaves the canonical exactly at rest.

One canonical (notes: two volumes, so a put-back can be killed between them) is seeded
once for the module, on overlay volumes, from the session's green cold run of its latest
tag (tests/support/seeds.py). Each case
kills one ``ansible localhost -m coopcloud.ci.warm_canonical`` process group at its point
(``CCCI_PAUSE_AT``, as tests/reliability/test_crashes.py does for whole plays), checks
what the kill left, then recovers with ``state=idle`` and checks the canonical at rest:
idle, undeployed, every volume's merged view equal to the snapshot manifest's tree
digest, the registry agreeing with the manifest, nothing left in the upper dirs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.ansible import ROOT, run_module
from support.warmbed import BIN, NOTES, Bed, Play, at_rest, play_env, run_id

from ansible_collections.coopcloud.ci.plugins.module_utils import _overlay
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore

pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.xdist_group("test_crashes_ov")]

MODULE = "coopcloud.ci.warm_canonical"


@pytest.fixture(scope="module")
def bed(examples_root, seeds, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crashes-overlay")
    made = Bed.make(tmp, examples_root, f"o{os.urandom(3).hex()}", ["install"])
    try:
        seeds.adopt_into(made, NOTES)
        yield made
    finally:
        made.remove_all((NOTES,))


def kill_at(bed: Bed, point: str, args: dict) -> Play:
    """``warm_canonical`` with ``args`` in its own session, killed at ``point``."""
    rid = run_id()
    pause = bed.tmp / f"pause-{rid}"
    pause.mkdir()
    log = bed.tmp / f"module-{rid}.log"
    args = {"recipe": NOTES, "state_dir": str(bed.state_dir), "domain_suffix": bed.suffix,
            "run_id": rid, **args}  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "ansible"), "localhost", "-i", str(ROOT / "inventory" / "local.yml"),
             "-m", MODULE, "-a", json.dumps(args)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=play_env(CCCI_PAUSE_AT=point, CCCI_PAUSE_DIR=str(pause),
                         CCCI_PAUSE_TIMEOUT="600"),
        )  # fmt: skip
    play = Play(f"{MODULE} {args['state']} {rid}", proc, log, pause, point)
    play.wait_point(120)
    play.kill()
    return play


def idle(bed: Bed, **more) -> dict:
    res = run_module(MODULE, {"recipe": NOTES, "state": "idle", "state_dir": str(bed.state_dir),
                              "domain_suffix": bed.suffix, "run_id": run_id(), **more})  # fmt: skip
    assert res.rc == 0, res.last
    return res.last


def uppers(bed: Bed) -> dict[str, list[str]]:
    ov = _overlay.Overlay(str(bed.state_dir), NOTES)
    return {
        short: sorted(os.listdir(ov.upper(short)))
        for short in sorted(os.listdir(ov.scratch))
        if os.path.isdir(ov.upper(short))
    }


def new_snapshot(bed: Bed) -> str:
    """A green run's newer snapshot in the slot (the known-good trees plus a file)."""
    store = SnapshotStore(str(bed.state_dir), NOTES)
    manifest = store.manifest()
    ov = _overlay.Overlay(str(bed.state_dir), NOTES)
    dirs = {}
    for short in manifest["volumes"]:
        dirs[short] = bed.tmp / f"next-{short}"
        shutil.rmtree(dirs[short], ignore_errors=True)
        shutil.copytree(ov.lower(short), dirs[short], symlinks=True)
        (dirs[short] / "promoted.txt").write_text("the next known-good\n")
    store.take({s: str(p) for s, p in dirs.items()}, version=manifest["version"],
               commit=manifest["commit"])  # fmt: skip
    return store.manifest_digest()


def test_overlay_crash_points_lose_nothing_and_the_next_call_recovers(bed, docker_client):
    client = docker_client
    proof = bed.proof(client, NOTES)
    assert at_rest(proof) == [], at_rest(proof)
    registry = bed.registry(NOTES)
    assert registry["put_back"] == {"mechanism": "overlay", "reason": None}, registry
    volumes = {v.name: v.attrs for v in client.volumes.list(
        filters={"label": f"com.docker.stack.namespace={bed.stack(NOTES)}"})}  # fmt: skip
    assert len(volumes) == 2 and all(a["Options"]["type"] == "overlay" for a in volumes.values())
    store = SnapshotStore(str(bed.state_dir), NOTES)

    # 1. discard: a dead quick run left writes in both upper dirs; killed between the two
    Registry(str(bed.state_dir), NOTES).set_status("quick", "dead00")
    for upper in bed.mounts(client, NOTES).values():
        (upper / "left-by-a-dead-run").write_bytes(os.urandom(4096))
    kill_at(bed, "overlay.discarding", {"state": "idle"})
    assert bed.registry(NOTES)["status"] == "restoring"
    left = uppers(bed)
    assert sorted(len(names) for names in left.values()) == [0, 1], left  # one discarded
    store.verify()
    out = idle(bed)
    assert out["put_back"]["mechanism"] == "overlay", out
    assert out["restored"] == [s for s, names in left.items() if names], out  # the rest
    assert out["put_back"]["bytes_discarded"] == 4096, out
    assert at_rest(bed.proof(client, NOTES)) == []
    assert all(names == [] for names in uppers(bed).values())

    # 2. re-extract (the sweep's verify): a known-good tree edited by hand
    ov = _overlay.Overlay(str(bed.state_dir), NOTES)
    short = sorted(bed.volume_names(client, NOTES))[0]
    (Path(ov.lower(short)) / "edited-by-hand").write_text("not the known-good\n")
    kill_at(bed, "overlay.re-extracting", {"state": "idle", "verify": True})
    store.verify()
    # the edit changed the tree's root (its mtime): the merged view differs, a put-back
    # is under way
    assert bed.registry(NOTES)["status"] == "restoring"
    out = idle(bed, verify=True)
    assert out["reextracted"] == [short], out
    assert at_rest(bed.proof(client, NOTES)) == []

    # 3./4. promotion: the new known-good trees built but not swapped in, then swapped in
    # but the registry not yet seeded; each time the next idle completes the seeding
    for point in ("overlay.lower-built", "overlay.lower-swapped"):
        digest = new_snapshot(bed)
        kill_at(bed, point, {"state": "seeded"})
        reg = bed.registry(NOTES)
        assert reg["status"] == "seeding" and reg["snapshot_digest"] != digest, reg
        store.verify()
        origin = ov.origin() or {}
        assert (origin.get("manifest_digest") == digest) is (point == "overlay.lower-swapped")
        out = idle(bed)
        assert out["completed_seeding"] is True, out
        after = bed.proof(client, NOTES)
        assert at_rest(after) == [], at_rest(after)
        assert after["registry"]["snapshot_digest"] == digest
        left = [
            n
            for n in os.listdir(bed.state_dir / NOTES)
            if n.startswith(("known-good.", "snapshot."))
        ]
        assert left == [], left  # no known-good.tmp-* / .old-* / snapshot.* leftovers
