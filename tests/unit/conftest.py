"""Unit tests call modules' main() in this process: reset Ansible's process-wide state."""

from __future__ import annotations

import pytest
from ansible.module_utils.common import warnings as ansible_warnings


@pytest.fixture(autouse=True)
def _fresh_ansible_warnings():
    """AnsibleModule collects warnings and deprecations in module-level dicts; one test's
    warnings must not show up in the next test's module result."""
    ansible_warnings._global_warnings.clear()
    ansible_warnings._global_deprecations.clear()
    yield
