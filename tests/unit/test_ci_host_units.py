"""The units the ci_host role renders: contents, and ``systemd-analyze verify`` on them.

The role is converged through bin/ccci into a folder of the test (``ccci_systemd_reload``
false: PID 1 is not systemd here). ``systemd-analyze verify`` works offline on unit
files given by path; it needs ExecStart's program to exist (the Python and bin/ccci do).
"""

from __future__ import annotations

import configparser
import shlex
import sys
from pathlib import Path

import pytest
from support.ci_host import CCCI, ROOT, converge, verify_units

from ansible_collections.coopcloud.ci.plugins.module_utils._bridge import BridgeConfig

BRIDGE_SECRET = "bridge-S3cret-" + "9f3a"

# Renders the units by running the ci_host role in plays: make test runs it,
# make check leaves it out (-m 'not slow').
pytestmark = pytest.mark.slow


def _units(unit_dir: Path) -> dict[str, configparser.ConfigParser]:
    out = {}
    for path in sorted(unit_dir.iterdir()):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # keep key case
        parser.read_string(path.read_text())
        out[path.name] = parser
    return out


@pytest.fixture(scope="module")
def default_units(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ci-host-units")
    result = converge(
        tmp,
        {
            "ccci_systemd_dir": str(tmp / "units"),
            "ccci_systemd_reload": False,
            "ccci_environment_file": str(tmp / "etc" / "env"),
            "ccci_warm_infra": {"keycloak": {}, "traefik": {}},
            "ccci_bridge_enabled": True,
            "ccci_bridge_forge_url": "https://git.example.org",
            "ccci_bridge_drone_url": "https://drone.example.org",
            "ccci_bridge_secret": BRIDGE_SECRET,
            "ccci_bridge_forge_token": "forge-tok",
            "ccci_bridge_drone_token": 'drone"tok$`\\',
            "ccci_bridge_allow": ["carol", "dave"],
            "ccci_bridge_config_file": str(tmp / "etc" / "bridge.env"),
        },
    )
    assert result.rc == 0, result.stdout + result.stderr
    assert BRIDGE_SECRET not in result.stdout + result.stderr
    return tmp


def test_default_set_of_units(default_units):
    names = sorted(p.name for p in (default_units / "units").iterdir())
    assert names == [
        "ccci-alerts.service",
        "ccci-alerts.timer",
        "ccci-bridge.service",
        "ccci-failed@.service",
        *(
            f"ccci-{n}.{kind}"
            for n in ("reap", "reconcile-keycloak", "reconcile-traefik", "sweep")
            for kind in ("service", "timer")
        ),
    ]


def test_the_bridge_service_and_its_private_settings(default_units):
    service = _units(default_units / "units")["ccci-bridge.service"]
    config = default_units / "etc" / "bridge.env"
    argv = shlex.split(service["Service"]["ExecStart"])
    assert argv == [sys.executable, str(CCCI), "bridge", "--config", str(config)]
    assert service["Service"]["Restart"] == "on-failure"
    assert service["Service"]["ReadWritePaths"] == f'"{default_units}/state/bridge"'
    assert service["Install"]["WantedBy"] == "multi-user.target"
    assert "EnvironmentFile" not in service["Service"]  # secrets stay out of the environment
    assert config.stat().st_mode & 0o777 == 0o600
    assert (default_units / "state" / "bridge").stat().st_mode & 0o777 == 0o700
    # The bridge reads back exactly what the role wrote, odd characters included.
    loaded = BridgeConfig.load({}, str(config))
    assert (loaded.secret, loaded.drone_token) == (BRIDGE_SECRET, 'drone"tok$`\\')
    assert (loaded.forge_url, loaded.allow) == ("https://git.example.org", {"carol", "dave"})
    assert loaded.state_dir == str(default_units / "state" / "bridge")


def test_services_run_the_plays_through_ccci(default_units):
    units = _units(default_units / "units")
    state = str(default_units / "state")
    expected = {
        "ccci-sweep": ["sweep.yml"],
        "ccci-reap": ["reap.yml"],
        "ccci-alerts": ["alerts.yml"],
        "ccci-reconcile-keycloak": ["reconcile.yml", "-e", "target=keycloak"],
        "ccci-reconcile-traefik": ["reconcile.yml", "-e", "target=traefik"],
    }
    for unit, play in expected.items():
        service = units[f"{unit}.service"]["Service"]
        argv = shlex.split(service["ExecStart"])
        assert argv[:3] == [sys.executable, str(CCCI), "run"]
        assert argv[3:] == [play[0], "--state-dir", state, *play[1:]]
        assert service["Type"] == "oneshot"
        assert service["EnvironmentFile"] == f"-{default_units}/etc/env"
        assert service["WorkingDirectory"] == str(ROOT)
        assert service["SyslogIdentifier"] == unit
        text = (default_units / "units" / f"{unit}.service").read_text()
        assert 'Environment="ANSIBLE_STDOUT_CALLBACK=coopcloud.ci.ci_log"' in text
    sweep = units["ccci-sweep.service"]["Service"]
    assert sweep["Nice"] == "10" and sweep["TimeoutStartSec"] == "8h"
    assert "Nice" not in units["ccci-alerts.service"]["Service"]


def test_timers_fire_the_services(default_units):
    units = _units(default_units / "units")
    calendars = {
        "ccci-sweep": "*-*-* 02:30:00",
        "ccci-reconcile-keycloak": "hourly",
        "ccci-reap": "00/6:15:00",
        "ccci-alerts": "*:0/5",
    }
    for unit, calendar in calendars.items():
        timer = units[f"{unit}.timer"]
        assert timer["Timer"]["OnCalendar"] == calendar
        assert timer["Timer"]["Unit"] == f"{unit}.service"
        assert timer["Timer"]["Persistent"] == "true"
        assert timer["Install"]["WantedBy"] == "timers.target"


def test_rendered_units_pass_systemd_analyze_verify(default_units):
    proc = verify_units(default_units / "units")
    assert proc.returncode == 0, proc.stderr
    assert "ccci-" not in proc.stdout + proc.stderr, proc.stderr


def test_verify_catches_a_broken_unit(default_units, tmp_path):
    """The verification above can fail: a bad calendar and a missing program are caught."""
    timer = (default_units / "units" / "ccci-sweep.timer").read_text()
    service = (default_units / "units" / "ccci-sweep.service").read_text()
    (tmp_path / "ccci-sweep.timer").write_text(timer.replace("02:30:00", "half past two"))
    (tmp_path / "ccci-sweep.service").write_text(service.replace(str(CCCI), "/nonexistent/ccci"))
    proc = verify_units(tmp_path)
    assert proc.returncode != 0
    assert "calendar" in proc.stderr


def test_odd_values_are_quoted_for_systemd(tmp_path):
    odd = 'a b "c" 50% $HOME \\x'
    result = converge(
        tmp_path,
        {
            "ccci_systemd_dir": str(tmp_path / "units"),
            "ccci_systemd_reload": False,
            "ccci_timers": {
                "status": {
                    "description": "status page",
                    "on_calendar": "*:0/15",
                    "play": "status.yml",
                    "extravars": {"format": "html", "note": odd},
                    "randomized_delay": "30s",
                    "enabled": False,
                }
            },
        },
    )
    assert result.rc == 0, result.stdout
    names = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert names == ["ccci-failed@.service", "ccci-status.service", "ccci-status.timer"]
    exec_start = _units(tmp_path / "units")["ccci-status.service"]["Service"]["ExecStart"]
    # systemd: %% is a literal %, $$ a literal $; then shell-like quotes
    argv = shlex.split(exec_start.replace("%%", "%").replace("$$", "$"))
    assert argv[-4:] == ["-e", "format=html", "-e", f"note={odd}"]
    proc = verify_units(tmp_path / "units")
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("timers", "words"),
    [
        ({"x": {"play": "x.yml"}}, "on_calendar"),
        ({"Bad Name": {"on_calendar": "daily"}}, "unit ccci-Bad Name"),
        ({"x": {"on_calendar": "daily", "extravars": {"admin_password": "p"}}}, "never secrets"),
        ({"x": {"on_calendar": "daily", "extravars": {"note": "a\nb"}}}, "one-line"),
        ({"x": {"on_calendar": "daily\nExecStartPre=/bin/true"}}, "calendar"),
        ({"x": {"on_calendar": "daily", "memory_max": "lots"}}, "memory_max is bytes"),
    ],
)
def test_bad_timer_settings_are_refused_before_writing(tmp_path, timers, words):
    result = converge(
        tmp_path,
        {
            "ccci_systemd_dir": str(tmp_path / "units"),
            "ccci_systemd_reload": False,
            "ccci_timers": timers,
        },
    )
    assert result.rc != 0
    assert words in result.stdout
    assert not (tmp_path / "units").exists()


def test_argument_spec_refuses_wrong_types(tmp_path):
    result = converge(
        tmp_path,
        {
            "ccci_systemd_dir": str(tmp_path / "units"),
            "ccci_systemd_reload": "perhaps",
            "ccci_keep_artifacts": "many",
        },
    )
    assert result.rc != 0
    assert "ccci_keep_artifacts" in result.stdout and "ccci_systemd_reload" in result.stdout
    assert not (tmp_path / "units").exists()
