"""A mistyped state dir stays absent through every entry point that takes one (issue 15).

Only ``bin/ccci init-state`` (``_state.init_state_dir``) creates a state dir. Every module
that takes ``state_dir`` (or ``secrets_state_dir``), the filter the plays' settings role
checks with, and every ``bin/ccci`` command but ``init-state`` refuse one without its
marker with the one sentence of ``_state.require_state_dir`` - and create nothing, not
even in check mode.
"""

from __future__ import annotations

import importlib
from contextlib import redirect_stderr
from io import StringIO

import pytest
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.filter.state_dir_problem import state_dir_problem
from ansible_collections.coopcloud.ci.plugins.module_utils import _runner

#: module -> the least arguments that would reach the state dir
MODULES = {
    "run_record": {"state": "started", "run_id": "abc123", "mode": "quick",
                   "recipe": "custom-html"},
    "warm_alert": {"state": "present", "kind": "rollback", "target": "custom-html"},
    "warm_lock": {"recipe": "custom-html", "run_id": "abc123", "state": "acquired"},
    "warm_canonical": {"recipe": "custom-html", "state": "idle", "run_id": "abc123",
                       "domain_suffix": "ci.example.org"},
    "volume_snapshot": {"recipe": "custom-html", "state": "present",
                        "domain": "warm-custom-html.ci.example.org"},
    "volume_marker": {"recipe": "custom-html", "domain": "warm-custom-html.ci.example.org",
                      "node": "ccci-mn2", "volume": "content", "name": "marker"},
    "warm_status": {},
    "disk_guard": {},
    "recipe_app": {"recipe": "custom-html", "state": "undeployed",
                   "domain": "warm-custom-html.ci.example.org"},
}  # fmt: skip


def sentence(typo) -> str:
    return f"state dir {typo} is not initialised (no valid {typo}/.ccci-state)"


@pytest.mark.parametrize("check", [False, True], ids=["real", "check"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_refuses_a_mistyped_state_dir_and_creates_nothing(
    name, check, tmp_path, capsys
):
    typo = tmp_path / "ci-wram"
    key = "secrets_state_dir" if name == "recipe_app" else "state_dir"
    module = importlib.import_module(f"ansible_collections.coopcloud.ci.plugins.modules.{name}")
    rc, out = run_main(module, {**MODULES[name], key: str(typo)}, capsys, check=check)
    assert rc != 0 and out["failed"], out
    assert sentence(typo) in out["msg"], out["msg"]
    assert "bin/ccci init-state --state-dir" in out["msg"]
    assert not typo.exists()


def test_the_settings_role_filter_gives_the_same_sentence(tmp_path, state_dir):
    typo = tmp_path / "ci-wram"
    assert sentence(typo) in state_dir_problem(str(typo))
    assert not typo.exists()
    assert state_dir_problem(str(state_dir)) == ""


@pytest.mark.parametrize(
    "argv",
    [["status"], ["sweep"], ["run", "quick.yml", "-e", "recipe=custom-html"],
     ["unit-failed", "ccci-sweep.service"]],
    ids=["status", "sweep", "run", "unit-failed"],
)  # fmt: skip
def test_every_bin_ccci_command_refuses_a_mistyped_state_dir_and_creates_nothing(
    argv, tmp_path, monkeypatch
):
    typo = tmp_path / "ci-wram"
    monkeypatch.delenv("CCCI_STATE_DIR", raising=False)
    err = StringIO()
    with redirect_stderr(err):
        rc = _runner.main([*argv, "--state-dir", str(typo)])
    assert rc != 0
    assert sentence(typo) in err.getvalue(), err.getvalue()
    assert not typo.exists()
