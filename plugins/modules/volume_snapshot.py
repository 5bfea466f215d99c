#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: volume_snapshot
short_description: Take, restore, inspect or drop the known-good snapshot of an app's volumes
version_added: 0.1.0
description:
  - Keeps one last-good snapshot per recipe in C(<state_dir>/<recipe>/snapshot/), made
    of C(manifest.json) and one uncompressed POSIX tar archive per volume
    (C(<volume>.tar)).
  - V(present) archives every volume of the app at O(domain) (the volumes labelled
    C(com.docker.stack.namespace=<stack>)) while the app is undeployed. The new snapshot
    is written into a temporary sibling directory, fsynced and swapped in atomically, so
    the previous snapshot survives any failure or crash. The manifest records, per
    volume, the archive's size, file count and digests (the sha256 of its headers and
    padding, and a digest of the volume tree that holds each file's content sha256,
    so each byte is hashed once); plus O(version), O(commit) and the time it was taken.
  - V(restored) verifies every archive first (size and digests against the manifest,
    or the whole archive's sha256 for a snapshot recorded before, and every member
    header against the hostile-archive rules) and only then makes each volume exactly
    equal to its archive - contents, removed extra files, modes, numeric
    ownership, mtimes (directories too), symlinks and hard links. Each volume is
    extracted into a staging directory beside it and swapped in atomically. A volume
    that does not exist yet is created with the stack's namespace label, so a snapshot
    taken from one app can be restored into another app of the same recipe (volumes are
    matched by their short names).
  - Hostile archives are refused before anything is written. That is absolute paths, C(..)
    components, symlinks whose target is absolute or climbs out of the volume, members
    beneath a symlink, hard links leaving the volume, device files, more than
    O(max_members) members. The same checks run on every snapshot as it is taken, so a
    snapshot that could not be restored is never kept.
  - Both V(present) and V(restored) refuse to run while the app is deployed, that is
    while any service of the stack exists or any container, running or stopped, mounts
    one of the volumes. Nothing is changed then.
  - V(absent) deletes the snapshot. V(info) reports it, and with O(verify=true) also
    checks every archive.
  - After a crash the next call puts the snapshot directory right first (the previous
    snapshot is kept or moved back, partial new ones are removed).
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.STATE_DIR]
options:
  recipe:
    description:
      - The recipe whose snapshot slot is meant (C(<state_dir>/<recipe>/snapshot/)).
    type: str
    required: true
  domain:
    description:
      - The app whose volumes are archived (V(present)) or restored into (V(restored)).
        Its stack is the domain with C(.) replaced by C(_).
      - Required for V(present) and V(restored).
    type: str
  state:
    description:
      - V(present) takes a snapshot of the app's volumes.
      - V(restored) makes the app's volumes equal to the snapshot.
      - V(absent) deletes the snapshot.
      - V(info) only reports it.
    type: str
    choices: [present, restored, absent, info]
    default: info
  version:
    description:
      - The recipe version the volumes belong to; recorded in the manifest by V(present).
    type: str
  commit:
    description:
      - The recipe commit the volumes belong to; recorded in the manifest by V(present).
    type: str
  volumes:
    description:
      - Short volume names (C(content) for C(<stack>_content)) to limit the operation to.
        Default is every volume of the app (V(present)) or of the snapshot (V(restored)).
    type: list
    elements: str
  force:
    description:
      - V(present) takes a new snapshot even when one exists that equals the volumes.
      - V(restored) restores even when the volumes already equal the snapshot.
    type: bool
    default: false
  max_members:
    description:
      - The most members (files, directories, links) one archive may hold; more is
        treated as hostile.
    type: int
    default: 1000000
  verify:
    description:
      - With O(state=info), also check every archive against the manifest (reads them
        all).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - V(present) predicts a change unless a snapshot exists with the same volumes,
        O(version) and O(commit) whose recorded tree digests equal the current volumes.
      - V(restored) predicts a change unless every volume exists and its tree digest
        equals the one recorded in the manifest.
      - Only metadata are read when they already differ; contents are read (hashed)
        only when every name, size and mtime matches.
  diff_mode:
    support: full
    details:
      - The snapshot's manifest digest, version, commit and taken_at before and after;
        for V(restored) the tree digest of each volume before and after.
  idempotent:
    support: full
    details:
      - A second V(present) with unchanged volumes and a second V(restored) are V(ok).
requirements:
  - docker (the Docker SDK for Python, for O(state=present) and O(state=restored))
author:
  - coopcloud.ci developers
notes:
  - Volumes are read and written through their local mountpoint
    (C(docker volume inspect) C(Mountpoint)) by GNU tar running on the node, not through
    a helper container. Measured with C(bench/snapshot) on a 1 GiB volume of 39 000
    files, the whole snapshot (archive, header scan, digests, fsync) took
    2.65 s, while only streaming the same volume out of a C(busybox tar) helper
    container through C(docker run) took 37.5 s. busybox tar also drops nanosecond
    mtimes and cannot sort members, so a restored tree would not be exactly equal. See
    docs/snapshots.md for all figures.
  - A volume lives on the node where its task ran. Run this module on that node
    (C(delegate_to)); when a volume of the app is not on the node the module talks to,
    it fails and says so rather than acting on the wrong node.
  - Requires GNU tar on the node. Extended attributes and ACLs are not archived.
  - Archives are uncompressed; free disk space of about the volumes' size is needed for
    the snapshot, and again beside each volume while it is restored.
seealso:
  - module: coopcloud.ci.recipe_app
  - name: How snapshots work
    description: docs/snapshots.md in the collection.
    link: https://example.invalid/coopcloud.ci/docs/snapshots.md
"""

EXAMPLES = r"""
- name: Take the known-good snapshot of the canonical while it is undeployed
  coopcloud.ci.volume_snapshot:
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    state: present
    version: 1.1.0+1.29
    commit: 4f1c2e9a0b7d3c5e6f8a9b0c1d2e3f4a5b6c7d8e

- name: Put the known-good data back after a failed quick run
  coopcloud.ci.volume_snapshot:
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    state: restored

- name: Seed another app of the same recipe from the snapshot (volumes map by short name)
  coopcloud.ci.volume_snapshot:
    recipe: notes
    domain: notes-3fa9c1.ci.example.org
    state: restored
    volumes: [content, data]

- name: Check that the snapshot is intact
  coopcloud.ci.volume_snapshot:
    recipe: custom-html
    state: info
    verify: true
  register: snap

- name: Run it on the node that holds the volumes
  coopcloud.ci.volume_snapshot:
    recipe: notes
    domain: warm-notes.ci.example.org
    state: present
  delegate_to: "{{ canonical_node }}"
"""

RETURN = r"""
path:
  description: The snapshot directory.
  returned: always
  type: str
  sample: /var/lib/ci-warm/custom-html/snapshot
exists:
  description: Whether a snapshot exists after the task (or would, in check mode).
  returned: always
  type: bool
  sample: true
manifest:
  description:
    - The snapshot's manifest (empty when there is none). In check mode with a change
      predicted for V(present), the manifest of the snapshot that is there now.
  returned: always
  type: dict
  sample:
    format: 1
    recipe: custom-html
    source: {domain: warm-custom-html.ci.example.org, stack: warm-custom-html_ci_example_org}
    version: 1.1.0+1.29
    commit: 4f1c2e9a0b7d3c5e6f8a9b0c1d2e3f4a5b6c7d8e
    taken_at: "2026-11-26T23:30:56Z"
    archiver: tar (GNU tar) 1.34
    volumes:
      content:
        archive: content.tar
        headers_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        bytes: 20480
        files: 3
        members: 5
        content_bytes: 1234
        tree_digest: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
        meta_digest: fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9
        source: /var/lib/docker/volumes/warm-custom-html_ci_example_org_content/_data
manifest_digest:
  description: sha256 of C(manifest.json) (the registry stores it). Empty when none.
  returned: always
  type: str
  sample: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
volumes:
  description:
    - Per volume of the snapshot, its archive and digests. C(headers_sha256) for a
      snapshot taken now; C(sha256) (of the whole archive) for one recorded before it
      existed, or streamed from another node. The other is null.
  returned: always
  type: list
  elements: dict
  sample:
    - name: content
      volume: warm-custom-html_ci_example_org_content
      archive: content.tar
      bytes: 20480
      files: 3
      headers_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
      sha256: null
      tree_digest: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
reasons:
  description: Why a change was (or would be) made; empty when none.
  returned: always
  type: list
  elements: str
  sample: [volume content changed]
recovered:
  description:
    - What was put right in the snapshot directory after an earlier crash. Done by every
      changing state outside check mode; V(info) only reads.
  returned: always
  type: list
  elements: str
  sample: [removed leftover snapshot.tmp-1a2b3c4d]
verified:
  description: Per volume, the result of verifying its archive (O(verify=true) only).
  returned: when O(state=info) and O(verify=true)
  type: dict
  sample: {content: {headers_sha256: "9f86...", bytes: 20480, members: 5, files: 3}}
created_volumes:
  description: Docker volumes created by V(restored) because they did not exist.
  returned: when O(state=restored)
  type: list
  elements: str
  sample: [notes-3fa9c1_ci_example_org_data]
elapsed:
  description:
    - Seconds the module spent on its work (Docker, files, archives), measured with a
      monotonic clock. Plays sum it into the run record's C(timings.docker_seconds).
  returned: success
  type: float
  sample: 2.315
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    docker_client,
    recipe_spec,
    run_module,
    state_dir_spec,
    state_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import working
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._remote import app_snapshot
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    DEFAULT_MAX_MEMBERS,
    SnapshotError,
    SnapshotStore,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir


def _summary(manifest: dict | None, digest: str) -> dict:
    if not manifest:
        return {}
    return {
        "manifest_digest": digest,
        "version": manifest.get("version"),
        "commit": manifest.get("commit"),
        "taken_at": manifest.get("taken_at"),
        "volumes": sorted(manifest.get("volumes", {})),
    }


def _volumes(manifest: dict | None, stack: str | None) -> list[dict]:
    out = []
    for short, entry in sorted(((manifest or {}).get("volumes") or {}).items()):
        out.append(
            {
                "name": short,
                "volume": f"{stack}_{short}" if stack else None,
                "archive": entry.get("archive"),
                "bytes": entry.get("bytes"),
                "files": entry.get("files"),
                "headers_sha256": entry.get("headers_sha256"),
                "sha256": entry.get("sha256"),
                "tree_digest": entry.get("tree_digest"),
            }
        )
    return out


class VolumeSnapshot:
    """Computes changed and diff first, then acts unless in check mode."""

    def __init__(self, module: AnsibleModule, client_factory=None) -> None:
        self.module = module
        self.p = module.params
        self.check = module.check_mode
        self.store = SnapshotStore(
            require_state_dir(self.p["state_dir"]), self.p["recipe"], self.p["max_members"]
        )
        self.client_factory = client_factory or (lambda: docker_client(module))
        self.recovered: list[str] = []

    def _before(self) -> tuple[dict | None, str]:
        if not self.store.exists():
            return None, ""
        return self.store.manifest(), self.store.manifest_digest()

    def _result(self, changed: bool, manifest: dict | None, digest: str, stack=None, **more):
        return {
            "changed": changed,
            "path": self.store.path,
            "exists": bool(manifest),
            "manifest": manifest or {},
            "manifest_digest": digest,
            "volumes": _volumes(manifest, stack),
            "recovered": self.recovered,
            **more,
        }

    def run(self) -> dict:
        state = self.p["state"]
        if state in ("present", "restored") and not self.p["domain"]:
            raise SnapshotError(f"state is {state} but domain is missing")
        if state == "info" or self.check:
            # info only reads (a crash's leftovers stay for the next changing call to clear)
            return getattr(self, f"state_{state}")()
        # a change holds the recipe's work lock for this process's life (docs/reliability.md)
        with working(self.store.state_dir, self.p["recipe"]):
            if os.path.isdir(self.store.base):
                self.recovered = self.store.recover()
            return getattr(self, f"state_{state}")()

    def state_info(self) -> dict:
        manifest, digest = self._before()
        more = {"reasons": []}
        if self.p["verify"] and manifest:
            more["verified"] = self.store.verify()["volumes"]
        stack = (manifest or {}).get("source", {}).get("stack")
        return self._result(False, manifest, digest, stack, **more)

    def state_absent(self) -> dict:
        try:
            manifest, digest = self._before()
        except SnapshotError:
            manifest, digest = {"broken": True}, ""
        changed = manifest is not None
        if changed and not self.check:
            self.store.remove()
        result = self._result(changed, None, "", reasons=["snapshot exists"] if changed else [])
        result["diff"] = {"before": _summary(manifest, digest), "after": {}}
        return result

    def state_present(self) -> dict:
        app = app_snapshot(self.client_factory(), self.store, self.p["domain"])
        plan = app.plan_take(self.p["volumes"], self.p["version"], self.p["commit"],
                             self.p["force"])  # fmt: skip
        current = plan["current"]
        before_digest = self.store.manifest_digest() if current else ""
        changed = bool(plan["reasons"])
        manifest, digest = current, before_digest
        if changed and not self.check:
            manifest = app.take(
                plan["mounts"],
                version=self.p["version"],
                commit=self.p["commit"],
                domain=self.p["domain"],
                stack=app.stack,
            )
            digest = self.store.manifest_digest()
        after = _summary(manifest, digest)
        if changed and self.check:
            after = {
                "manifest_digest": "(new)",
                "version": self.p["version"],
                "commit": self.p["commit"],
                "taken_at": "(now)",
                "volumes": sorted(plan["mounts"]),
            }
        result = self._result(changed, manifest, digest, app.stack, reasons=plan["reasons"])
        if changed and self.check:
            result["exists"] = True
        result["diff"] = {"before": _summary(current, before_digest), "after": after}
        return result

    def state_restored(self) -> dict:
        if not self.store.exists():
            raise SnapshotError(
                f"no snapshot of recipe {self.p['recipe']!r} to restore: "
                f"{self.store.path} does not exist"
            )
        app = app_snapshot(self.client_factory(), self.store, self.p["domain"])
        plan = app.plan_restore(self.p["volumes"], self.p["force"])
        manifest = plan["manifest"]
        digest = self.store.manifest_digest()
        changed = bool(plan["reasons"])
        created: list[str] = []
        before = {}
        for short, status in plan["status"].items():
            if status == "equal":
                before[short] = manifest["volumes"][short]["tree_digest"]
            else:
                before[short] = f"({status})"
        after = {short: manifest["volumes"][short]["tree_digest"] for short in plan["mounts"]}
        if changed and not self.check:

            def create(short: str) -> str:
                # called by the store only once every archive has verified
                mount = app.create_volume(short)
                created.append(f"{app.stack}_{short}")
                return mount

            app.restore(plan["mounts"], create=create)
        result = self._result(
            changed, manifest, digest, app.stack, reasons=plan["reasons"], created_volumes=created
        )
        result["diff"] = {
            "before": {**_summary(manifest, digest), "tree_digests": before},
            "after": {**_summary(manifest, digest), "tree_digests": after},
        }
        return result


def snapshot(module: AnsibleModule) -> dict:
    p = module.params
    if p["domain"]:
        stack_name(p["domain"])
    if p["max_members"] < 1:
        raise ValidationError(f"max_members {p['max_members']} is invalid: give 1 or more")
    return VolumeSnapshot(module).run()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **recipe_spec(),
            "domain": {"type": "str"},
            **state_spec(["present", "restored", "absent", "info"], "info"),
            **state_dir_spec(),
            "version": {"type": "str"},
            "commit": {"type": "str"},
            "volumes": {"type": "list", "elements": "str"},
            "force": {"type": "bool", "default": False},
            "max_members": {"type": "int", "default": DEFAULT_MAX_MEMBERS},
            "verify": {"type": "bool", "default": False},
        },
        required_if=[("state", "present", ("domain",)), ("state", "restored", ("domain",))],
        supports_check_mode=True,
    )  # fmt: skip
    run_module(
        module,
        lambda: snapshot(module),
        prefix=f"snapshot of recipe {module.params['recipe']}",
        elapsed=True,
    )


if __name__ == "__main__":
    main()
