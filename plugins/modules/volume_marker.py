#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: volume_marker
short_description: Write, read or remove a small marker file in an app's volume, here or on another swarm node
version_added: 0.1.0
description:
  - The upgrade stage writes a marker into the app's first volume before the upgrade and
    reads it back after.
  - Without O(node), the volume is on this machine and is reached through its mountpoint
    (the engine of the environment names it); only a volume of the app's own stack is
    touched, and an overlay volume only while a container mounts it.
  - With O(node), the volume lives on that swarm node (a canonical pinned to a worker),
    which this machine's file system cannot reach; the module reaches it through that
    node's Docker engine (its address from C(CCCI_NODE_ENGINES)), with a short-lived
    helper container on the node that mounts the volume, as the remote snapshot and
    restore do (docs/multinode.md).
  - V(present) writes O(content) into the file O(name) at the volume's root (mode
    C(0644), owner root). V(read) returns its content (V(null) when it is not there).
    V(absent) removes it.
  - A failure of the node's engine fails the task with one sentence naming that engine.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.STATE_DIR]
options:
  recipe:
    description: The recipe whose app owns the volume (named in messages).
    type: str
    required: true
  domain:
    description: The app whose volume is meant.
    type: str
    required: true
  node:
    description:
      - The hostname of the swarm node that holds the volume, when it is not this machine.
    type: str
  volume:
    description: The Docker volume's name on that node.
    type: str
    required: true
  name:
    description: The file's name at the volume's root (letters, digits, C(.), C(_), C(-)).
    type: str
    required: true
  content:
    description: What V(present) writes.
    type: str
  state:
    description:
      - V(present) writes the file, V(read) reads it, V(absent) removes it (and returns
        what it held, so one task reads and removes).
    type: str
    choices: [present, read, absent]
    default: read
attributes:
  check_mode:
    support: full
    details:
      - V(present) and V(absent) read the file and report the change they would make.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second V(present) with the same content and a second V(absent) are V(ok).
requirements:
  - docker (the Docker SDK for Python)
author:
  - coopcloud.ci developers
seealso:
  - module: coopcloud.ci.volume_snapshot
  - name: Two swarm nodes
    description: docs/multinode.md in the collection.
    link: https://example.invalid/coopcloud.ci/docs/multinode.md
"""

EXAMPLES = r"""
- name: Write the upgrade marker into a volume on the worker
  coopcloud.ci.volume_marker:
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    node: ci-worker-1
    volume: warm-custom-html_ci_example_org_content
    name: .ccci-marker-3fa9c1
    content: "{{ marker }}"
    state: present
- name: Read it back after the upgrade
  coopcloud.ci.volume_marker:
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    node: ci-worker-1
    volume: warm-custom-html_ci_example_org_content
    name: .ccci-marker-3fa9c1
  register: marker_read
- name: Read a marker in a volume on this machine back, and remove it
  coopcloud.ci.volume_marker:
    recipe: custom-html
    domain: warm-custom-html.ci.example.org
    volume: warm-custom-html_ci_example_org_content
    name: .ccci-marker-3fa9c1
    state: absent
  register: marker_removed
"""

RETURN = r"""
content:
  description: The file's content before the task (V(null) when it was not there).
  returned: always
  type: str
  sample: Zq3xTfP0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    docker_client,
    recipe_spec,
    run_module,
    state_dir_spec,
    state_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._remote import (
    RemoteAppSnapshot,
    node_client,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir
from ansible_collections.coopcloud.ci.plugins.module_utils._volume_files import LocalVolumeFiles


def marker(module: AnsibleModule, p: dict) -> dict:
    state_dir = require_state_dir(p["state_dir"])
    if p["node"]:
        store = SnapshotStore(state_dir, p["recipe"])
        engine = node_client(p["node"], p["recipe"])
        view = RemoteAppSnapshot(docker_client(module), engine, store, p["domain"], p["node"])
    else:
        view = LocalVolumeFiles(docker_client(module), p["domain"])
    raw = view.read_file(p["volume"], p["name"])
    content = None if raw is None else raw.decode(errors="replace")
    state = p["state"]
    changed = False
    if state == "present":
        changed = content != (p["content"] or "")
        if changed and not module.check_mode:
            view.write_file(p["volume"], p["name"], (p["content"] or "").encode())
    elif state == "absent":
        changed = raw is not None
        if changed and not module.check_mode:
            view.remove_file(p["volume"], p["name"])
    return {"changed": changed, "content": content}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **recipe_spec(),
            **state_dir_spec(),
            **state_spec(["present", "read", "absent"], "read"),
            "domain": {"type": "str", "required": True},
            "node": {"type": "str"},
            "volume": {"type": "str", "required": True},
            "name": {"type": "str", "required": True},
            "content": {"type": "str"},
        },
        required_if=[("state", "present", ("content",))],
        supports_check_mode=True,
    )
    run_module(module, lambda: marker(module, module.params))


if __name__ == "__main__":
    main()
