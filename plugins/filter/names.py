# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that name things the way the collection names them (one home: _names.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.coopcloud.ci.plugins.module_utils import _names


def _wrap(func):
    def filter_(*args):
        try:
            return func(*args)
        except _names.ValidationError as exc:
            raise AnsibleFilterError(str(exc)) from None

    filter_.__name__ = func.__name__
    return filter_


class FilterModule:
    def filters(self):
        return {
            "stack_name": _wrap(_names.stack_name),
            "cold_domain": _wrap(
                lambda recipe, run_id, suffix: _names.cold_domain(recipe, run_id, suffix)
            ),
            "canonical_domain": _wrap(
                lambda recipe, suffix: _names.canonical_domain(recipe, suffix)
            ),
            "realm_name": _wrap(lambda recipe, run_id: _names.realm_name(recipe, run_id)),
        }
