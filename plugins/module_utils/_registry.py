# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canonical registry ``<state_dir>/<recipe>/canonical.json``. PRIVATE to the collection:
no compatibility promises.

One file per enrolled recipe records its data-warm canonical (SPEC WC2, §3): the known-good
version and commit, the snapshot that holds its known-good data, who promoted it, and
where it is in its life cycle. It is written atomically (temporary sibling, fsync, rename)
with :func:`_state.write_json`, so a reader sees the old file or the new one, never a
torn one. A file that cannot be read or does not hold a registry raises
:class:`StateError` naming it: it is never silently replaced (a re-seed by a green cold
run, or an operator, deals with it).

Writers hold the recipe's lock (:mod:`._lock`); this class does not lock by itself.

Statuses (``status``):

``idle``
    Undeployed, volumes kept, and at rest: the volumes hold the known-good data (or,
    after an operator's ``deployed`` -> ``idle``, what the operator's session left).
``deployed``
    Reattached at its known-good version at ``warm-<recipe>.<suffix>`` (an operator or a
    test looking at it); the data may change while it runs.
``quick``
    A quick run is using it: reattached, upgraded to the PR head, under test. Never left
    behind by a run that ends normally.
``restoring``
    Undeployed, and the known-good snapshot is being restored into its volumes.
``seeding``
    A green cold run is installing a new known-good (snapshot, version, commit) and
    restoring it into the volumes.

Allowed transitions (:data:`TRANSITIONS`); anything else raises :class:`TransitionError`::

    idle      -> deployed | quick | restoring | seeding
    deployed  -> idle | restoring | seeding
    quick     -> restoring | seeding          (a quick run always restores the known-good)
    restoring -> idle | restoring | seeding   (restoring -> restoring: a retry)
    seeding   -> idle | restoring | seeding   (seeding -> restoring: a failed re-seed)

Setting the status a registry already has is a no-op for ``idle`` and ``deployed``, and
for any status when the same run sets it again. :meth:`Registry.seed` ends a promotion
(first seed or re-seed) from any status and leaves the canonical ``idle``: the caller has
installed the snapshot and restored it into the undeployed canonical's volumes.

Every status change and seed is appended to ``history`` (the last :data:`HISTORY_LIMIT`),
with the run id and the time, so a run that finds the canonical not ``idle`` can say which
run left it so and when (:func:`describe_status`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    COMMIT_RE,
    ValidationError,
    matching,
    validate_domain,
    validate_run_id,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    RecipePaths,
    StateError,
    fsync_dir,
    read_json,
    stamp,
    write_json,
)

SCHEMA = 1
HISTORY_LIMIT = 50
STATUSES = ("idle", "deployed", "quick", "restoring", "seeding")
TRANSITIONS: dict[str, frozenset[str]] = {
    "idle": frozenset({"deployed", "quick", "restoring", "seeding"}),
    "deployed": frozenset({"idle", "restoring", "seeding"}),
    "quick": frozenset({"restoring", "seeding"}),
    "restoring": frozenset({"idle", "restoring", "seeding"}),
    "seeding": frozenset({"idle", "restoring", "seeding"}),
}
#: Statuses whose repetition changes nothing, whoever sets them.
_IDEMPOTENT = frozenset({"idle", "deployed"})
REQUIRED = (
    "recipe",
    "domain",
    "version",
    "commit",
    "status",
    "seeded_at",
    "promoted_by",
    "snapshot_digest",
    "updated_at",
    "history",
)
_TOKEN_RE = re.compile(r"^\S{1,200}$")


class TransitionError(CcciError, ValueError):
    """A status change that the life cycle does not allow. The message says what is."""


def describe_status(registry: dict[str, Any] | None) -> str:
    """``quick since 2026-11-27T10:00:00Z (run a1b2c3)`` for messages and logs."""
    if registry is None:
        return "no canonical"
    last = next(
        (
            h
            for h in reversed(registry.get("history") or [])
            if h.get("to") == registry["status"] and h.get("event") != "node"
        ),
        None,
    )
    if last is None:
        return registry["status"]
    return f"{registry['status']} since {last.get('at')} (run {last.get('run_id')})"


def status_change(registry: Mapping[str, Any], status: str, run_id: str) -> bool:
    """Would :meth:`Registry.set_status` change the file? Raises :class:`TransitionError`
    (its message) when the life cycle does not allow the move. Reads only."""
    current = registry["status"]
    if current == status and (status in _IDEMPOTENT or registry.get("status_by") == run_id):
        return False
    if status not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current]))
        raise TransitionError(
            f"the canonical of {registry['recipe']} cannot go from {current} to {status} "
            f"(it is {describe_status(dict(registry))}); from {current} it may go to: {allowed}"
        )
    return True


class Registry:
    """The registry of one recipe's canonical."""

    def __init__(self, state_dir: str, recipe: str):
        paths = RecipePaths.of(state_dir, recipe)
        self.state_dir, self.recipe = paths.state_dir, paths.recipe
        self.directory, self.path = paths.directory, paths.registry

    # -- reading

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def load(self) -> dict[str, Any] | None:
        """The registry, or None when there is none. :class:`StateError` when unusable."""
        data = read_json(self.path, default=None)
        if data is None and not self.exists():
            return None
        self._check(data)
        return data

    def _check(self, data: Any) -> None:
        where = f"canonical registry {self.path}"
        if not isinstance(data, dict):
            raise StateError(f"{where} does not hold a JSON object; it may be hand-edited")
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise StateError(
                f"{where} lacks {', '.join(missing)}; it may be truncated or hand-edited"
            )
        if data["recipe"] != self.recipe:
            raise StateError(
                f"{where} is the registry of recipe {data['recipe']!r}, not {self.recipe!r}"
            )
        if data["status"] not in STATUSES:
            raise StateError(
                f"{where} has an unknown status {data['status']!r} (known: {', '.join(STATUSES)})"
            )
        if not isinstance(data["history"], list):
            raise StateError(f"{where} has a history that is not a list")

    def _require(self) -> dict[str, Any]:
        data = self.load()
        if data is None:
            raise StateError(
                f"there is no canonical for {self.recipe}: {self.path} does not exist; a green "
                "cold run of its latest version seeds it"
            )
        return data

    def at_rest(self) -> bool:
        """True when the canonical exists and is ``idle``."""
        data = self.load()
        return data is not None and data["status"] == "idle"

    # -- writing

    def _write(self, data: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        now = stamp()
        entry["at"] = now
        data["history"] = [*data.get("history", []), entry][-HISTORY_LIMIT:]
        data["updated_at"] = now
        write_json(self.path, data)
        return data

    def seed(
        self,
        domain: str,
        version: str,
        commit: str,
        promoted_by: str,
        snapshot_digest: str,
        node: str | None = None,
        put_back: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record a new known-good (first seed or re-seed) and leave the canonical ``idle``.

        ``put_back`` records how its known-good is put back after a run, decided at the
        seeding: ``{mechanism: overlay|restore, reason}`` (:mod:`._overlay`).

        Keeps ``history`` and ``first_seeded_at`` of an earlier seed. Raises
        :class:`ValidationError` on bad values and :class:`StateError` when the existing
        file is unusable (it is not replaced).
        """
        validate_domain(domain)
        matching(version, _TOKEN_RE, "version", "give the known-good tag")
        matching(commit, COMMIT_RE, "commit", "give 7-40 lowercase hex digits")
        validate_run_id(promoted_by)
        matching(snapshot_digest, _TOKEN_RE, "snapshot digest", "give the manifest digest")
        if node is not None:
            matching(node, _TOKEN_RE, "node", "give a swarm node name or none")
        old = self.load()
        now = stamp()
        data: dict[str, Any] = dict(old) if old else {"history": [], "first_seeded_at": now}
        data.update(
            {
                "schema": SCHEMA,
                "recipe": self.recipe,
                "domain": domain,
                "version": version,
                "commit": commit,
                "status": "idle",
                "status_by": promoted_by,
                "seeded_at": now,
                "promoted_by": promoted_by,
                "snapshot_digest": snapshot_digest,
                "node": node,
            }
        )
        if put_back is not None:
            data["put_back"] = dict(put_back)
        entry = {
            "event": "reseeded" if old else "seeded",
            "from": old["status"] if old else None,
            "to": "idle",
            "run_id": promoted_by,
            "version": version,
            "commit": commit,
        }
        return self._write(data, entry)

    def set_status(self, status: str, run_id: str) -> bool:
        """Move the canonical to ``status`` for ``run_id``; True when the file changed.

        :class:`TransitionError` when the life cycle does not allow it, :class:`StateError`
        when there is no canonical or its file is unusable.
        """
        if status not in STATUSES:
            raise TransitionError(f"status {status!r} is unknown: use one of {', '.join(STATUSES)}")
        validate_run_id(run_id)
        data = self._require()
        current = data["status"]
        if not status_change(data, status, run_id):
            return False
        data["status"] = status
        data["status_by"] = run_id
        self._write(data, {"event": "status", "from": current, "to": status, "run_id": run_id})
        return True

    def set_node(self, node: str | None, run_id: str) -> bool:
        """Pin the canonical to a swarm node (None: unpinned); True when the file changed."""
        if node is not None and (not isinstance(node, str) or not _TOKEN_RE.match(node)):
            raise ValidationError(f"node {node!r} is invalid: give a swarm node name or none")
        validate_run_id(run_id)
        data = self._require()
        if data.get("node") == node:
            return False
        old = data.get("node")
        data["node"] = node
        self._write(
            data,
            {
                "event": "node",
                "from": data["status"],
                "to": data["status"],
                "run_id": run_id,
                "node_before": old,
                "node": node,
            },
        )
        return True

    def remove(self, confirm: bool = False) -> bool:
        """Delete the registry file (only with ``confirm=True``); True when it existed.

        Only the file: the canonical's app, volumes and snapshot are the caller's to remove.
        """
        if confirm is not True:
            raise StateError(
                f"refusing to remove the canonical registry {self.path} without an explicit "
                "confirmation"
            )
        if not self.exists():
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fsync_dir(self.directory)
        return True
