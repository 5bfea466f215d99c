#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: recipe_app
short_description: Deploy, undeploy or remove a Co-op Cloud recipe app on Docker Swarm
version_added: 0.1.0
description:
  - Puts the app of a recipe at a domain on the swarm at a given ref, takes it off while
    keeping its data, or removes it with its data.
  - The stack is the domain with C(.) replaced by C(_); its volumes are
    C(<stack>_<volume>).
  - V(deployed) resolves O(ref) (or O(version), or the latest version tag) to a commit
    of the recipe checkout C(<recipes_dir>/<recipe>), checks that commit out into a
    private per-run work directory (the shared checkout is never modified, so
    concurrent runs cannot race), builds the app env (C(.env.sample) defaults, then
    O(env), then the C(abra.sh) exports, C(COMPOSE_FILE) overlays), creates the recipe's
    missing secrets, deploys and waits until every service runs its new spec.
  - Every service is labelled with the deployed commit (C(coop-cloud.ccci.commit)),
    version (C(coop-cloud.ccci.version)) and a digest of the app env and compose file
    list (C(coop-cloud.ccci.env)). When the stack already runs that commit with that env
    and is converged, nothing is deployed and the task is V(ok).
  - The wait fails fast, long before O(wait_timeout), when a task is rejected (for
    example C(No such image)) or a service keeps failing (three failed tasks since the
    deploy), and the failure quotes the task's own error text.
  - V(undeployed) removes the services, then the stack's networks and configs; volumes
    and secrets stay, so the app can be reattached with its data and passwords.
  - V(absent) undeploys, then removes the stack's volumes and secrets. Only those
    carrying the label C(com.docker.stack.namespace=<stack>) are removed, never
    anything matched by a name prefix.
author:
  - coopcloud.ci developers
extends_documentation_fragment:
  - coopcloud.ci.attributes
  - coopcloud.ci.common.DRIVER
options:
  state:
    description:
      - V(deployed) runs the app at the resolved commit.
      - V(undeployed) takes the app off the swarm; volumes and secrets are kept.
      - V(absent) takes the app off and removes its volumes and secrets.
    type: str
    choices: [deployed, undeployed, absent]
    default: deployed
  recipe:
    description:
      - The recipe name; its git checkout is C(<recipes_dir>/<recipe>).
      - Required when O(state=deployed).
    type: str
  domain:
    description:
      - The app's domain. The stack is the domain with C(.) replaced by C(_).
    type: str
    required: true
  ref:
    description:
      - A commit (7-40 hex), tag or branch of the recipe.
      - Mutually exclusive with O(version). Without both, the latest version tag.
    type: str
  version:
    description:
      - A version tag of the recipe, for example V(1.1.0+1.29). Fails when it is not a
        version tag.
      - Mutually exclusive with O(ref).
    type: str
  env:
    description:
      - App env values that override the recipe's C(.env.sample) defaults, for example
        C(COMPOSE_FILE) to choose overlays. C(DOMAIN) and C(STACK_NAME) always come from
        O(domain); C(abra.sh) exports are applied after these, as abra does.
    type: dict
    default: {}
  overlays:
    description:
      - Compose overlays (paths relative to the recipe's root) added to the app's
        C(COMPOSE_FILE) - the one from the recipe's C(.env.sample), or from O(env) when
        it sets C(COMPOSE_FILE) - in this order. An overlay already listed is not added
        twice.
      - The overlays are part of the env digest, so adding or dropping one redeploys.
    type: list
    elements: str
    default: []
  publish:
    description:
      - Publishes one container port of one service on the host, in host mode (the
        swarm's ingress needs IPVS, which some kernels lack), so the app can be reached
        at C(http://<node>:<published>) without a proxy - in tests and on CI hosts
        without one.
      - Added through the generated compose overlay that also carries the deploy labels.
      - The host port is part of the env digest, so a redeploy on the same port is V(ok).
    type: dict
    suboptions:
      service:
        description: The service short name, for example V(app) for C(<stack>_app).
        type: str
        required: true
      port:
        description: The container port to publish, for example V(80).
        type: int
        required: true
      published:
        description:
          - The host port. Default is the host port the deployed service already
            publishes O(publish.port) on (so an upgrade keeps the URL), else a port
            that is free on this host.
        type: int
  constraints:
    description:
      - Swarm placement constraints added to every service of the app, for example
        V(node.id == 2x8k3xq3d4w1) to keep a canonical on the node that holds its volumes
        (coopcloud.ci.warm_canonical returns them as RV(coopcloud.ci.warm_canonical#module:placement)).
      - Added through the generated compose overlay; C(docker stack deploy) appends them
        to the recipe's own constraints. Part of the env digest.
    type: list
    elements: str
    default: []
  secrets:
    description:
      - Values of recipe secrets by short name (C(db_password) for
        C(SECRET_DB_PASSWORD_VERSION)). Required for secrets marked C(generate=false)
        that do not exist yet; others are generated when missing.
      - Existing secrets are never changed.
    type: dict
    default: {}
  secrets_state_dir:
    description:
      - When set, the secrets that are generated (not marked C(generate=false)) are
        derived from the recipe's secrets key C(<secrets_state_dir>/<recipe>/secrets/key)
        (made on first use, readable by its owner only) instead of drawn at random, so
        every app of the recipe deployed with it gets the same values. The lanes set it
        for recipes with a canonical, whose data a green cold app initialises with them
        (see docs/canonicals.md). O(secrets) still win.
      - When set and the app is the recipe's canonical (O(domain) C(warm-<recipe>.<suffix>),
        as the quick lane's upgrade deploys it), a change holds the recipe's work lock (a
        C(flock) on C(<secrets_state_dir>/<recipe>/)) for the life of the task, so the recipe's
        lock is not judged stale while it works (see M(coopcloud.ci.warm_lock)).
      - It is a warm state dir, so it must have been made on purpose (its marker
        C(.ccci-state)); one without it is refused and nothing is created.
    type: path
  recipes_dir:
    description:
      - The folder holding one git checkout per recipe.
    type: path
    default: ~/.abra/recipes
  fetch:
    description:
      - Fetch the recipe's C(origin) before resolving the ref (a recipe without
        C(origin) is used as it is). Fetching happens in check mode too.
    type: bool
    default: true
  work_dir:
    description:
      - Where the per-run checkout goes; must be absent or empty, and is kept.
      - Default is a temporary directory, removed when the task ends. Check mode always
        uses a temporary directory.
    type: path
  wait_timeout:
    description:
      - Seconds to wait for the stack to converge (V(deployed)) or to be gone
        (V(undeployed), V(absent)).
    type: int
    default: 300
attributes:
  check_mode:
    support: full
    details:
      - Resolves the ref and reads the stack, then predicts exactly whether a deploy
        would run by comparing the deployed commit and env labels with the resolved
        ones. A C(generate=false) secret that is missing fails in check mode too.
      - With O(publish) and no O(publish.published), a port that is free now is
        predicted when the service publishes none yet; the real run may pick another.
  diff_mode:
    support: full
    details:
      - C(state), C(version) and C(commit) of the app before and after.
  idempotent:
    support: full
    details:
      - A second identical task is V(ok), for every O(state).
notes:
  - Docker images are never pulled or resolved (C(--resolve-image never)); they must be
    on the nodes.
  - On a multi-node swarm the volumes listed are those of the engine the module talks to
    (the manager); a task's node is in the swarm's task list.
seealso:
  - module: coopcloud.ci.volume_snapshot
  - name: Co-op Cloud recipe conventions
    description: The recipe format this module deploys.
    link: https://docs.coopcloud.tech/maintainers/
"""

EXAMPLES = r"""
- name: Deploy custom-html at its latest version
  coopcloud.ci.recipe_app:
    recipe: custom-html
    domain: custom-html.ci.example.org

- name: Deploy the PR head with the CI overlay published on a host port
  coopcloud.ci.recipe_app:
    recipe: custom-html
    domain: "html-{{ ccci_run_id }}.ci.example.org"
    ref: "{{ ref }}"
    env:
      COMPOSE_FILE: compose.yml:compose.ci.yml
      CI_HTTP_PORT: "8080"
    wait_timeout: 600
  register: app

- name: Deploy a per-run app reachable on a host port (no proxy on this machine)
  coopcloud.ci.recipe_app:
    recipe: custom-html
    domain: "html-{{ ccci_run_id }}.ci.example.org"
    ref: "{{ ref }}"
    publish:
      service: app
      port: 80
  register: app

- name: Probe it where it was published
  ansible.builtin.uri:
    url: "http://127.0.0.1:{{ app.published_port }}/"

- name: Deploy notes with its tuning overlay
  coopcloud.ci.recipe_app:
    recipe: notes
    domain: notes.ci.example.org
    overlays:
      - db/compose.db-tune.yml
    env:
      DB_CACHE_MB: "256"

- name: Deploy notes with its SMTP password (a generate=false secret)
  coopcloud.ci.recipe_app:
    recipe: notes
    domain: notes.ci.example.org
    version: 1.1.0+2.1
    secrets:
      smtp_password: "{{ vault_smtp_password }}"

- name: Take the canonical off the swarm, keep its data
  coopcloud.ci.recipe_app:
    domain: warm-custom-html.ci.example.org
    state: undeployed

- name: Remove a per-run app and its volumes
  coopcloud.ci.recipe_app:
    domain: "html-{{ ccci_run_id }}.ci.example.org"
    state: absent
"""

RETURN = r"""
stack:
  description: The swarm stack of the app.
  returned: always
  type: str
  sample: custom-html_ci_example_org
state:
  description: V(deployed) when services of the stack run after the task, else V(undeployed) or V(absent).
  returned: always
  type: str
  sample: deployed
services:
  description: The stack's services after the task (predicted ones are not listed in check mode).
  returned: always
  type: list
  elements: dict
  sample:
    - name: custom-html_ci_example_org_app
      short_name: app
      image: ccci/web:1.29
      replicas_running: 1
      replicas_desired: 1
      update_state: null
version:
  description:
    - The recipe version the app runs after the task, or V(null).
    - It is the version tag deployed, which the driver writes over the recipe's own
      C(coop-cloud.<stack>.version) label as abra does (a recipe tagged V(v1.0.3) may
      carry V(1.0.3+1.0.3)). A deploy of a ref that is no version tag reports the
      recipe's label.
  returned: always
  type: str
  sample: 1.1.0+1.29
commit:
  description: The recipe commit the app runs after the task, or V(null).
  returned: always
  type: str
  sample: fa17446f2e24aa86e32a1d5771f9318b8cc80c40
volumes:
  description: The stack's volumes after the task (matched by the stack namespace label).
  returned: always
  type: list
  elements: dict
  sample:
    - name: custom-html_ci_example_org_content
      short_name: content
      mountpoint: /var/lib/docker/volumes/custom-html_ci_example_org_content/_data
      driver: local
      node: ci
      labels:
        com.docker.stack.namespace: custom-html_ci_example_org
resolved:
  description: The ref as asked, the commit and the version tag it resolved to.
  returned: when O(state=deployed)
  type: dict
  sample:
    ref: null
    commit: fa17446f2e24aa86e32a1d5771f9318b8cc80c40
    version: 1.1.0+1.29
published_port:
  description: The host port O(publish.port) of O(publish.service) is published on.
  returned: when O(publish) is given and O(state=deployed)
  type: int
  sample: 31234
secrets_created:
  description:
    - Names (never values) of the swarm secrets created by this task, also when the
      deploy then failed (a teardown removes them).
    - The secrets are those the active compose files declare, named as abra names them.
  returned: when O(state=deployed)
  type: list
  elements: str
  sample: [notes_ci_example_org_db_password_v1]
removed:
  description: What was removed, by kind (services, networks, configs, volumes, secrets).
  returned: when O(state) is V(undeployed) or V(absent)
  type: dict
  sample:
    services: [custom-html_ci_example_org_app]
    volumes: [custom-html_ci_example_org_content]
cmd:
  description: The deploy command line that ran (also on failure, when it ran).
  returned: when a deploy ran
  type: list
  elements: str
  sample: [docker, stack, deploy, --detach=true, --resolve-image, never, --prune, -c, compose.yml, custom-html_ci_example_org]
rc:
  description: Exit status of the command that ran last (also on failure).
  returned: when a command ran
  type: int
  sample: 0
stdout:
  description: Its standard output.
  returned: when a command ran
  type: str
  sample: "Creating service custom-html_ci_example_org_app\n"
stderr:
  description: Its standard error.
  returned: when a command ran
  type: str
  sample: ""
elapsed:
  description:
    - Seconds the module spent on the app, measured with a monotonic clock - the
      look-up of the ref, the checkout and, when needed, the deploy and the wait for
      convergence, or the undeploy or removal. Plays sum it into the run record's
      C(timings.docker_seconds).
  returned: success
  type: float
  sample: 3.4
tasks:
  description:
    - On failure, the failed or rejected tasks with their own error text (C(error)),
      state, image and node.
  returned: on failure to converge
  type: list
  elements: dict
  sample:
    - service: custom-html_ci_example_org_app
      state: rejected
      error: "No such image: ccci/web:9.99-doesnotexist"
      image: ccci/web:9.99-doesnotexist
diff:
  description: C(before) and C(after), each with C(state), C(version) and C(commit).
  returned: when diff mode is on
  type: dict
  sample:
    before: {state: deployed, version: 1.0.0+1.28, commit: 5d6085fc4e36922692061715cec46db0f9da342f}
    after: {state: deployed, version: 1.1.0+1.29, commit: fa17446f2e24aa86e32a1d5771f9318b8cc80c40}
"""

from contextlib import nullcontext

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._app import RecipeApp
from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    driver_spec,
    recipe_spec,
    run_module,
    wait_timeout_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import (
    DEFAULT_DEPLOY_TIMEOUT,
    get_driver,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import working
from ansible_collections.coopcloud.ci.plugins.module_utils._names import validate_recipe
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import SwarmError


def _canonical_work(params: dict, check: bool):
    """The hold of the recipe's work lock when this task changes the recipe's canonical."""
    recipe, domain, state_dir = params["recipe"], params["domain"], params["secrets_state_dir"]
    if check or not (recipe and state_dir) or "." not in domain:
        return nullcontext()
    if domain != f"warm-{recipe}.{domain.split('.', 1)[1]}":
        return nullcontext()
    return working(state_dir, recipe)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "default": "deployed",
                      "choices": ["deployed", "undeployed", "absent"]},
            **recipe_spec(required=False),
            "domain": {"type": "str", "required": True},
            "ref": {"type": "str"},
            "version": {"type": "str"},
            "env": {"type": "dict", "default": {}},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "secrets_state_dir": {"type": "path", "no_log": False},
            "overlays": {"type": "list", "elements": "str", "default": []},
            "constraints": {"type": "list", "elements": "str", "default": []},
            "publish": {"type": "dict", "options": {
                "service": {"type": "str", "required": True},
                "port": {"type": "int", "required": True},
                "published": {"type": "int"},
            }},
            **driver_spec(),
            "recipes_dir": {"type": "path", "default": "~/.abra/recipes"},
            "fetch": {"type": "bool", "default": True},
            "work_dir": {"type": "path"},
            **wait_timeout_spec(DEFAULT_DEPLOY_TIMEOUT),
        },
        mutually_exclusive=[("ref", "version")],
        required_if=[("state", "deployed", ("recipe",))],
        supports_check_mode=True,
    )  # fmt: skip
    params = module.params
    if params["state"] == "deployed" and not params["recipe"]:
        # required_if does not fire when state is left to its default
        module.fail_json(msg="state is deployed but all of the following are missing: recipe")
    seen: dict = {}

    def work() -> dict:
        if params["recipe"] is not None:
            validate_recipe(params["recipe"])
        if params["secrets_state_dir"]:
            require_state_dir(params["secrets_state_dir"])
        app = seen["app"] = RecipeApp(
            params, check_mode=module.check_mode, diff=module._diff,
            driver=get_driver(params["driver"]),
        )  # fmt: skip
        try:
            with _canonical_work(params, module.check_mode):
                return app.run()
        except SwarmError as exc:
            # a swarm failure names the app, and returns what the task did before it
            seen["partial"] = {**app.result, "changed": bool(exc.cmd) or app.result["changed"]}
            exc.message = f"app {params['domain']}: {exc.message}"
            exc.args = (exc.message,)
            raise

    run_module(module, work, on_failure=lambda: seen.get("partial", {}))


if __name__ == "__main__":
    main()
