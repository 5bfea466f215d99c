from __future__ import annotations

import datetime
import json
import os
import re

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _state as state


def test_write_json_is_complete_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "canonical.json"
    state.write_json(str(path), {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().endswith("\n")
    assert os.listdir(path.parent) == ["canonical.json"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "canonical.json"
    state.write_json(str(path), {"version": "old"})

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        state.write_json(str(path), {"version": "new"})
    assert json.loads(path.read_text()) == {"version": "old"}
    assert os.listdir(tmp_path) == ["canonical.json"]


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "canonical.json"
    path.write_text('{"recipe": "custom-ht')
    with pytest.raises(state.StateError, match=re.escape(str(path)) + r" is not valid JSON"):
        state.read_json(str(path))
    with pytest.raises(state.StateError, match="does not exist"):
        state.read_json(str(tmp_path / "missing.json"))
    assert state.read_json(str(tmp_path / "missing.json"), default=None) is None


def test_one_clock_one_text_form_one_parser():
    now = state.utc_now()
    assert now.tzinfo is not None and now.utcoffset() == datetime.timedelta(0)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", state.stamp())
    moment = datetime.datetime(2026, 11, 26, 23, 38, 1, 123456, tzinfo=datetime.UTC)
    assert state.stamp(moment) == "2026-11-26T23:38:01Z"
    for text in (
        "2026-11-26T23:38:01.123456789Z",  # Docker, nanoseconds
        "2026-11-27T00:38:01.123456+01:00",
        "2026-11-26T23:38:01.123456",  # naive = UTC
        "2026-11-26t23:38:01.123456z",
        moment,
    ):
        assert state.parse_time(text) == moment, text
    for text in (None, "", "0001-01-01T00:00:00Z", "yesterday", 7):
        assert state.parse_time(text) is None


def test_recipe_paths_are_the_spec_layout():
    paths = state.RecipePaths("/var/lib/x", "custom-html")
    assert paths.directory == "/var/lib/x/custom-html"
    assert paths.registry == "/var/lib/x/custom-html/canonical.json"
    assert paths.snapshot == "/var/lib/x/custom-html/snapshot"
    assert paths.lock == "/var/lib/x/custom-html/lock"


def test_a_state_dir_is_made_on_purpose_and_a_missing_one_is_named_not_made(tmp_path):
    typo = tmp_path / "ci-wram"
    with pytest.raises(state.StateError) as err:
        state.require_state_dir(str(typo))
    assert f"state dir {typo} is not initialised" in str(err.value)
    assert f"bin/ccci init-state --state-dir {typo}" in str(err.value)
    assert not typo.exists()
    assert state.init_state_dir(str(typo / "deep")) is True  # parents too
    assert json.loads((typo / "deep" / ".ccci-state").read_text())["format"] == 1
    assert state.init_state_dir(str(typo / "deep")) is False  # again: left alone
    assert state.require_state_dir(str(typo / "deep") + "/") == str(typo / "deep")
    (typo / "deep" / ".ccci-state").write_text('{"format": 2}\n')
    with pytest.raises(state.StateError, match="has format 2"):
        state.require_state_dir(str(typo / "deep"))
    with pytest.raises(state.StateError, match="has format 2"):
        state.init_state_dir(str(typo / "deep"))  # never rewritten over a newer one
    with pytest.raises(state.CcciError, match="is relative"):
        state.init_state_dir("state")
