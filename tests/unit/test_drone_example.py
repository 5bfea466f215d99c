"""docs/drone.example.yml as drone-runner-exec reads it (tests/support/drone_exec.py).

The lanes themselves run end to end on the swarm in tests/integration/test_pr_path.py; here
the file's shape and its trigger step, which decides and checks the bridge's parameters.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from support.drone_exec import compile_pipeline, run_build, script, substitute

ROOT = Path(__file__).resolve().parents[2]
DRONE = ROOT / "docs" / "drone.example.yml"
SHA = "0f42faf170a10445ed7c2153ca150898fab3560f"


def pipeline() -> dict:
    return compile_pipeline(DRONE.read_text(), {})


def test_every_step_carries_the_whole_environment_and_no_pipeline_level_one():
    raw = next(d for d in yaml.safe_load_all(DRONE.read_text()) if d)
    assert "environment" not in raw  # drone-runner-exec drops it without a word
    assert raw["trigger"] == {"event": ["custom"]} and raw["clone"] == {"disable": True}
    steps = pipeline()["steps"]
    assert [s["name"] for s in steps] == [
        "trigger",
        "cold (authoritative, gates merge)",
        "quick (lower confidence, non-gating)",
    ]
    shared = steps[0]["environment"]
    for key in ("CCCI_HOME", "ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "PATH", "CCCI_STATE_DIR"):
        assert all(s["environment"][key] == shared[key] for s in steps), key
    for key in ("CCCI_STATE_DIR", "CCCI_RECIPES_DIR", "ANSIBLE_INVENTORY", "CCCI_HOME"):
        assert shared[key].startswith("/"), key  # never HOME (per build) nor relative
    for step in steps:  # a plain YAML scalar ends at " #": no command may be cut short
        for command in step["commands"]:
            assert command.replace('\\"', "").count('"') % 2 == 0, command
    cold, quick = steps[1], steps[2]
    assert "failure" not in cold and quick["failure"] == "ignore"
    assert cold["depends_on"] == quick["depends_on"] == ["trigger"]
    for step, book in ((cold, "cold.yml"), (quick, "quick.yml")):
        assert step["environment"]["CCCI_FORGE_TOKEN"] == {"from_secret": "forge_token"}
        command = step["commands"][-1]
        assert command.startswith(f"ansible-playbook playbooks/{book} ")
        for var in ("ccci_pr", "ccci_state_dir", "ccci_recipes_dir",
                    "ccci_forge_url", "ccci_forge_repo", "ccci_forge_target_url", "junit"):  # fmt: skip
            assert f" -e {var}=" in command, var
        assert '-e junit="${CCCI_STATE_DIR}/junit/' in command  # JUnit outlives the build


def test_shell_variables_are_escaped_from_drones_substitution():
    """Drone replaces ${NAME} and $NAME in the file: every shell variable is $$-escaped."""
    for line in DRONE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        assert not re.search(r"(?<!\$)\$(?!\$)[{A-Za-z_]", line.replace("$$", "")), line
    assert substitute("a $${X} ${DRONE_REPO} $DRONE_REPO $$", {"DRONE_REPO": "o/r"}) == (
        "a ${X} o/r o/r $"
    )
    traced = script(['echo "$HOME"'])
    assert traced.startswith("\nset -e\n") and 'echo + "echo \\"\\$HOME\\""\necho "$HOME"' in traced


def build(**params) -> dict:
    return {"number": 4, "after": SHA, "target": "main", "ref": "refs/heads/main", "params": params}


@pytest.mark.parametrize(
    ("params", "status", "exit_code", "says"),
    [
        ({"CCCI_MODE": "none"}, "success", 78, "is not a lane"),
        ({}, "success", 78, "is not a lane"),
        ({"CCCI_MODE": "cold", "CCCI_PR": "7x", "CCCI_HEAD_REF": "refs/pull/7/head"}, "failure", 1,
         "CCCI_PR='7x' is not a pull request number"),
        ({"CCCI_MODE": "quick", "CCCI_PR": "7 ccci_state_dir=/"}, "failure", 1,
         "CCCI_PR='7 ccci_state_dir=/' is not a pull request number"),
    ],
)  # fmt: skip
def test_trigger_step_ends_early_or_refuses_bad_parameters(
    tmp_path, params, status, exit_code, says
):
    result = run_build(
        DRONE.read_text(), build(**params), "coop/custom-html", link_base="http://drone.test",
        tmp_root=str(tmp_path),
    )  # fmt: skip
    trigger = result.step("trigger")
    assert (result.status, trigger.exit_code) == (status, exit_code), result.log()
    assert says in trigger.log
    # nothing after the trigger ran; the build's root (HOME, workspace) is gone
    assert [s.state for s in result.steps[1:]] == ["skipped", "skipped"]
    assert not result.root.exists() and list(tmp_path.iterdir()) == []
