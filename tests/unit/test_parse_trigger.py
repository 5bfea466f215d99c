"""The PR-comment trigger filter (SPEC WC7): a battery of comments, and one real play."""

from __future__ import annotations

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
