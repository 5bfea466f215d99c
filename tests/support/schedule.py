"""The order pytest-xdist hands out the suite's work: the longest first.

Under ``--dist loadgroup`` a group (``xdist_group``) is one unit of work and every other
test a unit of its own; a worker takes the next unit of a queue when it runs dry, and the
run ends when the busiest worker ends. xdist queues the units by their number of tests
(its default ``--loadscope-reorder``), then in collection order: a 150-200 s test alone
in its unit (``test_concurrency.py``, ``test_promote.py``) may start last and run while
the other workers idle. This plugin sorts the collection so that the units measured
longest come first (the longest processing time rule); with ``--no-loadscope-reorder``
(the Makefile's ``XDIST``) xdist keeps that order. A unit not in the table keeps its
place after the measured ones.

``costs.json`` beside this file holds the seconds of each group and of each slow
ungrouped test (set-up, call and tear-down). Refresh it from a whole run's JUnit XML:
``python tests/support/schedule.py run.xml > tests/support/costs.json``. Only the order
depends on it: a stale table makes the run slower, never wrong.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

COSTS = Path(__file__).with_name("costs.json")
#: Ungrouped tests shorter than this are left out of the table (their order is noise).
SLOW = 15.0


def group_of(item: pytest.Item) -> str | None:
    """The xdist group of ``item`` as xdist names it (several marks: joined by '_')."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return "_".join(sorted(names)) if names else None


def longest_first(items: list[pytest.Item], costs: dict[str, float]) -> list[pytest.Item]:
    """``items`` in units (a group's tests together, in their order), the units sorted by
    their cost, longest first; a unit without a cost keeps its place after them."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        units.setdefault(group_of(item) or item.nodeid, []).append(item)
    order = sorted(units, key=lambda unit: -costs.get(unit, 0.0))  # stable: ties keep order
    return [item for unit in order for item in units[unit]]


def by_group(config) -> bool:
    """Whether this run hands its units out by group. An xdist worker - whose collection
    is the one the controller queues - sees ``dist`` as ``no`` (xdist resets it there) and
    ``loadgroup`` true; the controller, or a run without workers, sees ``dist``."""
    return config.getoption("dist", "no") == "loadgroup" or bool(
        getattr(config.option, "loadgroup", False)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # only where units are handed out by group: elsewhere a module's tests stay together
    if not by_group(config) or not COSTS.exists():
        return
    items[:] = longest_first(items, json.loads(COSTS.read_text()))


def costs_of(junit_xml: str) -> dict[str, float]:
    """Seconds per unit from a JUnit XML report of a ``--dist loadgroup`` run: each group,
    and each ungrouped test of :data:`SLOW` seconds or more."""
    units: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        name = case.get("name", "")
        at = name.rfind("@")  # xdist's suffix, after any parameters (they may hold an @)
        unit = name[at + 1 :] if at > name.rfind("]") else f"{path}::{name}"
        units[unit] += float(case.get("time", 0))
    return {
        unit: round(seconds)
        for unit, seconds in sorted(units.items(), key=lambda kv: -kv[1])
        if seconds >= SLOW or "::" not in unit
    }


if __name__ == "__main__":
    print(json.dumps(costs_of(sys.argv[1]), indent=1))
