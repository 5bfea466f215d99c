from __future__ import annotations

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


def test_utc_now_format():
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", state.utc_now())
