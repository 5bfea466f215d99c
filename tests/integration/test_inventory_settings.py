"""Host settings set in the inventory reach the operator plays.

Operators keep ccci_state_dir and friends in group_vars; a play that set them as play
vars would silently override the inventory (play vars beat inventory group_vars) and act
on /var/lib/ci-warm instead. No swarm is needed: the plays read state files only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support.ansible import ROOT, write_inventory
from support.fixtures import init_state

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertStore
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry

PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def play(name: str, inventory: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(
        [PLAYBOOK, "-i", str(inventory), str(ROOT / "playbooks" / name), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_status_and_alerts_read_the_state_dir_from_the_inventory(tmp_path):
    state = init_state(tmp_path / "state-from-inventory")
    Registry(str(state), "custom-html").seed(
        "warm-custom-html.inv.test", "1.1.0+1.29", "a" * 40, "abc123", "0" * 64
    )
    AlertStore(str(state)).write("rollback", "keycloak", "2.0.0+2", "1.0.0+1", True, "test")
    inventory = tmp_path / "hosts.yml"
    write_inventory(inventory, {"ccci_state_dir": str(state)}, python=sys.executable)
    dest = tmp_path / "status.json"
    res = play("status.yml", inventory, "-e", "format=json", "-e", f"dest={dest}")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(dest.read_text())
    assert doc["state_dir"] == str(state)
    assert [(r["recipe"], r["version"]) for r in doc["recipes"] if r["canonical"]] == [
        ("custom-html", "1.1.0+1.29")
    ]

    # alerts.yml reads the same state dir: with no URL configured, it fails naming it
    res = play("alerts.yml", inventory, "-e", '{"ccci_alert_urls": []}')
    assert res.returncode != 0
    assert "no alert URL is configured" in res.stdout
    assert len(list((state / "alerts").glob("*.json"))) == 1
