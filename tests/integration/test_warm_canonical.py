"""warm_canonical on the real swarm (SPEC WC2): seed, reattach, idle, restore, remove.

The canonical of each test lives under a domain suffix of its own (``<unique>.ccci.test``)
and a state dir of its own; it is removed with ``state=absent confirm=true`` afterwards.
The source of its known-good data is a plain app of the recipe (deployed, undeployed and
snapshotted by the collection's own modules), as a green cold run's app would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from support import volumes
from support.ansible import dump, run_module

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import tree_digest

pytestmark = [pytest.mark.swarm, pytest.mark.slow]

RECIPE = "custom-html"
MODULE = "coopcloud.ci.warm_canonical"


def call(args: dict, *, check: bool = False, diff: bool = False) -> dict:
    res = run_module(MODULE, {"recipe": RECIPE, **args}, check=check, diff=diff)
    out = res.last
    out["_dump"] = dump(res)
    out["_failed"] = res.tasks[-1]["event"] == "runner_on_failed"
    return out


def get(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=3)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def overlay() -> bool:
    """Seed on overlay volumes (the default); a test parametrizes False for the fallback."""
    return True


@pytest.fixture
def seeded(docker_client, examples, examples_root, state_dir, unique, cleanup_stacks, overlay):
    """A canonical seeded from a fresh app of the recipe at its latest version."""
    suffix = f"{unique}.ccci.test"
    source = f"src-{unique}.{suffix}"
    domain = canonical_domain(RECIPE, suffix)
    cleanup_stacks.extend([stack_name(source), stack_name(domain)])
    latest = examples[RECIPE]["latest"]
    commit = examples[RECIPE]["tags"][latest]
    common = {"state_dir": str(state_dir), "domain_suffix": suffix}
    res = run_module("coopcloud.ci.recipe_app", {
        "recipe": RECIPE, "domain": source, "version": latest,
        "recipes_dir": str(examples_root), "fetch": False,
    })  # fmt: skip
    assert res.rc == 0, dump(res)
    res = run_module("coopcloud.ci.recipe_app", {"domain": source, "state": "undeployed"})
    assert res.rc == 0, dump(res)
    res = run_module("coopcloud.ci.volume_snapshot", {
        "recipe": RECIPE, "domain": source, "state": "present", "state_dir": str(state_dir),
        "version": latest, "commit": commit,
    })  # fmt: skip
    assert res.rc == 0, dump(res)

    predicted = call({"state": "seeded", "run_id": unique, **common}, check=True)
    assert predicted["changed"] is True, predicted["_dump"]
    assert predicted["restored"] == ["content"]
    assert not (state_dir / RECIPE / "canonical.json").exists()
    assert not docker_client.volumes.list(
        filters={"label": f"com.docker.stack.namespace={stack_name(domain)}"}
    )
    out = call({"state": "seeded", "run_id": unique, "overlay": overlay, **common})
    assert out["changed"] is True and out["status"] == "idle", out["_dump"]
    yield {
        "suffix": suffix,
        "domain": domain,
        "stack": stack_name(domain),
        "common": common,
        "latest": latest,
        "commit": commit,
        "run_id": unique,
    }
    run_module(MODULE, {"recipe": RECIPE, "state": "absent", "confirm": True, **common})


def content_mount(client, stack: str) -> Path:
    """Where a run's writes are: ``_data`` while deployed, else the overlay's upper dir."""
    return volumes.write_dir(client, f"{stack}_content")


def content_tree(client, stack: str) -> str:
    return volumes.tree(client, f"{stack}_content")


def manifest_of(state_dir: Path) -> dict:
    return json.loads((state_dir / RECIPE / "snapshot" / "manifest.json").read_text())


def test_seeded_registry_and_idempotence(docker_client, seeded, state_dir):
    reg = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    manifest_bytes = (state_dir / RECIPE / "snapshot" / "manifest.json").read_bytes()
    assert reg["version"] == seeded["latest"] and reg["commit"] == seeded["commit"]
    assert reg["promoted_by"] == seeded["run_id"]
    assert reg["snapshot_digest"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert reg["node"] == docker_client.info()["Swarm"]["NodeID"]
    known = json.loads(manifest_bytes)["volumes"]["content"]["tree_digest"]
    assert content_tree(docker_client, seeded["stack"]) == known
    # at rest on an overlay volume: its options name the known-good tree and scratch dirs
    options = docker_client.api.inspect_volume(f"{seeded['stack']}_content")["Options"]
    assert options["type"] == "overlay" and "/known-good/volumes/content," in options["o"]
    assert reg["put_back"] == {"mechanism": "overlay", "reason": None}
    before = (state_dir / RECIPE / "canonical.json").read_bytes()
    again = call({"state": "seeded", "run_id": "abcdef", **seeded["common"]}, check=True)
    assert again["changed"] is False, again["_dump"]
    again = call({"state": "seeded", "run_id": "abcdef", **seeded["common"]})
    assert again["changed"] is False, again["_dump"]
    assert (state_dir / RECIPE / "canonical.json").read_bytes() == before

    info = call({"state": "info", "state_dir": str(state_dir), "verify": True})
    assert info["exists"] and info["at_rest"] and info["consistent"], info["_dump"]
    assert info["deployed"] is False
    assert info["domain"] == seeded["domain"] and info["stack"] == seeded["stack"]
    assert info["snapshot"]["verified"] is True
    assert info["snapshot"]["version"] == seeded["latest"]
    assert info["placement"] == [f"node.id == {reg['node']}"]


def test_marker_survives_undeploy_and_reattach_and_restore_brings_known_good_back(
    docker_client, seeded, state_dir, examples_root
):
    common = {**seeded["common"], "recipes_dir": str(examples_root), "fetch": False}
    registry_path = state_dir / RECIPE / "canonical.json"
    known = manifest_of(state_dir)["volumes"]["content"]["tree_digest"]
    publish = {"service": "app", "port": 80}
    label = {"label": f"com.docker.stack.namespace={seeded['stack']}"}

    predicted = call({"state": "deployed", "run_id": "a00001", "publish": publish, **common},
                     check=True, diff=True)  # fmt: skip
    assert predicted["changed"] is True and predicted["deploy"] is True, predicted["_dump"]
    assert predicted["diff"]["after"]["status"] == "deployed"
    assert not docker_client.api.services(filters=label)
    assert json.loads(registry_path.read_text())["status"] == "idle"

    up = call({"state": "deployed", "run_id": "a00001", "publish": publish, **common})
    assert up["changed"] is True, up["_dump"]
    assert up["status"] == "deployed" and up["registry"]["status_by"] == "a00001"
    assert up["version"] == seeded["latest"] and up["commit"] == seeded["commit"]
    assert [s["replicas_running"] for s in up["services"]] == [1]
    port = up["published_port"]
    spec = docker_client.api.services(filters=label)[0]["Spec"]
    constraints = spec["TaskTemplate"]["Placement"]["Constraints"]
    assert f"node.id == {up['node']}" in constraints
    # it serves the seeded data
    assert get(f"http://127.0.0.1:{port}/index.html").text.startswith("<h1>src-")

    again = call({"state": "deployed", "run_id": "a00001", "publish": publish, **common})
    assert again["changed"] is False, again["_dump"]

    # a marker written into the running canonical
    mount = content_mount(docker_client, seeded["stack"])
    marker = os.urandom(64).hex()
    (mount / "marker.txt").write_text(marker)
    assert get(f"http://127.0.0.1:{port}/marker.txt").text == marker

    # idle without restore: the app is gone, the volume and the marker are not
    down = call({"state": "idle", "run_id": "a00001", "restore": False, **common})
    assert down["changed"] is True and down["status"] == "idle", down["_dump"]
    assert down["restored"] == []
    assert not docker_client.api.services(filters=label)
    assert not docker_client.api.containers(all=True, filters=label)
    assert docker_client.volumes.get(f"{seeded['stack']}_content")
    mount = content_mount(docker_client, seeded["stack"])  # the upper dir, now unmounted
    assert (mount / "marker.txt").read_text() == marker
    same = call({"state": "idle", "run_id": "a00001", "restore": False, **common})
    assert same["changed"] is False, same["_dump"]

    # reattach keeps the data
    up = call({"state": "deployed", "run_id": "a00002", "publish": publish, **common})
    assert up["changed"] is True, up["_dump"]
    assert get(f"http://127.0.0.1:{up['published_port']}/marker.txt").text == marker

    # idle with restore: the marker is gone, the known-good tree is back
    predicted = call({"state": "idle", "run_id": "a00002", **common}, check=True)
    assert predicted["changed"] is True and predicted["restored"] == ["content"]
    assert docker_client.api.services(filters=label)  # check mode touched nothing
    down = call({"state": "idle", "run_id": "a00002", **common}, diff=True)
    assert down["changed"] is True and down["restored"] == ["content"], down["_dump"]
    assert down["diff"]["before"]["status"] == "deployed"
    assert down["diff"]["after"]["status"] == "idle"
    assert down["put_back"]["mechanism"] == "overlay", down["_dump"]
    assert down["put_back"]["bytes_discarded"] >= len(marker), down["_dump"]
    assert not (mount / "marker.txt").exists()
    assert content_tree(docker_client, seeded["stack"]) == known
    events = [(h["from"], h["to"]) for h in down["registry"]["history"][-2:]]
    assert events == [("deployed", "restoring"), ("restoring", "idle")]

    # at rest: idle again is ok, in check mode too
    for check in (True, False):
        again = call({"state": "idle", "run_id": "a00003", **common}, check=check)
        assert again["changed"] is False, again["_dump"]


def test_quick_purpose_always_restores(docker_client, seeded, state_dir, examples_root):
    common = {**seeded["common"], "recipes_dir": str(examples_root), "fetch": False}
    known = manifest_of(state_dir)["volumes"]["content"]["tree_digest"]
    up = call({"state": "deployed", "purpose": "quick", "run_id": "b00001", **common})
    assert up["status"] == "quick", up["_dump"]
    mount = content_mount(docker_client, seeded["stack"])
    (mount / "index.html").write_text("changed by a quick run\n")
    # a quick canonical cannot be handed to an operator's "deployed"
    refused = call({"state": "deployed", "run_id": "b00002", **common})
    assert refused["_failed"], refused["_dump"]
    assert "cannot go from quick to deployed" in refused["msg"]
    # restore=false is not honoured for a quick run's data
    down = call({"state": "idle", "run_id": "b00001", "restore": False, **common})
    assert down["status"] == "idle" and down["restored"] == ["content"], down["_dump"]
    assert content_tree(docker_client, seeded["stack"]) == known


@pytest.mark.parametrize("overlay", [False])
def test_fallback_restores_and_refuses_a_corrupt_snapshot_nothing_deleted(
    docker_client, seeded, state_dir
):
    """Overlay refused on purpose (ccci_canonical_overlay: false): plain volumes, and the
    known-good is put back by a verified restore, which refuses a corrupt snapshot."""
    common = seeded["common"]
    reg = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    assert reg["put_back"] == {
        "mechanism": "restore",
        "reason": "overlay volumes are turned off (ccci_canonical_overlay: false)",
    }
    assert not docker_client.api.inspect_volume(f"{seeded['stack']}_content")["Options"]
    assert not (state_dir / RECIPE / "known-good").exists()
    mount = content_mount(docker_client, seeded["stack"])
    (mount / "index.html").write_text("mutated\n")
    back = call({"state": "idle", "run_id": "c00000", **common})
    assert back["restored"] == ["content"] and back["put_back"]["mechanism"] == "restore"
    assert "turned off" in back["put_back"]["reason"], back["_dump"]
    known = manifest_of(state_dir)["volumes"]["content"]["tree_digest"]
    assert tree_digest(str(mount)) == known
    (mount / "index.html").write_text("mutated\n")
    archive = state_dir / RECIPE / "snapshot" / "content.tar"
    data = bytearray(archive.read_bytes())
    data[700] ^= 0xFF
    archive.write_bytes(bytes(data))
    out = call({"state": "idle", "run_id": "c00001", **common})
    assert out["_failed"] is True, out["_dump"]
    assert str(archive) in out["msg"] and "corrupt" in out["msg"]
    assert (mount / "index.html").read_text() == "mutated\n"
    assert archive.exists()
    reg = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    assert reg["status"] == "restoring" and reg["status_by"] == "c00001"
    # not at rest: a reattach is refused until the known-good is back
    refused = call({"state": "deployed", "run_id": "c00002", **common})
    assert refused["_failed"] and "not at rest" in refused["msg"], refused["_dump"]


def test_absent_needs_confirm_and_info_without_canonical(docker_client, seeded, state_dir):
    common = seeded["common"]
    refused = call({"state": "absent", **common})
    assert refused["_failed"] is True
    assert "without confirm=true" in refused["msg"]
    assert (state_dir / RECIPE / "canonical.json").exists()
    assert docker_client.volumes.get(f"{seeded['stack']}_content")

    predicted = call({"state": "absent", "confirm": True, **common}, check=True)
    assert predicted["changed"] is True and predicted["removed"]["registry"] is True
    assert (state_dir / RECIPE / "canonical.json").exists()
    gone = call({"state": "absent", "confirm": True, **common})
    assert gone["changed"] is True, gone["_dump"]
    assert gone["removed"]["volumes"] == [f"{seeded['stack']}_content"]
    assert not (state_dir / RECIPE / "canonical.json").exists()
    assert not (state_dir / RECIPE / "snapshot").exists()
    assert not docker_client.volumes.list(
        filters={"label": f"com.docker.stack.namespace={seeded['stack']}"}
    )
    again = call({"state": "absent", "confirm": True, **common})
    assert again["changed"] is False, again["_dump"]

    info = call({"state": "info", "state_dir": str(state_dir)})
    assert info["exists"] is False and info["registry"] is None, info["_dump"]
    assert info["snapshot"]["present"] is False and info["consistent"] is False
    missing = call({"state": "deployed", "state_dir": str(state_dir)})
    assert missing["msg"] == (
        f"recipe {RECIPE} has no canonical (no {state_dir}/{RECIPE}/canonical.json): a green "
        "cold run of its latest version seeds it"
    )
