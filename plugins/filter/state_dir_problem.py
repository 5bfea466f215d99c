# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter ``coopcloud.ci.state_dir_problem``: why a state dir may not be used, if it may not.

A thin shell over ``_state.require_state_dir``, the one home of the refusal sentence that
``bin/ccci`` and every module taking a state dir also give (issue 15, item 4).
"""

from __future__ import annotations

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir

DOCUMENTATION = r"""
name: state_dir_problem
short_description: Why a state dir may not be used (it was never initialised), or nothing
version_added: 0.1.0
author:
  - coopcloud.ci developers
description:
  - Checks a warm state dir the way every module and C(bin/ccci) check it - it must hold
    the marker C(<state_dir>/.ccci-state) that C(bin/ccci init-state) (or the
    C(coopcloud.ci.ci_host) role) writes - and returns the one sentence that refuses it,
    naming the path and how to initialise it; an empty string when it may be used.
  - Creates nothing and writes nothing. Runs where the play's templates are rendered, the
    controller, which is the manager that holds the state dir (plays run on C(localhost)).
  - The C(coopcloud.ci.settings) role, which every play lists first, fails the play with
    this sentence, so a mistyped C(ccci_state_dir) never becomes a new, empty state dir.
options:
  _input:
    description: The state dir, an absolute path.
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Refuse a state dir that was never initialised
  ansible.builtin.fail:
    msg: "{{ ccci_state_problem }}"
  vars:
    ccci_state_problem: "{{ ccci_state_dir | coopcloud.ci.state_dir_problem }}"
  when: ccci_state_problem | length > 0
  # state dir /var/lib/ci-wram is not initialised (no valid /var/lib/ci-wram/.ccci-state):
  # a mistyped ccci_state_dir? Nothing was created. To use it, initialise it on purpose
  # with `bin/ccci init-state --state-dir /var/lib/ci-wram` (or apply the
  # coopcloud.ci.ci_host role)
"""

RETURN = r"""
_value:
  description:
    - The sentence refusing the state dir, or an empty string when it is initialised.
  type: str
  sample: ""
"""


def state_dir_problem(state_dir: object) -> str:
    try:
        require_state_dir(state_dir)
    except CcciError as exc:
        return str(exc)
    return ""


class FilterModule:
    """coopcloud.ci state dir filters."""

    def filters(self) -> dict:
        return {"state_dir_problem": state_dir_problem}
