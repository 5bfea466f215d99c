#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: release_gate
short_description: Decide whether warm infrastructure may move to a newer recipe version
version_added: 0.1.0
description:
  - The pre-deploy safety gate of warm infrastructure (SPEC WC1.2). It compares the
    O(current) version with the O(candidate) version of a recipe, both
    C(<recipe-semver>+<app-version>) tags (the older C(v2.4.8) form is understood too),
    and reads the release notes of every version after O(current) up to and including
    O(candidate).
  - The verdict is V(held-major) when the recipe's semver major or the first number of
    the app version goes up (C(1.2.0+25.0.6) to C(1.3.0+26.0.0) holds, so does
    C(1.9.0+1.30) to C(2.0.0+1.30)); V(held-manual-migration) when release notes call for
    a manual migration; V(noop) when the candidate is the current version or older (the
    gate never downgrades); V(proceed) otherwise. When both holds apply the verdict is
    V(held-major) and every reason is listed.
  - Release notes are C(releaseNotes/<version>.md), or the older C(release/<version>),
    read from the version's tag and then from the default branch (notes are often
    added after the tag).
  - 'Notes hold when they contain, case-insensitively and as whole words (a line break
    may split the words), one of these phrases: C(manual migration) (also C(manual
    database migration)), C(migrate ... manually), C(manually migrate), C(manual
    intervention), C(manual step) (also C(manual upgrade steps)), C(manual upgrade),
    C(manual action), C(action required), C(requires manual), C(breaking change),
    C(backwards incompatible), C(not backwards compatible), C(incompatible change),
    C(before upgrading) (also C(before you upgrade)), C(migration guide) or
    C(migration instructions), C(upgrade guide) or C(upgrade instructions).'
  - 'A mention that is plainly negated does not hold. Negated means preceded, in the same
    sentence, by C(no), C(not), C(without) or C(does not need/require) with only filler
    words between (C(No breaking changes.), C(without any manual steps), C(No action
    needed before upgrading.)), or followed by C(is not required), C(are no longer needed)
    or C(: none) (C(Breaking changes: none)). C(Do not skip the manual migration) still
    holds. Any mention that is not negated holds; when in doubt the gate holds, since a
    hold costs one command and a wrong upgrade can cost data.'
  - A hold is lifted for exactly one version with O(accept), the one-command way out
    (C(ansible-playbook playbooks/reconcile.yml -e target=keycloak -e accept=2.0.0+26.0)).
  - This module only reads. It does not raise the alert itself; the play that calls it
    writes one with M(coopcloud.ci.warm_alert) from the returned values (the RV(alert)
    dictionary is ready for that), so writing state stays in one module.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.INFO_MODULE]
options:
  recipe:
    description:
      - The recipe of the warm infrastructure, a checkout at O(recipes_dir)/O(recipe).
    type: str
    required: true
  recipes_dir:
    description:
      - Where recipe checkouts live, one folder per recipe.
    type: path
    default: ~/.abra/recipes
  current:
    description:
      - The deployed version, or the recorded last-good when nothing healthy is deployed.
      - Required unless O(reconcile) is given (then the version to move from is derived
        from it).
    type: str
  reconcile:
    description:
      - What a reconcile of warm infrastructure found, to get its plan back as RV(reconcile)
        (the decision of C(roles/reconcile), made in Python and unit-tested).
      - C(running) is what runs at the target's domain (C(state), C(version), C(commit)),
        C(healthy) whether it answered its probe, C(last_good) the target's last-good
        record or V(null).
      - The version to move from is what runs when it is healthy, else the last-good's
        version. The gate is asked only when there is one and no earlier upgrade broke off
        (its C(attempt)); otherwise RV(verdict) is V(null) and no notes are read.
    type: dict
    suboptions:
      running:
        description: What runs (C(state) V(deployed) or not, C(version), C(commit)).
        type: dict
        required: true
      healthy:
        description: Whether what runs answered its health probe.
        type: bool
        default: false
      last_good:
        description: The last-good record (C(version), C(commit), C(attempt), C(failed)) or V(null).
        type: dict
  candidate:
    description:
      - The version to move to. Default is the recipe's latest version tag (after the
        fetch when O(fetch=true)).
    type: str
  accept:
    description:
      - A version the operator explicitly accepts. When it equals O(candidate) a hold
        becomes V(proceed) (the reasons are kept, prefixed C(accepted by the operator)).
        A different version is ignored and a reason says so.
      - An empty string means none.
    type: str
  fetch:
    description:
      - Fetch the recipe repository (tags included) from its C(origin) first. A checkout
        without C(origin) is used as it is. The fetch also runs in check mode; it only
        refreshes the local copy of the remote.
    type: bool
    default: true
  target:
    description:
      - The name of the warm infrastructure, used only in the returned RV(alert). Default
        is O(recipe).
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Reads only; RV(changed) is always V(false).
author:
  - coopcloud.ci developers
notes:
  - Tests with pure data live in C(tests/unit/test_release.py); the phrase list is
    C(PHRASES) in C(plugins/module_utils/_release.py).
seealso:
  - module: coopcloud.ci.warm_alert
"""

EXAMPLES = r"""
- name: Ask the gate whether keycloak may move to the latest version
  coopcloud.ci.release_gate:
    recipe: keycloak
    current: "{{ deployed_version }}"
  register: gate

- name: Raise the alert of a hold
  coopcloud.ci.warm_alert:
    state: present
    state_dir: /var/lib/ci-warm
    kind: "{{ gate.alert.kind }}"
    target: "{{ gate.alert.target }}"
    attempted: "{{ gate.alert.attempted }}"
    last_good: "{{ gate.alert.last_good }}"
    notes: "{{ gate.alert.notes }}"
  when: gate.verdict in ['held-major', 'held-manual-migration']

- name: Take a held major on purpose (the operator accepted it)
  coopcloud.ci.release_gate:
    recipe: keycloak
    current: 1.9.0+25.0.6
    candidate: 2.0.0+26.0.0
    accept: 2.0.0+26.0.0
    fetch: false
"""

RETURN = r"""
verdict:
  description:
    - V(proceed), V(held-major), V(held-manual-migration) or V(noop).
    - V(null) when O(reconcile) is given and the gate was not asked (see there).
  returned: always
  type: str
  sample: held-manual-migration
current:
  description: The current version as given (or as derived from O(reconcile)).
  returned: always
  type: str
  sample: 1.1.0+1.29
candidate:
  description: The candidate version (the latest version tag when not given).
  returned: always
  type: str
  sample: 1.2.0+1.30
reasons:
  description: One sentence per reason for the verdict (empty for a plain V(proceed)).
  returned: always
  type: list
  elements: str
  sample: ["the release notes of 1.2.0+1.30 call for a manual migration (matched: 'manual migration')"]
notes:
  description:
    - Version to the full text of its release notes, for the notes that hold and, when a
      major version is crossed (V(held-major)), for every crossed version that has notes.
  returned: always
  type: dict
  sample: {"1.2.0+1.30": "Run a manual migration of the database before deploying."}
notes_text:
  description: The notes of RV(notes) as one text with a heading per version.
  returned: always
  type: str
  sample: "## 1.2.0+1.30\n\nRun a manual migration of the database before deploying."
matched_phrases:
  description: Version to the phrases found in its notes.
  returned: always
  type: dict
  sample: {"1.2.0+1.30": ["manual migration"]}
versions_checked:
  description: The versions whose release notes were read, oldest first.
  returned: always
  type: list
  elements: str
  sample: ["1.2.0+1.30"]
accepted:
  description: V(true) when O(accept) turned a hold into V(proceed).
  returned: always
  type: bool
  sample: false
fetched:
  description: V(true) when the repository was fetched from C(origin).
  returned: always
  type: bool
  sample: true
reconcile:
  description:
    - With O(reconcile), the plan. C(plan) is one of V(finish) (an interrupted upgrade
      finished, commit it), V(recover) (it did not, roll it back), V(unhealthy) (what runs
      is not healthy, alert and change nothing), V(install) (nothing runs, nothing recorded),
      V(hold) (the gate holds), V(noop) (up to date and healthy, or the latest rolled back
      here before and is not accepted again), V(upgrade) (move to the latest behind the
      health gate; also the redeploy of a last-good that is not deployed, then
      C(reattach) is V(true)).
    - C(current) is the version it moves from, C(retry_refused) whether the latest rolled
      back here before and O(accept) does not name it, C(deploy) the C(version) and C(ref)
      to deploy.
    - C(record) is the last-good record to write before the plan's steps (C(version),
      C(commit), C(at), C(attempt), C(failed), over the keys of the one given), or V(null).
      It is what runs healthy when nothing or something else is recorded and no upgrade broke
      off, or the interrupted upgrade that had finished (plan V(finish)). C(record_note)
      says so for the run's notes (empty when the plan's own sentence does).
  returned: when O(reconcile) is given
  type: dict
  sample:
    record: null
    record_note: ""
    plan: upgrade
    reattach: false
    current: 1.1.0+1.29
    retry_refused: false
    deploy: {version: 1.2.0+1.30, ref: 1.2.0+1.30}
alert:
  description:
    - The alert a hold should raise, ready for M(coopcloud.ci.warm_alert) (kind =
      verdict, target, attempted = candidate, last_good = current, notes).
    - Notes are the reasons, then the release notes that hold (a heading per version).
  returned: when the verdict is V(held-major) or V(held-manual-migration)
  type: dict
  sample:
    kind: held-manual-migration
    target: keycloak
    attempted: 1.2.0+1.30
    last_good: 1.1.0+1.29
    notes: "the release notes of 1.2.0+1.30 call for a manual migration (matched: 'manual
      migration')\n\n## 1.2.0+1.30\n\nRun a manual migration of the database before deploying."
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    CcciError,
    recipe_spec,
    run_module,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import RecipeRepo
from ansible_collections.coopcloud.ci.plugins.module_utils._release import (
    Observed,
    decide,
    reconcile_decision,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import stamp


def _observed(given: dict | None) -> Observed | None:
    if given is None:
        return None
    return Observed(
        running=given["running"], healthy=given["healthy"], last_good=given["last_good"]
    )


def run(module: AnsibleModule) -> dict:
    p = module.params
    try:
        repo = RecipeRepo(p["recipes_dir"], p["recipe"])
        fetched = repo.fetch() if p["fetch"] else False
        tags = repo.version_tags()
        candidate = p["candidate"] or (tags[-1] if tags else None)
        if candidate is None:
            raise CcciError(
                f"recipe {p['recipe']!r} at {repo.path} has no version tags: give a "
                "candidate version"
            )
        seen = _observed(p["reconcile"])
        current = seen.current() if seen is not None else p["current"]
        if seen is not None and not seen.asks_the_gate():
            return {
                "verdict": None,
                "current": current,
                "candidate": candidate,
                "reasons": [],
                "notes": {},
                "notes_text": "",
                "matched_phrases": {},
                "versions_checked": [],
                "accepted": False,
                "fetched": fetched,
                "reconcile": reconcile_decision(seen, None, candidate, p["accept"], stamp()),
            }
        decision = decide(current, candidate, repo.release_notes, tags, accept=p["accept"])
    except ValueError as exc:  # a bad name or version (ValidationError, Version.parse)
        raise CcciError(f"release gate of recipe {p['recipe']!r}: {exc}") from exc
    result = decision.as_dict()
    result["fetched"] = fetched
    if seen is not None:
        result["reconcile"] = reconcile_decision(
            seen, decision.verdict, candidate, p["accept"], stamp()
        )
    if decision.held:
        result["alert"] = {
            "kind": decision.verdict,
            "target": p["target"] or p["recipe"],
            "attempted": decision.candidate,
            "last_good": decision.current,
            "notes": "\n".join(decision.reasons)
            + (f"\n\n{decision.notes_text()}" if decision.notes else ""),
        }
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **recipe_spec(),
            "recipes_dir": {"type": "path", "default": "~/.abra/recipes"},
            "current": {"type": "str"},
            "reconcile": {
                "type": "dict",
                "options": {
                    "running": {"type": "dict", "required": True},
                    "healthy": {"type": "bool", "default": False},
                    "last_good": {"type": "dict"},
                },
            },
            "candidate": {"type": "str"},
            "accept": {"type": "str"},
            "fetch": {"type": "bool", "default": True},
            "target": {"type": "str"},
        },
        required_one_of=[("current", "reconcile")],
        mutually_exclusive=[("current", "reconcile")],
        supports_check_mode=True,
    )
    run_module(module, lambda: run(module))


if __name__ == "__main__":
    main()
