"""The module glue: one error root with its evidence, one run/fail path, one client factory."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import sys

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args

from ansible_collections.coopcloud.ci.plugins import module_utils
from ansible_collections.coopcloud.ci.plugins.module_utils import _common
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError, run_module


def test_every_error_of_the_collection_has_the_one_root():
    found = []
    for info in pkgutil.iter_modules(module_utils.__path__):
        mod = importlib.import_module(f"{module_utils.__name__}.{info.name}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, BaseException):
                found.append(name)
                assert issubclass(cls, CcciError), f"{mod.__name__}.{name} is not a CcciError"
    assert len(found) >= 27 and "SnapshotError" in found and "KeycloakError" in found


@pytest.mark.parametrize(
    ("kwargs", "evidence"),
    [
        ({}, {}),
        ({"rc": 2, "stderr": "boom"}, {"rc": 2, "stdout": "", "stderr": "boom"}),
        ({"stdout": "out"}, {"stdout": "out"}),
        (
            {"cmd": ["git", "x"], "rc": 1},
            {"cmd": ["git", "x"], "rc": 1, "stdout": "", "stderr": ""},
        ),
        ({"status": 409, "body": '{"error":"x"}'}, {"status": 409, "body": '{"error":"x"}'}),
        ({"path": "/s/r/lock"}, {"path": "/s/r/lock"}),
    ],
)
def test_evidence_carries_only_what_there_is(kwargs, evidence):
    exc = CcciError("it failed", **kwargs)
    assert str(exc) == "it failed" and exc.evidence() == evidence


def run(capsys, work, params=None, **kw):
    with patch_module_args(params or {}), pytest.raises(SystemExit) as exc:
        module = AnsibleModule(argument_spec={}, supports_check_mode=True)
        run_module(module, work, **kw)
    return exc.value.code, json.loads(capsys.readouterr().out)


def bug():
    return {}["missing"]


@pytest.mark.parametrize(
    ("work", "msg", "evidence"),
    [
        (lambda: {"changed": 1, "x": "y"}, None, {"changed": True, "x": "y"}),
        (
            lambda: (_ for _ in ()).throw(CcciError("git failed", rc=128, stdout="o", stderr="e")),
            "snap: git failed",
            {"rc": 128, "stdout": "o", "stderr": "e"},
        ),
        (
            lambda: open("/nonexistent/ccci/file"),  # noqa: SIM115
            "snap: No such file or directory (/nonexistent/ccci/file)",
            {"errno": 2},
        ),
        (bug, "snap: internal error: KeyError: 'missing'", {}),
    ],
)
def test_run_module_exits_or_fails_through_one_path(capsys, work, msg, evidence):
    rc, out = run(capsys, work, prefix="snap", on_failure=lambda: {"actions": ["a"]})
    if msg is None:
        assert rc == 0 and out["changed"] is True and out["x"] == "y" and "elapsed" not in out
        return
    assert rc == 1 and out["failed"] is True and out["msg"] == msg
    assert out["actions"] == ["a"]
    for key, value in evidence.items():
        assert out[key] == value


def test_elapsed_is_the_work_time(capsys):
    rc, out = run(capsys, lambda: {"changed": False}, elapsed=True)
    assert rc == 0 and isinstance(out["elapsed"], float) and 0 <= out["elapsed"] < 5


def test_a_missing_sdk_fails_the_ansible_way(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)
    with patch_module_args({}), pytest.raises(SystemExit) as exc:
        _common.docker_client(AnsibleModule(argument_spec={}))
    out = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1
    assert "Failed to import the required Python library (docker)" in out["msg"]


def test_specs_match_their_fragments():
    import yaml

    from ansible_collections.coopcloud.ci.plugins.doc_fragments.attributes import (
        ModuleDocFragment as Attributes,
    )
    from ansible_collections.coopcloud.ci.plugins.doc_fragments.common import ModuleDocFragment

    pairs = [
        (_common.recipe_spec(), ModuleDocFragment.RECIPE),
        (_common.run_id_spec(), ModuleDocFragment.RUN_ID),
        (_common.wait_timeout_spec(), ModuleDocFragment.WAIT_TIMEOUT),
        (_common.driver_spec(), ModuleDocFragment.DRIVER),
        (_common.state_dir_spec(), Attributes.STATE_DIR),
    ]
    for spec, fragment in pairs:
        options = yaml.safe_load(fragment)["options"]
        assert options.keys() == spec.keys()
        for name, arg in spec.items():
            doc = options[name]
            assert doc["type"] == arg["type"]
            assert doc.get("default") == arg.get("default")
            assert doc.get("choices") == arg.get("choices")
            assert bool(doc.get("required")) == bool(arg.get("required"))


@pytest.mark.parametrize("diff_mode", [False, True])
def test_diff_only_when_asked(capsys, diff_mode):
    work = lambda: {"changed": True, "diff": {"before": {}, "after": {"a": 1}}}  # noqa: E731
    params = {"_ansible_diff": True} if diff_mode else {}
    rc, out = run(capsys, work, params, diff_when_asked=True)
    assert rc == 0 and ("diff" in out) is diff_mode


def test_pick_and_specs_are_plain_data():
    assert _common.pick({"a": 1, "b": 2, "c": 3}, "a", "c") == {"a": 1, "c": 3}
    assert _common.plain_specs("str", "x", "y") == {"x": {"type": "str"}, "y": {"type": "str"}}
    assert _common.state_spec(["on", "off"], "on") == {
        "state": {"type": "str", "default": "on", "choices": ["on", "off"]}
    }


def test_the_default_state_dir_is_written_once_in_code():
    """Python code names the default state root through ``_common.DEFAULT_STATE_DIR``; only
    docs (module DOCUMENTATION/EXAMPLES/RETURN, doc fragments, docstrings) spell it out."""
    import ast
    from pathlib import Path

    root = Path(_common.__file__).resolve().parents[2]
    docs = {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    sources = [*(root / "plugins").rglob("*.py"), *(root / "bin").iterdir(),
               root / "scripts" / "demo", root / "scripts" / "verify"]  # fmt: skip
    found = []
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".py") or "doc_fragments" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        skip = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        skip |= {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in docs for t in node.targets)
        }
        found += [
            f"{path.relative_to(root)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "/var/lib/ci-warm" in node.value
            and id(node) not in skip
        ]
    line = next(n for n, text in enumerate((root / "plugins/module_utils/_common.py")
                .read_text().splitlines(), 1) if text.startswith("DEFAULT_STATE_DIR = "))  # fmt: skip
    assert found == [f"plugins/module_utils/_common.py:{line}"]
