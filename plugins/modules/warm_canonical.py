#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: warm_canonical
short_description: Reattach, idle, seed, inspect or remove the data-warm canonical of a recipe
version_added: 0.1.0
description:
  - A canonical is one app per enrolled recipe at the stable domain
    C(warm-<recipe>.<domain_suffix>), undeployed while idle with its volumes kept (SPEC
    WC2). Its known-good data is the recipe's snapshot C(<state_dir>/<recipe>/snapshot/)
    (see M(coopcloud.ci.volume_snapshot)); its known-good version and commit, who promoted
    it, the snapshot's manifest digest, the swarm node it is pinned to and its life-cycle
    status are in the registry C(<state_dir>/<recipe>/canonical.json), written atomically.
  - Every status change is written B(before) the step it announces (C(quick) or
    C(deployed) before deploying, C(restoring) before restoring, C(seeding) before
    seeding), so a crash leaves the registry saying what was under way, with the run id,
    and the next V(idle) or V(seeded) call finishes the job.
  - V(info) reports the canonical and never fails because there is none (RV(exists=false)).
  - V(deployed) reattaches the canonical at its known-good commit at its domain, volumes
    and secrets retained, and records O(purpose) as its status with O(run_id). It refuses
    a canonical that is not at rest (C(restoring) or C(seeding)) and one whose snapshot is
    not the registry's known-good (RV(consistent=false)).
  - V(idle) undeploys the canonical (volumes kept) and, with O(restore=true), makes its
    volumes exactly equal to the known-good snapshot again - every archive is verified
    first; a corrupt snapshot fails naming the file, deletes nothing and leaves the
    status C(restoring). A canonical left C(quick) or C(restoring) is always restored,
    whatever O(restore) says (its data is not known-good); one left C(seeding) has its
    seeding completed from the slot's manifest.
  - V(seeded) installs the slot's B(current) snapshot - taken just before by
    M(coopcloud.ci.volume_snapshot) V(present) from the green cold app - as the
    canonical's known-good. It undeploys the canonical if it runs, sets the status
    C(seeding), restores the snapshot into the canonical's volumes (volume short names
    map onto C(<stack>_<short>); missing volumes are created with the stack's namespace
    label), records version and commit B(from the manifest), O(run_id) as C(promoted_by),
    the manifest digest and the node, and leaves it C(idle).
  - V(absent) removes the canonical's app, its volumes and secrets (matched by the stack
    namespace label only), the snapshot and the registry; only with O(confirm=true).
  - The module does not lock. Plays take the recipe's lock with
    M(coopcloud.ci.warm_lock) around every changing call.
author:
  - coopcloud.ci developers
extends_documentation_fragment:
  - coopcloud.ci.attributes
  - coopcloud.ci.common.DRIVER
  - coopcloud.ci.attributes.STATE_DIR
options:
  recipe:
    description:
      - The recipe whose canonical is meant.
    type: str
    required: true
  state:
    description:
      - V(info) reports; V(deployed) reattaches; V(idle) undeploys (and restores the
        known-good); V(seeded) installs the slot's snapshot as the known-good; V(absent)
        removes everything of the canonical.
    type: str
    choices: [info, deployed, idle, seeded, absent]
    default: info
  domain_suffix:
    description:
      - The canonical's domain is C(warm-<recipe>.<domain_suffix>).
      - Required for V(seeded) when there is no registry yet. Once a registry exists it
        holds the domain; a suffix naming another domain is refused for changing states.
    type: str
  run_id:
    description:
      - The run (six lowercase hex digits) recorded in the status history, and as
        C(promoted_by) by V(seeded).
      - Default is a new random id, returned in RV(run_id).
    type: str
  purpose:
    description:
      - With O(state=deployed), the status recorded while it runs - V(deployed) for an
        operator or a test looking at it, V(quick) for a quick run.
    type: str
    choices: [deployed, quick]
    default: deployed
  restore:
    description:
      - With O(state=idle), after undeploying, make the volumes equal to the known-good
        snapshot again.
      - V(false) keeps what the last deployment left (an operator's session); it is
        ignored when the status is C(quick), C(restoring) or C(seeding).
    type: bool
    default: true
  verify:
    description:
      - With O(state=info), also verify every archive of the snapshot against its
        manifest (reads them all); the result is in RV(snapshot.verified).
      - With O(state=idle) (the nightly sweep), also read the known-good trees of an
        overlay-backed canonical whole against the manifest's tree digests; a tree that
        differs is extracted again from its verified archive (RV(reextracted)).
    type: bool
    default: false
  overlay:
    description:
      - With O(state=seeded), back the canonical's volumes with overlay when it can work
        (the kernel has overlay, Docker's data root is not on overlayfs, the volumes use
        the C(local) driver, the canonical's node is this engine's); then the known-good is a
        read-only tree per volume, and putting it back after a run is discarding what the
        run wrote. V(false), or overlay refused, puts it back by restoring the snapshot.
        The choice is recorded in the registry (C(put_back)) and kept until the next
        seeding. Plays set it from C(ccci_canonical_overlay). See docs/canonicals.md.
    type: bool
    default: true
  recipes_dir:
    description:
      - The folder holding one git checkout per recipe (V(deployed) checks the known-good
        commit out of it into a private work directory).
    type: path
    default: ~/.abra/recipes
  fetch:
    description:
      - With O(state=deployed), fetch the recipe's C(origin) first.
    type: bool
    default: true
  env:
    description:
      - App env values over the recipe's C(.env.sample) defaults (as for M(coopcloud.ci.recipe_app)).
    type: dict
    default: {}
  secrets:
    description:
      - With O(state=deployed), values for the recipe's secrets that are not generated
        (C(# generate=false) in C(.env.sample)), by short name, for example the OIDC
        client secret of an SSO run's realm. Created on the swarm when missing; never
        logged.
    type: dict
    default: {}
  publish:
    description:
      - Publishes one container port of one service on the host in host mode (as for
        M(coopcloud.ci.recipe_app)).
    type: dict
    suboptions:
      service:
        description: The service short name, for example V(app).
        type: str
        required: true
      port:
        description: The container port, for example V(80).
        type: int
        required: true
      published:
        description: The host port; default the one the service publishes now, else a free one.
        type: int
  wait_timeout:
    description:
      - Seconds to wait for the app to converge (V(deployed)) or to be gone.
    type: int
    default: 300
  confirm:
    description:
      - Must be V(true) for O(state=absent), which deletes the canonical's known-good data.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - Reads the registry, the snapshot, the stack and the volume digests and predicts
        the result. While the canonical is deployed its data cannot be compared, so
        V(idle) with a restore and V(seeded) predict a restore of every volume.
      - V(deployed) checks the known-good commit out into a temporary directory to
        compare the app env, as M(coopcloud.ci.recipe_app) does.
  diff_mode:
    support: full
    details:
      - The registry's status, version, commit, snapshot digest, C(promoted_by) and node
        before and after.
  idempotent:
    support: full
    details:
      - V(deployed) when it runs the known-good commit with the same env, V(idle) when it
        is undeployed, C(idle) and (with O(restore=true)) its volumes equal the snapshot's
        recorded tree digests, V(seeded) when the registry records the slot's manifest
        digest and the volumes match, and V(absent) when nothing is left, are V(ok).
notes:
  - Snapshot and restore read and write volumes through their local mountpoint, so
    V(idle) (with a restore) and V(seeded) must run on the node that holds the volumes.
    The registry records that node (the swarm node id of the engine the seeding ran
    against) and V(deployed) adds the placement constraint C(node.id == <node>), so the
    canonical's tasks always run where its data is (SPEC section 7); RV(placement)
    returns the constraint for M(coopcloud.ci.recipe_app) upgrades of the canonical.
  - The canonical runs with the secrets its data was made with. Generated secrets of an
    enrolled recipe are derived from the recipe's key C(<state_dir>/<recipe>/secrets/key)
    (readable by its owner only) by every app of the recipe, the green cold app whose data
    is promoted and the canonical alike; V(seeded) removes the canonical's swarm secrets
    with the old data and V(deployed) makes them again from the key. Secrets marked
    C(generate=false) come from O(secrets). See docs/canonicals.md.
seealso:
  - module: coopcloud.ci.volume_snapshot
  - module: coopcloud.ci.warm_lock
  - module: coopcloud.ci.recipe_app
  - name: Canonicals
    description: docs/canonicals.md in the collection.
    link: https://example.invalid/coopcloud.ci/docs/canonicals.md
"""

EXAMPLES = r"""
- name: Look at the canonical of custom-html
  coopcloud.ci.warm_canonical:
    recipe: custom-html
  register: canonical

- name: Reattach it for a quick run, reachable on a host port
  coopcloud.ci.warm_canonical:
    recipe: custom-html
    state: deployed
    purpose: quick
    run_id: "{{ ccci_run.run_id }}"
    recipes_dir: "{{ ccci_recipes_dir }}"
    publish:
      service: app
      port: 80
  register: reattached

- name: Put it back to rest with its known-good data (after PASS and FAIL alike)
  coopcloud.ci.warm_canonical:
    recipe: custom-html
    state: idle
    run_id: "{{ ccci_run.run_id }}"

- name: Install the green cold run's snapshot as the known-good (promote on green)
  coopcloud.ci.warm_canonical:
    recipe: custom-html
    state: seeded
    domain_suffix: ci.example.org
    run_id: "{{ ccci_run.run_id }}"

- name: An operator looks at the data without restoring it afterwards
  coopcloud.ci.warm_canonical:
    recipe: custom-html
    state: idle
    restore: false

- name: Remove the canonical, its volumes, snapshot and registry
  coopcloud.ci.warm_canonical:
    recipe: custom-html
    state: absent
    confirm: true
"""

RETURN = r"""
run_id:
  description: The run id recorded in the history (given, or a new random one).
  returned: always
  type: str
  sample: 3f9a1c
exists:
  description: Whether the canonical has a registry (after the task).
  returned: always
  type: bool
  sample: true
registry:
  description: The registry (C(canonical.json)) after the task (predicted in check mode), or V(null).
  returned: always
  type: dict
  sample:
    schema: 1
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    version: 1.1.0+1.29
    commit: 2a927ef4fd1d3a6a8c1f0b36a7e2c4b1d6f5e9a0
    status: idle
    status_by: 3f9a1c
    seeded_at: "2026-11-27T10:00:00Z"
    first_seeded_at: "2026-11-20T03:00:00Z"
    promoted_by: 3f9a1c
    snapshot_digest: 8d0f6c2e1b7a4c3d9e5f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d
    node: q1w2e3r4t5y6u7i8o9p0
    updated_at: "2026-11-27T10:00:05Z"
    history: []
status:
  description: The registry's status after the task, or V(null).
  returned: always
  type: str
  sample: idle
at_rest:
  description: Whether the canonical exists and is C(idle) (V(info) only).
  returned: when O(state=info)
  type: bool
  sample: true
described:
  description: The status with who set it and when, e.g. C(quick since ... (run 3f9a1c)).
  returned: when O(state=info)
  type: str
  sample: idle since 2026-11-27T10:00:05Z (run 3f9a1c)
deployed:
  description: Whether services of the canonical's stack run (V(info) only).
  returned: when O(state=info)
  type: bool
  sample: false
snapshot:
  description:
    - The snapshot slot - C(present), C(manifest_digest), C(version), C(commit),
      C(taken_at), C(source), C(volumes), C(path); C(verified) with O(verify=true);
      C(error) when it cannot be read or verified.
  returned: when O(state=info)
  type: dict
  sample:
    present: true
    path: /var/lib/ci-warm/custom-html/snapshot
    manifest_digest: 8d0f6c2e1b7a4c3d9e5f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d
    version: 1.1.0+1.29
    commit: 2a927ef4fd1d3a6a8c1f0b36a7e2c4b1d6f5e9a0
    volumes: [content]
consistent:
  description: Whether the registry's C(snapshot_digest) equals the slot's manifest digest (V(info) only).
  returned: when O(state=info)
  type: bool
  sample: true
domain:
  description: The canonical's domain, or V(null) when neither a registry nor O(domain_suffix) names it.
  returned: always
  type: str
  sample: warm-custom-html.ci.example.org
stack:
  description: The canonical's swarm stack, or V(null).
  returned: always
  type: str
  sample: warm-custom-html_ci_example_org
node:
  description: The swarm node id the canonical is pinned to, or V(null).
  returned: when O(state) is V(info), V(deployed) or V(seeded)
  type: str
  sample: q1w2e3r4t5y6u7i8o9p0
placement:
  description: The placement constraints that pin it there (pass them to M(coopcloud.ci.recipe_app) O(coopcloud.ci.recipe_app#module:constraints)).
  returned: when O(state) is V(info), V(deployed) or V(seeded)
  type: list
  elements: str
  sample: ["node.id == q1w2e3r4t5y6u7i8o9p0"]
services:
  description: The stack's services after the task.
  returned: when O(state) is V(info) or V(deployed)
  type: list
  elements: dict
  sample:
    - {name: warm-custom-html_ci_example_org_app, short_name: app, image: "ccci/web:1.29",
       replicas_running: 1, replicas_desired: 1, update_state: null}
volumes:
  description: The stack's volumes (by namespace label) after the task.
  returned: when O(state) is V(info) or V(deployed)
  type: list
  elements: dict
  sample:
    - name: warm-custom-html_ci_example_org_content
      short_name: content
      mountpoint: /var/lib/docker/volumes/warm-custom-html_ci_example_org_content/_data
      driver: local
      node: ci
      labels: {com.docker.stack.namespace: warm-custom-html_ci_example_org}
version:
  description: The version the canonical runs (V(deployed)) or was seeded with (V(seeded)).
  returned: when O(state) is V(deployed) or V(seeded)
  type: str
  sample: 1.1.0+1.29
commit:
  description: The commit it runs (V(deployed)) or was seeded with (V(seeded)).
  returned: when O(state) is V(deployed) or V(seeded)
  type: str
  sample: 2a927ef4fd1d3a6a8c1f0b36a7e2c4b1d6f5e9a0
published_port:
  description: The host port O(publish.port) is published on, or V(null) without O(publish).
  returned: when O(state=deployed)
  type: int
  sample: 31234
deploy:
  description: Whether a deploy ran (or would run, in check mode).
  returned: when O(state=deployed)
  type: bool
  sample: true
secrets_created:
  description: Names (never values) of swarm secrets created for the canonical.
  returned: when O(state=deployed)
  type: list
  elements: str
  sample: [warm-notes_ci_example_org_db_password_v1]
undeployed:
  description: Whether the canonical was (or would be) taken off the swarm first.
  returned: when O(state) is V(idle) or V(seeded)
  type: bool
  sample: true
restore:
  description: Whether the known-good was to be restored (O(restore), or forced by the status).
  returned: when O(state=idle)
  type: bool
  sample: true
volume_states:
  description: Per snapshot volume, V(equal), V(differs), V(missing) or (while deployed, in check mode) V(unknown).
  returned: when O(state) is V(idle) or V(seeded)
  type: dict
  sample: {content: differs}
restored:
  description: Short names of the volumes restored from the snapshot (predicted in check mode).
  returned: when O(state) is V(idle) or V(seeded)
  type: list
  elements: str
  sample: [content]
put_back:
  description:
    - How the known-good is put back after a run, decided at the seeding - C(mechanism)
      (V(overlay) or V(restore)) and the C(reason) overlay was not used (null when it
      is); with O(state=idle) or V(seeded) also what was done - C(volumes) discarded or
      restored, C(bytes_discarded) (overlay).
  returned: always (except O(state=absent))
  type: dict
  sample: {mechanism: overlay, reason: null, volumes: [content], bytes_discarded: 4096}
reextracted:
  description: Short names of the known-good trees O(verify=true) found differing and extracted again.
  returned: when O(state=idle)
  type: list
  elements: str
  sample: []
removed_secrets:
  description:
    - Names (never values) of the canonical's swarm secrets V(seeded) removed with the old
      data; the next V(deployed) makes them again from the recipe's key.
  returned: when O(state=seeded), or O(state=idle) completing a seeding
  type: list
  elements: str
  sample: [warm-notes_ci_example_org_db_password_v1]
created_volumes:
  description: Volumes created for the canonical because they did not exist.
  returned: when O(state) is V(idle) or V(seeded)
  type: list
  elements: str
  sample: [warm-custom-html_ci_example_org_content]
completed_seeding:
  description: Whether V(idle) found the canonical C(seeding) and completed the seeding from the manifest.
  returned: when O(state=idle)
  type: bool
  sample: false
manifest_digest:
  description: The digest of the snapshot installed as the known-good.
  returned: when O(state=seeded)
  type: str
  sample: 8d0f6c2e1b7a4c3d9e5f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d
removed:
  description:
    - What V(absent) removed (services, networks, volumes, secrets).
    - C(snapshot) (with the known-good trees of overlay volumes), C(secrets_key) and C(registry) as booleans.
  returned: when O(state=absent)
  type: dict
  sample: {volumes: [warm-custom-html_ci_example_org_content], snapshot: true, secrets_key: true, registry: true}
actions:
  description: On failure, what was done before it (so the state the canonical is in is clear).
  returned: on failure
  type: list
  elements: str
  sample: [status restoring, undeployed warm-custom-html_ci_example_org]
diff:
  description: C(before) and C(after) of the registry (status, version, commit, snapshot_digest, promoted_by, node).
  returned: when diff mode is on and O(state) is not V(info)
  type: dict
  sample:
    before: {status: quick, version: 1.1.0+1.29}
    after: {status: idle, version: 1.1.0+1.29}
elapsed:
  description:
    - Seconds the module spent on its work (Docker, files, archives), measured with a
      monotonic clock. Plays sum it into the run record's C(timings.docker_seconds).
  returned: success
  type: float
  sample: 2.315
"""

from contextlib import nullcontext

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._appenv import AppEnvError
from ansible_collections.coopcloud.ci.plugins.module_utils._canonical import (
    Canonical,
    CanonicalError,
    default_run_id,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    CcciError,
    driver_spec,
    recipe_spec,
    run_id_spec,
    run_module,
    state_dir_spec,
    wait_timeout_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import (
    DEFAULT_DEPLOY_TIMEOUT,
    get_driver,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import working
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import TransitionError
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    StateError,
    require_state_dir,
)

ARGUMENT_SPEC = {
    **recipe_spec(),
    "state": {"type": "str", "default": "info",
              "choices": ["info", "deployed", "idle", "seeded", "absent"]},
    **state_dir_spec(),
    "domain_suffix": {"type": "str"},
    **run_id_spec(),
    "purpose": {"type": "str", "default": "deployed", "choices": ["deployed", "quick"]},
    "restore": {"type": "bool", "default": True},
    "verify": {"type": "bool", "default": False},
    "overlay": {"type": "bool", "default": True},
    "recipes_dir": {"type": "path", "default": "~/.abra/recipes"},
    "fetch": {"type": "bool", "default": True},
    **driver_spec(),
    "env": {"type": "dict", "default": {}},
    "secrets": {"type": "dict", "default": {}, "no_log": True},
    "publish": {"type": "dict", "options": {
        "service": {"type": "str", "required": True},
        "port": {"type": "int", "required": True},
        "published": {"type": "int"},
    }},
    **wait_timeout_spec(DEFAULT_DEPLOY_TIMEOUT),
    "confirm": {"type": "bool", "default": False},
}  # fmt: skip


def run(module: AnsibleModule, canonical: Canonical) -> dict:
    p = module.params
    state = p["state"]
    check = module.check_mode
    if state == "info":
        result = canonical.info(verify=p["verify"])
        result["changed"] = False
        return result
    if state == "absent":
        result = canonical.absent(confirm=p["confirm"], check=check)
    else:
        run_id = default_run_id(p["run_id"])
        if state == "deployed":
            result = canonical.deployed(
                run_id, purpose=p["purpose"], recipes_dir=p["recipes_dir"], fetch=p["fetch"],
                env=p["env"], publish=p["publish"], secrets=p["secrets"], check=check,
            )  # fmt: skip
        elif state == "idle":
            result = canonical.idle(run_id, restore=p["restore"], verify=p["verify"], check=check)
        else:
            result = canonical.seeded(run_id, check=check)
        result["run_id"] = run_id
    registry = result.get("registry")
    result["exists"] = registry is not None
    result["status"] = registry["status"] if registry else None
    if not module._diff:
        result.pop("diff", None)
    return result


#: Errors of the canonical's own rules: their sentence stands alone. Errors of the layers
#: below (snapshots, recipe checkouts, the swarm, files) are said of the canonical.
OWN_ERRORS = (CanonicalError, TransitionError, StateError, ValidationError, AppEnvError)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    seen: dict = {}

    def work() -> dict:
        canonical = seen["canonical"] = Canonical(
            require_state_dir(p["state_dir"]), p["recipe"], domain_suffix=p["domain_suffix"],
            driver=get_driver(p["driver"]), wait_timeout=p["wait_timeout"],
            overlay=p["overlay"],
        )  # fmt: skip
        # a change holds the recipe's work lock for this process's life (docs/reliability.md)
        changes = p["state"] != "info" and not module.check_mode
        try:
            with working(p["state_dir"], p["recipe"], p["run_id"]) if changes else nullcontext():
                return run(module, canonical)
        except OWN_ERRORS:
            raise
        except CcciError as exc:
            exc.message = f"canonical of {p['recipe']}: {exc.message}"
            exc.args = (exc.message,)
            raise
        except OSError as exc:
            raise CanonicalError(
                f"canonical of {p['recipe']}: {exc.strerror or exc} ({exc.filename})"
            ) from exc

    def done() -> dict:
        actions = seen["canonical"].actions if "canonical" in seen else []
        return {"changed": bool(actions), "actions": actions}

    run_module(module, work, elapsed=True, on_failure=done)


if __name__ == "__main__":
    main()
