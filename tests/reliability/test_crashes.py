"""Crashes (issue 8, item 1): SIGKILL the whole play at named points inside quick runs,
restores, snapshots and promotions; the known-good survives and the next run recovers.

Each case starts a play with ``CCCI_PAUSE_AT=<point>`` (plugins/module_utils/_faults.py):
the first process of the play to reach the point writes ``<point>.reached`` and waits;
the test then kills the play's whole process group (``ansible-playbook``, its workers,
the paused module and any ``docker`` child) with SIGKILL. Then, before anything else runs:

* the slot's snapshot verifies (every archive against its manifest);
* ``canonical.json`` parses, says what was under way (the status of the case), and its
  ``snapshot_digest`` is the slot manifest's digest - except after a promotion killed
  between its snapshot and its seeding, the documented ``consistent: false`` state;
* the lock is left to a dead owner: the pid it names is the killed ``ansible-playbook``.

The recovery is the next quick run (at another healthy ref): it must break the stale lock
(a warning names the dead run), pass, and leave the canonical idle, undeployed, unlocked,
its volumes' tree digests equal to the snapshot manifest's, the registry agreeing with the
manifest, and the known-good unmoved (or, for a killed promotion, advanced to the
promoted snapshot as the documented way back says).

The cases run in four lanes, each an xdist group of its own (so ``--dist loadgroup``
spreads them over the workers): a lane makes its own bed (state dir, domain suffix,
catalog), seeds its one canonical (custom-html or notes) from the session's green cold
run of the latest tag (tests/support/seeds.py: one per recipe for the whole run, each lane
its own copy: state dir, registry, volumes), runs its cases one after another (each one kill and one recovery), and removes the
bed. The first test of a lane pays for it; the others read the lane's outcomes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import docker
import pytest
from support.ansible import run_module
from support.fixtures import environ, remove_stack_everything
from support.warmbed import HTML, NOTES, Bed, at_rest, dirty, make_catalog, run_id, unmoved

from ansible_collections.coopcloud.ci.plugins.module_utils import (  # noqa: F401 - crash points
    _canonical,
    _driver,
    _faults,
    _lock,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import cold_domain, stack_name
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotError

# under pytest-xdist (--dist loadgroup) each lane is one group: its cases share its bed
pytestmark = [pytest.mark.swarm, pytest.mark.slow]

# (case, recipe, play, crash point, what the case starts from, status right after the kill)
# - play "quick": quick.yml at the recipe's previous (healthy) tag;
#   "restore": restore.yml; "promote": cold.yml at the latest tag (a green run promotes).
# - start "at rest": the known-good, idle; "left dirty": what a dead quick run leaves
#   (status quick, a changed file and a stray one in every volume).
CASES = [
    ("quick: lock just taken", HTML, "quick", "lock.taken", "at rest", "idle"),
    ("quick: upgraded in place to the change (second deploy)", HTML, "quick",
     "deploy.converged@2", "at rest", "quick"),
    ("promote: status seeding written", HTML, "promote", "canonical.seeding", "at rest",
     "seeding"),
    ("quick: status quick written, nothing deployed", HTML, "quick", "canonical.status-set",
     "at rest", "quick"),
    ("quick: reattached at the known-good (first deploy)", HTML, "quick", "deploy.converged",
     "at rest", "quick"),
    ("quick: putting back, undeployed, nothing restored", HTML, "quick",
     "canonical.undeployed", "at rest", "quick"),
    ("quick restoring before use: one of two volumes swapped", NOTES, "quick",
     "restore.swapped-one", "left dirty", "restoring"),
    ("promote: new snapshot swapped in, canonical not yet seeded", NOTES, "promote",
     "snapshot.swapped", "at rest", "idle"),
    ("quick: putting back, status restoring", NOTES, "quick", "canonical.restoring",
     "at rest", "restoring"),
    ("restore.yml: archives staged, no volume swapped", NOTES, "restore", "restore.staged",
     "idle, data changed", "restoring"),
    ("quick: putting back, restored, status not yet idle", NOTES, "quick",
     "canonical.restored", "at rest", "restoring"),
    ("quick: lock about to be given back", NOTES, "quick", "lock.releasing", "at rest", "idle"),
    ("promote: old secrets removed with the data, slot not yet restored", NOTES, "promote",
     "canonical.seed-secrets", "at rest", "seeding"),
]  # fmt: skip
#: The lanes, one xdist group each, each with a bed and a canonical of its own.
LANES = {"html-1": CASES[0:3], "html-2": CASES[3:6], "notes-1": CASES[6:9],
         "notes-2": CASES[9:13]}  # fmt: skip
#: The lane of each case.
LANE_OF = {case[0]: lane for lane, cases in LANES.items() for case in cases}

#: The way back of each case (docs/reliability.md): the next quick run, after ...
RECOVERY = {
    "snapshot.swapped": "`warm_canonical state=seeded` (docs/canonicals.md: the slot holds a "
    "green run's snapshot the registry does not name yet), then",
}

#: Killed promotions that got as far as the seeding: the next run completes it.
ADVANCES = (
    "snapshot.swapped",
    "canonical.seeding",
    "canonical.seed-secrets",
    "canonical.seed-restored",
)

BOOKS = {"quick": "quick.yml", "restore": "restore.yml", "promote": "cold.yml"}


def chosen_cases(request, lane: str) -> list[tuple]:
    """The cases of ``lane`` this session runs (all, unless ``-k`` chose some)."""
    chosen = {
        item.callspec.params["case"][0]
        for item in request.session.items
        if hasattr(item, "callspec") and "case" in item.callspec.params
    }
    return [case for case in LANES[lane] if case[0] in chosen]


def kill_at(bed: Bed, examples: dict, case: tuple, client) -> dict:
    """Run one case up to its kill; what the kill left."""
    _name, recipe, kind, point, start, _ = case
    rid = run_id()
    if start == "left dirty":
        dirty(bed, client, recipe)
    elif start == "idle, data changed":
        for mount in bed.mounts(client, recipe).values():
            (mount / "changed-by-an-operator").write_text("not the known-good\n")
    more = {}
    ref = examples[recipe]["previous"]
    if kind == "promote":
        ref = examples[recipe]["latest"]
        more["ccci_catalog_dir"] = str(bed.promote_catalog)
    elif kind == "restore":
        ref = None
    play = bed.start(BOOKS[kind], bed.extravars(recipe, ref, rid, **more), point=point)
    # a late point (lock.releasing) comes after a whole quick run: minutes on a loaded host
    paused_pid = play.wait_point(timeout=600)
    play.kill()
    return {"rid": rid, "play": play, "paused_pid": paused_pid}


def after_kill(bed: Bed, case: tuple, killed: dict) -> list[str]:
    """The state the kill left, checked before any recovery runs."""
    _name, recipe, _kind, point, _start, status = case
    problems = []
    try:
        bed.store(recipe).verify()
    except SnapshotError as exc:
        problems.append(f"the snapshot does not verify after the kill: {exc}")
    try:
        registry = bed.registry(recipe)
    except (OSError, ValueError) as exc:
        return [*problems, f"canonical.json unreadable after the kill: {exc}"]
    if registry["status"] != status:
        problems.append(f"status after the kill {registry['status']}, expected {status}")
    digest = bed.store(recipe).manifest_digest()
    consistent = registry["snapshot_digest"] == digest
    # a promotion killed after its snapshot replaced the slot: the registry names the old
    # one until the seeding completes (docs/canonicals.md)
    if consistent != (point not in ADVANCES):
        problems.append(f"registry digest == manifest digest is {consistent} after the kill")
    lock = _lock.AppLock(str(bed.state_dir), recipe)
    holder = lock.holder()
    if holder is None:
        problems.append("no lock left by the killed play")
    else:
        if holder.get("pid") != killed["play"].proc.pid or holder.get("run_id") != killed["rid"]:
            problems.append(f"lock holder {holder} is not the killed play")
        # stale at once: Play.kill returns when every process of the play has exited (the
        # kernel dropped their work lock, the flock), not when they merely look gone
        if not lock.is_stale(holder):
            problems.append(f"the lock of the killed play is not stale: {holder}")
    return problems


def recover(bed: Bed, examples: dict, case: tuple, killed: dict, before: dict, client) -> list:
    """The next quick run, and the proof that it left the known-good at rest."""
    _name, recipe, kind, point, _start, _status = case
    problems = []
    if kind == "promote":
        remove_stack_everything(stack_name(cold_domain(recipe, killed["rid"], bed.suffix)))
    promoted_by = killed["rid"]
    if point in RECOVERY:
        operator = run_id()
        promoted_by = operator
        res = run_module(
            "coopcloud.ci.warm_canonical",
            {"recipe": recipe, "state": "seeded", "run_id": operator,
             "state_dir": str(bed.state_dir), "domain_suffix": bed.suffix},
        )  # fmt: skip
        if res.rc != 0:
            problems.append(f"warm_canonical state=seeded failed: {res.last.get('msg')}")
    rid = run_id()
    play = bed.run("quick.yml", bed.extravars(recipe, examples[recipe]["previous"], rid))
    out = " ".join(play.output().split())  # warnings are wrapped
    if play.proc.returncode != 0:
        return [
            *problems,
            f"recovery quick run rc={play.proc.returncode}:\n{play.output()[-5000:]}",
        ]
    if f"broke the lock of {recipe} held by run {killed['rid']}" not in out:
        problems.append("the recovery run did not say it broke the dead run's lock")
    record = bed.record(rid)
    if record["verdict"] != "PASS":
        problems.append(f"recovery verdict {record['verdict']}")
    after = bed.proof(client, recipe)
    problems += at_rest(after)
    if point in ADVANCES:
        manifest = json.loads(after["manifest"])
        reg = after["registry"]
        if (reg["version"], reg["promoted_by"]) != (manifest["version"], promoted_by):
            problems.append(f"the interrupted promotion was not completed: {reg}")
        if reg["snapshot_digest"] == before["registry"]["snapshot_digest"]:
            problems.append("the registry still names the replaced snapshot")
    else:
        problems += unmoved(before, after)
    return problems


def run_lane(bed: Bed, examples: dict, cases: list[tuple]) -> dict[str, dict]:
    client = docker.from_env()
    results = {}
    try:
        for case in cases:
            started = time.monotonic()
            before = bed.proof(client, case[1])
            problems = [f"not at rest before the case: {p}" for p in at_rest(before)]
            try:
                killed = kill_at(bed, examples, case, client)
                problems += after_kill(bed, case, killed)
                problems += recover(bed, examples, case, killed, before, client)
            except AssertionError as exc:
                problems.append(str(exc))
            results[case[0]] = {"problems": problems, "seconds": time.monotonic() - started}
    finally:
        client.close()
    return results


def run_whole_lane(lane: str, examples, examples_root, seeds, tmp: Path, cases) -> dict:
    """A bed of the lane's own, its canonical seeded from the session's green cold run of
    the latest tag (support/seeds.py: the promotion's last step, into the lane's own state
    dir and volumes), then its cases."""
    recipe = LANES[lane][0][1]
    started = time.monotonic()
    bed = Bed.make(tmp / lane, examples_root, f"k{os.urandom(3).hex()}", ["install", "upgrade"])
    bed.promote_catalog = make_catalog(tmp / lane / "catalog-promote", ["install"])
    bed.deploy_timeout = 300  # a bound, not a figure: three lanes and the suite share 2 cores
    # this battery proves the restore mechanism (the fallback); the overlay mechanism's own
    # crash points are test_crashes_overlay.py's
    bed.overlay = False
    try:
        seeds.adopt_into(bed, recipe)
        results = run_lane(bed, examples, cases)
    finally:
        bed.remove_all((recipe,))
    print(f"crash lane {lane}: {len(cases)} cases in {time.monotonic() - started:.0f} s")
    return results


@pytest.fixture(scope="module")
def outcomes(examples, examples_root, seeds, tmp_path_factory, request):
    """The outcomes of a lane's selected cases (``-k`` selects), run when its first test
    asks: on whichever worker its xdist group went to."""
    tmp = tmp_path_factory.mktemp("crashes")
    done: dict[str, dict | BaseException] = {}

    def of(lane: str) -> dict[str, dict]:
        if lane not in done:
            try:
                done[lane] = run_whole_lane(
                    lane, examples, examples_root, seeds, tmp, chosen_cases(request, lane)
                )
            except Exception as exc:  # every test of the lane reports the same failure
                done[lane] = exc
        if isinstance(done[lane], BaseException):
            raise done[lane]
        return done[lane]

    return of


def test_there_are_ten_or_more_distinct_crash_points():
    points = {case[3].split("@")[0] for case in CASES}
    assert len(points) >= 10, points
    assert len({case[3] for case in CASES}) == len(CASES)
    assert [c for cases in LANES.values() for c in cases] == CASES
    assert points <= set(_faults.POINTS), points - set(_faults.POINTS)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case[0], marks=pytest.mark.xdist_group(f"test_crashes-{lane}"))
        for lane, cases in LANES.items()
        for case in cases
    ],
)
def test_a_play_killed_at_a_crash_point_loses_nothing_and_the_next_run_recovers(case, outcomes):
    outcome = outcomes(LANE_OF[case[0]])[case[0]]
    assert outcome["problems"] == [], "\n".join(outcome["problems"])


def test_the_pause_hook_is_on_the_normal_path(tmp_path):
    """A point that is deleted lets the paused process go on (the hook itself is sound)."""
    from ansible_collections.coopcloud.ci.plugins.module_utils import _faults

    marker = Path(_faults.marker_path("lock.taken@2", str(tmp_path)))
    with environ(CCCI_PAUSE_AT="lock.taken@2", CCCI_PAUSE_DIR=str(tmp_path)):
        _faults.checkpoint("lock.taken")  # first pass: counted, no pause
        assert not marker.exists()
        done = threading.Event()
        thread = threading.Thread(target=lambda: (_faults.checkpoint("lock.taken"), done.set()))
        thread.start()
        for _ in range(100):
            if marker.exists():
                break
            time.sleep(0.05)
        assert marker.read_text().strip() == str(os.getpid()) and not done.is_set()
        marker.unlink()
        thread.join(10)
        assert done.is_set()
