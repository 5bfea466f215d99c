"""Kills that leave work behind (issue 15, items 1 and 2): no work outlives its lock.

Unlike test_crashes.py, which kills every process of a play, each case here kills what
the world kills:

* ``playbook``: SIGKILL to ``ansible-playbook`` alone (``kill -9 <pid>``, the OOM killer).
  Ansible's workers call ``setsid()``: the module the play was running survives and goes
  on to its end, holding the recipe's work lock (``_lock.working``);
* ``shell-closed`` / ``shell-unread``: a Drone cancel, as drone-runner-exec does it
  (tests/support/drone_exec.py): SIGKILL to the step's ``/bin/sh`` only, the play of
  docs/drone.example.yml's step orphaned, its output no longer read - the pipe's read
  end closed (writers would get SIGPIPE) or left open and full.

Each case starts its play with a crash point (``CCCI_PAUSE_AT``) inside a module that is
mid-work, kills as above once the point is reached, and at once starts a second run of
the same recipe. Once that run is waiting for the lock, the paused module is let go.
Then, from the events each play wrote (tests/reliability/orphans.py):

* the second run took the lock only after every hold of the work lock by a process of
  the first run had ended - for a killed ``ansible-playbook``, it said it waited for the
  orphan (``lock-wait`` with ``orphan``, and the record's note); for a cancelled step,
  the orphaned play ran on to its end and closed its record with a verdict;
* no process of the first run is left; the second run ends with its verdict;
* the canonical is at rest, its volume trees equal to the known-good's (for a killed
  promotion: the promotion the orphan completed, or the second run's own).

Two canonicals in each of two state dirs (copies of the session's seeded ones,
tests/support/seeds.py); the four lanes run at the same time. The
put-back case starts from what a dead quick run leaves (status ``quick``, writes in both
volumes of notes), so the first run's restore before use is the module killed mid-work:
on overlay volumes (the beds' default) it discards the writes volume by volume
(``overlay.discarding``: the first volume done, the second not yet).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
from support import drone_exec
from support.ansible import ROOT, write_inventory
from support.fixtures import remove_stack_everything
from support.warmbed import (
    BIN,
    HTML,
    NOTES,
    Bed,
    at_rest,
    dirty,
    make_catalog,
    processes_with,
    run_id,
    unmoved,
)

from ansible_collections.coopcloud.ci.plugins.module_utils._names import cold_domain, stack_name
from reliability.orphans import events, never_overlapped, wait_event, wait_gone

# one worker under pytest-xdist (--dist loadgroup): the tests share a module-scoped set-up
pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.xdist_group("test_kills")]

# (case, recipe, play, crash point, kill, second run)
# play "quick": quick.yml at the previous tag; "promote": cold.yml at the latest tag with
# a green run's promotion. Second run: "quick" (previous tag) or "cold" (latest: promotes).
CASES = [
    ("deploy: reattaching the canonical", HTML, "quick", "deploy.converged", "playbook",
     "quick"),
    ("undeploy: putting back, undeployed", HTML, "quick", "canonical.undeployed", "playbook",
     "quick"),
    ("snapshot: promotion's archives written", NOTES, "promote", "snapshot.written",
     "playbook", "cold"),
    ("promotion: seeding, old secrets removed", NOTES, "promote", "canonical.seed-secrets",
     "playbook", "quick"),
    # started from what a dead quick run leaves (LEFT_DIRTY): restoring before use discards
    # the writes of both volumes (overlay), paused between the two
    ("discard: putting back, one of two volumes discarded", NOTES, "quick",
     "overlay.discarding", "playbook", "quick"),
    # the cancelled play goes on, so its point names the pass (the upgrade deploys again)
    ("cancel: reattaching the canonical", HTML, "quick", "deploy.converged@1", "shell-closed",
     "quick"),
    ("cancel: upgrading in place", HTML, "quick", "deploy.converged@2", "shell-unread",
     "quick"),
    ("cancel: putting back, status restoring", NOTES, "quick", "canonical.restoring",
     "shell-closed", "quick"),
]  # fmt: skip
LANES = {"html-1": CASES[0:2], "notes-1": [CASES[2], CASES[4]], "html-2": CASES[5:7],
         "notes-2": [CASES[3], CASES[7]]}  # fmt: skip
#: Cases whose first run starts from a canonical a dead quick run left dirty (status
#: ``quick``, writes in every volume), so that it puts the known-good back before use.
LEFT_DIRTY = {"discard: putting back, one of two volumes discarded"}
FORGE_URL = "http://127.0.0.1:9"  # nothing listens: posting a status is a warning only


@pytest.fixture(scope="module")
def beds(examples, examples_root, seeds, tmp_path_factory):
    """Two state dirs; in each, custom-html and notes seeded from the session's green cold
    runs (tests/support/seeds.py: each bed its own copy, registry and volumes), the four
    adoptions at once."""
    tmp = tmp_path_factory.mktemp("kills")
    promote = make_catalog(tmp / "catalog-promote", ["install"])
    made = []
    for n in (1, 2):
        bed = Bed.make(tmp / f"bed{n}", examples_root, f"o{os.urandom(3).hex()}",
                       ["install", "upgrade"])  # fmt: skip
        bed.promote_catalog = promote
        bed.deploy_timeout = 300  # eight plays of this module deploy at once at times
        made.append(bed)
    try:
        started = time.monotonic()
        # the four at once: the two recipes' templates, when this module makes them, are
        # seeded side by side (each under its own lock), then each bed adopts its copies
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda job: seeds.adopt_into(*job),
                          [(bed, recipe) for bed in made for recipe in (HTML, NOTES)]))  # fmt: skip
        print(f"four canonicals adopted in {time.monotonic() - started:.0f} s")
        yield {"html-1": made[0], "notes-1": made[0], "html-2": made[1], "notes-2": made[1]}
    finally:
        for bed in made:
            bed.remove_all()


def commit_of(examples: dict, recipe: str, ref: str) -> str:
    return subprocess.run(
        ["git", "-C", examples[recipe]["path"], "rev-parse", f"{ref}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def start_drone_step(bed: Bed, examples: dict, recipe: str, pause: dict, log: Path):
    """docs/drone.example.yml's quick step, as drone-runner-exec runs it, in a thread."""
    inventory = write_inventory(
        bed.tmp / "drone-inventory.yml",
        {"ccci_domain_suffix": bed.suffix, "ccci_catalog_dir": str(bed.catalog),
         "ccci_access": "published", "ccci_deploy_timeout": bed.deploy_timeout,
         "ccci_lock_poll": 0.5, "ccci_fetch": False},
    )  # fmt: skip
    pipeline = drone_exec.adapt(
        (ROOT / "docs" / "drone.example.yml").read_text(),
        {"CCCI_HOME": str(ROOT), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
         "ANSIBLE_INVENTORY": str(inventory),
         "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
         "CCCI_STATE_DIR": str(bed.state_dir), "CCCI_RECIPES_DIR": str(bed.recipes_dir),
         "CCCI_FORGE_URL": FORGE_URL},
    )  # fmt: skip
    sha = commit_of(examples, recipe, examples[recipe]["previous"])
    build = {
        "number": int.from_bytes(os.urandom(2)),
        "after": sha,
        "event": "custom",
        "target": "main",
        "params": {"CCCI_MODE": "quick", "CCCI_PR": "7", "CCCI_HEAD_REF": "change"},
    }
    cancel = threading.Event()
    out: dict = {"cancel": cancel}

    def run() -> None:
        out["result"] = drone_exec.run_build(
            pipeline, build, f"coop/{recipe}", link_base="http://127.0.0.1:9",
            secret_values={"forge_token": "t"}, runner_environ={**pause,
                                                                 "CCCI_EVENT_LOG": str(log)},
            tmp_root=str(bed.tmp), cancel=cancel, cancel_output=out["mode"],
        )  # fmt: skip

    out["thread"] = threading.Thread(target=run, daemon=True)
    return out


def run_case(bed: Bed, examples: dict, case: tuple, client) -> list[str]:
    _name, recipe, kind, point, kill, second_kind = case
    rid = run_id()
    first_log = bed.tmp / f"events-{rid}.log"
    pause_dir = bed.tmp / f"pause-{rid}"
    pause_dir.mkdir()
    pause = {"CCCI_PAUSE_AT": point, "CCCI_PAUSE_DIR": str(pause_dir),
             "CCCI_PAUSE_TIMEOUT": "600"}  # fmt: skip
    marker = pause_dir / f"{point}.reached"
    problems: list[str] = []
    before = bed.proof(client, recipe)
    if case[0] in LEFT_DIRTY:
        dirty(bed, client, recipe)
    if kind == "promote":
        book, ref = "cold.yml", examples[recipe]["latest"]
        more = {"ccci_catalog_dir": str(bed.promote_catalog)}
    else:
        book, ref, more = "quick.yml", examples[recipe]["previous"], {}

    drone = None
    if kill == "playbook":
        first = bed.start(book, bed.extravars(recipe, ref, rid, **more), point=point,
                          env={"CCCI_EVENT_LOG": str(first_log)})  # fmt: skip
        first.wait_point(900)
        os.kill(first.proc.pid, signal.SIGKILL)  # ansible-playbook alone
        first.proc.wait(60)
    else:
        drone = start_drone_step(bed, examples, recipe, pause, first_log)
        drone["mode"] = kill.split("-")[1]
        drone["thread"].start()
        deadline = time.monotonic() + 900
        while not marker.exists():
            assert time.monotonic() < deadline and drone["thread"].is_alive(), (
                f"the build did not reach {point}: {drone.get('result')}"
            )
            time.sleep(0.1)
        drone["cancel"].set()
        drone["thread"].join(60)
        result = drone["result"]
        if result.status != "killed" or result.steps[-1].state != "killed":
            problems.append(f"the build was not cancelled: {result.log()[-3000:]}")
    killed_at = time.monotonic()

    # a second run of the same recipe, started at once
    rid2 = run_id()
    second_log = bed.tmp / f"events-{rid2}.log"
    if second_kind == "cold":
        vars2 = bed.extravars(recipe, examples[recipe]["latest"], rid2,
                              ccci_catalog_dir=str(bed.promote_catalog))  # fmt: skip
        second = bed.start("cold.yml", vars2, env={"CCCI_EVENT_LOG": str(second_log)})
    else:
        second = bed.start("quick.yml", bed.extravars(recipe, examples[recipe]["previous"], rid2),
                           env={"CCCI_EVENT_LOG": str(second_log)})  # fmt: skip
    try:
        waiting = wait_event(second_log, "lock-wait")
        if waiting["orphan"] != (kill == "playbook"):
            problems.append(f"the second run waited with orphan={waiting['orphan']}")
        marker.unlink()  # the paused module goes on
        # the first run's play and modules (a cancelled step's `tail` may wait on its pipe)
        orphaned_for = wait_gone(f"CCCI_EVENT_LOG={first_log}", exclude=("tail",))
        rc2 = second.wait(900)
    finally:
        if marker.exists():
            marker.unlink()
        for pipe in drone["result"].unread if drone and "result" in drone else []:
            pipe.close()  # the runner's copy ends: a `tail` still writing gets SIGPIPE
    with contextlib.suppress(AssertionError):
        wait_gone(f"CCCI_EVENT_LOG={first_log}", timeout=30)
    first_rid = next((e["run_id"] for e in events(first_log) if e["event"] == "lock-taken"), rid)
    if kind == "promote":
        remove_stack_everything(stack_name(cold_domain(recipe, first_rid, bed.suffix)))
    if second_kind == "cold":
        remove_stack_everything(stack_name(cold_domain(recipe, rid2, bed.suffix)))

    problems += never_overlapped(first_log, second_log)
    record2 = bed.record(rid2)
    if rc2 != 0 or record2["verdict"] != "PASS":
        problems.append(f"second run rc={rc2} verdict {record2['verdict']}: "
                        f"{second.output()[-4000:]}")  # fmt: skip
    notes = " ".join(record2.get("notes", []))
    if kill == "playbook":
        if second_kind == "quick" and "s of it for a task of a dead run" not in notes:
            problems.append(f"the second run's record does not say it waited: {notes}")
        if f"broke the lock of {recipe} held by run {first_rid}" not in " ".join(
            second.output().split()
        ):
            problems.append("the second run did not say it broke the dead run's lock")
    else:
        record1 = bed.record(first_rid)
        if record1.get("verdict") != "PASS":
            problems.append(f"the orphaned play did not run to its end: {record1}")
    left = processes_with(f"CCCI_EVENT_LOG={first_log}")
    if left:
        problems.append(f"processes of the first run left: {left}")
    after = bed.proof(client, recipe)
    problems += at_rest(after)
    if kind == "promote":
        promoted_by = rid2 if second_kind == "cold" else first_rid
        if after["registry"]["promoted_by"] != promoted_by:
            problems.append(f"known-good promoted by {after['registry']['promoted_by']}, "
                            f"not {promoted_by}")  # fmt: skip
    else:
        problems += unmoved(before, after)
    print(f"{case[0]}: orphan worked {orphaned_for:.1f} s after the second run began waiting; "
          f"case {time.monotonic() - killed_at:.0f} s after the kill")  # fmt: skip
    return problems


def run_lane(bed: Bed, examples: dict, cases: list[tuple]) -> dict[str, list[str]]:
    client = docker.from_env()
    out = {}
    try:
        for case in cases:
            try:
                out[case[0]] = run_case(bed, examples, case, client)
            except AssertionError as exc:
                out[case[0]] = [str(exc)]
    finally:
        client.close()
    return out


@pytest.fixture(scope="module")
def outcomes(beds, examples):
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(LANES)) as pool:
        futures = [pool.submit(run_lane, beds[lane], examples, cases)
                   for lane, cases in LANES.items()]  # fmt: skip
        results = {}
        for future in futures:
            results.update(future.result())
    print(f"kill cases: {len(results)} in {time.monotonic() - started:.0f} s")
    return results


def test_the_cases_cover_every_kind_of_work_and_both_kills():
    assert sorted(c for lane in LANES.values() for c in lane) == sorted(CASES)
    # issue 15: five ansible-playbook kills (deploy, undeploy, restore or discard, snapshot,
    # promotion) and three Drone cancels
    assert sum(c[4] == "playbook" for c in CASES) >= 5
    assert any(c[3].startswith(("restore.", "overlay.discarding")) and c[4] == "playbook"
               for c in CASES)  # fmt: skip
    assert sum(c[4].startswith("shell") for c in CASES) >= 3
    assert {c[4] for c in CASES} == {"playbook", "shell-closed", "shell-unread"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_no_work_of_a_killed_run_outlives_its_lock(case, outcomes):
    problems = outcomes[case[0]]
    assert problems == [], "\n".join(problems)
