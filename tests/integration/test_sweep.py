"""playbooks/sweep.yml on the real swarm (SPEC WC6, acceptance 7).

The sweep runs the way the timer runs it, through ansible-runner, against a catalog of
its own: three enrolled recipes (the two examples and a third, a copy of custom-html
under another name), every app under a domain suffix of its own. Each reconcile and
cold run is its own ansible-playbook process; the test reads what they left: the sweep
record, the run records and the swarm.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from support import recipes
from support.ansible import dump, run_playbook
from support.fixtures import free_port, init_state

from ansible_collections.coopcloud.ci.plugins.module_utils._lock import AppLock
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry

pytestmark = pytest.mark.swarm

RESULT = re.compile(r"SWEEP RESULT: ([a-z-]+):(.*)")
HEALTH = {"path": "/index.html", "status": [200], "body": "<h1>", "timeout": 120, "interval": 2}


def entry(recipe: str, enrolled: bool = True) -> str:
    """A catalog entry with the short stage list (install, serving): the sweep is the
    subject here, not the stages."""
    return (
        f"recipe: {recipe}\nwarm_canonical: {'true' if enrolled else 'false'}\n"
        "stages: [install, serving]\nhttp: {service: app, port: 80}\n"
        f"health: {json.dumps(HEALTH)}\n"
    )


@pytest.fixture
def bed(examples, tmp_path, unique):
    """Recipes dir (the examples + a third recipe), a catalog enrolling all three, a
    state dir and a suffix of this test's own."""
    third = f"cp-{unique}"  # sorts before custom-html
    recipes_dir = tmp_path / "recipes"
    recipes_dir.mkdir()
    for name in ("custom-html", "notes"):
        (recipes_dir / name).symlink_to(examples[name]["path"])
    made = recipes.make_custom_html(recipes_dir / third)
    recipes.commit(
        recipes_dir / third,
        "name the app after this recipe",
        {".env.sample": recipes.HTML_ENV.replace("TYPE=custom-html", f"TYPE={third}")},
    )
    catalog = tmp_path / "catalog"
    for name in ("custom-html", "notes", third):
        (catalog / name).mkdir(parents=True)
        (catalog / name / "recipe.yml").write_text(entry(name))
    state_dir = init_state(tmp_path / "state")
    return {
        "third": third,
        "third_latest": made["latest"],
        "recipes_dir": recipes_dir,
        "catalog": catalog,
        "state_dir": state_dir,
        "suffix": f"{unique}.ccci.test",
        "unique": unique,
        "tmp": tmp_path,
    }


def sweep(bed, check: bool = False, **more):
    private = bed["tmp"] / f"runner-sweep-{os.urandom(3).hex()}"
    private.mkdir()
    args = {
        "ccci_state_dir": str(bed["state_dir"]),
        "ccci_recipes_dir": str(bed["recipes_dir"]),
        "ccci_catalog_dir": str(bed["catalog"]),
        "ccci_domain_suffix": bed["suffix"],
        "ccci_access": "published",
        "ccci_fetch": False,
        **more,
    }
    res = run_playbook("sweep.yml", args, check=check, private_dir=private)
    found = RESULT.findall(res.stdout)
    res.result = found[-1] if found else None
    return res


def sweep_records(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "sweeps").glob("sweep-*.json"))


def services_with(client, text: str) -> list[str]:
    return [s.name for s in client.services.list() if text in s.name]


@pytest.mark.slow
def test_three_enrolled_two_run_serially_after_the_reconcile(
    docker_client, bed, cleanup_stacks, examples
):
    suffix, state_dir, third = bed["suffix"], bed["state_dir"], bed["third"]
    # notes has an old known-good: it goes last, after the two never-seeded recipes
    Registry(str(state_dir), "notes").seed(
        canonical_domain("notes", suffix),
        examples["notes"]["latest"],
        examples["notes"]["tags"][examples["notes"]["latest"]],
        "0f0f0f",
        "0" * 64,
    )
    infra_domain = f"infra-{bed['unique']}.{suffix}"
    for recipe in ("custom-html", third):
        cleanup_stacks.append(stack_name(canonical_domain(recipe, suffix)))
    cleanup_stacks.append(stack_name(infra_domain))
    target = {
        "recipe": third,
        "domain": infra_domain,
        "stateful": False,
        "health": {**HEALTH, "timeout": 60, "interval": 1},
        "http": {"service": "app", "port": 80, "published": free_port()},
    }
    res = sweep(bed, max_tests=2, ccci_warm_infra={"web": target})
    records = sweep_records(state_dir)
    assert len(records) == 1, dump(res)
    record = json.loads(records[0].read_text())
    for ran in record["recipes"]:
        cleanup_stacks.append(stack_name(cold_domain(ran["recipe"], ran["run_id"], suffix)))

    # the order: never seeded first by name, then the oldest known-good
    assert [o["recipe"] for o in record["order"]] == [third, "custom-html", "notes"]
    assert [r["recipe"] for r in record["recipes"]] == [third, "custom-html"], dump(res)
    assert [n["recipe"] for n in record["not_run"]] == ["notes"]
    assert record["status"] == "finished"

    # the reconcile ran first and its result is recorded
    assert [t["target"] for t in record["reconcile"]] == ["web"]
    reconciled = record["reconcile"][0]
    assert reconciled["result"] in ("upgraded", "noop-healthy"), dump(res)
    assert Path(reconciled["log"]).is_file()

    # exactly two cold runs, each with its record, serially, both after the reconcile
    runs = [json.loads((state_dir / "runs" / f"{r['run_id']}.json").read_text()) for r in
            record["recipes"]]  # fmt: skip
    all_records = sorted(p.stem for p in (state_dir / "runs").glob("*.json"))
    assert all_records == sorted(r["run_id"] for r in runs)
    assert [r["recipe"] for r in runs] == [third, "custom-html"]
    assert all(r["mode"] == "cold" and r["status"] == "finished" for r in runs)
    assert [r["verdict"] for r in runs] == ["PASS", "PASS"], dump(res)
    assert [r["verdict"] for r in record["recipes"]] == ["PASS", "PASS"]
    assert reconciled["finished_at"] <= runs[0]["started_at"]
    assert runs[0]["finished_at"] <= runs[1]["started_at"]
    for ran in record["recipes"]:
        assert ran["seconds"] > 0 and Path(ran["log"]).is_file()

    # green at the latest version: both canonicals were seeded (promote-on-green, WC5)
    for recipe, latest in ((third, bed["third_latest"]), ("custom-html", None)):
        reg = Registry(str(state_dir), recipe).load()
        assert reg is not None and reg["promoted_by"] == next(
            r["run_id"] for r in record["recipes"] if r["recipe"] == recipe
        )
        if latest:
            assert reg["version"] == latest

    # the result line and the exit status
    assert res.rc == 0, dump(res)
    assert res.result[0] == "ok", dump(res)
    assert record["result"] == "ok"
    assert "2 cold run(s)" in res.result[1]

    # the status play sees the sweep
    (bed["tmp"] / "runner-status").mkdir()
    status = run_playbook(
        "status.yml",
        {"ccci_state_dir": str(state_dir), "ccci_catalog_dir": str(bed["catalog"]),
         "format": "json"},
        private_dir=bed["tmp"] / "runner-status",
    )  # fmt: skip
    doc = status.task("Print the status document")["msg"]
    assert doc["last_sweep"]["result"] == "ok"
    assert [r["run_id"] for r in doc["last_sweep"]["recipes"]] == [
        r["run_id"] for r in record["recipes"]
    ]


def test_a_held_lock_stops_the_sweep_before_it_touches_anything(docker_client, bed):
    state_dir = bed["state_dir"]
    AppLock(str(state_dir), "notes").acquire("a1b2c3", timeout=0, owner_pid=os.getpid())
    lock_bytes = (state_dir / "notes" / "lock").read_bytes()
    before = sorted(str(p) for p in state_dir.rglob("*"))
    res = sweep(bed, max_tests=2, ccci_warm_infra={"web": {"recipe": "x", "domain": "x.y"}})
    assert res.rc != 0, dump(res)
    assert res.result is not None and res.result[0] == "skipped-busy", dump(res)
    assert "notes locked by run a1b2c3" in res.result[1]
    assert f"pid {os.getpid()}" in res.result[1]
    assert "nothing was touched" in res.stdout
    # nothing: no sweep record, no run record, no reconcile lock, no app of this suffix
    assert sorted(str(p) for p in state_dir.rglob("*")) == before
    assert (state_dir / "notes" / "lock").read_bytes() == lock_bytes
    assert services_with(docker_client, bed["suffix"].replace(".", "_")) == []
    # a stale lock does not stop it (check mode: the plan only)
    AppLock(str(state_dir), "notes").release("a1b2c3")
    res = sweep(bed, check=True, max_tests=1)
    assert res.rc == 0, dump(res)
    plan = res.task("Show the plan")["msg"]
    assert plan[1] == f"cold runs, in this order: {bed['third']}"
    assert plan[2] == "not run: custom-html, notes"
    assert not (state_dir / "sweeps").exists()


def test_a_failed_reconcile_and_a_red_cold_run_fail_the_sweep_and_raise_an_alert(
    docker_client, bed
):
    """A target that cannot be reconciled and an enrolled recipe whose cold run fails (its
    checkout is missing: the cheapest red run) do not stop the sweep; both are in the
    record, the exit status is non-zero and a sweep-red alert names the run."""
    state_dir, gone = bed["state_dir"], f"gone-{bed['unique']}"
    catalog = bed["tmp"] / "catalog-red"
    (catalog / gone).mkdir(parents=True)
    (catalog / gone / "recipe.yml").write_text(entry(gone))
    res = sweep(
        bed,
        max_tests=1,
        ccci_catalog_dir=str(catalog),
        ccci_warm_infra={"bad": {"recipe": "Not A Recipe"}},
    )
    assert res.rc != 0, dump(res)
    assert res.result[0] == "failed", dump(res)
    (path,) = sweep_records(state_dir)
    record = json.loads(path.read_text())
    assert record["result"] == "failed" and record["status"] == "finished"
    (red,) = record["recipes"]
    assert red["recipe"] == gone and red["verdict"] != "PASS", red
    assert record["not_run"] == []
    assert record["reconcile"][0]["target"] == "bad"
    assert record["reconcile"][0]["result"] == "failed"
    assert record["reconcile"][0]["rc"] != 0
    assert "reconcile: bad failed" in res.result[1]
    (alert_file,) = (state_dir / "alerts").glob("*-sweep-red-sweep-*.json")
    alert = json.loads(alert_file.read_text())
    assert alert["kind"] == "sweep-red" and alert["attempted"] == record["stamp"]
    assert [(r["recipe"], r["run_id"]) for r in alert["runs"]] == [(gone, red["run_id"])]
    assert f"{gone} run {red['run_id']} {red['verdict']}" in alert["notes"]
    assert alert["sweep_record"] == str(path)


def test_bad_input_is_refused(bed):
    res = sweep(bed, max_tests="many")
    assert res.rc != 0
    assert "SWEEP RESULT: refused-input:" in res.stdout
    assert not (bed["state_dir"] / "sweeps").exists()
