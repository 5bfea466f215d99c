"""The operator plays on the real swarm: restore.yml, status.yml, reap.yml.

Each test works under a domain suffix and a state dir of its own. The canonical of the
restore test is seeded the way production seeds it: a green cold run of the latest tag
(promote on green). The reap test builds cold runs by hand - real services and volumes
carrying a cold run's stack namespace label - and limits the reap to their run ids, so
other tests' cold runs on the same swarm are never judged.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support import volumes
from support.ansible import dump, run_module, run_playbook
from support.keycloak_double import KeycloakDouble

from ansible_collections.coopcloud.ci.plugins.module_utils._lock import AppLock
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import RunRecord

pytestmark = pytest.mark.swarm

RECIPE = "custom-html"
NAMESPACE = "com.docker.stack.namespace"


def play(name: str, tmp: Path, args: dict, check: bool = False):
    private = tmp / f"runner-{name}-{os.urandom(3).hex()}"
    private.mkdir()
    return run_playbook(name, args, check=check, private_dir=private)


@pytest.fixture
def catalog(tmp_path):
    root = tmp_path / "catalog"
    (root / RECIPE).mkdir(parents=True)
    (root / RECIPE / "recipe.yml").write_text(
        f"recipe: {RECIPE}\nwarm_canonical: true\nstages: [install, serving]\n"
        "http: {service: app, port: 80}\n"
        'health: {path: /index.html, status: [200], body: "<h1>", timeout: 120, interval: 2}\n'
    )
    return root


# ------------------------------------------------------------------------------ restore


@pytest.mark.slow
def test_restore_brings_back_the_known_good_bytes_and_status_shows_it(
    docker_client, examples, examples_root, state_dir, catalog, unique, tmp_path, cleanup_stacks
):
    suffix = f"{unique}.ccci.test"
    stack = stack_name(canonical_domain(RECIPE, suffix))
    cleanup_stacks.append(stack)
    run_id = os.urandom(3).hex()
    cleanup_stacks.append(stack_name(cold_domain(RECIPE, run_id, suffix)))
    latest = examples[RECIPE]["latest"]
    common = {"ccci_state_dir": str(state_dir), "ccci_catalog_dir": str(catalog)}

    # no canonical yet: refused, nothing made
    res = play("restore.yml", tmp_path, {"recipe": RECIPE, **common})
    assert res.rc != 0
    assert f"there is no canonical for {RECIPE}" in res.stdout
    assert not (state_dir / RECIPE / "lock").exists()

    # seed it: a green cold run of the latest tag
    res = play(
        "cold.yml",
        tmp_path,
        {"recipe": RECIPE, "ref": latest, "ccci_recipes_dir": str(examples_root),
         "ccci_domain_suffix": suffix, "ccci_access": "published", "ccci_fetch": False,
         "ccci_run_id": run_id, **common},
    )  # fmt: skip
    assert res.rc == 0, dump(res)
    registry = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    assert registry["promoted_by"] == run_id
    manifest = json.loads((state_dir / RECIPE / "snapshot" / "manifest.json").read_text())
    known_good = manifest["volumes"]["content"]["tree_digest"]
    mount = volumes.write_dir(docker_client, f"{stack}_content")  # an overlay's upper dir
    assert volumes.tree(docker_client, f"{stack}_content") == known_good

    # an operator's mistake: the canonical's data changes by hand
    (mount / "index.html").write_text("<h1>defaced</h1>\n")
    (mount / "extra.txt").write_bytes(os.urandom(64))
    assert volumes.tree(docker_client, f"{stack}_content") != known_good

    res = play("restore.yml", tmp_path, {"recipe": RECIPE, **common})
    assert res.rc == 0, dump(res)
    assert f"RESTORE RESULT: restored:{RECIPE} {latest}" in res.stdout
    assert volumes.tree(docker_client, f"{stack}_content") == known_good
    assert not (mount / "extra.txt").exists()
    assert not (state_dir / RECIPE / "lock").exists()
    after = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    assert after["status"] == "idle"
    assert after["version"] == registry["version"]
    assert after["snapshot_digest"] == registry["snapshot_digest"]
    assert not docker_client.services.list(filters={"label": f"{NAMESPACE}={stack}"})

    # status.yml shows it, as a table and as one JSON document
    res = play("status.yml", tmp_path, common)
    assert res.rc == 0, dump(res)
    table = res.task("Print the status table")["msg"]  # a list of lines
    row = next(line for line in table if line.startswith(f"{RECIPE} "))
    cells = row.split()
    assert cells[:5] == [RECIPE, "yes", latest, registry["commit"][:12], "idle"]
    assert run_id in cells
    assert "last runs:" in table
    dest = tmp_path / "status.json"
    res = play("status.yml", tmp_path, {**common, "format": "json", "dest": str(dest)})
    assert res.rc == 0, dump(res)
    doc = res.task("Print the status document")["msg"]
    assert json.loads(dest.read_text()) == doc
    (recipe_row,) = [r for r in doc["recipes"] if r["recipe"] == RECIPE]
    assert recipe_row["version"] == latest
    assert recipe_row["status"] == "idle"
    assert recipe_row["promoted_by"] == run_id
    assert recipe_row["snapshot"]["matches_registry"] is True
    assert (
        recipe_row["snapshot"]["bytes"]
        == (state_dir / RECIPE / "snapshot" / "content.tar").stat().st_size
    )
    assert recipe_row["lock"] is None
    assert recipe_row["last_runs"][0]["run_id"] == run_id
    assert doc["disk"]["docker_root"]["free"] > 0

    # restore and redeploy: the canonical runs its known-good version again, serving
    (mount / "index.html").write_text("<h1>defaced again</h1>\n")
    res = play(
        "restore.yml",
        tmp_path,
        {"recipe": RECIPE, "redeploy": True, "ccci_recipes_dir": str(examples_root),
         "ccci_fetch": False, "ccci_access": "published", **common},
    )  # fmt: skip
    assert res.rc == 0, dump(res)
    assert "redeployed at " + canonical_domain(RECIPE, suffix) in res.stdout
    deployed = res.task("Redeploy the canonical at its known-good version")
    assert deployed["version"] == latest
    port = deployed["published_port"]
    body = httpx.get(f"http://127.0.0.1:{port}/index.html", timeout=10).text
    assert body.startswith("<h1>") and "defaced" not in body
    assert json.loads((state_dir / RECIPE / "canonical.json").read_text())["status"] == "deployed"
    assert docker_client.services.list(filters={"label": f"{NAMESPACE}={stack}"})

    # a corrupt snapshot: refused before anything is undeployed or deleted
    (mount / "extra.txt").write_text("operator data\n")
    archive = state_dir / RECIPE / "snapshot" / "content.tar"
    data = bytearray(archive.read_bytes())
    data[700] ^= 0xFF
    archive.write_bytes(bytes(data))
    res = play("restore.yml", tmp_path, {"recipe": RECIPE, **common})
    assert res.rc != 0
    assert "refusing to restore custom-html: its known-good snapshot does not verify" in res.stdout
    assert "content.tar" in res.stdout
    assert (mount / "extra.txt").read_text() == "operator data\n"
    assert (state_dir / RECIPE / "canonical.json").exists()
    assert not (state_dir / RECIPE / "lock").exists()
    assert json.loads((state_dir / RECIPE / "canonical.json").read_text())["status"] == "deployed"
    assert docker_client.services.list(filters={"label": f"{NAMESPACE}={stack}"})
    run_module(
        "coopcloud.ci.warm_canonical",
        {"recipe": RECIPE, "state": "absent", "confirm": True, "state_dir": str(state_dir),
         "domain_suffix": suffix},
    )  # fmt: skip


# ------------------------------------------------------------------------------ reap


def make_cold_run(client, recipe: str, run_id: str, suffix: str) -> str:
    """A cold run's leftovers: a service and a volume labelled with its stack."""
    stack = stack_name(cold_domain(recipe, run_id, suffix))
    labels = {NAMESPACE: stack}
    client.volumes.create(f"{stack}_content", labels=labels)
    subprocess.run(
        ["docker", "service", "create", "--detach", "--quiet", "--name", f"{stack}_app",
         "--label", f"{NAMESPACE}={stack}", "--container-label", f"{NAMESPACE}={stack}",
         "--mount", f"type=volume,source={stack}_content,target=/data",
         "--stop-grace-period", "1s", "ccci/busybox:latest", "sleep", "3600"],
        check=True, capture_output=True,
    )  # fmt: skip
    return stack


def leftovers(client, stack: str) -> dict[str, list[str]]:
    flt = {"label": f"{NAMESPACE}={stack}"}
    return {
        "services": [s.name for s in client.services.list(filters=flt)],
        "volumes": [v.name for v in client.volumes.list(filters=flt)],
    }


@pytest.fixture
def keycloak(monkeypatch):
    """The Keycloak double; its admin password reaches the plays through the environment
    only, as in production (CCCI_KEYCLOAK_ADMIN_PASSWORD)."""
    password = os.urandom(8).hex()
    monkeypatch.setenv("CCCI_KEYCLOAK_ADMIN_PASSWORD", password)
    with KeycloakDouble(admin_password=password) as double:
        yield double


def test_reap_removes_dead_runs_stale_locks_and_orphan_realms_keeps_live_ones(
    docker_client, state_dir, unique, tmp_path, cleanup_stacks, sleeper, keycloak
):
    suffix = f"{unique}.ccci.test"
    dead_id, live_id = os.urandom(3).hex(), os.urandom(3).hex()
    dead = make_cold_run(docker_client, RECIPE, dead_id, suffix)
    live = make_cold_run(docker_client, RECIPE, live_id, suffix)
    cleanup_stacks.extend([dead, live])
    # the dead run finished long ago; the live one is running in this process
    old = RunRecord.start(
        str(state_dir), dead_id, "cold", RECIPE, started_at="2026-01-01T00:00:00Z"
    )
    old.stage("install", "pass")
    old.finish(finished_at="2026-01-01T00:05:00Z")
    RunRecord.start(str(state_dir), live_id, "cold", RECIPE, pid=os.getpid())
    # a stale lock (its owner died) and a lock held by a live process
    AppLock(str(state_dir), "notes").acquire("5a1e00", timeout=0, owner_pid=sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    AppLock(str(state_dir), RECIPE).acquire("0a11fe", timeout=0, owner_pid=os.getpid())
    live_lock = (state_dir / RECIPE / "lock").read_bytes()
    # realms: the dead run's, an orphan of a run that left nothing else, the live run's,
    # and realms that are not CI realms
    orphan = os.urandom(3).hex()
    for realm in (f"{RECIPE}-{dead_id}", f"notes-{orphan}", f"{RECIPE}-{live_id}", "team-sso"):
        keycloak.add_realm(realm)
    realms_before = sorted(keycloak.realm_names())
    time.sleep(2)  # older than the grace below
    args = {
        "ccci_state_dir": str(state_dir),
        "ccci_reap_after_hours": 0.0003,  # about a second: the objects were just made
        "ccci_reap_run_ids": [dead_id, live_id],
        "ccci_keycloak_url": keycloak.base_url,
    }

    # check mode: says what would go, changes nothing
    res = play("reap.yml", tmp_path, args, check=True)
    assert res.rc == 0, dump(res)
    report = res.task("Report the reap")["msg"]
    assert f"would remove {dead}: run finished and inactive" in report
    assert f"kept {live}: its run record says running and pid {os.getpid()} runs" in report
    assert "would break notes: run 5a1e00" in report
    assert f"kept {RECIPE}: run 0a11fe" in report
    assert f"realms: would delete {RECIPE}-{dead_id}, notes-{orphan}" in report
    assert "REAP RESULT: ok:1 dead cold run(s), 1 stale lock(s), 2 realm(s) (check mode" in report
    assert sorted(keycloak.realm_names()) == realms_before
    assert leftovers(docker_client, dead)["services"] and leftovers(docker_client, dead)["volumes"]
    assert (state_dir / "notes" / "lock").exists()

    # for real
    res = play("reap.yml", tmp_path, args)
    assert res.rc == 0, dump(res)
    report = res.task("Report the reap")["msg"]
    assert f"removed {dead}" in report
    assert "broke notes: run 5a1e00" in report
    assert "REAP RESULT: ok:1 dead cold run(s), 1 stale lock(s), 2 realm(s)" in report
    assert leftovers(docker_client, dead) == {"services": [], "volumes": []}
    kept = leftovers(docker_client, live)
    assert kept["services"] == [f"{live}_app"] and kept["volumes"] == [f"{live}_content"]
    assert not (state_dir / "notes" / "lock").exists()
    assert (state_dir / RECIPE / "lock").read_bytes() == live_lock
    assert sorted(keycloak.realm_names()) == sorted(["master", f"{RECIPE}-{live_id}", "team-sso"])

    # again: nothing left to reap
    res = play("reap.yml", tmp_path, args)
    assert res.rc == 0, dump(res)
    assert "REAP RESULT: ok:0 dead cold run(s), 0 stale lock(s), 0 realm(s)" in res.stdout

    # without a Keycloak URL the realms are skipped, with a message
    res = play("reap.yml", tmp_path, {**args, "ccci_keycloak_url": ""})
    assert res.rc == 0, dump(res)
    assert "Keycloak realms: skipped, no ccci_keycloak_url" in res.stdout
    assert keycloak.realm_names() and f"{RECIPE}-{live_id}" in keycloak.realm_names()
