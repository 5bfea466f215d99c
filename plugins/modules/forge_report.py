#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: forge_report
short_description: Post a run's commit status and result comment on its pull request
version_added: 0.1.0
description:
  - Reports a lane's run on a Gitea or Forgejo forge through its API v1 - a commit status on
    O(commit) (C(POST /repos/{owner}/{repo}/statuses/{sha})) and, with O(pr) and a finished
    O(record), a short comment with the stage results (C(POST
    /repos/{owner}/{repo}/issues/{index}/comments)).
  - The status context names the lane - C(coopcloud-ci/cold) (authoritative; make it the
    required check of the branch protection) or C(coopcloud-ci/quick (lower confidence))
    (never gates merge). Without O(record) the status is C(pending); with it, the verdict
    (C(PASS) success, C(FAIL) failure, C(ERROR) error) and one line of stage results.
  - B(A post that fails never fails the task) - it is returned in RV(errors) and shown as a
    warning, so a forge that is down never changes a run's verdict. Only bad arguments fail.
  - The token is sent in the C(Authorization) header only; it is never returned or logged.
requirements:
  - httpx
author:
  - coopcloud.ci developers
extends_documentation_fragment:
  - coopcloud.ci.attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns what would be posted and posts nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every call posts; the forge keeps the latest status per context.
options:
  url:
    description: The forge's base URL, for example V(https://git.coopcloud.tech).
    type: str
    required: true
  token:
    description:
      - An API token allowed to write commit statuses and comments on O(repo).
      - Read from the environment variable E(CCCI_FORGE_TOKEN) when not given; the task
        fails, saying so, when neither is set.
    type: str
  repo:
    description: The repository on the forge, C(owner/name).
    type: str
    required: true
  commit:
    description: The full 40-hex commit the status is about (the pull request's head).
    type: str
    required: true
  mode:
    description: The lane - V(cold) or V(quick). A finished O(record)'s own mode wins.
    type: str
    choices: [cold, quick]
    required: true
  record:
    description:
      - The finished run record (what M(coopcloud.ci.run_record) returns as RV(coopcloud.ci.run_record#module:record)).
        Without it the status posted is C(pending).
    type: dict
  pr:
    description: The pull request's number; the result comment is posted there.
    type: int
  target_url:
    description: The link of the status, for example the Drone build (E(DRONE_BUILD_LINK)).
    type: str
  timeout:
    description: Seconds each post may take.
    type: float
    default: 10
  validate_certs:
    description: Verify the forge's TLS certificate.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Say on the pull request that the cold run started
  coopcloud.ci.forge_report:
    url: https://git.coopcloud.tech
    repo: coop-cloud/custom-html
    commit: "{{ ccci_run.commit }}"
    mode: cold

- name: Post the verdict and the stage results
  coopcloud.ci.forge_report:
    url: https://git.coopcloud.tech
    repo: coop-cloud/custom-html
    commit: "{{ ccci_run.commit }}"
    mode: cold
    record: "{{ finished.record }}"
    pr: 7
    target_url: "{{ lookup('ansible.builtin.env', 'DRONE_BUILD_LINK') }}"
"""

RETURN = r"""
status:
  description: The commit status posted (or, in check mode, that would be).
  returned: always
  type: dict
  sample: {state: success, context: coopcloud-ci/cold, description: "PASS: install pass, upgrade pass"}
comment:
  description: The comment's Markdown body, or null when none is posted.
  returned: always
  type: str
posted:
  description: What the forge took - V(status), V(comment).
  returned: always
  type: list
  elements: str
  sample: [status, comment]
errors:
  description: One sentence per post that failed (the verdict is not changed by them).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.coopcloud.ci.plugins.module_utils._common import require, run_module
from ansible_collections.coopcloud.ci.plugins.module_utils._forge import (
    ForgeClient,
    plan,
    report,
    validate_commit,
    validate_pr,
)


def post(module: AnsibleModule) -> dict:
    """Post (or, in check mode, plan) the status and the comment; warn on what failed."""
    params = module.params
    validate_commit(params["commit"])
    validate_pr(params["pr"])
    require(module, "httpx")
    client = ForgeClient(
        params["url"],
        params["token"],
        params["repo"],
        timeout=params["timeout"],
        validate_certs=params["validate_certs"],
    )
    try:
        if module.check_mode:
            return plan(params["mode"], params["record"], params["pr"], params["target_url"])
        result = report(
            client,
            mode=params["mode"],
            commit=params["commit"],
            record=params["record"],
            pr=params["pr"],
            target_url=params["target_url"],
        )
    finally:
        client.close()
    for error in result["errors"]:
        module.warn(f"not reported on the forge (the verdict stands): {error}")
    return {"changed": bool(result["posted"]), **result}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "token": {
                "type": "str",
                "no_log": True,
                "fallback": (env_fallback, ["CCCI_FORGE_TOKEN"]),
            },
            "repo": {"type": "str", "required": True},
            "commit": {"type": "str", "required": True},
            "mode": {"type": "str", "required": True, "choices": ["cold", "quick"]},
            "record": {"type": "dict"},
            "pr": {"type": "int"},
            "target_url": {"type": "str"},
            "timeout": {"type": "float", "default": 10.0},
            "validate_certs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    run_module(module, lambda: post(module))


if __name__ == "__main__":
    main()
