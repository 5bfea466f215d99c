"""Converge the ``coopcloud.ci.ci_host`` role the way an operator would: a small play run
through ``bin/ccci`` (ansible-runner), units written into a folder of the test's own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.fixtures import init_state

ROOT = Path(__file__).resolve().parents[2]
CCCI = ROOT / "bin" / "ccci"


@dataclass
class Converge:
    rc: int
    stdout: str
    stderr: str

    @property
    def changed(self) -> int:
        found = re.findall(r"localhost\s+: ok=\d+\s+changed=(\d+)", self.stdout)
        assert found, f"no PLAY RECAP in:\n{self.stdout}\n{self.stderr}"
        return int(found[-1])


def converge(tmp: Path, role_vars: dict, *, check: bool = False, name: str = "c") -> Converge:
    """Apply the role with ``role_vars`` (units go where ``ccci_systemd_dir`` says)."""
    play = [
        {
            "name": "Converge ci_host",
            "hosts": "localhost",
            "gather_facts": False,
            "roles": [{"role": "coopcloud.ci.ci_host", "vars": role_vars}],
        }
    ]
    init_state(tmp / "state")  # bin/ccci refuses a state dir not made on purpose
    path = tmp / f"converge-{name}.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    args = [sys.executable, str(CCCI), "run", str(path), "--state-dir", str(tmp / "state")]
    if check:
        args.append("--check")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCCI_")}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    return Converge(proc.returncode, proc.stdout, proc.stderr)


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install -y systemd (starts nothing)"
    return found


def verify_units(unit_dir: Path) -> subprocess.CompletedProcess:
    """``systemd-analyze verify`` on every unit of the folder, offline (no PID 1 needed)."""
    units = sorted(str(p) for p in unit_dir.iterdir() if p.suffix in (".service", ".timer"))
    assert units, f"no units in {unit_dir}"
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--generators=no", *units],
        capture_output=True,
        text=True,
        timeout=120,
    )
