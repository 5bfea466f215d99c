"""Unit tests call modules' main() in this process: reset Ansible's process-wide state."""

from __future__ import annotations

import pytest
from ansible.module_utils import _internal as ansible_internal
from ansible.module_utils.common import warnings as ansible_warnings
from support.keycloak_double import KC_ADMIN_PASSWORD, KeycloakDouble


@pytest.fixture(autouse=True)
def _module_side_of_ansible(monkeypatch):
    """Make every test see Ansible as a module process does.

    AnsibleModule collects warnings and deprecations in module-level dicts, so one test's
    warnings must not reach the next test's result. And once any controller code has
    been imported (a filter plugin's test imports ansible.errors), Ansible marks the
    process as the controller and sends module warnings to the display instead of the
    module result; a module process never is the controller.
    """
    monkeypatch.setattr(ansible_internal, "is_controller", False)
    ansible_warnings._global_warnings.clear()
    ansible_warnings._global_deprecations.clear()
    yield


@pytest.fixture
def kc():
    """A Keycloak double on loopback whose admin password is ``KC_ADMIN_PASSWORD``."""
    with KeycloakDouble(admin_password=KC_ADMIN_PASSWORD) as double:
        yield double
