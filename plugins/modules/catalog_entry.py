#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: catalog_entry
short_description: Read and validate a recipe's entry in the CI catalog
version_added: 0.1.0
description:
  - The catalog holds the CI metadata of each recipe in
    C(<catalog_dir>/<recipe>/recipe.yml) - enrolment in the warm layer
    (C(warm_canonical)), the stages its runs have, the HTTP service and port, the health
    probe, the overlays the overlay stage tests, the SSO need, app env overrides, the
    version the upgrade stage starts from - and an optional C(tests/) folder of pytest
    files run as the custom stage. C(catalog/README.md) of the collection documents the
    schema and the environment custom tests get.
  - With O(recipe), returns that recipe's entry, validated and normalised (defaults
    filled in, stages in run order, overlays as a list of C({file, env})).
  - Without O(recipe), lists the catalog - every valid entry, the enrolled recipes, and
    one message per invalid entry (each also raised as a warning). Invalid entries are
    reported, never silently skipped.
  - "An invalid entry fails the task with one sentence naming the file and the key, for
    example C(.../notes/recipe.yml: key 'health.status' must be a non-empty list of HTTP
    status codes, got 200). Unknown and duplicate keys are refused."
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.INFO_MODULE]
options:
  recipe:
    description:
      - The recipe whose entry to read. Omit it to list the whole catalog.
    type: str
  catalog_dir:
    description:
      - The catalog folder, one sub-folder per recipe (the playbook variable
        C(ccci_catalog_dir)).
      - Defaults to C($CCCI_CATALOG_DIR) when set, else the example catalog shipped in the
        collection's C(catalog/) folder (found beside the collection, or in the Ansible
        collection paths when the module runs from a packed payload).
    type: path
  missing_ok:
    description:
      - With O(recipe), a recipe that has no C(recipe.yml) gets the default entry (every
        stage, C(app) on port 80, health C(GET /) answering 200, not enrolled) and
        RV(entry.found=false) instead of failing. An entry that exists but is invalid
        always fails.
    type: bool
    default: false
author:
  - coopcloud.ci developers
notes:
  - Reads only; works the same in check mode.
seealso:
  - module: coopcloud.ci.run_record
"""

EXAMPLES = r"""
- name: Read the catalog entry of the recipe under test
  coopcloud.ci.catalog_entry:
    recipe: "{{ recipe }}"
    catalog_dir: "{{ ccci_catalog_dir | default(omit) }}"
    missing_ok: true
  register: catalog

- name: Skip the overlay stage when the recipe lists no overlays
  ansible.builtin.debug:
    msg: "overlays: {{ catalog.entry.overlays | map(attribute='file') | join(', ') }}"
  when: catalog.entry.overlays | length > 0

- name: Which recipes does the nightly sweep cover
  coopcloud.ci.catalog_entry:
    catalog_dir: /srv/ci-catalog
  register: listing

- name: Cold-run each enrolled recipe
  ansible.builtin.debug:
    msg: "{{ listing.enrolled }}"
"""

RETURN = r"""
catalog_dir:
  description: The catalog folder that was read.
  returned: always
  type: str
  sample: /usr/share/ansible/collections/ansible_collections/coopcloud/ci/catalog
entry:
  description:
    - The validated, normalised entry of O(recipe).
    - C(found) is V(false) (and C(path) V(null)) when O(missing_ok) supplied the default
      entry. C(skipped_stages) lists the stages the entry leaves out; a run records them
      as C(skip). C(tests_dir) is the custom tests folder (V(null) when there is none)
      and C(tests) its pytest files.
  returned: when O(recipe) is given
  type: dict
  sample:
    recipe: notes
    path: /srv/ci-catalog/notes/recipe.yml
    found: true
    warm_canonical: true
    sso: null
    stages: [install, upgrade, serving, overlay, custom]
    skipped_stages: []
    http: {service: app, port: 80}
    health: {path: /, status: [200, 404], body: null, timeout: 120, interval: 2}
    overlays:
      - file: db/compose.db-tune.yml
        env: {DB_CACHE_MB: "256"}
    env: {NOTES_TITLE: CI notes}
    upgrade_from: previous
    tests_dir: /srv/ci-catalog/notes/tests
    tests: [test_notes.py]
enrolled:
  description: The recipes with C(warm_canonical) true, sorted (valid entries only).
  returned: always
  type: list
  elements: str
  sample: [custom-html, notes]
recipes:
  description: Every recipe with a valid entry, sorted.
  returned: when O(recipe) is omitted
  type: list
  elements: str
  sample: [custom-html, notes]
entries:
  description: Every valid entry, keyed by recipe, in the form of RV(entry).
  returned: when O(recipe) is omitted
  type: dict
  sample: {}
errors:
  description: One message per invalid entry, naming the file and the key.
  returned: when O(recipe) is omitted
  type: list
  elements: str
  sample: ["/srv/ci-catalog/pad/recipe.yml: unknown key 'warm_canonicl' (allowed: recipe, warm_canonical, sso, stages, http, health, overlays, env, upgrade_from)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._catalog import (
    default_catalog_dir,
    list_entries,
    load_entry,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import recipe_spec, run_module


def read(module: AnsibleModule, p: dict) -> dict:
    catalog_dir = p["catalog_dir"] or default_catalog_dir()
    entries, errors = list_entries(catalog_dir)
    enrolled = sorted(e.recipe for e in entries if e.warm_canonical)
    if p["recipe"] is None:
        for error in errors:
            module.warn(error)
        return {
            "catalog_dir": catalog_dir,
            "enrolled": enrolled,
            "recipes": [e.recipe for e in entries],
            "entries": {e.recipe: e.to_dict() for e in entries},
            "errors": errors,
        }
    entry = load_entry(catalog_dir, p["recipe"], missing_ok=p["missing_ok"])
    return {"catalog_dir": catalog_dir, "entry": entry.to_dict(), "enrolled": enrolled}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **recipe_spec(required=False),
            "catalog_dir": {"type": "path"},
            "missing_ok": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    run_module(module, lambda: read(module, module.params))


if __name__ == "__main__":
    main()
