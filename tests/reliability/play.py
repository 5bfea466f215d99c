"""Several module tasks in one throw-away play, run through ansible-runner as operators do.

One ansible-playbook start (a few seconds) instead of one per task keeps the battery
bounded. Tasks that are expected to fail carry ``ignore_errors: true``; their results are
read with ``Result.task(name)``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from support import ansible


def run_tasks(tasks: list[dict[str, Any]], *, check: bool = False) -> ansible.Result:
    play = [{"name": "reliability", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    with tempfile.TemporaryDirectory(prefix="ccci-runner-") as tmp:
        private = Path(tmp)
        (private / "project").mkdir()
        playbook = private / "project" / "play.yml"
        playbook.write_text(yaml.safe_dump(play))
        return ansible._run(private, str(playbook), None, "--check" if check else "", None)
