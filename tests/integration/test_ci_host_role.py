"""The ci_host role as an operator applies it: idempotence, check mode, removal of units
no longer wanted, the secrets file. Converged through bin/ccci into folders of the test
(``ccci_systemd_reload`` false: PID 1 is not systemd here). Needs no swarm."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from support.ci_host import converge, verify_units


def _tree(path: Path) -> dict[str, str]:
    """name -> sha256 and mode of every file below ``path``."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _vars(tmp: Path, **extra) -> dict:
    base = {
        "ccci_systemd_dir": str(tmp / "units"),
        "ccci_systemd_reload": False,
        "ccci_environment_file": str(tmp / "etc" / "ccci" / "env"),
        "ccci_warm_infra": {"keycloak": {}, "traefik": {}},
        "ccci_proxy_network": "",  # test_proxy_network covers it on the shared engine
    }
    base.update(extra)
    return base


def test_check_mode_predicts_and_changes_nothing_then_converge_is_idempotent(tmp_path):
    check = converge(tmp_path, _vars(tmp_path), check=True, name="check")
    assert check.rc == 0, check.stdout + check.stderr
    assert check.changed > 0
    assert not (tmp_path / "units").exists()

    first = converge(tmp_path, _vars(tmp_path), name="first")
    assert first.rc == 0, first.stdout + first.stderr
    assert first.changed == check.changed  # check mode predicted the real run
    before = _tree(tmp_path / "units")
    assert len(before) == 10

    again = converge(tmp_path, _vars(tmp_path), name="again")
    assert again.rc == 0, again.stdout
    assert again.changed == 0, again.stdout
    again_check = converge(tmp_path, _vars(tmp_path), check=True, name="again-check")
    assert again_check.changed == 0, again_check.stdout
    assert _tree(tmp_path / "units") == before


def test_units_no_longer_wanted_are_removed_and_foreign_files_kept(tmp_path):
    assert converge(tmp_path, _vars(tmp_path)).rc == 0
    foreign = tmp_path / "units" / "ccci-mine.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    other = tmp_path / "units" / "docker.service"
    other.write_text("[Service]\nExecStart=/bin/true\n")

    fewer = _vars(tmp_path, ccci_warm_infra={"keycloak": {}})
    checked = converge(tmp_path, fewer, check=True, name="fewer-check")
    assert checked.rc == 0 and checked.changed == 1, checked.stdout
    assert (tmp_path / "units" / "ccci-reconcile-traefik.timer").exists()

    result = converge(tmp_path, fewer, name="fewer")
    assert result.rc == 0, result.stdout
    assert result.changed == 1  # one task removed both files
    names = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert "ccci-reconcile-traefik.service" not in names
    assert "ccci-reconcile-traefik.timer" not in names
    assert "ccci-reconcile-keycloak.timer" in names
    assert foreign.exists() and other.exists()  # not written by the role: left alone
    foreign.unlink()
    other.unlink()
    proc = verify_units(tmp_path / "units")
    assert proc.returncode == 0, proc.stderr


def test_secrets_file_is_private_and_never_printed(tmp_path):
    password = "S3ntinel-" + os.urandom(4).hex()
    env = {"CCCI_KEYCLOAK_ADMIN_PASSWORD": password, "CCCI_ALERT_URLS": "json://h/x"}
    result = converge(tmp_path, _vars(tmp_path, ccci_environment=env))
    assert result.rc == 0, result.stdout
    path = tmp_path / "etc" / "ccci" / "env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text().splitlines()[1:] == [
        'CCCI_ALERT_URLS="json://h/x"',
        f'CCCI_KEYCLOAK_ADMIN_PASSWORD="{password}"',
    ]
    artifacts = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert password.encode() not in artifacts
    assert password not in result.stdout + result.stderr
    for unit in (tmp_path / "units").iterdir():
        assert password not in unit.read_text()
    # the file is left alone when ccci_environment is not given
    path.write_text("CCCI_KEYCLOAK_ADMIN_PASSWORD=set-by-hand\n")
    assert converge(tmp_path, _vars(tmp_path), name="without-env").changed == 0
    assert path.read_text() == "CCCI_KEYCLOAK_ADMIN_PASSWORD=set-by-hand\n"


def test_the_bridge_unit_comes_and_goes_with_ccci_bridge_enabled(tmp_path):
    token = "T0ken-" + os.urandom(4).hex()
    bridge = {
        "ccci_bridge_enabled": True,
        "ccci_bridge_forge_url": "https://git.example.org",
        "ccci_bridge_drone_url": "https://drone.example.org",
        "ccci_bridge_secret": "s",
        "ccci_bridge_forge_token": token,
        "ccci_bridge_drone_token": "d",
        "ccci_bridge_config_file": str(tmp_path / "etc" / "ccci" / "bridge.env"),
    }
    on = converge(tmp_path, _vars(tmp_path, **bridge), name="bridge-on")
    assert on.rc == 0, on.stdout
    unit = tmp_path / "units" / "ccci-bridge.service"
    assert unit.read_text().startswith("# Managed by coopcloud.ci.ci_host")
    assert token not in on.stdout + on.stderr and token not in unit.read_text()
    missing = converge(tmp_path, _vars(tmp_path, **{**bridge, "ccci_bridge_drone_token": ""}))
    assert missing.rc != 0 and "ccci_bridge_drone_token" in missing.stdout
    assert token not in missing.stdout + missing.stderr
    off = converge(tmp_path, _vars(tmp_path), name="bridge-off")
    assert off.rc == 0, off.stdout
    assert not unit.exists()
    assert len(_tree(tmp_path / "units")) == 10


def test_proxy_network_is_created_overlay_and_attachable(tmp_path):
    import subprocess
    import uuid

    name = f"ccci-proxy-{uuid.uuid4().hex[:8]}"
    inspect = ["docker", "network", "inspect", "--format", "{{.Driver}} {{.Attachable}}", name]
    try:
        settings = _vars(tmp_path, ccci_proxy_network=name)
        check = converge(tmp_path, settings, check=True, name="check")
        assert check.rc == 0, check.stdout + check.stderr
        assert subprocess.run(inspect, capture_output=True).returncode != 0  # check: none
        first = converge(tmp_path, settings, name="first")
        assert first.rc == 0, first.stdout + first.stderr
        assert first.changed == check.changed  # check mode predicted the network too
        seen = subprocess.run(inspect, capture_output=True, text=True, check=True)
        assert seen.stdout.split() == ["overlay", "true"]
        again = converge(tmp_path, settings, name="again")
        assert again.rc == 0 and again.changed == 0, again.stdout
    finally:
        subprocess.run(["docker", "network", "rm", name], capture_output=True)
