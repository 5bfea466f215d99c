"""The ci_host role as an operator applies it: idempotence, check mode, removal of units
no longer wanted, the secrets file, a failing unit raising an alert. Converged through
bin/ccci into folders of the test (``ccci_systemd_reload`` false: PID 1 is not systemd
here). Needs no swarm."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

from support.ci_host import converge, systemd_analyze, verify_units
from support.http_receiver import HttpReceiver


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
    assert len(before) == 11  # 5 services, 5 timers, ccci-failed@.service

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
    assert len(_tree(tmp_path / "units")) == 11


def _service(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return {**parser["Unit"], **parser["Service"]}


def _as_systemd_runs(line: str, instance: str = "") -> list[str]:
    """ExecStart= as systemd runs it: the specifiers our units use, then the quoting."""
    assert "%" not in line.replace("%i", ""), line
    return shlex.split(line.replace("%i", instance))


TIMERS = {
    "alerts": {"on_calendar": "*:0/5", "play": "alerts.yml", "timeout": "10min"},
    "broken": {"on_calendar": "hourly", "play": "no-such-play.yml", "memory_max": "1G"},
}


def test_secrets_stay_private_and_a_failing_unit_raises_an_alert_the_relay_delivers(tmp_path):
    """One converge (with a unit whose play cannot start) proves two things.

    The secrets file is private and no secret is printed or written elsewhere.

    A failing unit raises an alert: PID 1 is not systemd here, so the chain is followed
    by hand, each step as systemd takes it from the unit files: the unit's command fails,
    its OnFailure= names the handler instance, the handler's ExecStart (with the
    MONITOR_* variables systemd gives it) writes the alert, and ccci-alerts.service's
    ExecStart, with the environment file, relays it to a receiver. Then every unit is
    checked: verify clean, sandboxed (exposure), limited."""
    password = "S3ntinel-" + os.urandom(4).hex()
    rx = HttpReceiver().start()
    env = {
        "CCCI_KEYCLOAK_ADMIN_PASSWORD": password,
        "CCCI_ALERT_URLS": f"json://127.0.0.1:{rx.port}/hook",
    }
    try:
        result = converge(tmp_path, _vars(tmp_path, ccci_environment=env, ccci_timers=TIMERS))
        assert result.rc == 0, result.stdout
        path = tmp_path / "etc" / "ccci" / "env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.read_text().splitlines()[1:] == [
            f'CCCI_ALERT_URLS="{env["CCCI_ALERT_URLS"]}"',
            f'CCCI_KEYCLOAK_ADMIN_PASSWORD="{password}"',
        ]
        assert password not in result.stdout + result.stderr
        units = tmp_path / "units"
        for unit in units.iterdir():
            assert password not in unit.read_text()

        broken = _service(units / "ccci-broken.service")
        assert broken["OnFailure"] == "ccci-failed@%N.service"  # %N: ccci-broken
        failed = subprocess.run(
            _as_systemd_runs(broken["ExecStart"]), capture_output=True, text=True, timeout=60
        )
        assert failed.returncode == 2 and "no-such-play.yml" in failed.stderr

        handler = _service(units / "ccci-failed@.service")
        assert "OnFailure" not in handler  # a failing handler does not loop
        monitor = {
            "MONITOR_SERVICE_RESULT": "exit-code",
            "MONITOR_EXIT_CODE": "exited",
            "MONITOR_EXIT_STATUS": str(failed.returncode),
            "MONITOR_INVOCATION_ID": "0123abcd",
        }
        plain = {k: v for k, v in os.environ.items() if not k.startswith("CCCI_")}
        for _ in range(2):  # a second failure while the first alert waits adds nothing
            raised = subprocess.run(
                _as_systemd_runs(handler["ExecStart"], "ccci-broken"),
                env={**plain, **monitor},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert raised.returncode == 0, raised.stderr
        (alert,) = (tmp_path / "state" / "alerts").glob("*-unit-failed-ccci-broken-*.json")
        data = json.loads(alert.read_text())
        assert (data["kind"], data["target"], data["unit"]) == (
            "unit-failed",
            "ccci-broken",
            "ccci-broken.service",
        )
        assert data["exit_status"] == "2" and data["service_result"] == "exit-code"
        assert "journalctl -u ccci-broken.service _SYSTEMD_INVOCATION_ID=0123abcd" in data["notes"]

        relay = _service(units / "ccci-alerts.service")
        relay_env = {**plain, **env, "CCCI_KEEP_ARTIFACTS": "30"}  # its EnvironmentFile
        relayed = subprocess.run(
            _as_systemd_runs(relay["ExecStart"]),
            env=relay_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert relayed.returncode == 0, relayed.stdout + relayed.stderr
        assert password not in relayed.stdout + relayed.stderr
        (post,) = rx.posts()
        assert "unit-failed" in post.body.decode() and "ccci-broken" in post.body.decode()
        assert not list((tmp_path / "state" / "alerts").glob("*.json"))
        assert (tmp_path / "state" / "alerts" / "seen" / alert.name).exists()
    finally:
        rx.stop()
    artifacts = b"".join(p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file())
    assert password.encode() not in artifacts

    proc = verify_units(units)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    for name in ("ccci-broken.service", "ccci-alerts.service", "ccci-failed@.service"):
        service = _service(units / name)
        assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
        assert f'ReadWritePaths="-{tmp_path / "state"}"' in (units / name).read_text()
        security = subprocess.run(
            [systemd_analyze(), "security", "--offline=yes", str(units / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        exposure = float(security.stdout.rsplit(": ", 1)[1].split()[0])
        assert exposure <= 4.5, security.stdout[-300:]  # 9.6 ("UNSAFE") unsandboxed
    assert (broken["MemoryMax"], broken["TasksMax"]) == ("1G", "512")
    assert _service(units / "ccci-alerts.service")["MemoryMax"] == "4G"

    # the file is left alone when ccci_environment is not given
    path.write_text("CCCI_KEYCLOAK_ADMIN_PASSWORD=set-by-hand\n")
    again = converge(tmp_path, _vars(tmp_path, ccci_timers=TIMERS), name="without-env")
    assert again.changed == 0, again.stdout
    assert path.read_text() == "CCCI_KEYCLOAK_ADMIN_PASSWORD=set-by-hand\n"


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
