from __future__ import annotations

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._version import (
    Version,
    between,
    is_version,
    latest,
    major_bump,
    sort_versions,
)


def test_parse_forms():
    v = Version.parse("1.11.0+1.29.0")
    assert (v.recipe, v.app, v.app_numbers) == ((1, 11, 0), "1.29.0", (1, 29, 0))
    s = Version.parse("2.0.1+1.0.6-social-amd64")
    assert (s.recipe, s.app, s.app_numbers) == ((2, 0, 1), "1.0.6-social-amd64", (1, 0, 6))
    old = Version.parse("v2.4.8")
    assert (old.recipe, old.app) == ((2, 4, 8), None)
    assert Version.parse("1.0.0+v4.2").app_numbers == (4, 2)


@pytest.mark.parametrize("bad", ["latest", "1.2", "1.2.3.4", "01.2.3+1", "1.2.3+", "+1.2", ""])
def test_not_versions(bad):
    assert not is_version(bad)
    with pytest.raises(ValueError, match="not a recipe version"):
        Version.parse(bad)


def test_order_is_by_recipe_part_then_app():
    tags = ["1.10.0+1.0", "1.9.0+9.0", "v0.1.0", "latest", "1.10.0+1.2", "2.0.0+0.1"]
    assert [v.tag for v in sort_versions(tags)] == [
        "v0.1.0",
        "1.9.0+9.0",
        "1.10.0+1.0",
        "1.10.0+1.2",
        "2.0.0+0.1",
    ]
    assert latest(tags).tag == "2.0.0+0.1"
    assert latest(["latest", "main"]) is None


def test_major_bumps_in_either_part():
    cur = Version.parse("10.7.1+26.6.2")
    assert major_bump(cur, Version.parse("10.7.9+26.6.2")) == []
    assert major_bump(cur, Version.parse("11.0.0+26.6.2")) == ["recipe major 10 -> 11"]
    assert major_bump(cur, Version.parse("10.8.0+27.0.0")) == ["app major 26 -> 27"]
    assert major_bump(
        Version.parse("2.0.1+1.0.6-social-amd64"), Version.parse("2.1.0+2.0.0-social-amd64")
    ) == ["app major 1 -> 2"]


def test_between_is_exclusive_then_inclusive():
    tags = ["1.0.0+1", "1.1.0+1", "1.2.0+1", "1.3.0+1"]
    got = between(tags, Version.parse("1.0.0+1"), Version.parse("1.2.0+1"))
    assert [v.tag for v in got] == ["1.1.0+1", "1.2.0+1"]
