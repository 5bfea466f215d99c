"""Promote on green (SPEC WC5) through playbooks/cold.yml on the real swarm.

Every test seeds its canonical under a domain suffix of its own (``<unique>.ccci.test``),
so no other test or helper shares its ``warm-custom-html`` stack, and removes it
(``warm_canonical state=absent confirm=true``) at the end.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support import volumes
from support.ansible import dump, run_module, run_playbook

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
)

pytestmark = [pytest.mark.swarm, pytest.mark.slow]

RECIPE = "custom-html"


def cold(examples_root, state_dir: Path, suffix: str, run_id: str, tmp: Path, **more):
    args = {
        "recipe": RECIPE,
        "ccci_recipes_dir": str(examples_root),
        "ccci_state_dir": str(state_dir),
        "ccci_domain_suffix": suffix,
        "ccci_access": "published",
        "ccci_fetch": False,
        "ccci_run_id": run_id,
        **more,
    }
    private = tmp / f"runner-{run_id}"
    private.mkdir()
    return run_playbook("cold.yml", args, private_dir=private)


def record(state_dir: Path, run_id: str) -> dict:
    return json.loads((state_dir / "runs" / f"{run_id}.json").read_text())


def promote_notes(state_dir: Path, run_id: str) -> list[str]:
    return [n for n in record(state_dir, run_id)["notes"] if n.startswith("promote:")]


def volume_tree(client, name: str) -> str:
    """The tree digest of a volume's data (an overlay volume's merged view)."""
    return volumes.tree(client, name)


@pytest.fixture
def canonical(docker_client, state_dir, unique, cleanup_stacks):
    """Suffix, domain and stack of this test's canonical; removed afterwards."""
    suffix = f"{unique}.ccci.test"
    domain = canonical_domain(RECIPE, suffix)
    cleanup_stacks.append(stack_name(domain))
    yield {"suffix": suffix, "domain": domain, "stack": stack_name(domain)}
    run_module(
        "coopcloud.ci.warm_canonical",
        {"recipe": RECIPE, "state": "absent", "confirm": True, "state_dir": str(state_dir),
         "domain_suffix": suffix},
    )  # fmt: skip


def test_green_latest_seeds_then_older_and_red_do_not_move_it_and_green_reseeds(
    docker_client, examples, examples_root, state_dir, canonical, tmp_path, cleanup_stacks
):
    suffix = canonical["suffix"]
    registry_path = state_dir / RECIPE / "canonical.json"
    manifest_path = state_dir / RECIPE / "snapshot" / "manifest.json"
    latest = examples[RECIPE]["latest"]
    node = docker_client.info()["Swarm"]["NodeID"]
    runs = {name: hashlib.sha256(f"{name}{tmp_path}".encode()).hexdigest()[:6]
            for name in ("first", "older", "red", "again")}  # fmt: skip
    for run_id in runs.values():
        cleanup_stacks.append(stack_name(cold_domain(RECIPE, run_id, suffix)))

    # 1. the first green cold run at the latest tag seeds the canonical
    res = cold(examples_root, state_dir, suffix, runs["first"], tmp_path, ref=latest)
    assert res.rc == 0, dump(res)
    reg = json.loads(registry_path.read_text())
    manifest_bytes = manifest_path.read_bytes()
    manifest = json.loads(manifest_bytes)
    assert reg["version"] == latest
    assert reg["commit"] == examples[RECIPE]["tags"][latest]
    assert reg["promoted_by"] == runs["first"]
    assert reg["snapshot_digest"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert reg["status"] == "idle"
    assert reg["domain"] == canonical["domain"]
    assert reg["node"] == node
    assert manifest["version"] == latest and manifest["commit"] == reg["commit"]
    assert manifest["source"]["domain"] == cold_domain(RECIPE, runs["first"], suffix)
    # the canonical's volume holds exactly the snapshot's tree; the canonical is not running
    volume = f"{canonical['stack']}_content"
    labels = docker_client.volumes.get(volume).attrs["Labels"]
    assert labels["com.docker.stack.namespace"] == canonical["stack"]
    assert volume_tree(docker_client, volume) == (manifest["volumes"]["content"]["tree_digest"])
    assert not docker_client.api.services(
        filters={"label": f"com.docker.stack.namespace={canonical['stack']}"}
    )
    short = reg["commit"][:12]
    assert promote_notes(state_dir, runs["first"]) == [
        f"promote: promoted {latest} ({short}) to the canonical"
    ]
    # the teardown still removed the cold app, volumes included
    cold_stack = stack_name(cold_domain(RECIPE, runs["first"], suffix))
    assert not docker_client.volumes.list(
        filters={"label": f"com.docker.stack.namespace={cold_stack}"}
    )
    # the lock was released
    assert not (state_dir / RECIPE / "lock").exists()
    registry_bytes = registry_path.read_bytes()

    # 2. a green cold run at an older ref does not move it
    res = cold(examples_root, state_dir, suffix, runs["older"], tmp_path, ref="1.0.0+1.28")
    assert res.rc == 0, dump(res)
    assert registry_path.read_bytes() == registry_bytes
    assert manifest_path.read_bytes() == manifest_bytes
    assert promote_notes(state_dir, runs["older"]) == [
        "promote: not promoted: not the latest version"
    ]

    # 3. a red cold run never does
    res = cold(examples_root, state_dir, suffix, runs["red"], tmp_path,
               ref=examples[RECIPE]["broken_branch"])  # fmt: skip
    assert res.rc != 0, dump(res)
    assert record(state_dir, runs["red"])["verdict"] == "FAIL"
    assert registry_path.read_bytes() == registry_bytes
    assert manifest_path.read_bytes() == manifest_bytes
    assert promote_notes(state_dir, runs["red"]) == ["promote: not promoted: run not green"]

    # 4. a second green cold run at the latest re-seeds: promoted_by moves
    res = cold(examples_root, state_dir, suffix, runs["again"], tmp_path)
    assert res.rc == 0, dump(res)
    reg2 = json.loads(registry_path.read_text())
    manifest2_bytes = manifest_path.read_bytes()
    assert reg2["promoted_by"] == runs["again"]
    assert reg2["version"] == latest and reg2["status"] == "idle"
    assert reg2["snapshot_digest"] == hashlib.sha256(manifest2_bytes).hexdigest()
    assert reg2["first_seeded_at"] == reg["first_seeded_at"]
    assert [h["event"] for h in reg2["history"] if h["event"] != "status"][-2:] == [
        "seeded",
        "reseeded",
    ]
    manifest2 = json.loads(manifest2_bytes)
    assert volume_tree(docker_client, volume) == (manifest2["volumes"]["content"]["tree_digest"])


def test_recipe_not_enrolled_does_not_promote(
    docker_client, examples, examples_root, state_dir, canonical, unique, tmp_path, cleanup_stacks
):
    catalog = tmp_path / "catalog" / RECIPE
    catalog.mkdir(parents=True)
    source = Path(__file__).resolve().parents[2] / "catalog" / RECIPE / "recipe.yml"
    text = source.read_text().replace("warm_canonical: true", "warm_canonical: false")
    assert "warm_canonical: false" in text
    (catalog / "recipe.yml").write_text(text)
    cleanup_stacks.append(stack_name(cold_domain(RECIPE, unique, canonical["suffix"])))
    res = cold(examples_root, state_dir, canonical["suffix"], unique, tmp_path,
               ccci_catalog_dir=str(tmp_path / "catalog"))  # fmt: skip
    assert res.rc == 0, dump(res)
    assert promote_notes(state_dir, unique) == ["promote: not promoted: recipe not enrolled"]
    assert not (state_dir / RECIPE / "canonical.json").exists()
    assert not (state_dir / RECIPE / "snapshot").exists()
    assert not docker_client.volumes.list(
        filters={"label": f"com.docker.stack.namespace={canonical['stack']}"}
    )
