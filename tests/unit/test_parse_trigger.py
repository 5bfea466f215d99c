"""The PR-comment trigger filter (SPEC WC7): a battery of comments, and one real play."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.ansible import dump, run_playbook

from ansible_collections.coopcloud.ci.plugins.filter.parse_trigger import (
    FilterModule,
    parse_trigger,
)

ROOT = Path(__file__).resolve().parents[2]
COLD = {"run": True, "mode": "cold"}
QUICK = {"run": True, "mode": "quick"}
NO = {"run": False, "mode": None}

CASES = [
    # accepted
    ("!testme", COLD),
    ("  !testme  ", COLD),
    ("\n\t!testme\r\n", COLD),
    ("!testme --quick", QUICK),
    ("!testme    --quick", QUICK),
    ("!testme\t--quick", QUICK),
    ("!testme \t \t--quick", QUICK),
    ("\n  !testme --quick \n\n", QUICK),
    # rejected
    ("!testme --quick extra", NO),
    ("!testme extra", NO),
    ("!testmexyz", NO),
    ("!testme--quick", NO),
    ("!TESTME", NO),
    ("!Testme", NO),
    ("please !testme", NO),
    ("please\n!testme", NO),
    ("!testme\n--quick", NO),
    ("!testme\r\n--quick", NO),
    ("!testme\u00a0--quick", NO),
    ("!testme --Quick", NO),
    ("!testme --QUICK", NO),
    ("!testme --quick=1", NO),
    ("!testme --quick --quick", NO),
    ("!testme -q", NO),
    ("!testme --cold", NO),
    ("testme", NO),
    ("! testme", NO),
    ("`!testme`", NO),
    ("!testme.", NO),
    ("", NO),
    ("   \n\t ", NO),
    (None, NO),
    (42, NO),
    (["!testme"], NO),
    ({"comment": "!testme"}, NO),
    (b"!testme", NO),
]


@pytest.mark.parametrize(("comment", "expected"), CASES, ids=[repr(c) for c, _ in CASES])
def test_battery(comment, expected):
    result = parse_trigger(comment)
    assert result == expected
    assert list(result) == ["run", "mode"]


def test_results_are_fresh_dictionaries():
    first = parse_trigger("nope")
    first["run"] = True
    assert parse_trigger("nope") == NO


def test_the_filter_is_registered_under_its_name():
    assert FilterModule().filters() == {"parse_trigger": parse_trigger}


@pytest.mark.slow  # runs ansible
def test_through_real_ansible_templating(tmp_path):
    """`{{ comment | coopcloud.ci.parse_trigger }}` in a play run by ansible-runner."""
    comments = [c for c, _ in CASES if not isinstance(c, bytes)]
    play = [
        {
            "name": "parse trigger comments",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "parse one comment",
                    "ansible.builtin.debug": {"msg": "{{ comment | coopcloud.ci.parse_trigger }}"},
                },
                {
                    "name": "parse every comment",
                    "ansible.builtin.debug": {"msg": "{{ item | coopcloud.ci.parse_trigger }}"},
                    "loop": "{{ comments }}",
                },
                {
                    "name": "pick the play",
                    "ansible.builtin.debug": {
                        "msg": "playbooks/{{ (comment | coopcloud.ci.parse_trigger).mode }}.yml"
                    },
                    "when": "(comment | coopcloud.ci.parse_trigger).run",
                },
            ],
        }
    ]
    book = tmp_path / "trigger.yml"
    book.write_text(yaml.safe_dump(play))
    private = tmp_path / "runner"
    private.mkdir()
    # run_playbook joins playbooks/ with the name; an absolute path stands on its own.
    result = run_playbook(
        str(book), {"comment": " !testme\t --quick\n", "comments": comments}, private_dir=private
    )
    assert result.rc == 0, dump(result)
    assert result.task("parse one comment")["msg"] == QUICK
    looped = result.task("parse every comment")["results"]
    expected = [e for c, e in CASES if not isinstance(c, bytes)]
    assert [r["msg"] for r in looped] == expected
    assert result.task("pick the play")["msg"] == "playbooks/quick.yml"


# ---------------------------------------------------------------- docs/drone.example.yml

DRONE = ROOT / "docs" / "drone.example.yml"
#: The plays SPEC section 2 names; the example may only run these.
SPEC_PLAYBOOKS = {
    "quick.yml",
    "cold.yml",
    "reconcile.yml",
    "sweep.yml",
    "restore.yml",
    "reap.yml",
    "alerts.yml",
    "status.yml",
}


def drone_pipeline() -> dict:
    documents = [d for d in yaml.safe_load_all(DRONE.read_text()) if d is not None]
    assert len(documents) == 1
    return documents[0]


def drone_step(name_start: str) -> dict:
    steps = [s for s in drone_pipeline()["steps"] if s["name"].startswith(name_start)]
    assert len(steps) == 1, [s["name"] for s in drone_pipeline()["steps"]]
    return steps[0]


def test_drone_example_is_a_comment_triggered_pipeline_with_two_lanes():
    pipeline = drone_pipeline()
    assert pipeline["kind"] == "pipeline"
    assert pipeline["trigger"] == {"event": ["custom"]}
    assert [s["name"] for s in pipeline["steps"]] == [
        "trigger",
        "cold (authoritative, gates merge)",
        "quick (lower confidence, non-gating)",
    ]
    text = DRONE.read_text()
    assert set(re.findall(r"playbooks/([a-z]+\.yml)", text)) == {"cold.yml", "quick.yml"}
    assert set(re.findall(r"playbooks/([a-z]+\.yml)", text)) <= SPEC_PLAYBOOKS

    cold = drone_step("cold")
    cold_script = "\n".join(cold["commands"])
    assert (
        "ansible-playbook playbooks/cold.yml -e recipe=${DRONE_REPO_NAME} -e ref=${DRONE_COMMIT_SHA}"
        in cold_script
    )
    assert "quick.yml" not in cold_script
    assert "failure" not in cold  # a cold FAIL fails the build
    assert cold["environment"]["CONTEXT"] == "coopcloud-ci/cold (authoritative)"
    assert "exit 1" in cold_script

    quick = drone_step("quick")
    quick_script = "\n".join(quick["commands"])
    assert (
        "ansible-playbook playbooks/quick.yml -e recipe=${DRONE_REPO_NAME} -e ref=${DRONE_COMMIT_SHA}"
        in quick_script
    )
    assert "cold.yml" not in quick_script
    assert quick["failure"] == "ignore"  # a quick FAIL never fails the build
    assert quick["environment"]["CONTEXT"] == "coopcloud-ci/quick (lower confidence, non-gating)"
    assert "lower confidence" in quick_script
    # Both post statuses with the same function (a YAML alias), each under its own context.
    assert [c for c in cold["commands"] if c.startswith("status() {")] == [
        c for c in quick["commands"] if c.startswith("status() {")
    ]
    assert cold["depends_on"] == quick["depends_on"] == ["trigger"]


def test_drone_example_escapes_shell_variables_for_drone():
    """Drone substitutes ${VAR} and $VAR in the file itself: shell variables need `$$`."""
    for step in drone_pipeline()["steps"]:
        for command in step["commands"]:
            rest = command.replace("$$", "")
            for match in re.finditer(r"\$", rest):
                after = rest[match.end() : match.end() + 7]
                assert after.startswith(("(", "{DRONE_")), (step["name"], command)


def run_trigger_step(tmp_path, **env) -> tuple[int, str]:
    """The example's trigger step, as Drone's exec runner would run it (set -e)."""
    script = "set -e\n" + "\n".join(drone_step("trigger")["commands"]).replace("$$", "$")
    workspace = tmp_path / f"ws-{len(list(tmp_path.iterdir()))}"
    proc = subprocess.run(
        ["bash", "-c", script],
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "HOME": str(tmp_path),
            "DRONE_WORKSPACE": str(workspace),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    mode = workspace / ".ccci-mode"
    return proc.returncode, mode.read_text() if mode.exists() else proc.stdout + proc.stderr


@pytest.mark.slow  # runs ansible
@pytest.mark.parametrize(
    ("env", "rc", "mode"),
    [
        ({"CCCI_COMMENT": "!testme"}, 0, "cold"),
        ({"CCCI_COMMENT": "  !testme \t--quick\n"}, 0, "quick"),
        ({"CCCI_COMMENT": "please !testme"}, 78, "none"),
        ({"CCCI_COMMENT": "!testme\n--quick"}, 78, "none"),
        ({"CCCI_MODE": "quick"}, 0, "quick"),
        ({"CCCI_MODE": "yolo"}, 78, "none"),
    ],
)
def test_drone_example_trigger_step_runs_the_filter(tmp_path, env, rc, mode):
    got_rc, got_mode = run_trigger_step(tmp_path, **env)
    assert (got_rc, got_mode) == (rc, mode)
