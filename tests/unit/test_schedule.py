"""tests/support/schedule.py: the suite's units of work go out longest first."""

from __future__ import annotations

from types import SimpleNamespace

from support.schedule import by_group, costs_of, longest_first


class Mark(SimpleNamespace):
    pass


def item(nodeid: str, group: str | None = None):
    marks = [Mark(args=(group,), kwargs={})] if group else []
    return SimpleNamespace(nodeid=nodeid, iter_markers=lambda name: iter(marks))


def test_units_go_longest_first_a_group_whole_and_unmeasured_ones_keep_their_order():
    items = [
        item("a.py::fast"),
        item("b.py::lane[1]", "lane"),
        item("a.py::slow"),
        item("c.py::other"),
        item("b.py::lane[2]", "lane"),
        item("d.py::mid"),
    ]
    costs = {"lane": 300, "a.py::slow": 200, "d.py::mid": 50}
    order = [i.nodeid for i in longest_first(items, costs)]
    assert order == [
        "b.py::lane[1]", "b.py::lane[2]", "a.py::slow", "d.py::mid", "a.py::fast", "c.py::other",
    ]  # fmt: skip


def test_costs_of_a_junit_report_sum_a_group_and_keep_slow_single_tests(tmp_path):
    xml = tmp_path / "run.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.reliability.test_x" name="test_a[p@q]@grp" time="100.4"/>'
        '<testcase classname="tests.reliability.test_x" name="test_b@grp" time="20"/>'
        '<testcase classname="tests.integration.test_y" name="test_slow[at@home]" time="40"/>'
        '<testcase classname="tests.integration.test_y" name="test_fast" time="2"/>'
        "</testsuite></testsuites>"
    )
    assert costs_of(str(xml)) == {
        "grp": 120,
        "tests/integration/test_y.py::test_slow[at@home]": 40,
    }


def config(dist: str, **option):
    return SimpleNamespace(getoption=lambda name, default=None: dist,
                           option=SimpleNamespace(**option))  # fmt: skip


def test_the_order_is_made_where_xdist_collects_on_a_worker_too():
    # an xdist worker: xdist 3.8 (remote.py) sets dist to "no" and keeps loadgroup; its
    # collection is the one the controller queues, so the order must be made there
    assert by_group(config("no", loadgroup=True))
    assert by_group(config("loadgroup"))  # the controller, or a run without workers
    assert not by_group(config("no", loadgroup=False))
    assert not by_group(config("load"))
