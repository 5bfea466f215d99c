#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: health_gate
short_description: Wait until a deployed app is healthy on the swarm and over HTTP, or say why not
version_added: 0.1.0
description:
  - The probe the cold lane, the quick lane and the warm infrastructure reconciler trust
    after a deploy. It polls until every check passes in the same round, a check can no
    longer pass, or O(wait_timeout) runs out.
  - The swarm check (O(stack) or O(domain)) passes when every service of the stack is
    converged (running replicas equal desired ones, every running task on the current
    spec and image, no update in progress or paused or rolled back), every service
    carries the deployed O(commit) and runs the O(images) asked for, no task failed since
    the deploy (O(since), O(max_task_failures)), and every container with a health check
    reports C(healthy) (O(require_healthy)).
  - The HTTP check (O(url)) passes when a C(GET) answers one of O(status) and its body
    matches O(body). It is probed only in rounds where the stack (when given) is already
    healthy.
  - The gate fails fast, without waiting for O(wait_timeout), when the deploy can no
    longer become healthy - a task was rejected (for example C(No such image)), more
    than O(max_task_failures) tasks failed since the deploy, or the swarm paused or
    rolled back the update - and quotes the task's own error text.
  - A container whose health check is C(starting) or C(unhealthy) keeps the gate
    waiting (a health check may still pass). The swarm kills a container that stays
    unhealthy; its failed task then counts against O(max_task_failures), so with the
    default the gate fails as soon as that happens.
  - "On failure the message is one sentence naming the stack or URL and the last observed
    condition, for example C(stack x did not become healthy within 120 s: service x_app: 0/1
    running), and the failed tasks with their own error text are returned in RV(tasks)."
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.INFO_MODULE]
options:
  url:
    description:
      - The URL to C(GET), C(http://) or C(https://). Redirects are not followed (list
        C(301) or C(302) in O(status) to accept one).
      - Proxy environment variables are ignored; the probe connects directly.
      - At least one of O(url), O(base_url), O(stack) and O(domain) is required.
    type: str
  base_url:
    description:
      - With O(health), the app's URL without a path (V(https://app.example.org)); the
        probe then C(GET)s O(base_url) followed by C(path) of O(health). Ignored when
        O(url) is given.
    type: str
  health:
    description:
      - A catalog entry's C(health) mapping, taken whole (see C(catalog/README.md)).
        C(path) (with O(base_url)), C(status), C(body), C(timeout) and C(interval) stand
        for O(url), O(status), O(body), O(wait_timeout) and O(wait_sleep).
      - An option given explicitly wins over its key here.
    type: dict
    suboptions:
      path:
        description: The health path, appended to O(base_url).
        type: str
        default: /
      status:
        description: As O(status).
        type: list
        elements: int
      body:
        description: As O(body).
        type: str
      timeout:
        description: As O(wait_timeout) (whole seconds; a fraction is dropped).
        type: float
      interval:
        description: As O(wait_sleep).
        type: float
  resolve:
    description:
      - As curl's C(--resolve), C(host:port:address) - connect to C(address:port) for
        requests to C(host:port) of O(url), while the C(Host) header, TLS SNI and the
        certificate check keep the URL's host name. Use it to reach an app through the
        proxy by its domain before DNS knows it, e.g. V(app.example.org:443:127.0.0.1).
      - An IPv6 address may be written in brackets, V(app.example.org:443:[::1]).
      - Host and port must be those of O(url), or the task fails.
    type: str
  host_header:
    description:
      - A C(Host) header to send instead of the URL's host. TLS SNI and the certificate
        check still use the URL's host (use O(resolve) to reach a host name at an
        address).
    type: str
  status:
    description:
      - The HTTP status codes that count as healthy.
      - Default is C(status) of O(health), else V([200]).
    type: list
    elements: int
  body:
    description:
      - A Python regular expression that must be found (C(re.search)) in the body, for
        example V(1\\.29) or V(<title>Notes</title>), to prove the new version is served.
        The first MiB of the body is searched.
    type: str
  validate_certs:
    description:
      - Verify the server's TLS certificate and host name (against the system's CAs, or
        O(ca_path)).
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to verify the server against instead of the
        system's.
    type: path
  request_timeout:
    description:
      - Seconds one HTTP request may take (connect, and each read).
    type: float
    default: 5
  stack:
    description:
      - The swarm stack to gate. Mutually exclusive with O(domain).
    type: str
  domain:
    description:
      - The app's domain; the stack is the domain with C(.) replaced by C(_).
      - Mutually exclusive with O(stack).
    type: str
  since:
    description:
      - The deploy time, ISO 8601 (V(2024-05-01T12:00:00Z); a time without offset is
        UTC). Tasks that failed before it are history and do not count.
      - Default is the last deploy as the swarm recorded it - the oldest C(UpdatedAt) of
        the services updated within 30 s of the newest one.
    type: str
  commit:
    description:
      - The recipe commit just deployed; every service must carry it in the label
        C(coop-cloud.ccci.commit) (the collection's deploy driver sets it).
    type: str
  images:
    description:
      - Maps a service short name (C(app) for C(<stack>_app)) to the image it must run,
        for example V(ccci/web:1.29) for C(app). A digest suffix on the service's image
        is ignored unless one is asked for.
    type: dict
  require_healthy:
    description:
      - Containers that have a health check must report C(healthy). Containers without
        one pass.
    type: bool
    default: true
  max_task_failures:
    description:
      - How many tasks of the stack may have failed since O(since); one more ends the
        gate at once as unhealthy. The default, V(0), tolerates none, not even one the
        swarm replaced.
    type: int
    default: 0
  wait_timeout:
    description:
      - Seconds to wait for the target to become healthy.
      - Default is C(timeout) of O(health), else V(120).
    type: int
  wait_sleep:
    description:
      - Seconds between two rounds of probes.
      - Default is C(interval) of O(health), else V(2).
    type: float
  fail_on_unhealthy:
    description:
      - V(true) fails the task when the target is not healthy.
      - V(false) returns RV(healthy=false) with the reason and does not fail, for plays
        that branch into a rollback.
      - Wrong options (a bad URL, regex or O(since)) fail the task either way.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - The gate only reads, so it probes in check mode too and gives the same answer.
requirements:
  - httpx
  - docker (the Docker SDK for Python, for O(stack) and O(domain))
author:
  - coopcloud.ci developers
notes:
  - The task never reports C(changed).
  - Container health is read from the Docker engine the module talks to, which sees the
    containers on its own node. The swarm marks a task C(running) only once its
    container's health check passed, so tasks on other nodes are gated through their
    task state.
seealso:
  - module: coopcloud.ci.recipe_app
"""

EXAMPLES = r"""
- name: Deploy the PR head
  coopcloud.ci.recipe_app:
    recipe: custom-html
    domain: "{{ app_domain }}"
    ref: "{{ ref }}"
  register: app

- name: Gate the deploy - the stack at that commit, and the new version served
  coopcloud.ci.health_gate:
    domain: "{{ app_domain }}"
    commit: "{{ app.commit }}"
    images:
      app: ccci/web:1.29
    url: "https://{{ app_domain }}/app-version"
    resolve: "{{ app_domain }}:443:127.0.0.1"
    body: '1\.29'
    wait_timeout: 300
  register: health

- name: Gate a recipe app as its catalog entry says (path, status, body, timeout, interval)
  coopcloud.ci.health_gate:
    domain: "{{ app_domain }}"
    commit: "{{ app.commit }}"
    base_url: "https://{{ app_domain }}"
    resolve: "{{ app_domain }}:443:127.0.0.1"
    health: "{{ catalog.entry.health }}"

- name: Upgrade warm infrastructure behind the gate, roll back when it stays unhealthy
  block:
    - name: Deploy the latest version
      coopcloud.ci.recipe_app:
        recipe: keycloak
        domain: "{{ keycloak_domain }}"
        version: "{{ latest }}"

    - name: Gate it (do not fail, decide below)
      coopcloud.ci.health_gate:
        domain: "{{ keycloak_domain }}"
        url: "https://{{ keycloak_domain }}/realms/master"
        status: [200]
        wait_timeout: 600
        wait_sleep: 5
        fail_on_unhealthy: false
      register: gate

    - name: Roll back to the last good version
      when: not gate.healthy
      coopcloud.ci.recipe_app:
        recipe: keycloak
        domain: "{{ keycloak_domain }}"
        version: "{{ last_good }}"

- name: Probe only over HTTP, accepting a redirect to the login page
  coopcloud.ci.health_gate:
    url: http://127.0.0.1:8080/
    host_header: notes.ci.example.org
    status: [200, 302]
    wait_timeout: 60
"""

RETURN = r"""
healthy:
  description: Whether every check passed in the same round.
  returned: always
  type: bool
  sample: true
attempts:
  description: Rounds of probes made.
  returned: always
  type: int
  sample: 4
elapsed:
  description: Seconds from the first probe to the verdict.
  returned: always
  type: float
  sample: 6.021
reason:
  description:
    - One sentence - what passed when healthy, else the last observed condition.
  returned: always
  type: str
  sample: >-
    stack html-5f3a2c_ci_example_org cannot become healthy (gave up after 0.4 s):
    service html-5f3a2c_ci_example_org_app cannot start: task 9k1xq2 of
    html-5f3a2c_ci_example_org_app is rejected: No such image: ccci/web:9.99
fatal:
  description: The gate gave up early because the target can no longer become healthy.
  returned: always
  type: bool
  sample: false
engine_fault:
  description:
    - The Docker engine, not the app, ended the gate - it does not answer at all, or it lost
      the containers of the stack's tasks (C(No such container)) because it stopped or
      restarted. The stages stop the run on it and the run ends C(ERROR), not C(FAIL).
  returned: when the engine ended the gate
  type: bool
  sample: true
stack:
  description: The stack gated.
  returned: when O(stack) or O(domain) is given
  type: str
  sample: html-5f3a2c_ci_example_org
since:
  description: The deploy time the gate counted failures from (UTC, ISO 8601).
  returned: when O(stack) or O(domain) is given
  type: str
  sample: "2024-05-01T12:00:03.412345Z"
last:
  description: The last observed state.
  returned: always
  type: dict
  contains:
    swarm:
      description:
        - The stack - C(services) (name, image, replicas, C(commit) label and the tasks
          that should run with their state, error and container health),
          C(failed_tasks) since the deploy, C(ok) and C(reason).
      returned: when O(stack) or O(domain) is given
      type: dict
    http:
      description:
        - The last answer - C(url), C(status), C(body) (the first 300 characters),
          C(ok), C(elapsed) and C(error) when no answer came; C(skipped) when the stack
          was not healthy yet in that round.
      returned: when O(url) is given
      type: dict
  sample:
    swarm:
      stack: html-5f3a2c_ci_example_org
      since: "2024-05-01T12:00:03.412345Z"
      ok: true
      reason: "stack html-5f3a2c_ci_example_org is healthy: app 1/1 (healthy)"
      services:
        - name: html-5f3a2c_ci_example_org_app
          short_name: app
          image: ccci/web:1.29
          replicas_running: 1
          replicas_desired: 1
          update_state: null
          commit: fa17446f2e24aa86e32a1d5771f9318b8cc80c40
          tasks:
            - {id: 9k1xq2, state: running, desired_state: running, error: "", health: healthy, node_id: x1}
      failed_tasks: []
    http:
      url: http://127.0.0.1:8080/app-version
      status: 200
      body: "1.29\n"
      ok: true
      elapsed: 0.004
tasks:
  description: When not healthy, the tasks that failed since the deploy, with their own error text.
  returned: when not healthy and a stack was gated
  type: list
  elements: dict
  sample:
    - id: 9k1xq2tq7rj0mh3b3e0a1j2d4
      service: html-5f3a2c_ci_example_org_app
      slot: 1
      state: rejected
      desired_state: shutdown
      error: "No such image: ccci/web:9.99"
      message: preparing
      image: ccci/web:9.99
      exit_code: null
      node_id: x1
      updated_at: "2024-05-01T12:00:03.901234Z"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._catalog import HealthSpec
from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    CcciError,
    docker_client,
    pick,
    plain_specs,
    require,
    run_module,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._health import (
    HttpCheck,
    SwarmCheck,
    gate,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import stack_name

#: The defaults of a catalog entry's ``health:`` (one home: ``_catalog.HealthSpec``).
_DEFAULT = HealthSpec()
#: option -> (its key in the health mapping, its default)
_FROM_HEALTH = {
    "status": ("status", list(_DEFAULT.status)),
    "body": ("body", _DEFAULT.body),
    "wait_timeout": ("timeout", _DEFAULT.timeout),
    "wait_sleep": ("interval", float(_DEFAULT.interval)),
}


def with_health(params: dict) -> dict:
    """The options with O(health) and O(base_url) filled in where not given explicitly."""
    health = params.get("health") or {}
    out = dict(params)
    for option, (key, default) in _FROM_HEALTH.items():
        if out.get(option) is None:
            value = health.get(key)
            out[option] = default if value is None else value
    out["wait_timeout"] = int(out["wait_timeout"])
    if not out.get("url") and out.get("base_url"):
        out["url"] = out["base_url"].rstrip("/") + (health.get("path") or _DEFAULT.path)
    return out


def build_checks(params: dict) -> list:
    checks: list = []
    stack = params["stack"]
    if params["domain"]:
        stack = stack_name(params["domain"])
    if stack:
        checks.append(
            SwarmCheck(
                stack=stack,
                since=params["since"],
                commit=params["commit"],
                images={str(k): str(v) for k, v in (params["images"] or {}).items()},
                require_healthy=params["require_healthy"],
                max_task_failures=params["max_task_failures"],
            )
        )
    if params["url"]:
        checks.append(
            HttpCheck(
                **pick(params, "url", "resolve", "host_header", "status", "body"),
                **pick(params, "validate_certs", "request_timeout", "ca_path"),
            )
        )
    return checks


def check(module: AnsibleModule) -> dict:
    params = with_health(module.params)
    if params["wait_timeout"] < 0 or params["wait_sleep"] <= 0:
        raise CcciError("wait_timeout must be 0 or more and wait_sleep more than 0 seconds")
    require(module, "httpx")
    checks = build_checks(params)
    swarm = next((c for c in checks if isinstance(c, SwarmCheck)), None)
    client = None
    if swarm is not None:
        try:
            client = docker_client(module)
        except Exception as exc:  # the SDK's DockerException: no engine at DOCKER_HOST
            raise CcciError(
                f"cannot gate stack {swarm.stack}: no Docker engine answers ({exc})"
            ) from exc
    result = gate(checks, params["wait_timeout"], params["wait_sleep"], docker_client=client)
    out = {"changed": False, **result.as_dict(), "fatal": result.fatal}
    if result.engine_fault:
        out["engine_fault"] = True
    if swarm is None:
        out.pop("since")
    else:
        out["stack"] = swarm.stack
    if not result.healthy:
        if swarm is not None:
            out["tasks"] = result.tasks
        if params["fail_on_unhealthy"]:
            raise CcciError(result.reason, **out)
    return out


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **plain_specs("str", "url", "base_url", "resolve", "host_header"),
            "health": {
                "type": "dict",
                "options": {
                    "path": {"type": "str", "default": "/"},
                    "status": {"type": "list", "elements": "int"},
                    "body": {"type": "str"},
                    "timeout": {"type": "float"},
                    "interval": {"type": "float"},
                },
            },
            "status": {"type": "list", "elements": "int"},
            "body": {"type": "str"},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "request_timeout": {"type": "float", "default": 5},
            **plain_specs("str", "stack", "domain", "since", "commit"),
            "images": {"type": "dict"},
            "require_healthy": {"type": "bool", "default": True},
            "max_task_failures": {"type": "int", "default": 0},
            "wait_timeout": {"type": "int"},
            "wait_sleep": {"type": "float"},
            "fail_on_unhealthy": {"type": "bool", "default": True},
        },
        required_one_of=[("url", "base_url", "stack", "domain")],
        mutually_exclusive=[("stack", "domain")],
        supports_check_mode=True,
    )
    run_module(module, lambda: check(module))


if __name__ == "__main__":
    main()
