"""Run the collection's modules and plays the way operators do: through ansible-runner.

``run_module`` wraps one task in a throw-away play, ``run_play`` runs a play given as
data and ``run_playbook`` runs a play of ``playbooks/``. Each returns a :class:`Result`
with the exit status, the full stdout and, for each task, the module result taken from
ansible-runner's events.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    rc: int
    status: str
    stdout: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    artifacts: Path | None = None

    def task(self, name: str) -> dict[str, Any]:
        """The result of the last task called ``name``."""
        for event in reversed(self.tasks):
            if event["task"] == name:
                return event["res"]
        raise KeyError(f"no task {name!r} ran; ran: {[t['task'] for t in self.tasks]}")

    @property
    def last(self) -> dict[str, Any]:
        return self.tasks[-1]["res"]


def _env() -> dict[str, str]:
    return {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }


def _run(
    private_dir: Path, playbook: str, extravars: dict | None, cmdline: str, keep: Path | None
) -> Result:
    tasks: list[dict[str, Any]] = []

    def on_event(event: dict) -> bool:
        if event.get("event") in (
            "runner_on_ok",
            "runner_on_failed",
            "runner_on_skipped",
            "runner_item_on_ok",
            "runner_item_on_failed",
        ):
            data = event.get("event_data", {})
            tasks.append(
                {"task": data.get("task"), "event": event["event"], "res": data.get("res", {})}
            )
        return True

    runner = ansible_runner.run(
        private_data_dir=str(private_dir),
        playbook=playbook,
        inventory=str(ROOT / "inventory" / "local.yml"),
        extravars=extravars or {},
        cmdline=cmdline or None,
        envvars=_env(),
        project_dir=str(ROOT),
        quiet=True,
        event_handler=on_event,
        rotate_artifacts=1,
    )
    stdout = runner.stdout.read()
    return Result(
        rc=runner.rc,
        status=runner.status,
        stdout=stdout,
        tasks=tasks,
        artifacts=Path(runner.config.artifact_dir) if keep else None,
    )


def run_module(
    fqcn: str,
    args: dict[str, Any],
    *,
    check: bool = False,
    diff: bool = False,
    name: str = "module under test",
) -> Result:
    """Run one module as one task on localhost; ``Result.last`` is its result."""
    play = [
        {
            "name": "run one module",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [{"name": name, fqcn: args}],
        }
    ]
    flags = " ".join(f for f, on in (("--check", check), ("--diff", diff)) if on)
    return run_play(play, flags=flags)


def run_play(play: list, extravars: dict | None = None, *, flags: str = "") -> Result:
    """Run a play given as data (a list of plays, as in a playbook file) on localhost."""
    with tempfile.TemporaryDirectory(prefix="ccci-runner-") as tmp:
        private = Path(tmp)
        (private / "project").mkdir()
        playbook = private / "project" / "play.yml"
        playbook.write_text(yaml.safe_dump(play))
        return _run(private, str(playbook), extravars, flags, None)


def run_playbook(
    playbook: str,
    extravars: dict | None = None,
    *,
    check: bool = False,
    private_dir: Path | None = None,
) -> Result:
    """Run ``playbooks/<playbook>`` with extra vars; artifacts stay under ``private_dir``."""
    path = ROOT / "playbooks" / playbook
    if private_dir is None:
        private_dir = Path(tempfile.mkdtemp(prefix="ccci-runner-"))
    return _run(Path(private_dir), str(path), extravars, "--check" if check else "", private_dir)


def dump(result: Result) -> str:
    """For assertion messages: stdout and the task results."""
    return result.stdout + "\n" + json.dumps(result.tasks, indent=1, default=str)[:20000]


os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
# ansible-runner finds ansible-playbook on PATH: use the one beside this interpreter.
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


def write_inventory(path: Path, variables: dict[str, Any], python: str | None = None) -> Path:
    """An inventory of the CI host alone (``localhost``, local connection) with ``variables``
    for all hosts, as an operator's inventory file would give them."""
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": python or "{{ ansible_playbook_python }}",
    }
    path.write_text(
        yaml.safe_dump({"all": {"hosts": {"localhost": host}, "vars": dict(variables)}})
    )
    return path
