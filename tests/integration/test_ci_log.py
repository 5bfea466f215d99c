"""The coopcloud.ci.ci_log stdout callback on a small play of its own: steps, debug lines,
errors once (none for a rescued failure), progress lines, a followed file, the verdict
last. No swarm needed; the lanes' logs are asserted in test_quick_lane.py and
test_packaging.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from support.ansible import ROOT

PLAY = [
    {
        "name": "ci_log under test",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "A step that prints", "ansible.builtin.debug": {"msg": ["one", "two"]}},
            {"name": "A skipped step", "ansible.builtin.debug": {"msg": "x"}, "when": False},
            {
                "name": "A block that rescues",
                "block": [{"name": "Fail inside", "ansible.builtin.fail": {"msg": "RESCUED-ERR"}}],
                "rescue": [{"name": "Note it", "ansible.builtin.set_fact": {"noted": True}}],
            },
            {"name": "Name the file to follow", "ansible.builtin.set_fact": {"ccci_log_follow": "{{ live }}"}},
            {
                "name": "A long step",
                "ansible.builtin.shell": "for i in 1 2 3; do echo child-line-$i >> {{ live | quote }}; sleep 1.2; done",
                "changed_when": False,
            },
            # what a module doing a long step does (_progress), in a process Ansible starts
            {
                "name": "A step with progress",
                "ansible.builtin.command": {"argv": ["{{ python }}", "-c", "{{ progress_script }}"]},
                "environment": {"PYTHONPATH": "{{ collections }}"},
                "register": "progressed",
                "changed_when": False,
            },
            {"name": "Say the verdict", "ansible.builtin.debug": {"msg": "COLD VERDICT: PASS - demo"}},
            {"name": "Say more", "ansible.builtin.debug": {"msg": "after the verdict"}},
            {"name": "Fail for real", "ansible.builtin.fail": {"msg": "REAL-ERR"}, "ignore_errors": False},
        ],
    }
]  # fmt: skip


PROGRESS_SCRIPT = """
import os, time
from ansible_collections.coopcloud.ci.plugins.module_utils._progress import Progress
progress = Progress("copying the tree", total=3 * 1048576, unit="B", interval=1.0)
for _ in range(3):
    time.sleep(1.2)
    progress.add(1048576)
progress.finish()
print(os.environ["CCCI_PROGRESS_FILE"], progress.lines)
"""


def test_ci_log_prints_steps_errors_once_progress_and_the_verdict_last(tmp_path: Path):
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump(PLAY, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_STDOUT_CALLBACK="coopcloud.ci.ci_log",
        CCCI_LOG_PROGRESS="1",
    )
    out = subprocess.run(
        [Path(sys.executable).parent / "ansible-playbook", book, "-e", json.dumps({
            "live": str(tmp_path / "live.log"), "python": sys.executable,
            "collections": str(ROOT / "collections"), "progress_script": PROGRESS_SCRIPT})],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    lines = out.stdout.splitlines()
    assert out.returncode == 2, out.stdout + out.stderr
    assert lines[0] == "coopcloud.ci: ci_log under test"
    steps = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
    assert steps == [
        "A step that prints",
        "Note it",  # the rescued failure says nothing; its rescue is the step
        "Name the file to follow",
        "A long step",
        "A step with progress",
        "Say the verdict",
        "Say more",
        "Fail for real",
    ]
    assert "       one" in lines and "       two" in lines
    assert "RESCUED-ERR" not in out.stdout and "TASK [" not in out.stdout
    assert out.stdout.count("REAL-ERR") == 1
    assert [line.strip() for line in lines if "child-line" in line] == [
        "| child-line-1",
        "| child-line-2",
        "| child-line-3",
    ]
    assert any("... A long step: still running" in line for line in lines), out.stdout
    # the module's progress lines, each within a second of being written; the file goes
    progress = [line.strip() for line in lines if "copying the tree" in line]
    assert progress[0].startswith("... copying the tree: 1.0 MiB of 3.0 MiB (33 %), ")
    assert progress[-1].startswith("... copying the tree: 3.0 MiB of 3.0 MiB (100 %), ")
    assert all(line.endswith("iB/s") for line in progress) and len(progress) >= 3
    # once the step reports progress, the callback's own "still running" line gives way
    first = next(i for i, line in enumerate(lines) if "copying the tree" in line)
    assert not any("A step with progress: still running" in line for line in lines[first:])
    assert lines[-1] == "COLD VERDICT: PASS - demo"
    assert lines.index("       after the verdict") < lines.index("ERROR (Fail for real): REAL-ERR")
