"""The reconcile plan (_release.reconcile_plan): every branch, as plain data."""

from __future__ import annotations

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._release import (
    HELD_MAJOR,
    HELD_MANUAL,
    NOOP,
    PLANS,
    PROCEED,
    Observed,
    last_good_record,
    reconcile_decision,
    reconcile_plan,
)

C1 = "a" * 40
C2 = "b" * 40
LATEST = "1.2.0+1.30"
RUNS = {"state": "deployed", "version": "1.1.0+1.29", "commit": C1}
GONE = {"state": "undeployed", "version": None, "commit": None}
LG = {"version": "1.1.0+1.29", "commit": C1, "attempt": None, "failed": None}


def seen(running=RUNS, healthy=True, last_good=LG) -> Observed:
    return Observed(running=dict(running), healthy=healthy, last_good=last_good)


# (case, observed, gate verdict, accept, plan)
CASES = [
    # an earlier upgrade broke off (the last-good carries its attempt)
    (
        "attempt finished: healthy at the attempt's commit",
        seen(
            running={**RUNS, "version": LATEST, "commit": C2},
            last_good={**LG, "attempt": {"version": LATEST, "commit": C2}},
        ),
        None,
        None,
        "finish",
    ),
    (
        "attempt not finished: healthy at another commit",
        seen(last_good={**LG, "attempt": {"version": LATEST, "commit": C2}}),
        None,
        None,
        "recover",
    ),
    (
        "attempt not finished: unhealthy at its commit",
        seen(
            running={**RUNS, "commit": C2},
            healthy=False,
            last_good={**LG, "attempt": {"version": LATEST, "commit": C2}},
        ),
        None,
        None,
        "recover",
    ),
    (
        "attempt without a commit yet, nothing deployed",
        seen(running=GONE, healthy=False, last_good={**LG, "attempt": {"version": LATEST}}),
        None,
        None,
        "recover",
    ),
    # no version to move from
    (
        "nothing runs, nothing recorded",
        seen(running=GONE, healthy=False, last_good=None),
        None,
        None,
        "install",
    ),
    (
        "runs unhealthy, nothing recorded",
        seen(healthy=False, last_good=None),
        None,
        None,
        "unhealthy",
    ),
    # the gate holds
    ("held major, healthy", seen(), HELD_MAJOR, None, "hold"),
    ("held manual, not deployed", seen(running=GONE, healthy=False), HELD_MANUAL, None, "hold"),
    ("held, deployed but unhealthy", seen(healthy=False), HELD_MANUAL, None, "unhealthy"),
    # nothing newer, or the latest already rolled back here
    ("noop and healthy", seen(), NOOP, None, "noop"),
    ("noop, deployed unhealthy", seen(healthy=False), NOOP, None, "unhealthy"),
    (
        "noop, not deployed: redeploy the last-good",
        seen(running=GONE, healthy=False),
        NOOP,
        None,
        "reattach",
    ),
    (
        "latest rolled back before, healthy",
        seen(last_good={**LG, "failed": {"version": LATEST, "at": "2026-01-01T00:00:00Z"}}),
        PROCEED,
        None,
        "noop",
    ),
    (
        "latest rolled back before, not deployed",
        seen(running=GONE, healthy=False, last_good={**LG, "failed": {"version": LATEST}}),
        PROCEED,
        "",
        "reattach",
    ),
    (
        "latest rolled back before, accepted again",
        seen(last_good={**LG, "failed": {"version": LATEST}}),
        PROCEED,
        LATEST,
        "upgrade",
    ),
    (
        "an older version rolled back: no refusal",
        seen(last_good={**LG, "failed": {"version": "1.1.5+1.29"}}),
        PROCEED,
        None,
        "upgrade",
    ),
    ("proceed", seen(), PROCEED, None, "upgrade"),
    (
        "proceed from the last-good while nothing runs",
        seen(running=GONE, healthy=False),
        PROCEED,
        None,
        "upgrade",
    ),
]


@pytest.mark.parametrize(
    ("observed", "verdict", "accept", "plan"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan(observed, verdict, accept, plan):
    assert reconcile_plan(observed, verdict, LATEST, accept) == plan


def test_every_plan_is_reached():
    assert {case[-1] for case in CASES} == set(PLANS)


def test_current_is_what_runs_healthy_else_the_last_good():
    assert seen().current() == "1.1.0+1.29"
    newer = {**RUNS, "version": "1.1.5+1.29"}
    assert seen(running=newer).current() == "1.1.5+1.29"
    assert seen(running=newer, healthy=False).current() == "1.1.0+1.29"
    assert seen(running=GONE, healthy=True).current() == "1.1.0+1.29"
    assert seen(running=GONE, healthy=False, last_good=None).current() == ""


def test_the_gate_is_asked_only_with_a_version_and_no_attempt():
    assert seen().asks_the_gate()
    assert not seen(last_good={**LG, "attempt": {"version": LATEST}}).asks_the_gate()
    assert not seen(healthy=False, last_good=None).asks_the_gate()


def test_decision_reattach_redeploys_the_last_good_as_an_upgrade():
    decision = reconcile_decision(seen(running=GONE, healthy=False), NOOP, LATEST)
    assert decision == {
        "record": None,
        "record_note": "",
        "plan": "upgrade",
        "reattach": True,
        "current": "1.1.0+1.29",
        "retry_refused": False,
        "deploy": {"version": "1.1.0+1.29", "ref": C1},
    }


def test_decision_upgrade_deploys_the_latest_and_says_a_refused_retry():
    assert reconcile_decision(seen(), PROCEED, LATEST)["deploy"] == {
        "version": LATEST,
        "ref": LATEST,
    }
    refused = seen(last_good={**LG, "failed": {"version": LATEST}})
    decision = reconcile_decision(refused, PROCEED, LATEST)
    assert (decision["plan"], decision["retry_refused"], decision["reattach"]) == (
        "noop",
        True,
        False,
    )


AT = "2026-12-06T12:00:00Z"
NEWER = {**RUNS, "version": "1.1.5+1.29", "commit": C2}
FAILED = {"version": LATEST, "at": "2026-01-01T00:00:00Z"}


# (case, observed, gate verdict, plan, the record written first (None: none), its note)
RECORDS = [
    ("healthy, nothing recorded: recorded", seen(last_good=None), NOOP, "noop",
     {"version": "1.1.0+1.29", "commit": C1, "at": AT, "attempt": None, "failed": None},
     "recorded 1.1.0+1.29 as last-good: it runs healthy"),
    ("healthy at the recorded version and commit: nothing", seen(), NOOP, "noop", None, ""),
    ("healthy at another version: recorded, the refused retry kept",
     seen(running=NEWER, last_good={**LG, "failed": FAILED}), PROCEED, "noop",
     {"version": "1.1.5+1.29", "commit": C2, "at": AT, "attempt": None, "failed": FAILED},
     "recorded 1.1.5+1.29 as last-good: it runs healthy"),
    ("healthy at the recorded version, another commit: recorded",
     seen(running={**RUNS, "commit": C2}), NOOP, "noop",
     {"version": "1.1.0+1.29", "commit": C2, "at": AT, "attempt": None, "failed": None},
     "recorded 1.1.0+1.29 as last-good: it runs healthy"),
    ("not healthy: nothing", seen(running=NEWER, healthy=False), PROCEED, "upgrade", None, ""),
    ("not deployed: nothing", seen(running=GONE, healthy=True, last_good=None), None,
     "install", None, ""),
    ("healthy without a commit label: nothing",
     seen(running={**RUNS, "commit": None}, last_good=None), NOOP, "noop", None, ""),
    ("an upgrade broke off, it did not finish: nothing",
     seen(last_good={**LG, "attempt": {"version": LATEST, "commit": C2}}), None, "recover",
     None, ""),
    ("an upgrade broke off and finished: committed, its failure cleared",
     seen(running={**RUNS, "version": LATEST, "commit": C2},
          last_good={**LG, "failed": FAILED, "attempt": {"version": LATEST, "commit": C2}}),
     None, "finish",
     {"version": LATEST, "commit": C2, "at": AT, "attempt": None, "failed": None}, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    "observed, verdict, plan, record, note", [pytest.param(*c[1:], id=c[0]) for c in RECORDS]
)
def test_the_last_good_record_written_first(observed, verdict, plan, record, note):
    assert reconcile_plan(observed, verdict, LATEST) == plan
    assert last_good_record(observed, plan, AT) == (record, note)
    decision = reconcile_decision(observed, verdict, LATEST, at=AT)
    assert (decision["record"], decision["record_note"]) == (record, note)
