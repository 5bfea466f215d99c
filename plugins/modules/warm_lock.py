#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: warm_lock
short_description: Take, release or inspect the per-app lock of a recipe's warm state
version_added: 0.1.0
description:
  - Serializes warm runs of one app (SPEC WC8). The lock C(<state_dir>/<recipe>/lock)
    is taken at the start of a play and released in its C(always) section. Runs of
    different recipes do not wait for each other.
  - The lock outlives this module's own process. Its owner record (JSON with C(run_id),
    C(pid), C(start), C(boot_id), C(host), C(since), C(play)) names the
    C(ansible-playbook) process that runs the play, so the lock stays valid until that
    play ends, and counts as stale once it is gone.
  - The owner process is found by walking the parents of the module process up to the
    first process whose command line is C(ansible-playbook), then further up while the
    parent has the very same command line (the per-task workers are forks of the play's
    main process). Give O(owner_pid) to name another long-lived process.
  - V(acquired) waits for a lock held by another run, up to O(timeout) seconds, looking
    every O(poll) seconds, then fails with one sentence naming the holder's run id, pid,
    host, since when it holds the lock, and how long this task waited.
  - A holder recorded on this host whose process is gone (no such process, a zombie, a
    process with another start time, i.e. a reused pid, or another boot) is B(stale). It
    is broken, returned in RV(broken) and reported as a warning. A holder recorded on
    another host is never broken automatically, since its process cannot be seen from
    here; if that run is gone, take or release it with O(force=true).
  - A lock file that is not a valid owner record (empty or hand-edited) counts as stale
    only once it is older than O(corrupt_grace) seconds.
  - The owner process dying does not end its run's work. Ansible's workers call
    C(setsid()), so the module a play was running when C(ansible-playbook) alone was
    killed (C(kill -9), the OOM killer, a cancelled CI step) goes on to its end. Every
    task that changes a canonical (M(coopcloud.ci.warm_canonical),
    M(coopcloud.ci.volume_snapshot), M(coopcloud.ci.recipe_app) on the canonical) holds a
    shared C(flock) on the recipe's folder C(<state_dir>/<recipe>/) (the work lock; nothing
    is written) for its whole life, released by the kernel however it ends. A holder whose
    owner is gone while the work lock is held is
    B(orphaned), not stale; V(acquired) waits for the orphan's work to end (within
    O(timeout)), reports the wait in RV(orphan_wait) and as a warning, and only then
    breaks the lock. A task of the orphaned run that starts after another run took the
    lock changes nothing and fails.
  - V(released) removes the lock only when O(run_id) holds it; releasing a lock that is
    gone is V(ok); releasing another run's lock fails unless O(force=true).
  - V(info) reports the holder and whether it is stale, and changes nothing.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.STATE_DIR]
options:
  recipe:
    description:
      - The recipe whose warm state is locked.
    type: str
    required: true
  run_id:
    description:
      - The run taking or releasing the lock, six lowercase hex digits.
      - Required unless O(state=info).
    type: str
  state:
    description:
      - V(acquired) takes the lock for O(run_id) (waiting up to O(timeout)).
      - V(released) gives it back.
      - V(info) only looks.
    type: str
    choices: [acquired, released, info]
    default: acquired
  timeout:
    description:
      - Seconds to wait for a lock held by another live run before failing. V(0) looks
        once.
    type: float
    default: 600
  poll:
    description:
      - Seconds between two looks while waiting.
    type: float
    default: 2
  force:
    description:
      - With V(acquired), take the lock whoever holds it (the holder is returned in
        RV(broken)); with V(released), release it whoever holds it.
      - Meant for an operator who knows the holder is gone, e.g. a lock taken on another
        host.
    type: bool
    default: false
  owner_pid:
    description:
      - The process that owns the lock instead of the C(ansible-playbook) process found
        among the module's parents. It must run on the host that holds the state
        directory, and live until the lock is released.
      - Needed when the module does not run under C(ansible-playbook) on that host.
    type: int
  play:
    description:
      - A label for the holder record, shown in messages. Default is the playbook file
        names on the owner's command line (C(quick.yml)).
    type: str
  corrupt_grace:
    description:
      - Seconds after which a lock file that is not a valid owner record counts as stale.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    details:
      - Predicts with one look at the lock and never waits. V(acquired) reports
        RV(changed) unless O(run_id) holds the lock already; a lock held by another live
        run is reported as a warning (a real run would wait for it).
  diff_mode:
    support: full
    details:
      - The holder record before and after.
  idempotent:
    support: full
    details:
      - Acquiring a lock the run holds, or releasing a lock that is gone, is V(ok).
author:
  - coopcloud.ci developers
notes:
  - Run this module on the host that holds the state directory (the manager the plays
    run on, SPEC section 7), normally C(localhost); the owner process must be visible
    there.
  - "Why not a library: C(filelock) and C(fasteners) were considered. Their kernel locks
    (C(flock), C(fcntl)) end with the process that holds them, which here is this module,
    gone a moment later. C(filelock)'s marker locks outlive their process but always name
    the calling process as the owner (so the lock would look stale at once), carry no run
    id, and are released only by the object that took them, in the same process. The
    owner file is written whole to a temporary file and published with a hard link (the
    system call fails when the lock exists); each look-then-act step runs under a short C(flock) on
    C(<state_dir>/<recipe>/.lock.guard), so two contenders can never both win, nor both
    break one stale owner."
seealso:
  - module: coopcloud.ci.warm_canonical
"""

EXAMPLES = r"""
- name: Serialize warm runs of custom-html
  block:
    - name: Take the lock of custom-html
      coopcloud.ci.warm_lock:
        recipe: custom-html
        run_id: "{{ ccci_run_id }}"
        state: acquired
        timeout: 900
      register: lock

    - name: Say which stale lock was broken
      ansible.builtin.debug:
        msg: "broke the stale lock of run {{ lock.broken.run_id }}"
      when: lock.broken

  always:
    # Only a run that got the lock releases it: releasing another run's lock fails.
    - name: Release the lock of custom-html
      coopcloud.ci.warm_lock:
        recipe: custom-html
        run_id: "{{ ccci_run_id }}"
        state: released
      when: lock is defined and lock is succeeded

- name: Who holds the lock of custom-html?
  coopcloud.ci.warm_lock:
    recipe: custom-html
    state: info
  register: lock

- name: An operator frees a lock left by a run on another host
  coopcloud.ci.warm_lock:
    recipe: custom-html
    run_id: "000000"
    state: released
    force: true
"""

RETURN = r"""
holder:
  description:
    - The owner record in the lock after the task (for V(released), before it), or
      V(null) when unlocked.
    - An unreadable lock file is reported with the keys C(corrupt) (V(true)), C(reason),
      C(since) (its modification time) and C(age) (seconds).
  returned: always
  type: dict
  sample:
    recipe: custom-html
    run_id: a1b2c3
    pid: 41230
    start: 1834411
    boot_id: 6f1c5c0e-3d2a-4b8e-9a57-1f3a2c9d4e11
    host: ci
    since: "2026-11-27T10:00:00Z"
    play: quick.yml
waited:
  description: Seconds spent waiting for the lock (V(acquired); V(0) otherwise).
  returned: always
  type: float
  sample: 12.5
broken:
  description: The stale (or forced) owner record removed to take the lock, else V(null).
  returned: always
  type: dict
  sample:
    run_id: 0f0f0f
    pid: 39001
    host: ci
    since: "2026-11-27T03:00:00Z"
orphan_wait:
  description:
    - Seconds of RV(waited) spent on a holder whose owner process was gone while a task
      of its run still worked on the recipe (held the work lock on C(<state_dir>/<recipe>/)).
  returned: always
  type: float
  sample: 8.4
stale:
  description:
    - Whether RV(holder) is stale (its process is gone and no task of its run still works
      on the recipe). V(false) when unlocked.
  returned: always
  type: bool
  sample: false
released:
  description: Whether a lock file was (or in check mode would be) removed.
  returned: when O(state=released)
  type: bool
  sample: true
lock_path:
  description: The lock file.
  returned: always
  type: str
  sample: /var/lib/ci-warm/custom-html/lock
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    recipe_spec,
    run_id_spec,
    run_module,
    state_dir_spec,
    state_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import (
    AppLock,
    LockError,
    LockTimeout,
    describe,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import validate_run_id
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir


def _acquire(module: AnsibleModule, lock: AppLock, params: dict) -> dict:
    run_id = params["run_id"]
    if module.check_mode:
        # A real run would fail without an owner process: so does the prediction.
        lock.new_record(run_id, owner_pid=params["owner_pid"], play=params["play"])
        changed, holder, broken = lock.predict_acquire(run_id, force=params["force"])
        if changed and holder is not None and broken is None:
            module.warn(
                f"{lock.recipe} is locked by {describe(holder)}; a real run would wait up to "
                f"{params['timeout']:g} s for it"
            )
        after = holder if not changed else {"run_id": run_id}
        return {
            "changed": changed,
            "holder": holder,
            "waited": 0.0,
            "orphan_wait": 0.0,
            "broken": broken,
            "diff": {"before": {"holder": holder}, "after": {"holder": after}},
        }
    before = lock.holder()
    info = lock.acquire(
        run_id,
        timeout=params["timeout"],
        poll=params["poll"],
        owner_pid=params["owner_pid"],
        play=params["play"],
        force=params["force"],
    )
    if info.orphan_wait:
        module.warn(
            f"the play of the run holding the lock of {lock.recipe} was gone, but a task of it "
            f"still worked on the recipe: waited {info.orphan_wait:g} s for it to end"
        )
    if info.broken is not None:
        module.warn(f"broke the lock of {lock.recipe} held by {describe(info.broken)}")
    return {
        "changed": info.changed,
        "holder": info.holder,
        "waited": info.waited,
        "orphan_wait": info.orphan_wait,
        "broken": info.broken,
        "diff": {"before": {"holder": before}, "after": {"holder": info.holder}},
    }


def _release(module: AnsibleModule, lock: AppLock, params: dict) -> dict:
    holder = lock.holder()
    if module.check_mode:
        released = lock.predict_release(params["run_id"], force=params["force"])
    else:
        released = lock.release(params["run_id"], force=params["force"])
    return {
        "changed": released,
        "released": released,
        "holder": holder,
        "waited": 0.0,
        "orphan_wait": 0.0,
        "broken": None,
        "diff": {"before": {"holder": holder}, "after": {"holder": None}},
    }


def lock_work(module: AnsibleModule) -> dict:
    params = module.params
    try:
        lock = AppLock(
            require_state_dir(params["state_dir"]),
            params["recipe"],
            corrupt_grace=params["corrupt_grace"],
        )
        if params["run_id"] is not None:
            validate_run_id(params["run_id"])
        if params["state"] == "acquired":
            result = _acquire(module, lock, params)
        elif params["state"] == "released":
            result = _release(module, lock, params)
        else:
            holder = lock.holder()
            result = {
                "changed": False, "holder": holder, "waited": 0.0, "orphan_wait": 0.0,
                "broken": None,
            }  # fmt: skip
    except LockTimeout as exc:
        exc.facts["lock_path"] = lock.path
        raise
    except OSError as exc:
        raise LockError(
            f"the lock of {params['recipe']} under {params['state_dir']} cannot be "
            f"{params['state']}: {exc}"
        ) from exc
    result["stale"] = lock.is_stale(result["holder"])
    result["lock_path"] = lock.path
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **recipe_spec(),
            **run_id_spec(),
            **state_spec(["acquired", "released", "info"], "acquired"),
            **state_dir_spec(),
            "timeout": {"type": "float", "default": 600},
            "poll": {"type": "float", "default": 2},
            "force": {"type": "bool", "default": False},
            "owner_pid": {"type": "int"},
            "play": {"type": "str"},
            "corrupt_grace": {"type": "float", "default": 60},
        },
        required_if=[("state", "acquired", ["run_id"]), ("state", "released", ["run_id"])],
        supports_check_mode=True,
    )
    run_module(module, lambda: lock_work(module), diff_when_asked=True)


if __name__ == "__main__":
    main()
