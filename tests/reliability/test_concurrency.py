"""Load (issue 8 item 5, issue 15): 20 quick runs over 4 recipes, started together.

The one home of "runs of one recipe serialize, runs of different recipes overlap". Four
recipes, each its own git repository, catalog entry, canonical and lock: clones of the
cheapest example (custom-html: one service, one small volume) under four names. One green
cold run seeds the first canonical; the other three are seeded from a copy of that
snapshot (the manifest names its own recipe) by ``warm_canonical state=seeded``, one task
each, as a promotion installs a green run's snapshot. Then 20 ``ansible-playbook
playbooks/quick.yml`` processes start at once, the way Drone starts them for 20 PR
comments: five per recipe at the previous tag (healthy: PASS), but one of the first
recipe's at the ``broken`` branch (its image does not exist: FAIL).

What is compared: each run notes in its record the time it held the recipe's lock - "lock
acquired at" (taken after the lock is held) and "lock released at" (taken before it is
given back); every step on the canonical lies between the two. Per recipe: the five
intervals are pairwise disjoint, and at least four runs waited. Across recipes: every
recipe's intervals meet another recipe's. Every run ends with its verdict (exit status
non-zero exactly for the FAIL); afterwards no lock is left and every canonical is at
rest - idle, undeployed, volume trees = its known-good - with the known-good and every
byte of its snapshot slot unmoved; one ``quick-rollback`` alert, for the FAIL.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from support.ansible import ROOT
from support.fixtures import init_state
from support.recipes import make_custom_html
from support.warmbed import Bed, at_rest, run_id, unmoved

from reliability.play import run_tasks

# one worker under pytest-xdist (--dist loadgroup): the tests share a module-scoped set-up
pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.xdist_group("test_concurrency")]

RECIPES = ("load-a", "load-b", "load-c", "load-d")
# (run, recipe, ref key of the recipe, expected verdict): five per recipe
RUNS = [
    (f"{recipe}-{n}", recipe, "broken_branch" if (recipe, n) == ("load-a", 3) else "previous",
     "FAIL" if (recipe, n) == ("load-a", 3) else "PASS")
    for recipe in RECIPES for n in range(1, 6)
]  # fmt: skip


def interval(record: dict) -> tuple[datetime, datetime]:
    def at(pattern: str) -> datetime:
        found = [m.group(1) for n in record["notes"] if (m := re.match(pattern, n))]
        assert len(found) == 1, record["notes"]
        return datetime.fromisoformat(found[0].replace("Z", "+00:00"))

    return at(r"lock acquired at (\S+)"), at(r"lock released at (\S+)")


def overlap(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def slot_bytes(bed: Bed, recipe: str) -> dict[str, str]:
    """Every file of the recipe's snapshot slot: sha256 of its bytes."""
    root = bed.state_dir / recipe / "snapshot"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def catalog(dest: Path, stages: list[str]) -> Path:
    """custom-html's example catalog entry under each of the four names."""
    entry = yaml.safe_load((ROOT / "catalog" / "custom-html" / "recipe.yml").read_text())
    entry.update(stages=stages, health={**entry["health"], "timeout": 40, "interval": 1})
    for recipe in RECIPES:
        (dest / recipe).mkdir(parents=True)
        text = yaml.safe_dump({**entry, "recipe": recipe}, sort_keys=False)
        (dest / recipe / "recipe.yml").write_text(text)
    return dest


def seed_from(bed: Bed, source: str, recipes: tuple[str, ...]) -> None:
    """Seed each of ``recipes`` from a copy of ``source``'s known-good snapshot."""
    tasks = []
    for recipe in recipes:
        slot = bed.state_dir / recipe / "snapshot"
        shutil.copytree(bed.state_dir / source / "snapshot", slot)
        manifest = json.loads((slot / "manifest.json").read_text())
        (slot / "manifest.json").write_text(json.dumps({**manifest, "recipe": recipe}))
        tasks.append({
            "name": f"seed {recipe}",
            "coopcloud.ci.warm_canonical": {
                "recipe": recipe, "state": "seeded", "state_dir": str(bed.state_dir),
                "domain_suffix": bed.suffix, "run_id": run_id(), "overlay": bed.overlay,
            },
        })  # fmt: skip
    result = run_tasks(tasks)
    assert result.rc == 0, result.stdout[-6000:]


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("load")
    # one repository, cloned under the other names: the same commits and tags, so the
    # first canonical's snapshot (version and commit) is a known-good of every copy
    first = make_custom_html(tmp / "recipes" / RECIPES[0])
    for recipe in RECIPES[1:]:
        subprocess.run(["git", "clone", "-q", first["path"], str(tmp / "recipes" / recipe)],
                       check=True)  # fmt: skip
    refs = {recipe: {**first, "path": str(tmp / "recipes" / recipe)} for recipe in RECIPES}
    bed = Bed(
        tmp=tmp,
        recipes_dir=tmp / "recipes",
        suffix=f"l{os.urandom(3).hex()}.ccci.test",
        # quick runs upgrade in place (the broken branch fails there)
        catalog=catalog(tmp / "catalog", ["install", "upgrade"]),
        state_dir=init_state(tmp / "state"),
    )
    try:
        started = time.monotonic()
        cold = bed.run("cold.yml", bed.extravars(
            RECIPES[0], refs[RECIPES[0]]["latest"], run_id(),
            ccci_catalog_dir=str(catalog(tmp / "catalog-seed", ["install"]))))  # fmt: skip
        assert cold.proc.returncode == 0, cold.output()[-8000:]
        seed_from(bed, RECIPES[0], RECIPES[1:])
        print(f"four canonicals seeded in {time.monotonic() - started:.0f} s")
        yield bed, refs
    finally:
        bed.remove_all(RECIPES)


def test_twenty_quick_runs_over_four_recipes_serialize_per_recipe_and_overlap_across(
    load, docker_client
):
    bed, refs = load
    before = {r: bed.proof(docker_client, r) for r in RECIPES}
    slots = {r: slot_bytes(bed, r) for r in RECIPES}
    for recipe in RECIPES:
        assert at_rest(before[recipe]) == [], (recipe, at_rest(before[recipe]))

    ids = {name: run_id() for name, *_ in RUNS}
    started = time.monotonic()
    plays = {
        name: bed.start("quick.yml", bed.extravars(recipe, refs[recipe][ref], ids[name]))
        for name, recipe, ref, _ in RUNS
    }
    rcs = {name: play.wait(1800) for name, play in plays.items()}
    seconds = time.monotonic() - started

    # every run ends with its verdict, the exit status following it
    records = {name: bed.record(ids[name]) for name in ids}
    verdicts = {name: records[name]["verdict"] for name in ids}
    expected = {name: verdict for name, _, _, verdict in RUNS}
    assert verdicts == expected, "\n\n".join(
        plays[n].output()[-5000:] for n in ids if verdicts[n] != expected[n]
    )
    assert {n: rc == 0 for n, rc in rcs.items()} == {n: v == "PASS" for n, v in expected.items()}
    assert all(records[n]["mode"] == "quick" for n in ids)
    failed = next(n for n, v in expected.items() if v == "FAIL")
    assert records[failed]["commit"] == refs["load-a"]["broken_ref"]
    assert records[failed]["stages"]["upgrade"] == "fail"

    spans = {name: interval(records[name]) for name in ids}
    for recipe in RECIPES:
        mine = sorted((spans[n] for n, r, *_ in RUNS if r == recipe), key=lambda s: s[0])
        for first, second in itertools.pairwise(mine):
            assert first[1] <= second[0], (recipe, mine)  # one after the other
        waits = [
            float(re.search(r"waited ([0-9.]+) s", " ".join(records[n]["notes"])).group(1))
            for n, r, *_ in RUNS
            if r == recipe
        ]
        assert sum(w > 0 for w in waits) >= 4, (recipe, waits)  # four of five waited
        # ... and side by side with the runs of other recipes
        others = [spans[n] for n, r, *_ in RUNS if r != recipe]
        assert any(overlap(a, b) for a in mine for b in others), (recipe, spans)

    # no lock left; every canonical at rest at its known-good, snapshot bytes unmoved
    for recipe in RECIPES:
        after = bed.proof(docker_client, recipe)
        assert at_rest(after) == [], (recipe, at_rest(after))
        assert unmoved(before[recipe], after) == [], (recipe, unmoved(before[recipe], after))
        assert slot_bytes(bed, recipe) == slots[recipe], recipe
        assert after["trees"] == before[recipe]["trees"], recipe
    assert not list(bed.state_dir.glob("*/lock")), list(bed.state_dir.glob("*/lock"))
    # one quick-rollback alert, for the FAIL only
    alerts = [json.loads(p.read_text()) for p in sorted((bed.state_dir / "alerts").glob("*.json"))]
    rollbacks = [a for a in alerts if a["kind"] == "quick-rollback"]
    assert [a["run_id"] for a in rollbacks] == [ids[failed]], rollbacks
    assert rollbacks[0]["recovered"] is True
    print(f"20 quick runs over 4 recipes in {seconds:.0f} s")
