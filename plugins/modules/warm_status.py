#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: warm_status
short_description: Gather the status of the warm layer - canonicals, locks, alerts, disk, runs
version_added: 0.1.0
description:
  - Reads, and changes nothing. Gathers what an operator asks about the CI host in one
    document; C(playbooks/status.yml) prints it as a table or as JSON, and
    C(playbooks/reap.yml) and C(playbooks/sweep.yml) decide from it.
  - B(Recipes) are the enrolled recipes of the catalog (O(catalog_dir)) and every recipe
    folder under O(state_dir) that holds a registry, a snapshot or a lock. For each, its
    canonical's registry (C(canonical.json) - known-good version and commit, status,
    when it was seeded and by which run), its known-good snapshot (manifest digest, total
    archive bytes, volumes; whether the digest is the one the registry records; the
    archives are not verified, which would read every byte), the holder of its lock
    (and whether it is stale), and its last O(last_runs) run records, newest first.
  - B(Locks) - every lock under O(state_dir), with C(stale).
  - B(Alerts) - the number of unseen alerts under C(<state_dir>/alerts/) by kind, the
    O(latest_alerts) newest ones, and the number relayed.
  - B(Disk) - free and total bytes on the Docker root (the engine's C(DockerRootDir), or
    O(docker_root)) and on O(state_dir).
  - B(Live run ids) - the holders of locks that are not stale, and run records that say
    C(running) whose process still runs on this host (or that were written on another
    host); C(keycloak_realm state=reaped) keeps their realms.
  - B(Cold runs) (only with O(cold_runs=true)) - every cold run's stack on the swarm,
    found by its namespace label, judged alive or dead as C(coopcloud.ci.disk_guard)
    does, with O(dead_after_hours) as the grace.
  - A part that cannot be read (a corrupt registry, an engine that does not answer) is
    reported in RV(status.errors) and on its row; the task still succeeds. Only a
    O(state_dir) that is not a usable path fails it.
extends_documentation_fragment:
  - coopcloud.ci.attributes
  - coopcloud.ci.attributes.INFO_MODULE
  - coopcloud.ci.attributes.STATE_DIR
options:
  catalog_dir:
    description:
      - The catalog whose enrolled recipes are listed (the playbook variable
        C(ccci_catalog_dir)).
      - Defaults to C($CCCI_CATALOG_DIR) when set, else the collection's example catalog.
        When neither can be found, the rows come from O(state_dir) alone and
        C(enrolled) is V(null).
    type: path
  docker_root:
    description:
      - The Docker root directory to measure. Default is the engine's own C(DockerRootDir).
    type: path
  last_runs:
    description: How many of each recipe's run records to return, newest first.
    type: int
    default: 3
  latest_alerts:
    description: How many of the newest unseen alerts to return.
    type: int
    default: 5
  cold_runs:
    description:
      - Also list the cold runs on the swarm and judge each alive or dead. Asks the Docker
        engine.
    type: bool
    default: false
  dead_after_hours:
    description:
      - With O(cold_runs), hours after its last activity that a cold run without a live
        record or lock counts as dead.
    type: float
    default: 6
  run_ids:
    description:
      - With O(cold_runs), only the cold runs of these run ids (six hex digits each).
        Default is every cold run on the swarm.
    type: list
    elements: str
requirements:
  - docker (the Docker SDK for Python, unless O(docker_root) is given and O(cold_runs) is off)
author:
  - coopcloud.ci developers
notes:
  - Run it on the manager that holds O(state_dir) (normally C(localhost)).
  - The rendered table in RV(lines) is what C(playbooks/status.yml) prints.
seealso:
  - module: coopcloud.ci.disk_guard
  - module: coopcloud.ci.warm_lock
  - module: coopcloud.ci.keycloak_realm
"""

EXAMPLES = r"""
- name: Gather the status of the warm layer
  coopcloud.ci.warm_status:
    state_dir: /var/lib/ci-warm
  register: warm

- name: Print it as a table
  ansible.builtin.debug:
    msg: "{{ warm.lines }}"

- name: Which recipes have no canonical yet
  ansible.builtin.debug:
    msg: "{{ warm.status.recipes | rejectattr('canonical') | map(attribute='recipe') | list }}"

- name: List the dead cold runs older than 12 hours
  coopcloud.ci.warm_status:
    cold_runs: true
    dead_after_hours: 12
  register: warm_cold

- name: Show them
  ansible.builtin.debug:
    msg: "{{ warm_cold.status.cold_runs | rejectattr('alive') | map(attribute='stack') | list }}"
"""

RETURN = r"""
status:
  description: The status document (C(status.yml -e format=json) prints exactly this).
  returned: always
  type: dict
  contains:
    schema:
      description: The version of this document's layout.
      type: int
      sample: 1
    generated_at:
      description: When it was gathered (UTC).
      type: str
      sample: "2026-11-27T03:12:00Z"
    host:
      description: The host it was gathered on.
      type: str
      sample: ci
    state_dir:
      description: The state directory read.
      type: str
      sample: /var/lib/ci-warm
    catalog_dir:
      description: The catalog read, V(null) when none was found.
      type: str
      sample: /srv/ci-catalog
    recipes:
      description:
        - One row per recipe, sorted by name. Keys of the registry are V(null) when the
          recipe has no canonical (C(canonical) V(false)).
        - C(snapshot) has C(exists), C(path), C(manifest_digest), C(bytes) (sum of the
          archives), C(volumes), C(version), C(commit), C(taken_at) and
          C(matches_registry).
        - C(lock) is V(null) when free, else the holder with C(run_id), C(pid), C(host),
          C(since), C(play), C(stale), C(corrupt).
        - C(last_runs) holds C(run_id), C(mode), C(confidence), C(label), C(ref),
          C(version), C(commit), C(status), C(verdict), C(started_at), C(finished_at),
          C(seconds) (the run's total time).
      type: list
      elements: dict
      sample:
        - recipe: custom-html
          enrolled: true
          canonical: true
          domain: warm-custom-html.ci.example.org
          version: 1.1.0+1.29
          commit: 2a927ef4fd1d5b0c7a3e9f6d1c2b3a4f5e6d7c8b
          commit_short: 2a927ef4fd1d
          status: idle
          status_detail: idle since 2026-11-27T02:41:10Z (run 7a0f13)
          seeded_at: "2026-11-27T02:41:10Z"
          first_seeded_at: "2026-11-20T02:40:55Z"
          promoted_by: 7a0f13
          snapshot_digest: 4c1f0e...
          node: null
          updated_at: "2026-11-27T02:41:10Z"
          snapshot:
            exists: true
            path: /var/lib/ci-warm/custom-html/snapshot
            manifest_digest: 4c1f0e...
            bytes: 20480
            volumes: [content]
            version: 1.1.0+1.29
            commit: 2a927ef4fd1d5b0c7a3e9f6d1c2b3a4f5e6d7c8b
            taken_at: "2026-11-27T02:41:09Z"
            matches_registry: true
          lock: null
          runs_total: 12
          last_runs:
            - run_id: 7a0f13
              mode: cold
              confidence: authoritative
              ref: ""
              version: 1.1.0+1.29
              commit: 2a927ef4fd1d5b0c7a3e9f6d1c2b3a4f5e6d7c8b
              status: finished
              verdict: PASS
              started_at: "2026-11-27T02:40:01Z"
              finished_at: "2026-11-27T02:41:12Z"
          errors: []
    locks:
      description: Every lock held under the state directory, with C(stale).
      type: list
      elements: dict
      sample:
        - {recipe: notes, run_id: 0f0f0f, pid: 39001, host: ci, since: "2026-11-27T03:00:00Z",
           play: quick.yml, stale: false, path: /var/lib/ci-warm/notes/lock}
    alerts:
      description:
        - C(unseen) (count), C(corrupt), C(seen) (relayed, count), C(kinds) (unseen by
          kind), C(latest) (the newest unseen first, each C(file), C(kind), C(target),
          C(attempted), C(last_good), C(recovered), C(notes), C(at)), C(path).
      type: dict
      sample:
        unseen: 2
        corrupt: 0
        seen: 14
        kinds: {disk-low: 1, rollback: 1}
        latest:
          - {file: 20261127T030000.000000Z-rollback-keycloak-1a2b3c.json, kind: rollback,
             target: keycloak, attempted: 26.1.0+26.0.7, at: "2026-11-27T03:00:00Z"}
        path: /var/lib/ci-warm/alerts
    disk:
      description:
        - C(docker_root) and C(state_dir), each with C(path), C(measured_at), C(free),
          C(total), C(free_percent), C(free_human), or C(error).
      type: dict
      sample:
        docker_root: {path: /var/lib/docker, measured_at: /var/lib/docker, free: 52613349376,
                      total: 105226698752, free_percent: 50.0, free_human: 49.0 GiB}
        state_dir: {path: /var/lib/ci-warm, measured_at: /var/lib/ci-warm, free: 52613349376,
                    total: 105226698752, free_percent: 50.0, free_human: 49.0 GiB}
    runs:
      description: C(total) run records, and the C(running) ones (as in C(last_runs)).
      type: dict
      sample: {total: 40, running: []}
    live_run_ids:
      description: The runs that are alive (see the description).
      type: list
      elements: str
      sample: [0f0f0f]
    last_sweep:
      description:
        - The newest sweep record (C(path), C(result), C(started_at), C(finished_at),
          C(recipes) with C(recipe), C(run_id), C(verdict), C(seconds)), or V(null).
      type: dict
      sample:
        path: /var/lib/ci-warm/sweeps/sweep-20261127T023000Z.json
        result: ok
        started_at: "2026-11-27T02:30:04Z"
        finished_at: "2026-11-27T03:02:41Z"
        recipes:
          - {recipe: custom-html, run_id: 7a0f13, verdict: PASS, seconds: 71}
    sweep_order:
      description:
        - The enrolled recipes in the order the nightly sweep cold-runs them - oldest
          known-good first. Recipes without a canonical (or with an unreadable registry)
          come first, by name; then by C(seeded_at), oldest first, ties by name. Each has
          C(recipe), C(seeded_at), C(reason). V(null) when no catalog was read.
      type: list
      elements: dict
      sample:
        - {recipe: notes, seeded_at: null, reason: never seeded}
        - {recipe: custom-html, seeded_at: "2026-11-20T02:41:10Z", reason: seeded 2026-11-20T02:41:10Z}
    cold_runs:
      description:
        - With O(cold_runs=true), every cold run on the swarm (C(stack), C(run_id),
          C(domain), C(services), C(volumes), C(secrets), C(configs), C(networks),
          C(containers), C(created_at), C(active_at), C(record), C(alive), C(reason),
          C(age_hours)); V(null) otherwise or when the engine could not be asked.
      type: list
      elements: dict
      sample:
        - stack: cust-3f9a1c_ci_example_org
          run_id: 3f9a1c
          domain: cust-3f9a1c.ci.example.org
          alive: false
          reason: run finished and inactive for 9.2 h
          age_hours: 9.2
    errors:
      description: One sentence per part that could not be read.
      type: list
      elements: str
      sample: ["notes: canonical registry /var/lib/ci-warm/notes/canonical.json lacks commit"]
lines:
  description: The status as fixed-width lines of text (what C(status.yml) prints).
  returned: always
  type: list
  elements: str
  sample:
    - coopcloud.ci status of /var/lib/ci-warm on ci at 2026-11-27T03:12:00Z
    - ""
    - "recipe       enrolled  known-good  commit        status  seeded            by run ..."
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._catalog import (
    CatalogError,
    default_catalog_dir,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    docker_client,
    require,
    run_module,
    state_dir_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    validate_run_id,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir
from ansible_collections.coopcloud.ci.plugins.module_utils._status import (
    gather,
    render_lines,
)


def status(module: AnsibleModule) -> dict:
    p = module.params
    state_dir = require_state_dir(p["state_dir"])
    for run_id in p["run_ids"] or []:
        try:
            validate_run_id(run_id)
        except ValidationError as exc:
            raise ValidationError(f"run_ids: {exc}") from exc
    catalog_dir = p["catalog_dir"]
    if not catalog_dir:
        try:
            catalog_dir = default_catalog_dir()
        except CatalogError:
            catalog_dir = None
    client, client_error = None, None
    if p["cold_runs"] or not p["docker_root"]:
        require(module, "docker")
        try:
            client = docker_client()
            client.ping()
        except Exception as exc:  # DockerException, connection errors: reported, not fatal
            client, client_error = None, f"the Docker engine does not answer: {exc}"
    doc = gather(
        state_dir,
        catalog_dir=catalog_dir,
        client=client,
        docker_root=p["docker_root"],
        last_runs=p["last_runs"],
        latest_alerts=p["latest_alerts"],
        cold_runs=p["cold_runs"],
        grace_hours=p["dead_after_hours"],
        client_error=client_error,
        run_ids=p["run_ids"],
    )
    return {"changed": False, "status": doc, "lines": render_lines(doc)}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **state_dir_spec(),
            "catalog_dir": {"type": "path"},
            "docker_root": {"type": "path"},
            "last_runs": {"type": "int", "default": 3},
            "latest_alerts": {"type": "int", "default": 5},
            "cold_runs": {"type": "bool", "default": False},
            "dead_after_hours": {"type": "float", "default": 6},
            "run_ids": {"type": "list", "elements": "str"},
        },
        supports_check_mode=True,
    )
    run_module(
        module, lambda: status(module), prefix="the status of the warm layer cannot be gathered"
    )


if __name__ == "__main__":
    main()
