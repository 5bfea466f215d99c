# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operator's view of the warm layer: one read-only gathering. PRIVATE to the collection:
no compatibility promises.

:func:`gather` reads everything an operator asks about at 3 a.m. and changes nothing: each
recipe's canonical (registry, snapshot, lock holder, last runs), every lock, the unseen
alerts, the free space on the Docker root and the state directory, the last sweep, and
(on request) the cold runs on the swarm with their alive/dead verdict. Each part that
cannot be read is reported in ``errors`` (and on its row) instead of failing the whole: a
status that dies on one corrupt registry is no use when that registry is the problem.

:func:`render_lines` turns the gathered document into a fixed-width table for a terminal
or a journal; :func:`sweep_order` is the order the nightly sweep cold-runs recipes in
(oldest known-good first); :func:`live_run_ids` the runs whose Keycloak realms are kept.
"""

from __future__ import annotations

import glob
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertStore
from ansible_collections.coopcloud.ci.plugins.module_utils._catalog import (
    CatalogError,
    list_entries,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._disk import (
    DiskError,
    free_space,
    human,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._disk import (
    docker_root as engine_root,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import (
    AppLock,
    LockError,
    list_locks,
    process_alive,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    validate_recipe,
    validate_state_dir,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._overlay import mechanism
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import (
    Registry,
    describe_status,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import list_runs
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    SnapshotError,
    SnapshotStore,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    RecipePaths,
    StateError,
    stamp,
)

SCHEMA = 1
SWEEPS_DIR = "sweeps"
#: Folders directly under the state directory that are not recipes.
NOT_RECIPES = frozenset({"alerts", "runs", "runner", SWEEPS_DIR})
_RUN_KEYS = (
    "run_id",
    "mode",
    "confidence",
    "ref",
    "version",
    "commit",
    "status",
    "verdict",
    "started_at",
    "finished_at",
)
_LOCK_KEYS = ("run_id", "pid", "host", "since", "play", "stale", "corrupt", "reason")


class StatusError(CcciError, RuntimeError):
    """The status cannot be gathered at all (a state directory that is not one)."""


# ------------------------------------------------------------------------------ pieces


def short_commit(commit: object) -> str | None:
    """The first 12 hex digits of a commit (what ``git log --oneline`` would show, a bit more)."""
    return commit[:12] if isinstance(commit, str) and commit else None


def recipes_in_state(state_dir: str) -> list[str]:
    """Recipe folders under ``state_dir`` holding a registry, a snapshot or a lock, sorted."""
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name in NOT_RECIPES or not os.path.isdir(os.path.join(state_dir, name)):
            continue
        try:
            validate_recipe(name)
        except ValidationError:
            continue
        paths = RecipePaths(state_dir, name)
        if any(os.path.lexists(p) for p in (paths.registry, paths.lock)) or (
            glob.glob(glob.escape(paths.snapshot) + "*")
        ):
            found.append(name)
    return found


def enrolled_recipes(catalog_dir: str | None, errors: list[str]) -> list[str] | None:
    """The enrolled recipes of the catalog (sorted), None when no catalog was given."""
    if not catalog_dir:
        return None
    try:
        entries, problems = list_entries(catalog_dir)
    except CatalogError as exc:
        errors.append(str(exc))
        return None
    errors.extend(problems)
    return sorted(e.recipe for e in entries if e.warm_canonical)


def snapshot_summary(state_dir: str, recipe: str) -> dict[str, Any]:
    """What the one known-good snapshot holds, without verifying the archives (fast).

    ``bytes`` is the sum of the archive sizes the manifest records.
    """
    store = SnapshotStore(state_dir, recipe)
    try:
        info = store.info()
    except SnapshotError as exc:
        return {"exists": True, "path": store.path, "error": str(exc)}
    if not info["exists"]:
        return {"exists": False, "path": store.path}
    manifest = info["manifest"]
    volumes = manifest.get("volumes") or {}
    return {
        "exists": True,
        "path": store.path,
        "manifest_digest": info["manifest_digest"],
        "bytes": sum(int(v.get("bytes") or 0) for v in volumes.values()),
        "volumes": sorted(volumes),
        "version": manifest.get("version"),
        "commit": manifest.get("commit"),
        "taken_at": manifest.get("taken_at"),
    }


def lock_summary(state_dir: str, recipe: str) -> dict[str, Any] | None:
    """The holder of the recipe's lock with ``stale``, or None when it is free."""
    lock = AppLock(state_dir, recipe)
    holder = lock.holder()
    if holder is None:
        return None
    out = {k: holder.get(k) for k in _LOCK_KEYS if k in holder}
    out["stale"] = lock.is_stale(holder)
    out["corrupt"] = bool(holder.get("corrupt"))
    return out


def run_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``_RUN_KEYS``, plus ``seconds`` (the run's total wall time, None while it
    runs), ``verdict_seconds`` and ``rest_seconds`` (start to the verdict line, start to
    the warm layer at rest again; None until known) and ``label`` (e.g. "quick run: lower
    confidence, never gates merge")."""
    out = {k: record.get(k) for k in _RUN_KEYS}
    timings = record.get("timings")
    timings = timings if isinstance(timings, Mapping) else {}
    for key, name in (("seconds", "total_seconds"), ("verdict_seconds", "verdict_seconds"),
                      ("rest_seconds", "rest_seconds")):  # fmt: skip
        value = timings.get(name)
        out[key] = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    out["label"] = record.get("label")
    return out


def canonical_row(
    state_dir: str,
    recipe: str,
    runs: Sequence[Mapping[str, Any]] = (),
    enrolled: bool | None = None,
    last_runs: int = 3,
) -> dict[str, Any]:
    """One recipe's row: registry, snapshot, lock, last runs. Problems go to ``errors``."""
    row: dict[str, Any] = {"recipe": recipe, "enrolled": enrolled, "canonical": False, "errors": []}
    try:
        registry = Registry(state_dir, recipe).load()
    except (StateError, ValidationError) as exc:
        registry = None
        row["errors"].append(str(exc))
    if registry is not None:
        row.update(
            {
                "canonical": True,
                "domain": registry.get("domain"),
                "version": registry.get("version"),
                "commit": registry.get("commit"),
                "commit_short": short_commit(registry.get("commit")),
                "status": registry.get("status"),
                "status_detail": describe_status(registry),
                "seeded_at": registry.get("seeded_at"),
                "first_seeded_at": registry.get("first_seeded_at"),
                "promoted_by": registry.get("promoted_by"),
                "snapshot_digest": registry.get("snapshot_digest"),
                "node": registry.get("node"),
                "put_back": mechanism(registry),
                "updated_at": registry.get("updated_at"),
            }
        )
    else:
        for key in (
            "domain",
            "version",
            "commit",
            "commit_short",
            "status",
            "status_detail",
            "seeded_at",
            "first_seeded_at",
            "promoted_by",
            "snapshot_digest",
            "node",
            "updated_at",
        ):
            row[key] = None
    snapshot = snapshot_summary(state_dir, recipe)
    if snapshot.get("error"):
        row["errors"].append(snapshot["error"])
    if registry is not None and snapshot.get("manifest_digest"):
        snapshot["matches_registry"] = snapshot["manifest_digest"] == registry.get(
            "snapshot_digest"
        )
    row["snapshot"] = snapshot
    try:
        row["lock"] = lock_summary(state_dir, recipe)
    except LockError as exc:
        row["lock"] = None
        row["errors"].append(str(exc))
    mine = [r for r in runs if r.get("recipe") == recipe]
    row["runs_total"] = len(mine)
    row["last_runs"] = [run_summary(r) for r in mine[: max(0, last_runs)]]
    return row


def alerts_summary(state_dir: str, latest: int = 5) -> dict[str, Any]:
    store = AlertStore(state_dir)
    unseen = store.list_unseen()
    summaries = [_alert_summary(a) for a in unseen]
    return {
        "unseen": len(unseen),
        "corrupt": sum(1 for a in unseen if a.corrupt),
        "seen": store.count_seen(),
        "kinds": _count(s.get("kind") or "corrupt" for s in summaries),
        "latest": list(reversed(summaries))[: max(0, latest)],
        "path": store.alerts_dir,
    }


def _alert_summary(alert: Any) -> dict[str, Any]:
    """The alert's summary, plus ``last_good``, ``recovered`` and ``notes`` when it is readable."""
    out = alert.summary()
    if not alert.corrupt:
        for key in ("last_good", "recovered", "notes"):
            out[key] = alert.data.get(key)
    return out


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


def space(path: str, label: str) -> dict[str, Any]:
    try:
        measured = free_space(path)
    except DiskError as exc:
        return {"path": path, "error": str(exc)}
    return {
        "path": path,
        "measured_at": measured.measured_at,
        "free": measured.free,
        "total": measured.total,
        "free_percent": measured.free_percent,
        "free_human": human(measured.free),
        "what": label,
    }


def last_sweep(state_dir: str) -> dict[str, Any] | None:
    """The newest sweep record under ``<state_dir>/sweeps/`` (name, result, times)."""
    paths = sorted(glob.glob(os.path.join(glob.escape(state_dir), SWEEPS_DIR, "sweep-*.json")))
    if not paths:
        return None
    path = paths[-1]
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        return {"path": path, "error": f"sweep record {path} cannot be read: {exc}"}
    if not isinstance(data, dict):
        return {"path": path, "error": f"sweep record {path} is not a JSON object"}
    return {
        "path": path,
        "result": data.get("result"),
        "started_at": data.get("started_at"),
        "finished_at": data.get("finished_at"),
        "recipes": [
            {k: r.get(k) for k in ("recipe", "run_id", "verdict", "seconds")}
            for r in data.get("recipes") or []
            if isinstance(r, dict)
        ],
    }


def live_run_ids(
    state_dir: str,
    locks: Sequence[Mapping[str, Any]] | None = None,
    runs: Sequence[Mapping[str, Any]] | None = None,
    host: str | None = None,
    pid_alive=process_alive,
) -> list[str]:
    """Run ids that are alive: holders of locks that are not stale, and records that say
    ``running`` whose process still runs on this host (or that were written on another
    host, whose process cannot be seen from here). Sorted, without duplicates."""
    host = host or socket.gethostname()
    locks = list_locks(state_dir) if locks is None else locks
    runs = list_runs(state_dir, errors=[]) if runs is None else runs
    live = {
        entry["run_id"]
        for entry in locks
        if not entry.get("stale") and not entry.get("corrupt") and entry.get("run_id")
    }
    for record in runs:
        if record.get("status") != "running" or not record.get("run_id"):
            continue
        pid = record.get("pid")
        if record.get("host") != host or (isinstance(pid, int) and pid_alive(pid)):
            live.add(record["run_id"])
    return sorted(live)


def sweep_order(state_dir: str, recipes: Iterable[str]) -> list[dict[str, Any]]:
    """The order the nightly sweep cold-runs ``recipes`` in: oldest known-good first.

    Recipes without a canonical come first (by name): they have no known-good at all. A
    registry that cannot be read counts as none (a green cold run re-seeds it). Then the
    seeded ones by ``seeded_at``, oldest first, ties by name. Returns
    ``[{recipe, seeded_at, reason}]``.
    """
    never: list[dict[str, Any]] = []
    seeded: list[dict[str, Any]] = []
    for recipe in sorted(set(recipes)):
        try:
            data = Registry(state_dir, recipe).load()
        except (StateError, ValidationError) as exc:
            never.append({"recipe": recipe, "seeded_at": None, "reason": f"unreadable: {exc}"})
            continue
        when = (data or {}).get("seeded_at")
        if not when:
            never.append({"recipe": recipe, "seeded_at": None, "reason": "never seeded"})
        else:
            seeded.append({"recipe": recipe, "seeded_at": when, "reason": f"seeded {when}"})
    seeded.sort(key=lambda item: (item["seeded_at"], item["recipe"]))
    return never + seeded


# ------------------------------------------------------------------------------ gather


def gather(
    state_dir: str,
    catalog_dir: str | None = None,
    client: Any = None,
    docker_root: str | None = None,
    last_runs: int = 3,
    latest_alerts: int = 5,
    cold_runs: bool = False,
    grace_hours: float = 6.0,
    client_error: str | None = None,
    run_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The whole status document (see the module docstring). Reads only.

    ``client`` is a Docker client (for the Docker root and the cold runs); without one
    those parts carry an ``error`` (``client_error`` says why there is none). ``run_ids``
    limits the cold runs to those runs.
    """
    try:
        state_dir = validate_state_dir(state_dir)
    except ValidationError as exc:
        raise StatusError(str(exc)) from None
    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise StatusError(f"state directory {state_dir} exists and is not a directory")
    errors: list[str] = []
    enrolled = enrolled_recipes(catalog_dir, errors)
    runs = list_runs(state_dir, errors=errors)
    names = sorted(set(recipes_in_state(state_dir)) | set(enrolled or []))
    rows = [
        canonical_row(
            state_dir,
            name,
            runs,
            enrolled=None if enrolled is None else name in enrolled,
            last_runs=last_runs,
        )
        for name in names
    ]
    for row in rows:
        errors.extend(f"{row['recipe']}: {e}" for e in row["errors"])
    try:
        locks = list_locks(state_dir)
    except (LockError, ValidationError, OSError) as exc:
        locks = []
        errors.append(f"locks: {exc}")
    disk: dict[str, Any] = {"state_dir": space(state_dir, "state_dir")}
    root = docker_root
    if root is None and client is not None:
        try:
            root = engine_root(client)
        except DiskError as exc:
            disk["docker_root"] = {"path": None, "error": str(exc)}
    if root is not None:
        disk["docker_root"] = space(root, "docker_root")
    elif "docker_root" not in disk:
        disk["docker_root"] = {
            "path": None,
            "error": client_error or "no Docker engine to ask for its root directory",
        }
    for part in disk.values():
        if part.get("error"):
            errors.append(part["error"])
    try:
        alerts = alerts_summary(state_dir, latest_alerts)
    except (OSError, StateError) as exc:
        alerts = {"unseen": None, "error": str(exc), "latest": [], "kinds": {}}
        errors.append(f"alerts: {exc}")
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": stamp(),
        "host": socket.gethostname(),
        "state_dir": state_dir,
        "catalog_dir": catalog_dir,
        "recipes": rows,
        "locks": [
            {
                **{k: e.get(k) for k in _LOCK_KEYS if k in e},
                "recipe": e["recipe"],
                "path": e["path"],
            }
            for e in locks
        ],
        "alerts": alerts,
        "disk": disk,
        "runs": {
            "total": len(runs),
            "running": [run_summary(r) for r in runs if r.get("status") == "running"],
        },
        "live_run_ids": live_run_ids(state_dir, locks, runs),
        "last_sweep": last_sweep(state_dir),
        "sweep_order": None if enrolled is None else sweep_order(state_dir, enrolled),
        "cold_runs": None,
        "errors": errors,
    }
    if cold_runs:
        doc["cold_runs"] = gather_cold_runs(
            client, state_dir, grace_hours, client_error, errors, run_ids=run_ids
        )
    return doc


def gather_cold_runs(
    client: Any,
    state_dir: str,
    grace_hours: float,
    client_error: str | None,
    errors: list[str],
    run_ids: Iterable[str] | None = None,
) -> list[dict[str, Any]] | None:
    """Every cold run on the swarm (of ``run_ids``, if given) with its alive/dead verdict."""
    # Imported here: the cold-run finder is only needed when asked for.
    from ansible_collections.coopcloud.ci.plugins.module_utils._coldruns import find_cold_runs

    if client is None:
        errors.append(f"cold runs: {client_error or 'no Docker engine'}")
        return None
    try:
        found = find_cold_runs(client, state_dir, grace_hours=grace_hours, run_ids=run_ids)
        return [run.summary() for run in found]
    except Exception as exc:  # the engine's own errors have many types
        errors.append(f"cold runs: the Docker engine could not list them: {exc}")
        return None


# ------------------------------------------------------------------------------ render


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def _date(value: Any) -> str:
    """``2026-11-27T03:12:00Z`` -> ``2026-11-27 03:12``."""
    if not isinstance(value, str) or len(value) < 16:
        return _cell(value)
    return value[:10] + " " + value[11:16]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Fixed-width columns, two spaces apart, a dashed rule under the header."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(widths[i]) for i, v in enumerate(values)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]


def _lock_cell(lock: Mapping[str, Any] | None) -> str:
    if not lock:
        return "-"
    if lock.get("corrupt"):
        return "unreadable (stale)" if lock.get("stale") else "unreadable"
    text = f"{lock.get('run_id')} pid {lock.get('pid')}"
    return text + (" (stale)" if lock.get("stale") else "")


def _run_cell(run: Mapping[str, Any]) -> str:
    verdict = run.get("verdict") or run.get("status") or "?"
    return f"{run.get('mode')} {verdict} {_date(run.get('finished_at') or run.get('started_at'))}"


def render_lines(doc: Mapping[str, Any]) -> list[str]:
    """The status document as fixed-width lines (for ``debug: msg`` and terminals)."""
    lines = [f"coopcloud.ci status of {doc['state_dir']} on {doc['host']} at {doc['generated_at']}"]
    rows = []
    for r in doc["recipes"]:
        snap = r.get("snapshot") or {}
        size = human(snap.get("bytes")) if snap.get("bytes") is not None else "-"
        if snap.get("matches_registry") is False:
            size += " (not the registry's!)"
        enrolled = {True: "yes", False: "no", None: "?"}[r.get("enrolled")]
        rows.append(
            [
                r["recipe"],
                enrolled,
                r.get("version"),
                r.get("commit_short"),
                r.get("status") if r.get("canonical") else "no canonical",
                _date(r.get("seeded_at")),
                r.get("promoted_by"),
                size,
                _lock_cell(r.get("lock")),
                _run_cell(r["last_runs"][0]) if r.get("last_runs") else "-",
            ]
        )
    lines.append("")
    if rows:
        lines += table(
            [
                "recipe",
                "enrolled",
                "known-good",
                "commit",
                "status",
                "seeded",
                "by run",
                "snapshot",
                "lock",
                "last run",
            ],
            rows,
        )
    else:
        lines.append("no recipes: nothing enrolled in the catalog and nothing in the state dir")
    runs = [(r["recipe"], run) for r in doc["recipes"] for run in r.get("last_runs") or []]
    if runs:
        lines.append("")
        lines.append("last runs:")
        lines += table(
            ["recipe", "run", "mode", "verdict", "ref", "started", "finished"],
            [
                [
                    name,
                    run.get("run_id"),
                    run.get("mode"),
                    run.get("verdict") or run.get("status"),
                    run.get("version") or run.get("ref"),
                    _date(run.get("started_at")),
                    _date(run.get("finished_at")),
                ]
                for name, run in runs
            ],
        )
    alerts = doc.get("alerts") or {}
    lines.append("")
    if alerts.get("error"):
        lines.append(f"alerts: cannot be read: {alerts['error']}")
    else:
        kinds = ", ".join(f"{k} {n}" for k, n in (alerts.get("kinds") or {}).items())
        lines.append(
            f"alerts: {alerts.get('unseen', 0)} unseen"
            + (f" ({kinds})" if kinds else "")
            + f", {alerts.get('seen', 0)} relayed"
        )
        for a in alerts.get("latest") or []:
            if a.get("corrupt"):
                lines.append(f"  {a.get('file')}: corrupt")
            else:
                lines.append(f"  {_date(a.get('at'))}  {a.get('kind')}  {a.get('target')}")
    lines.append("")
    lines.append("disk:")
    for name in ("docker_root", "state_dir"):
        part = (doc.get("disk") or {}).get(name) or {}
        if part.get("error"):
            lines.append(f"  {name}: {part.get('path') or '?'}: {part['error']}")
        else:
            lines.append(
                f"  {name}: {part.get('path')}: {human(part.get('free'))} free of "
                f"{human(part.get('total'))} ({part.get('free_percent')} %)"
            )
    sweep = doc.get("last_sweep")
    lines.append("")
    if not sweep:
        lines.append("last sweep: none recorded")
    elif sweep.get("error"):
        lines.append(f"last sweep: {sweep['error']}")
    else:
        lines.append(
            f"last sweep: {sweep.get('result')} (started {_date(sweep.get('started_at'))}, "
            f"finished {_date(sweep.get('finished_at'))})"
        )
    if doc.get("cold_runs") is not None:
        lines.append("")
        lines.append(f"cold runs on the swarm: {len(doc['cold_runs'])}")
        for run in doc["cold_runs"]:
            verdict = "alive" if run.get("alive") else "dead"
            lines.append(f"  {run.get('stack')}: {verdict} ({run.get('reason')})")
    if doc.get("errors"):
        lines.append("")
        lines.append("problems:")
        lines += [f"  {e}" for e in doc["errors"]]
    return lines
