#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: disk_guard
short_description: Make sure a snapshot, a seed or a sweep has the disk space it needs, pruning safely
version_added: 0.1.0
description:
  - Runs before anything that writes warm data (a snapshot, a seed, the nightly sweep) and
    refuses cleanly, before that step touches anything, when the disk is short (SPEC WC8).
  - Measures the free space of the Docker root (C(docker info) field C(DockerRootDir), or
    O(docker_root)) and of O(state_dir) (C(statvfs); a state directory that does not exist
    yet is measured at its nearest existing parent). Each path must keep its threshold free
    (the larger of O(min_free_bytes) and O(min_free_percent), per path with O(thresholds));
    the state directory must also have room for the bytes to be written, O(need_bytes) or
    the size of the snapshot of O(for_volumes_of). Paths on one file system share it, their
    needs add up.
  - When a path is short and O(prune=true), prunes in the order below, measuring again
    after each step and stopping as soon as every path has room.
  - "(1) V(images): dangling images older than a day (C(dangling=true), C(until=24h))."
  - "(2) V(containers): stopped containers (C(exited) or C(dead)) of dead cold runs, and
    stopped containers without any stack namespace label that stopped more than a day
    ago. A stopped container of any other stack (a C(warm-*) canonical, warm
    infrastructure) is kept: harmless to remove, but not this module's to judge."
  - "(3) V(build-cache): C(docker builder prune -f --filter until=24h)."
  - "(4) V(cold-runs): every object (services, containers, volumes, secrets, configs,
    networks) of the cold runs that are dead, matched by their
    C(com.docker.stack.namespace) label only."
  - A cold run's stack is C(<recipe[:4]>-<run_id>_<suffix>). It is B(dead) when its run
    record under O(state_dir) is not C(running) with a live process on this host, no lock
    is held by its run id, and its last activity (object creation or update, record start
    or finish) is more than O(dead_after_hours) ago. A stack whose name starts with
    C(warm-) is never a cold run.
  - Never removes a C(warm-*) volume, a volume in use, or any volume that is not a dead cold
    run's; never runs C(docker volume prune), C(docker system prune) or anything with
    C(--volumes).
  - Pruning frees space only on the Docker root's file system. When a short path lies on
    another file system, nothing is pruned, as it could not help.
  - When a path is still short, writes a C(disk-low) alert under C(<state_dir>/alerts/)
    (O(alert)) and fails with one sentence naming the path, its free bytes and the bytes
    needed.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.STATE_DIR]
options:
  docker_root:
    description:
      - The Docker root directory to watch. Default is the engine's own C(DockerRootDir).
    type: path
  need_bytes:
    description:
      - Bytes the next step will write into O(state_dir).
      - Mutually exclusive with O(for_volumes_of).
    type: int
    default: 0
  for_volumes_of:
    description:
      - The domain of an app whose snapshot will be taken. The need is the size of a
        snapshot of its volumes (the volumes carrying its stack's namespace label), the
        apparent bytes of their regular files (a file with several hard links once,
        symbolic links not followed), plus 2048 bytes per entry and 10240 per archive of
        tar overhead, plus the margin (O(margin_bytes), O(margin_percent)).
      - The new snapshot is written beside the old one and swapped in by rename, so the
        old one frees nothing and the whole size is needed.
      - The volumes are read at their local mount points, so run this on the node that
        holds them.
    type: str
  margin_bytes:
    description: The least margin added to the size of a snapshot of O(for_volumes_of).
    type: int
    default: 1048576
  margin_percent:
    description: The margin added to that size, in percent of it (the larger margin wins).
    type: float
    default: 5
  min_free_bytes:
    description: Bytes every watched path keeps free beyond the need.
    type: int
    default: 1073741824
  min_free_percent:
    description: Percent of its file system every watched path keeps free beyond the need.
    type: float
    default: 5
  thresholds:
    description:
      - Thresholds of one path instead of O(min_free_bytes) and O(min_free_percent).
    type: dict
    suboptions:
      docker_root:
        description: The Docker root's threshold.
        type: dict
        suboptions: &threshold
          min_free_bytes:
            description: Bytes kept free.
            type: int
            default: 0
          min_free_percent:
            description: Percent kept free.
            type: float
            default: 0
      state_dir:
        description: The state directory's threshold.
        type: dict
        suboptions: *threshold
  prune:
    description: Prune (in the safe order above) when a path is short.
    type: bool
    default: true
  prune_steps:
    description: The prune steps allowed, always run in the order above.
    type: list
    elements: str
    choices: [images, containers, build-cache, cold-runs]
    default: [images, containers, build-cache, cold-runs]
  dead_after_hours:
    description:
      - Hours after its last activity that a cold run without a live record or lock
        counts as dead.
    type: float
    default: 6
  alert:
    description: Write a C(disk-low) alert when the disk is still short.
    type: bool
    default: true
  target:
    description:
      - The alert's target. Default is O(for_volumes_of), else V(disk).
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Measures, lists what each prune step would remove with the bytes Docker reports
        for it (stopping once they cover the shortfall), removes nothing and writes no
        alert. Fails when those bytes would not make room, as a real run would.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - Once there is room, a second run prunes nothing and is V(ok).
requirements:
  - docker (the Docker SDK for Python)
author:
  - coopcloud.ci developers
notes:
  - The alert is deduplicated by kind and target while unseen (see M(coopcloud.ci.warm_alert)).
  - Run it on the manager that holds the state directory, and for O(for_volumes_of), on the
    node that holds the app's volumes (SPEC section 7).
seealso:
  - module: coopcloud.ci.volume_snapshot
  - module: coopcloud.ci.warm_alert
"""

EXAMPLES = r"""
- name: Make sure the snapshot of the canonical fits
  coopcloud.ci.disk_guard:
    state_dir: /var/lib/ci-warm
    for_volumes_of: warm-custom-html.ci.example.org
    target: custom-html

- name: Snapshot the canonical
  coopcloud.ci.volume_snapshot:
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    state: present

- name: Before the sweep, keep 10 GiB free on the Docker root and never prune
  coopcloud.ci.disk_guard:
    thresholds:
      docker_root:
        min_free_bytes: "{{ 10 * 1024 ** 3 }}"
      state_dir:
        min_free_percent: 10
    prune: false

- name: What would pruning remove to make room for 50 GiB?
  coopcloud.ci.disk_guard:
    need_bytes: "{{ 50 * 1024 ** 3 }}"
  check_mode: true
  ignore_errors: true
  register: disk
"""

RETURN = r"""
ok:
  description: Whether every path has room (after pruning; in check mode, predicted).
  returned: always
  type: bool
  sample: true
free:
  description: Free bytes per watched path after the task (in check mode, as measured).
  returned: always
  type: dict
  sample: {docker_root: 80530636800, state_dir: 80530636800}
need:
  description: Bytes needed in O(state_dir) (O(need_bytes) or the snapshot size).
  returned: always
  type: int
  sample: 23068672
volumes:
  description: Per volume of O(for_volumes_of), its bytes, entries and mount point.
  returned: when O(for_volumes_of) is set
  type: dict
  sample:
    warm-custom-html_ci_example_org_content:
      bytes: 20971520
      entries: 21
      mountpoint: /var/lib/docker/volumes/warm-custom-html_ci_example_org_content/_data
paths:
  description:
    - Per watched path before and after pruning, with C(path), C(measured_at) (the
      existing directory measured), C(total), C(free), C(need), C(threshold),
      C(required) (need plus threshold), C(short_by) and C(ok).
  returned: always
  type: dict
  sample:
    before:
      state_dir: {path: /var/lib/ci-warm, measured_at: /var/lib/ci-warm, total: 8388608,
        free: 8384512, need: 23068672, threshold: 0, required: 23068672,
        short_by: 14684160, ok: false}
    after: {}
pruned:
  description:
    - What was pruned (in check mode, what would be), in order, each with C(step),
      C(kind), C(name), C(bytes) (as Docker reports them; for a cold run the apparent size
      of its volumes, measured before removal) and C(detail).
  returned: always
  type: list
  elements: dict
  sample:
    - {step: cold-runs, kind: cold-run, name: cust-a1b2c3_ci_example_org, bytes: 1048576,
       detail: "no run record, inactive for 7.5 h"}
reclaimed:
  description: The sum of the bytes in RV(pruned).
  returned: always
  type: int
  sample: 1048576
prune_errors:
  description: Prune steps that failed (the others still ran).
  returned: always
  type: list
  elements: str
  sample: []
prune_skipped:
  description: Why nothing was pruned although a path was short, else V(null).
  returned: always
  type: str
  sample: "nothing pruned: pruning Docker frees no space on /srv/state, another file system than the Docker root"
alert:
  description: The C(disk-low) alert file written (or the open one it duplicates), else V(null).
  returned: always
  type: str
  sample: /var/lib/ci-warm/alerts/20261127T030000Z-disk-low-custom-html-a1b2c3.json
docker_root:
  description: The Docker root directory watched.
  returned: always
  type: str
  sample: /var/lib/docker
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import (
    AlertError,
    AlertStore,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    CcciError,
    docker_client,
    run_module,
    state_dir_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._disk import (
    STEPS,
    DiskGuard,
    Threshold,
    docker_root,
    guard,
    snapshot_need,
    volumes_size,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir

_THRESHOLD = {
    "type": "dict",
    "options": {
        "min_free_bytes": {"type": "int", "default": 0},
        "min_free_percent": {"type": "float", "default": 0},
    },
}


def disk(module: AnsibleModule, result: dict) -> dict:
    """Measures, prunes when allowed, and fails with an alert when still short.

    ``result`` is filled as the work goes, so a failure returns what was found.
    """
    p = module.params
    result.update(
        {
            "changed": False,
            "ok": False,
            "free": {},
            "need": 0,
            "paths": {"before": {}, "after": {}},
            "pruned": [],
            "reclaimed": 0,
            "prune_errors": [],
            "prune_skipped": None,
            "alert": None,
            "docker_root": p["docker_root"],
        }
    )
    for key in ("need_bytes", "margin_bytes", "min_free_bytes"):
        if p[key] < 0:
            raise CcciError(f"{key} must be 0 or more, got {p[key]}")
    if p["dead_after_hours"] < 0:
        raise CcciError("dead_after_hours must be 0 or more")
    client = None
    what = ""
    try:
        state_dir = require_state_dir(p["state_dir"])
        stack = stack_name(p["for_volumes_of"]) if p["for_volumes_of"] else None
        target = p["target"] or p["for_volumes_of"] or "disk"
        AlertStore.build("disk-low", target)  # validates the target before anything runs
        client = docker_client(module)
        root = p["docker_root"] or docker_root(client)
        result["docker_root"] = root
        need = p["need_bytes"]
        if stack:
            sizes = volumes_size(client, stack)
            need = snapshot_need(
                [size for _mount, size in sizes.values()], p["margin_bytes"], p["margin_percent"]
            )
            result["volumes"] = {
                name: {"bytes": size.bytes, "entries": size.entries, "mountpoint": mount}
                for name, (mount, size) in sizes.items()
            }
            what = f"for a snapshot of {p['for_volumes_of']}"
        result["need"] = need
        default = Threshold(p["min_free_bytes"], p["min_free_percent"])
        per_path = {
            name: Threshold(t["min_free_bytes"], t["min_free_percent"])
            for name, t in (p["thresholds"] or {}).items()
            if t is not None
        }
        dg = DiskGuard({"docker_root": root, "state_dir": state_dir}, per_path, default)
        outcome = guard(
            client,
            dg,
            {"state_dir": need},
            state_dir,
            do_prune=p["prune"],
            check=module.check_mode,
            what=what,
            prune_kwargs={
                "steps": [s for s in STEPS if s in p["prune_steps"]],
                "grace_hours": p["dead_after_hours"],
            },
        )
    except CcciError:
        raise
    except Exception as exc:  # the SDK's errors, and any other: one sentence, no traceback
        if client is None and type(exc).__module__.startswith("docker"):
            raise CcciError(f"no Docker engine answers: {exc}") from exc
        raise CcciError(f"the disk guard failed: {type(exc).__name__}: {exc}") from exc

    final = outcome.before if module.check_mode else outcome.after
    result["ok"] = outcome.ok
    result["free"] = {r.name: r.free for r in final.paths}
    result["paths"] = {
        "before": outcome.before.summary()["paths"],
        "after": outcome.after.summary()["paths"],
    }
    if outcome.prune is not None:
        result["pruned"] = [x.summary() for x in outcome.prune.pruned]
        result["reclaimed"] = outcome.prune.reclaimed
        result["prune_errors"] = outcome.prune.errors
        result["prune_skipped"] = outcome.prune.skipped
    result["changed"] = bool(result["pruned"])
    if outcome.ok:
        return result

    message = outcome.message
    if result["prune_errors"]:
        message += "; prune errors: " + "; ".join(result["prune_errors"])
    if p["alert"] and not module.check_mode:
        try:
            result["alert"] = AlertStore(state_dir).write(
                "disk-low",
                target,
                notes=message,
                paths=result["paths"]["after"],
                need=result["need"],
                pruned=result["pruned"],
            )
            message += f"; disk-low alert {result['alert']}"
        except (AlertError, OSError) as exc:
            message += f"; the disk-low alert could not be written either: {exc}"
    raise CcciError(message)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **state_dir_spec(),
            "docker_root": {"type": "path"},
            "need_bytes": {"type": "int", "default": 0},
            "for_volumes_of": {"type": "str"},
            "margin_bytes": {"type": "int", "default": 1 << 20},
            "margin_percent": {"type": "float", "default": 5},
            "min_free_bytes": {"type": "int", "default": 1 << 30},
            "min_free_percent": {"type": "float", "default": 5},
            "thresholds": {
                "type": "dict",
                "options": {"docker_root": _THRESHOLD, "state_dir": _THRESHOLD},
            },
            "prune": {"type": "bool", "default": True},
            "prune_steps": {
                "type": "list",
                "elements": "str",
                "choices": list(STEPS),
                "default": list(STEPS),
            },
            "dead_after_hours": {"type": "float", "default": 6},
            "alert": {"type": "bool", "default": True},
            "target": {"type": "str"},
        },
        mutually_exclusive=[("need_bytes", "for_volumes_of")],
        supports_check_mode=True,
    )
    result: dict = {}
    run_module(module, lambda: disk(module, result), on_failure=lambda: result)


if __name__ == "__main__":
    main()
