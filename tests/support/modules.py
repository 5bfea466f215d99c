"""Run a module's ``main()`` in this process, with its arguments handed over as Ansible does.

    rc, result = run_main(recipe_ref, {"recipe": "custom-html", ...}, capsys, check=True)

``check`` and ``diff`` set ``_ansible_check_mode`` and ``_ansible_diff``. The module ends
through ``exit_json``/``fail_json`` (``SystemExit``); its JSON result is read from stdout.
"""

from __future__ import annotations

import json
from types import ModuleType

import pytest
from ansible.module_utils.testing import patch_module_args


def run_main(
    module: ModuleType, args: dict, capsys, *, check: bool = False, diff: bool = False
) -> tuple[int, dict]:
    """``module.main()`` with ``args``: its exit code and its result."""
    flags = {"_ansible_check_mode": True} if check else {}
    if diff:
        flags["_ansible_diff"] = True
    with patch_module_args({**args, **flags}), pytest.raises(SystemExit) as exc:
        module.main()
    return exc.value.code, json.loads(capsys.readouterr().out)
