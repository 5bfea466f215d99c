"""Concurrency (issue 8, item 5): six quick runs over two recipes, started at once.

Both canonicals (custom-html, notes) are seeded by green cold runs of their latest tags;
then six ``ansible-playbook playbooks/quick.yml`` processes start together, the way Drone
would start them for six PR comments:

* custom-html at its previous tag (healthy: PASS), at the ``broken`` branch (its image
  does not exist: FAIL) and at the previous tag again (PASS);
* notes three times at its previous tag (PASS).

What is compared (as in tests/integration/test_quick_lane.py's WC8 test): each run notes
in its record the time it held the recipe's lock - "lock acquired at" (taken after the
lock is held) and "lock released at" (taken before it is given back); every step on the
canonical lies between the two. Runs of one recipe: pairwise disjoint intervals. Runs of
the two recipes: at least one custom-html interval intersects a notes interval.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from support.warmbed import HTML, NOTES, Bed, at_rest, make_catalog, run_id, unmoved

# one worker under pytest-xdist (--dist loadgroup): the tests share a module-scoped set-up
pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.xdist_group("test_concurrency")]

# (run, recipe, ref key of the examples fixture, expected verdict)
RUNS = [
    ("html-1", HTML, "previous", "PASS"),
    ("html-broken", HTML, "broken_branch", "FAIL"),
    ("html-2", HTML, "previous", "PASS"),
    ("notes-1", NOTES, "previous", "PASS"),
    ("notes-2", NOTES, "previous", "PASS"),
    ("notes-3", NOTES, "previous", "PASS"),
]


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


@pytest.fixture(scope="module")
def bed(examples, examples_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("concurrency")
    # quick runs upgrade in place (the FAIL of the broken branch is there); the seeding
    # cold runs only install
    bed = Bed.make(tmp, examples_root, f"c{os.urandom(3).hex()}", ["install", "upgrade"])
    seed_catalog = make_catalog(tmp / "catalog-seed", ["install"])
    try:
        plays = {
            recipe: bed.start(
                "cold.yml",
                bed.extravars(
                    recipe, examples[recipe]["latest"], run_id(), ccci_catalog_dir=str(seed_catalog)
                ),
            )
            for recipe in (HTML, NOTES)
        }
        for play in plays.values():
            assert play.wait() == 0, play.output()[-8000:]
        yield bed
    finally:
        bed.remove_all()


def test_six_quick_runs_over_two_recipes_serialize_per_recipe_and_overlap_across(
    bed, examples, docker_client
):
    before = {r: bed.proof(docker_client, r) for r in (HTML, NOTES)}
    slots = {r: slot_bytes(bed, r) for r in (HTML, NOTES)}
    for recipe in (HTML, NOTES):
        assert at_rest(before[recipe]) == [], at_rest(before[recipe])

    ids = {name: run_id() for name, *_ in RUNS}
    started = time.monotonic()
    plays = {
        name: bed.start(
            "quick.yml", bed.extravars(recipe, examples[recipe][ref], ids[name], ccci_lock_poll=0.5)
        )
        for name, recipe, ref, _ in RUNS
    }
    rcs = {name: play.wait(1500) for name, play in plays.items()}
    seconds = time.monotonic() - started

    records = {name: bed.record(ids[name]) for name in ids}
    verdicts = {name: records[name]["verdict"] for name in ids}
    expected = {name: verdict for name, _, _, verdict in RUNS}
    assert verdicts == expected, "\n\n".join(
        plays[n].output()[-5000:] for n in ids if verdicts[n] != expected[n]
    )
    # the exit status follows the verdict (non-zero exactly for FAIL)
    assert {n: rc == 0 for n, rc in rcs.items()} == {n: v == "PASS" for n, v in expected.items()}
    assert all(records[n]["mode"] == "quick" for n in ids)
    broken = examples[HTML]["broken_ref"]
    assert records["html-broken"]["commit"] == broken
    assert records["html-broken"]["stages"]["upgrade"] == "fail"

    spans = {name: interval(records[name]) for name in ids}
    for recipe in (HTML, NOTES):
        mine = sorted((spans[n] for n, r, *_ in RUNS if r == recipe), key=lambda s: s[0])
        for first, second in itertools.pairwise(mine):
            # per recipe: one after the other, never overlapping
            assert first[1] <= second[0], (recipe, mine)
        waits = [
            float(re.search(r"waited ([0-9.]+) s", " ".join(records[n]["notes"])).group(1))
            for n, r, *_ in RUNS
            if r == recipe
        ]
        assert sum(w > 0 for w in waits) >= 2, (recipe, waits)  # two of three waited
    # across recipes: at the same time
    html = [spans[n] for n, r, *_ in RUNS if r == HTML]
    notes = [spans[n] for n, r, *_ in RUNS if r == NOTES]
    assert any(overlap(a, b) for a in html for b in notes), spans

    # no corruption: both canonicals idle, known-good and snapshots unmoved, volumes at
    # the known-good tree digests, no lock left
    for recipe in (HTML, NOTES):
        after = bed.proof(docker_client, recipe)
        assert at_rest(after) == [], (recipe, at_rest(after))
        assert unmoved(before[recipe], after) == [], unmoved(before[recipe], after)
        assert slot_bytes(bed, recipe) == slots[recipe]
        assert after["trees"] == before[recipe]["trees"]
    # one quick-rollback alert, for the FAIL only
    alerts = [json.loads(p.read_text()) for p in sorted((bed.state_dir / "alerts").glob("*.json"))]
    rollbacks = [a for a in alerts if a["kind"] == "quick-rollback"]
    assert [a["run_id"] for a in rollbacks] == [ids["html-broken"]], rollbacks
    assert rollbacks[0]["recovered"] is True
    Path(bed.tmp / "seconds").write_text(f"{seconds:.0f}\n")
    print(f"six quick runs in {seconds:.0f} s")
