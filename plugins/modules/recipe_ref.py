#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: recipe_ref
short_description: Resolve a ref of a recipe to its commit, version, latest and previous versions
version_added: 0.1.0
description:
  - Answers the questions a run asks of a recipe checkout before it deploys anything -
    which commit is O(ref), which version tag (if any) points at it, which version is the
    latest, whether the ref B(is) the latest release (only then may a green cold run
    promote the canonical), and which version the upgrade stage starts from.
  - The checkout is C(<recipes_dir>/<recipe>), a git clone. With O(fetch) it is fetched
    from its C(origin) first (tags included), under a lock shared with every other run.
  - O(ref) may be a commit (7 to 40 hex digits), a tag or a branch; anything git could
    read as an option or as revision syntax is refused before git runs. Without O(ref)
    the latest version tag is used.
  - Reads only; the fetch is skipped in check mode.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.INFO_MODULE]
options:
  recipe:
    description: The recipe name, C(^[a-z0-9][a-z0-9-]{0,39}$).
    type: str
    required: true
  ref:
    description: The commit, tag or branch to test. Default is the latest version tag.
    type: str
  recipes_dir:
    description: The folder holding one git checkout per recipe.
    type: path
    default: ~/.abra/recipes
  fetch:
    description: Fetch the checkout's C(origin) (tags included) before resolving.
    type: bool
    default: true
  fetch_ref:
    description:
      - A full ref to fetch too, before resolving, for example V(refs/pull/7/head) - the
        head of a pull request, which for a fork lives only there. It is kept in the
        checkout as C(refs/ccci/<ref without refs/>).
      - Only with O(fetch). A name git could read as an option is refused before git runs.
    type: str
  upgrade_from:
    description:
      - The version the upgrade stage starts from. V(previous) means the version tag
        before the ref's own version, or, when the ref carries no version (a pull
        request's head), the latest version tag.
      - Any other value must be an existing version tag.
    type: str
    default: previous
author:
  - coopcloud.ci developers
notes:
  - A checkout without an C(origin) remote is used as it is (O(fetch) then does nothing).
"""

EXAMPLES = r"""
- name: Resolve the pull request's head
  coopcloud.ci.recipe_ref:
    recipe: custom-html
    ref: 0f42faf
  register: target

- name: Say what the run tests
  ansible.builtin.debug:
    msg: >-
      {{ target.commit }} ({{ target.version | default('no version tag', true) }}),
      upgrading from {{ target.previous }}; latest release {{ target.latest }}
"""

RETURN = r"""
commit:
  description: The full commit O(ref) resolves to.
  returned: success
  type: str
  sample: 0f42faf170a10445ed7c2153ca150898fab3560f
version:
  description: The newest version tag pointing at RV(commit), or null.
  returned: success
  type: str
  sample: 1.1.0+1.29
ref:
  description: O(ref) as given, or null when the latest version was asked for.
  returned: success
  type: str
  sample: 0f42faf
latest:
  description: The latest version tag of the recipe, or null when it has none.
  returned: success
  type: str
  sample: 1.1.0+1.29
latest_commit:
  description: The commit of RV(latest).
  returned: success
  type: str
is_latest:
  description: True when RV(commit) is the commit of the latest version tag.
  returned: success
  type: bool
  sample: true
previous:
  description: The version the upgrade stage starts from, or null when there is none
    (the first release).
  returned: success
  type: str
  sample: 1.0.0+1.28
previous_commit:
  description: The commit of RV(previous), or null.
  returned: success
  type: str
versions:
  description: Every version tag, oldest first.
  returned: success
  type: list
  elements: str
  sample: [1.0.0+1.28, 1.1.0+1.29]
fetched:
  description: Whether the checkout was fetched from its origin.
  returned: success
  type: bool
rc:
  description: git's exit status, when a git command failed.
  returned: failure
  type: int
stdout:
  description: git's standard output, when a git command failed.
  returned: failure
  type: str
stderr:
  description: git's standard error, when a git command failed.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._common import recipe_spec, run_module
from ansible_collections.coopcloud.ci.plugins.module_utils._names import validate_fetch_ref
from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import RecipeError, RecipeRepo
from ansible_collections.coopcloud.ci.plugins.module_utils._version import Version


def previous_version(versions: list[str], version: str | None, commit: str, latest_commit):
    """The version the upgrade stage starts from (see O(upgrade_from)=previous)."""
    if version is not None:
        older = [v for v in versions if Version.parse(v) < Version.parse(version)]
        return older[-1] if older else None
    if not versions:
        return None
    if commit != latest_commit:
        return versions[-1]
    return versions[-2] if len(versions) > 1 else None


def resolve(params: dict, check_mode: bool) -> dict:
    repo = RecipeRepo(params["recipe_dir_root"], params["recipe"])
    fetch_ref = params.get("fetch_ref")
    if fetch_ref is not None:
        validate_fetch_ref(fetch_ref)
    fetched = False if check_mode or not params["fetch"] else repo.fetch(extra_ref=fetch_ref)
    resolved = repo.resolve(params["ref"])
    versions = repo.version_tags()
    latest = versions[-1] if versions else None
    latest_commit = repo.commit_of(latest) if latest else None
    if params["upgrade_from"] == "previous":
        previous = previous_version(versions, resolved.version, resolved.commit, latest_commit)
    elif params["upgrade_from"] in versions:
        previous = params["upgrade_from"]
    else:
        raise RecipeError(
            f"upgrade_from {params['upgrade_from']!r} is not a version tag of recipe "
            f"{params['recipe']!r} (known: {', '.join(versions) or 'none'})"
        )
    return {
        "changed": False,
        "commit": resolved.commit,
        "version": resolved.version,
        "ref": resolved.ref,
        "latest": latest,
        "latest_commit": latest_commit,
        "is_latest": latest_commit is not None and resolved.commit == latest_commit,
        "previous": previous,
        "previous_commit": repo.commit_of(previous) if previous else None,
        "versions": versions,
        "fetched": fetched,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **recipe_spec(),
            "ref": {"type": "str"},
            "recipes_dir": {"type": "path", "default": "~/.abra/recipes"},
            "fetch": {"type": "bool", "default": True},
            "fetch_ref": {"type": "str"},
            "upgrade_from": {"type": "str", "default": "previous"},
        },
        supports_check_mode=True,
    )
    params = dict(module.params, recipe_dir_root=module.params["recipes_dir"])
    run_module(module, lambda: resolve(params, module.check_mode))


if __name__ == "__main__":
    main()
