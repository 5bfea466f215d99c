# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter ``coopcloud.ci.parse_trigger``: a PR comment -> which lane to run (SPEC WC7).

A thin shell: the rule lives in ``plugins/module_utils/_trigger.py``, which the comment
bridge uses too.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._trigger import parse_trigger

DOCUMENTATION = r"""
name: parse_trigger
short_description: Decide from a pull request comment whether and how to test a recipe
version_added: 0.1.0
author:
  - coopcloud.ci developers
description:
  - Reads a pull request comment and answers whether it asks for a CI run, and in which
    lane (SPEC WC7).
  - The comment is stripped of surrounding white space (spaces, tabs, line breaks). What
    remains must then be exactly C(!testme), which asks for a B(cold) run (the default,
    authoritative lane), or exactly C(!testme --quick), which asks for a B(quick) run
    (lower confidence, never gates merge).
  - Between C(!testme) and C(--quick) any run of spaces and tabs is accepted, but
    nothing else. A line break between the two words is B(not) a separator, so
    C(!testme) on one line and C(--quick) on the next is rejected. A reviewer writes the
    command on one line, and a comment that spreads it over two lines was more likely
    written for people than for the bot.
  - Everything else is rejected (C(run) V(false), C(mode) V(null)). That includes other capitalisation (C(!TESTME), C(--Quick)), other flags or values
    (C(-q), C(--quick=1)), extra words before or after (C(please !testme),
    C(!testme --quick now)), words glued on (C(!testmexyz)), an empty comment, and a
    value that is not a string (V(null), a number, a list).
options:
  _input:
    description: The comment text.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Which lane does the comment ask for?
  ansible.builtin.set_fact:
    trigger: "{{ pr_comment | coopcloud.ci.parse_trigger }}"
  # '!testme'           -> {'run': true,  'mode': 'cold'}
  # '  !testme --quick' -> {'run': true,  'mode': 'quick'}
  # 'please !testme'    -> {'run': false, 'mode': None}

- name: Stop unless the comment asks for a run
  ansible.builtin.meta: end_play
  when: not trigger.run

- name: Say which play the CI runs
  ansible.builtin.debug:
    msg: "ansible-playbook playbooks/{{ trigger.mode }}.yml -e recipe={{ recipe }}"
"""

RETURN = r"""
_value:
  description:
    - A dictionary with two keys.
    - C(run) is V(true) when the comment asks for a run.
    - C(mode) is V(cold) or V(quick) when C(run) is V(true), else V(null).
  type: dict
  sample:
    run: true
    mode: quick
"""


class FilterModule:
    """coopcloud.ci trigger filters."""

    def filters(self) -> dict[str, Any]:
        return {"parse_trigger": parse_trigger}
