"""scripts/verify's own logic: the item table, the output lines and the exit status.

The script is loaded as a module from its file (it has no .py suffix); only the pure
parts are exercised here - the swarm side is what the script itself proves.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def verify():
    loader = importlib.machinery.SourceFileLoader("ccci_verify", str(ROOT / "scripts" / "verify"))
    spec = importlib.util.spec_from_loader("ccci_verify", loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ccci_verify"] = module  # dataclasses look their module up there
    try:
        loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("ccci_verify", None)


def all_pass(verify) -> dict:
    return {item: verify.Outcome(item, True, [f"{item} figures"]) for item in verify.ITEMS}


def test_the_items_are_the_spec_table_in_order(verify):
    assert verify.ITEMS == (
        "WC1", "WC1.1", "WC1.2", "WC2", "WC3", "WC4", "WC5", "WC6", "WC7", "WC8", "WC9", "ALR",
    )  # fmt: skip


def test_the_docs_it_requires_exist_in_the_repository(verify):
    missing = [d for d in verify.DOCS if not (ROOT / "docs" / f"{d}.md").is_file()]
    assert missing == []
    assert {"cold", "quick", "reconcile", "sweep", "restore", "status", "reap", "alerts"} == set(
        verify.PLAYS
    )
    for play in verify.PLAYS:
        assert (ROOT / "playbooks" / f"{play}.yml").is_file()


def test_a_line_is_item_verdict_and_evidence(verify):
    out = verify.Outcome("WC4")
    out.show("quick 3fa9c1 exit 0 PASS")
    out.show("digest  a1b2\n  == a1b2")
    assert verify.line(out) == "WC4 PASS quick 3fa9c1 exit 0 PASS; digest a1b2 == a1b2"


def test_a_failed_expectation_makes_the_line_fail_and_says_what_first(verify):
    out = verify.Outcome("WC5")
    assert out.expect(True, "never shown") is True
    assert out.expect(1 == 2, "the canonical moved") is False
    out.show("seeded 1.1.0+1.29")
    assert out.ok is False
    assert verify.line(out) == "WC5 FAIL NOT: the canonical moved; seeded 1.1.0+1.29"


def test_an_exception_fails_the_item_with_its_message(verify):
    out = verify.Outcome("WC6")
    out.broke(KeyError("recipes"))
    assert verify.line(out) == "WC6 FAIL NOT: the check broke off: KeyError: 'recipes'"


def test_report_has_one_line_per_item_in_order_and_a_missing_item_fails(verify):
    outcomes = all_pass(verify)
    del outcomes["WC7"]
    lines = verify.report(outcomes)
    assert [ln.split()[0] for ln in lines] == list(verify.ITEMS)
    assert lines[verify.ITEMS.index("WC7")] == "WC7 FAIL NOT: no check ran for this item"
    assert all(ln.split()[1] == "PASS" for ln in lines if not ln.startswith("WC7 "))


def test_exit_status_is_zero_only_when_every_item_passed(verify):
    outcomes = all_pass(verify)
    assert verify.exit_status(outcomes) == 0
    outcomes["ALR"].expect(False, "no POST")
    assert verify.exit_status(outcomes) == 1
    outcomes = all_pass(verify)
    del outcomes["WC9"]
    assert verify.exit_status(outcomes) == 1
    assert verify.exit_status({}) == 1


def test_lock_interval_reads_the_quick_record_notes(verify):
    record = {
        "notes": [
            "lock acquired at 2026-11-27T00:58:42.284081Z (waited 0.001 s)",
            "something else",
            "lock released at 2026-11-27T00:59:13.917955Z",
        ]
    }
    assert verify.lock_interval(record) == (
        "2026-11-27T00:58:42.284081Z",
        "2026-11-27T00:59:13.917955Z",
    )
    assert verify.lock_interval({"notes": ["lock acquired at 2026-11-27T00:58:42Z"]}) is None
    assert verify.lock_interval({}) is None


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (("01:00", "01:05"), ("01:05", "01:09"), False),  # one after the other
        (("01:00", "01:05"), ("01:04", "01:09"), True),
        (("01:04", "01:09"), ("01:00", "01:05"), True),
        (("01:00", "01:09"), ("01:02", "01:03"), True),
        (("01:06", "01:09"), ("01:00", "01:05"), False),
    ],
)
def test_overlap(verify, a, b, expected):
    assert verify.overlap(a, b) is expected
