#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: keycloak_realm
short_description: Per-run Keycloak realms on the shared warm Keycloak
version_added: 0.1.0
description:
  - Gives each CI run of an SSO recipe its own realm C(<recipe>-<run_id>) on one
    long-lived Keycloak (SPEC WC1), instead of deploying a Keycloak per run.
  - V(present) makes the realm with a confidential OpenID Connect client for the app
    (standard flow and direct access grants on, O(redirect_uris)) and a fully set-up
    user (email, first and last name, email verified, no required actions, a permanent
    password), and returns what the app and the tests need to log in. A realm that
    already has that client and user is left alone (V(ok)); nothing is written that
    already matches. The user's password is checked by one password grant.
  - V(absent) deletes the run's realm; a realm that is gone is V(ok).
  - V(reaped) deletes the CI realms of runs that are not live (not in O(live_run_ids)),
    e.g. left behind by a crashed run.
  - V(info) lists the realms and tells which are CI realms.
  - Only realms named C(<recipe>-<6 hex digits>) are ever deleted. C(master) and any
    other realm are never touched, whatever the arguments.
  - Talks to Keycloak's Admin REST API with an admin token obtained by password grant
    on realm C(master) with client C(admin-cli); the token is renewed before it expires
    and once when Keycloak answers 401. Connection errors and 5xx answers are retried
    with exponential back-off (O(retries), at most O(max_retry_time) seconds), then the
    task fails with one sentence naming Keycloak's URL and the last answer.
extends_documentation_fragment: [coopcloud.ci.attributes]
options:
  keycloak_url:
    description:
      - Base URL of Keycloak, e.g. C(https://sso.example.org). Keycloak 17 and later
        have no C(/auth) prefix; for older ones include it (C(https://host/auth)).
      - If not given, the environment variable E(CCCI_KEYCLOAK_URL) is used.
    type: str
    required: true
  admin_user:
    description:
      - An administrator of realm C(master).
      - If not given, E(CCCI_KEYCLOAK_ADMIN_USER) is used, else V(admin).
    type: str
    default: admin
  admin_password:
    description:
      - The password of O(admin_user).
      - If not given, E(CCCI_KEYCLOAK_ADMIN_PASSWORD) is used.
      - Generated secrets (see O(client_secret)) are derived from it.
    type: str
    required: true
  validate_certs:
    description:
      - Verify Keycloak's TLS certificate.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for one HTTP answer.
    type: float
    default: 10
  retries:
    description:
      - Further attempts after a connection error or a 5xx answer.
    type: int
    default: 4
  max_retry_time:
    description:
      - Upper bound in seconds on the time spent retrying one request.
    type: float
    default: 30
  recipe:
    description:
      - The recipe under test. With O(run_id) it names the realm C(<recipe>-<run_id>).
      - Required for V(present) and V(absent). With V(reaped), only this recipe's
        realms are reaped.
    type: str
  run_id:
    description:
      - The run, six lowercase hex digits. Required for V(present) and V(absent).
    type: str
  state:
    description:
      - V(present) makes the realm, client and user; V(absent) deletes the realm;
        V(reaped) deletes the CI realms of dead runs; V(info) lists realms.
    type: str
    choices: [present, absent, reaped, info]
    default: present
  live_run_ids:
    description:
      - With V(reaped), the run ids of runs still alive (from the locks and run
        records). Their realms are kept; every other CI realm is deleted.
    type: list
    elements: str
    default: []
  client_id:
    description:
      - The client the app uses. Default is O(recipe).
    type: str
  redirect_uris:
    description:
      - Valid redirect URIs of the client, e.g. C(https://<domain>/*).
    type: list
    elements: str
    default: []
  username:
    description:
      - The test user. Keycloak stores usernames in lower case, and so does this module
        (RV(username) is the stored name).
    type: str
    default: ci-user
  client_secret:
    description:
      - The client's secret. When omitted, an existing client keeps its secret and a new
        one gets a secret derived from O(admin_password) and the realm name
        (HMAC-SHA256), so a second identical task changes nothing.
      - A secret you give comes back masked in RV(credentials) as
        C(VALUE_SPECIFIED_IN_NO_LOG_PARAMETER) (Ansible hides the values of C(no_log)
        options); use your own variable.
    type: str
  user_password:
    description:
      - The test user's password. When omitted, one derived from O(admin_password) and
        the realm name is used (see O(client_secret)).
      - Like O(client_secret), a password you give comes back masked.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Reads the realm, client and user and predicts exactly what a real run would do;
        nothing is written. To know whether the user's password still holds, one password
        grant is made (Keycloak records a login session for the user).
  diff_mode:
    support: full
    details:
      - The realm, its client and its user before and after (never secrets); for
        V(reaped), the list of realms.
  idempotent:
    support: full
requirements:
  - httpx
author:
  - coopcloud.ci developers
notes:
  - "B(Register the result of V(present) only in a task with C(no_log: true)): it holds
    the client secret and the user's password in RV(credentials). Pass them on to later
    tasks as variables; print only non-secret keys."
  - The issuer is read from the realm's discovery document, so it is whatever Keycloak
    announces (its hostname settings), normally C(<keycloak_url>/realms/<realm>).
seealso:
  - name: Keycloak Admin REST API
    description: The API this module talks to.
    link: https://www.keycloak.org/docs-api/latest/rest-api/index.html
"""

EXAMPLES = r"""
- name: Make the per-run realm of this SSO run
  coopcloud.ci.keycloak_realm:
    keycloak_url: "{{ ccci_keycloak_url }}"
    admin_password: "{{ ccci_keycloak_admin_password }}"
    recipe: "{{ recipe }}"
    run_id: "{{ ccci_run_id }}"
    redirect_uris:
      - "https://{{ app_domain }}/*"
  register: sso
  no_log: true  # the result holds the client secret and the user's password

- name: Say which realm the run uses (no secrets)
  ansible.builtin.debug:
    msg: "realm {{ sso.realm }}, issuer {{ sso.issuer }}"

- name: Delete the per-run realm
  coopcloud.ci.keycloak_realm:
    keycloak_url: "{{ ccci_keycloak_url }}"
    admin_password: "{{ ccci_keycloak_admin_password }}"
    recipe: "{{ recipe }}"
    run_id: "{{ ccci_run_id }}"
    state: absent

- name: Reap the realms of runs that died (settings from CCCI_KEYCLOAK_* variables)
  coopcloud.ci.keycloak_realm:
    state: reaped
    live_run_ids: "{{ live_runs }}"
  register: reaped

- name: List the realms
  coopcloud.ci.keycloak_realm:
    state: info
  register: realms
"""

RETURN = r"""
realm:
  description: The run's realm.
  returned: when O(state=present) or O(state=absent)
  type: str
  sample: custom-html-a1b2c3
issuer:
  description: The realm's issuer (the C(iss) of its tokens).
  returned: when O(state=present)
  type: str
  sample: https://sso.example.org/realms/custom-html-a1b2c3
token_endpoint:
  description: The realm's token endpoint.
  returned: when O(state=present)
  type: str
  sample: https://sso.example.org/realms/custom-html-a1b2c3/protocol/openid-connect/token
client_id:
  description: The app's client.
  returned: when O(state=present)
  type: str
  sample: custom-html
username:
  description: The test user.
  returned: when O(state=present)
  type: str
  sample: ci-user
credentials:
  description:
    - "The secrets. B(Register this only with C(no_log: true).)"
    - Values you passed in O(client_secret) or O(user_password) come back masked.
  returned: when O(state=present)
  type: dict
  contains:
    client_secret:
      description: The client's secret.
      type: str
      sample: 3f1c...
    user_password:
      description: The test user's password.
      type: str
      sample: 9a7e...
actions:
  description: What was done (or, in check mode, would be done).
  returned: when O(state=present) or O(state=absent)
  type: list
  elements: str
  sample: [create realm, create client, create user, set password]
deleted:
  description: The CI realms deleted (in check mode, that would be deleted).
  returned: when O(state=reaped)
  type: list
  elements: str
  sample: [custom-html-0f0f0f]
kept:
  description: Every other realm, C(master) included.
  returned: when O(state=reaped)
  type: list
  elements: str
  sample: [master, custom-html-a1b2c3, team-sso]
realms:
  description: Every realm, with whether it is a CI realm and its recipe and run id.
  returned: when O(state=info)
  type: list
  elements: dict
  sample:
    - {realm: master, enabled: true, ci: false, recipe: null, run_id: null}
    - {realm: custom-html-a1b2c3, enabled: true, ci: true, recipe: custom-html, run_id: a1b2c3}
status:
  description: HTTP status of Keycloak's answer when the task failed on one (else absent).
  returned: failure
  type: int
  sample: 401
body:
  description: Keycloak's answer (shortened) when the task failed on one.
  returned: failure
  type: str
  sample: '{"error":"invalid_grant","error_description":"Invalid user credentials"}'
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    pick,
    recipe_spec,
    require,
    run_id_spec,
    run_module,
    state_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak import KeycloakAdmin
from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak_realms import (
    CiRealms,
    RealmSpec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    validate_recipe,
    validate_run_id,
)


def argument_spec() -> dict:
    return {
        "keycloak_url": {
            "type": "str",
            "required": True,
            "no_log": False,  # a URL, not a secret
            "fallback": (env_fallback, ["CCCI_KEYCLOAK_URL"]),
        },
        "admin_user": {
            "type": "str",
            "default": "admin",
            "fallback": (env_fallback, ["CCCI_KEYCLOAK_ADMIN_USER"]),
        },
        "admin_password": {
            "type": "str",
            "required": True,
            "no_log": True,
            "fallback": (env_fallback, ["CCCI_KEYCLOAK_ADMIN_PASSWORD"]),
        },
        "validate_certs": {"type": "bool", "default": True},
        "timeout": {"type": "float", "default": 10},
        "retries": {"type": "int", "default": 4},
        "max_retry_time": {"type": "float", "default": 30},
        **recipe_spec(required=False),
        **run_id_spec(),
        **state_spec(["present", "absent", "reaped", "info"], "present"),
        "live_run_ids": {"type": "list", "elements": "str", "default": []},
        "client_id": {"type": "str"},
        "redirect_uris": {"type": "list", "elements": "str", "default": []},
        "username": {"type": "str", "default": "ci-user"},
        "client_secret": {"type": "str", "no_log": True},
        "user_password": {"type": "str", "no_log": True},
    }


def run(module: AnsibleModule, realms: CiRealms) -> dict:
    params, check = module.params, module.check_mode
    state = params["state"]
    if state == "info":
        return {"changed": False, "realms": realms.info()}
    if state == "reaped":
        recipe = params["recipe"]
        if recipe is not None:
            validate_recipe(recipe)
        outcome = realms.reap(params["live_run_ids"], recipe=recipe, check_mode=check)
    elif state == "absent":
        outcome = realms.absent(params["recipe"], params["run_id"], check_mode=check)
        outcome.result["actions"] = outcome.actions
    else:
        spec = RealmSpec(
            recipe=validate_recipe(params["recipe"]),
            run_id=validate_run_id(params["run_id"]),
            client_id=params["client_id"],
            redirect_uris=params["redirect_uris"],
            username=params["username"],
            client_secret=params["client_secret"],
            user_password=params["user_password"],
        )
        outcome = realms.present(spec, check_mode=check)
        outcome.result["actions"] = outcome.actions
    result = {"changed": outcome.changed, **outcome.result}
    if outcome.diff is not None:
        result["diff"] = outcome.diff
    return result


def realm(module: AnsibleModule) -> dict:
    params = module.params
    admin = KeycloakAdmin(
        params["keycloak_url"],
        params["admin_user"],
        params["admin_password"],
        **pick(params, "validate_certs", "timeout", "retries", "max_retry_time"),
    )
    try:
        return run(module, CiRealms(admin, params["admin_password"]))
    finally:
        admin.close()


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[
            ("state", "present", ["recipe", "run_id"]),
            ("state", "absent", ["recipe", "run_id"]),
        ],
        supports_check_mode=True,
    )
    require(module, "httpx")
    run_module(module, lambda: realm(module), diff_when_asked=True)


if __name__ == "__main__":
    main()
