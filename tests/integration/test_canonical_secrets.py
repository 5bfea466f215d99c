"""A canonical keeps the secrets its data was made with (issue 19), on the real swarm.

``dbkeep`` (tests/support/db_recipe.py) stores the digest of its generated
``db_password`` in its volume at first boot and will not start with another one, like a
database. A green cold run promotes its data; the canonical must then start with the
cold app's password: a quick PASS at another healthy ref, a quick FAIL at a broken ref
with the known-good put back, and after each the canonical reattached at its known-good
version starts. With ``ccci_driver=abra`` the abra stand-in's log shows that the values
inserted for the canonical are those inserted for the cold app, derived from the
recipe's key (compared as digests: no value is ever printed).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from support.ansible import dump, run_module, run_playbook
from support.db_recipe import NAME, make_catalog, make_dbkeep
from support.fixtures import init_state

from ansible_collections.coopcloud.ci.plugins.module_utils._appenv import SecretSpec
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._secretkey import derive

pytestmark = [pytest.mark.swarm, pytest.mark.slow]

STANDIN = Path(__file__).resolve().parents[1] / "support" / "abra_standin.py"


def play(book: str, env: dict, ref: str, rid: str) -> tuple:
    private = env["tmp"] / f"runner-{rid}"
    private.mkdir()
    args = {
        "recipe": NAME, "ref": ref, "ccci_run_id": rid,
        "ccci_recipes_dir": str(env["recipes"]), "ccci_state_dir": str(env["state"]),
        "ccci_catalog_dir": str(env["catalog"]), "ccci_domain_suffix": env["suffix"],
        "ccci_access": "published", "ccci_fetch": False, "ccci_driver": env["driver"],
    }  # fmt: skip
    res = run_playbook(book, args, private_dir=private)
    record = json.loads((env["state"] / "runs" / f"{rid}.json").read_text())
    return res, record


def canonical(env: dict, state: str, **more) -> dict:
    args = {"recipe": NAME, "state": state, "state_dir": str(env["state"]),
            "domain_suffix": env["suffix"], "recipes_dir": str(env["recipes"]),
            "fetch": False, "driver": env["driver"], **more}  # fmt: skip
    res = run_module("coopcloud.ci.warm_canonical", args)
    assert res.rc == 0, dump(res)
    return res.last


def reattach_starts(env: dict, latest: str) -> None:
    """The canonical, put back at rest, starts at its known-good version (its password
    matches the digest in its data) and goes back to rest."""
    out = canonical(env, "deployed")
    assert out["version"] == latest and out["registry"]["status"] == "deployed", out
    assert all(s["replicas_running"] >= 1 for s in out["services"]), out["services"]
    assert canonical(env, "idle")["registry"]["status"] == "idle"


@pytest.mark.parametrize("driver", ["stack", "abra"])
def test_promoted_database_canonical_starts_with_the_cold_apps_password(
    driver, examples_root, tmp_path, docker_client, cleanup_stacks, monkeypatch
):
    recipe = make_dbkeep(examples_root)
    rid = {step: os.urandom(3).hex() for step in ("cold", "pass", "fail")}
    env = {"tmp": tmp_path, "recipes": examples_root, "state": tmp_path / "state",
           "catalog": make_catalog(tmp_path / "catalog"), "driver": driver,
           "suffix": f"s{os.urandom(3).hex()}.ccci.test"}  # fmt: skip
    init_state(env["state"])
    log = tmp_path / "abra-calls.jsonl"
    if driver == "abra":
        monkeypatch.setenv("CCCI_ABRA", str(STANDIN))
        monkeypatch.setenv("CCCI_ABRA_ROOT", str(tmp_path / "abra-root"))
        monkeypatch.setenv("CCCI_ABRA_STANDIN_LOG", str(log))
    warm = canonical_domain(NAME, env["suffix"])
    cold = cold_domain(NAME, rid["cold"], env["suffix"])
    cleanup_stacks.extend([stack_name(warm), stack_name(cold)])
    try:
        # a green cold run of the latest version initialises the data and promotes it
        res, record = play("cold.yml", env, recipe["latest"], rid["cold"])
        assert res.rc == 0 and record["verdict"] == "PASS", dump(res)
        assert any(n.startswith("promote: promoted") for n in record["notes"]), record["notes"]
        keydir = env["state"] / NAME / "secrets"
        assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
        assert stat.S_IMODE((keydir / "key").stat().st_mode) == 0o600

        # quick PASS at another healthy ref: the canonical starts with the cold password
        res, record = play("quick.yml", env, recipe["previous"], rid["pass"])
        assert res.rc == 0 and record["verdict"] == "PASS", dump(res)
        assert record["canonical_after"]["status"] == "idle"
        reattach_starts(env, recipe["latest"])

        if driver == "stack":
            # quick FAIL at a broken ref: the known-good is put back, and still starts
            res, record = play("quick.yml", env, recipe["broken_branch"], rid["fail"])
            assert res.rc != 0 and record["verdict"] == "FAIL", dump(res)
            assert record["canonical_after"]["version"] == recipe["latest"]
            reattach_starts(env, recipe["latest"])
        else:
            # both apps were given the value derived from the recipe's key, through abra
            key = (keydir / "key").read_bytes()
            want = derive(key, SecretSpec(name="db_password", version="v1"))
            digest = hashlib.sha256(want.encode()).hexdigest()
            calls = [json.loads(line) for line in log.read_text().splitlines()]
            inserts = {(c["argv"][4], c["inserted"]["sha256"]) for c in calls if "inserted" in c}
            assert {domain for domain, _ in inserts} == {cold, warm}, inserts
            assert {sha for _, sha in inserts} == {digest}  # no value in the assertion
            assert all(c["outcome"] == "rc 0" for c in calls if "inserted" in c)
            assert all(want not in line for line in log.read_text().splitlines())

        # absent removes the key with the rest
        removed = canonical(env, "absent", confirm=True)["removed"]
        assert removed["secrets_key"] is True and not keydir.exists()
    finally:
        run_module("coopcloud.ci.warm_canonical",
                   {"recipe": NAME, "state": "absent", "confirm": True,
                    "state_dir": str(env["state"]), "domain_suffix": env["suffix"],
                    "driver": driver})  # fmt: skip
