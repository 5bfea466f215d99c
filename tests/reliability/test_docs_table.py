"""docs/reliability.md lists exactly the cases the battery runs (tests/reliability/table.py)."""

from __future__ import annotations

from reliability import table


def test_the_reliability_page_lists_every_case_the_battery_runs():
    current = table.DOC.read_text()
    assert table.render(current) == current, (
        "docs/reliability.md is out of date: run .venv/bin/python tests/reliability/table.py --write"
    )
