# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cold runs on the swarm: find them, judge them alive or dead, remove one. PRIVATE to the
collection: no compatibility promises.

A cold run deploys its app at ``<recipe[:4]>-<run_id>.<suffix>`` (:func:`._names.cold_domain`),
so every object ``docker stack deploy`` makes for it carries the label
``com.docker.stack.namespace=<recipe[:4]>-<run_id>_<suffix with _>``. That label is the
only thing this module goes by:

* an object is part of a cold run when its namespace label matches :data:`COLD_STACK_RE`;
  an object without the label is never part of one, whatever its name;
* a namespace starting with ``warm-`` is never a cold run, even where it would match the
  pattern (``warm-a1b2c3_ci`` is the canonical of a recipe called ``a1b2c3``): warm
  volumes are the only copy of warm data. (A cold run of a recipe whose name starts
  with ``warm`` is therefore never found here; its own teardown still removes it.)
* an object whose *name* starts with ``warm-`` is never removed, even when it carries a
  cold namespace label (belt and braces).

A cold run is **alive** when any of these holds, else **dead**:

1. its run record (``<state_dir>/runs/<run_id>.json``) says ``running`` and was written on
   this host by a process that still runs (``pid``);
2. a per-app lock under ``<state_dir>`` is held by its run id and is not stale;
3. it was active less than ``grace_hours`` ago: the newest of its objects' creation and
   update times and of its record's ``started_at``/``finished_at``.

Rule 3 protects a run that has no record yet (or is recorded in another state directory,
or on another host) while it deploys. A record whose recipe does not begin with the
stack's prefix belongs to another run and is ignored.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import list_locks, process_alive
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import list_runs

NAMESPACE_LABEL = "com.docker.stack.namespace"
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: ``<recipe[:4]>-<run_id>_<suffix labels joined by _>``
COLD_STACK_RE = re.compile(
    r"^(?P<prefix>[a-z0-9][a-z0-9-]{0,3})-(?P<run_id>[0-9a-f]{6})"
    rf"_(?P<suffix>{_DNS_LABEL}(?:_{_DNS_LABEL})*)$"
)
WARM_PREFIX = "warm-"
#: Hours a cold run stays alive after its last sign of activity when nothing else says so.
DEFAULT_GRACE_HOURS = 6.0
DEFAULT_REMOVE_TIMEOUT = 120.0


class ColdRunError(CcciError, RuntimeError):
    """A cold run cannot be removed. The message names the run and the object."""


def parse_cold_stack(stack: object) -> tuple[str, str, str] | None:
    """``(recipe_prefix, run_id, suffix)`` of a cold run's stack name, else None."""
    if not isinstance(stack, str) or stack.startswith(WARM_PREFIX):
        return None
    match = COLD_STACK_RE.match(stack)
    if not match:
        return None
    return match.group("prefix"), match.group("run_id"), match.group("suffix").replace("_", ".")


def is_cold_stack(stack: object) -> bool:
    return parse_cold_stack(stack) is not None


def parse_docker_time(value: object) -> datetime.datetime | None:
    """A Docker timestamp (RFC 3339 with nanoseconds, or Unix seconds) as aware UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, datetime.UTC) if value > 0 else None
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.strip().replace("z", "Z").replace("Z", "+00:00")
    # Python parses at most microseconds: cut nanoseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _iso(moment: datetime.datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


@dataclasses.dataclass
class ColdRun:
    """One cold run's objects on the swarm and the verdict on it."""

    stack: str
    run_id: str
    recipe_prefix: str
    suffix: str
    services: list[str] = dataclasses.field(default_factory=list)
    volumes: list[str] = dataclasses.field(default_factory=list)
    secrets: list[str] = dataclasses.field(default_factory=list)
    configs: list[str] = dataclasses.field(default_factory=list)
    networks: list[str] = dataclasses.field(default_factory=list)
    containers: list[str] = dataclasses.field(default_factory=list)
    #: volume name -> local mount point (empty when the engine gave none)
    mountpoints: dict[str, str] = dataclasses.field(default_factory=dict)
    #: earliest creation time among its objects
    created_at: datetime.datetime | None = None
    #: newest creation/update time among its objects and its record's times
    active_at: datetime.datetime | None = None
    record: dict[str, Any] | None = None
    alive: bool = False
    reason: str = ""
    age_hours: float | None = None

    @property
    def domain(self) -> str:
        return f"{self.recipe_prefix}-{self.run_id}.{self.suffix}"

    def summary(self) -> dict[str, Any]:
        record = None
        if self.record is not None:
            record = {
                k: self.record.get(k)
                for k in ("recipe", "status", "verdict", "started_at", "finished_at", "pid", "host")
            }
        return {
            "stack": self.stack,
            "run_id": self.run_id,
            "recipe_prefix": self.recipe_prefix,
            "domain": self.domain,
            "services": list(self.services),
            "volumes": list(self.volumes),
            "secrets": list(self.secrets),
            "configs": list(self.configs),
            "networks": list(self.networks),
            "containers": len(self.containers),
            "created_at": _iso(self.created_at),
            "active_at": _iso(self.active_at),
            "record": record,
            "alive": self.alive,
            "reason": self.reason,
            "age_hours": self.age_hours,
        }


def _api(client):
    """The low-level API client of a ``docker.DockerClient`` (or the object itself)."""
    return getattr(client, "api", client)


def _labels(raw: dict[str, Any], kind: str) -> dict[str, str]:
    if kind in ("services", "secrets", "configs"):
        return dict((raw.get("Spec") or {}).get("Labels") or {})
    return dict(raw.get("Labels") or {})


def _name(raw: dict[str, Any], kind: str) -> str:
    if kind in ("services", "secrets", "configs"):
        return (raw.get("Spec") or {}).get("Name", "")
    if kind == "containers":
        return raw.get("Id", "")
    return raw.get("Name", "")


def _times(raw: dict[str, Any], kind: str) -> list[datetime.datetime]:
    keys = {"networks": ("Created",), "containers": ("Created",)}.get(
        kind, ("CreatedAt", "UpdatedAt")
    )
    found = [parse_docker_time(raw.get(k)) for k in keys]
    return [t for t in found if t is not None]


def _list_labelled(api) -> dict[str, list[dict[str, Any]]]:
    """Every object carrying a namespace label, by kind (one call per kind)."""
    flt = {"label": NAMESPACE_LABEL}
    return {
        "services": list(api.services(filters=flt) or []),
        "volumes": list((api.volumes(filters=flt) or {}).get("Volumes") or []),
        "secrets": list(api.secrets(filters=flt) or []),
        "configs": list(api.configs(filters=flt) or []),
        "networks": list(api.networks(filters=flt) or []),
        "containers": list(api.containers(all=True, filters=flt) or []),
    }


def collect_cold_runs(api) -> dict[str, ColdRun]:
    """The cold runs on the engine, by stack, with their objects (no verdict yet)."""
    runs: dict[str, ColdRun] = {}
    for kind, items in _list_labelled(api).items():
        for raw in items:
            stack = _labels(raw, kind).get(NAMESPACE_LABEL)
            parsed = parse_cold_stack(stack)
            if parsed is None:
                continue
            name = _name(raw, kind)
            if not name:
                continue
            run = runs.get(stack)
            if run is None:
                run = runs[stack] = ColdRun(stack, parsed[1], parsed[0], parsed[2])
            getattr(run, kind).append(name)
            if kind == "volumes":
                run.mountpoints[name] = raw.get("Mountpoint") or ""
            for moment in _times(raw, kind):
                if run.created_at is None or moment < run.created_at:
                    run.created_at = moment
                if run.active_at is None or moment > run.active_at:
                    run.active_at = moment
    for run in runs.values():
        for kind in ("services", "volumes", "secrets", "configs", "networks", "containers"):
            getattr(run, kind).sort()
    return runs


def _record_times(record: dict[str, Any]) -> list[datetime.datetime]:
    found = [parse_docker_time(record.get(k)) for k in ("started_at", "finished_at")]
    return [t for t in found if t is not None]


def judge(
    run: ColdRun,
    record: dict[str, Any] | None,
    held_run_ids: Iterable[str],
    now: datetime.datetime,
    grace_hours: float,
    host: str,
    pid_alive: Callable[[int], bool] = process_alive,
) -> None:
    """Set ``record``, ``alive``, ``reason`` and ``age_hours`` of ``run`` (rules in the
    module docstring)."""
    recipe = (record or {}).get("recipe")
    if record is not None and not (isinstance(recipe, str) and recipe[:4] == run.recipe_prefix):
        record = None  # same run id, another recipe: not this run's record
    run.record = record
    active = run.active_at
    for moment in _record_times(record or {}):
        if active is None or moment > active:
            active = moment
    run.active_at = active
    run.age_hours = (
        None if active is None else round(max(0.0, (now - active).total_seconds()) / 3600, 3)
    )
    if record is not None and record.get("status") == "running":
        pid = record.get("pid")
        if record.get("host") == host and isinstance(pid, int) and pid_alive(pid):
            run.alive, run.reason = True, f"its run record says running and pid {pid} runs"
            return
    if run.run_id in set(held_run_ids):
        run.alive, run.reason = True, f"run {run.run_id} holds a lock"
        return
    if run.age_hours is None:
        # No time at all on any object: cannot tell its age, so keep it.
        run.alive, run.reason = True, "no creation time known"
        return
    if run.age_hours < grace_hours:
        run.alive = True
        run.reason = f"active {run.age_hours:g} h ago, less than the {grace_hours:g} h grace"
        return
    run.alive = False
    if record is None:
        run.reason = f"no run record, inactive for {run.age_hours:g} h"
    elif record.get("status") == "running":
        run.reason = f"its run record says running but its process is gone ({run.age_hours:g} h)"
    else:
        run.reason = f"run {record.get('status')} and inactive for {run.age_hours:g} h"


def find_cold_runs(
    client,
    state_dir: str,
    now: datetime.datetime | None = None,
    grace_hours: float = DEFAULT_GRACE_HOURS,
    run_ids: Iterable[str] | None = None,
    host: str | None = None,
    pid_alive: Callable[[int], bool] = process_alive,
) -> list[ColdRun]:
    """Every cold run on the engine with its verdict, sorted by stack.

    ``run_ids`` limits the answer to those runs. Unreadable run records are skipped (a
    run without a readable record falls back to the lock and grace rules).
    """
    api = _api(client)
    now = now or datetime.datetime.now(datetime.UTC)
    wanted = None if run_ids is None else set(run_ids)
    runs = collect_cold_runs(api)
    errors: list[str] = []
    records = {r.get("run_id"): r for r in list_runs(state_dir, errors=errors)}
    held = {
        entry.get("run_id")
        for entry in list_locks(state_dir)
        if not entry.get("corrupt") and not entry.get("stale")
    }
    found = []
    for stack in sorted(runs):
        run = runs[stack]
        if wanted is not None and run.run_id not in wanted:
            continue
        judge(
            run,
            records.get(run.run_id),
            held,
            now,
            grace_hours,
            host or socket.gethostname(),
            pid_alive,
        )
        found.append(run)
    return found


# ------------------------------------------------------------------------------- removal


def _labelled(api, kind: str, stack: str) -> list[dict[str, Any]]:
    flt = {"label": f"{NAMESPACE_LABEL}={stack}"}
    if kind == "volumes":
        items = (api.volumes(filters=flt) or {}).get("Volumes") or []
    elif kind == "containers":
        items = api.containers(all=True, filters=flt) or []
    else:
        items = getattr(api, kind)(filters=flt) or []
    # The engine filters; check again, exactly.
    return [raw for raw in items if _labels(raw, kind).get(NAMESPACE_LABEL) == stack]


def _retry(action: Callable[[], None], busy: tuple[str, ...], deadline: float) -> None:
    while True:
        try:
            action()
            return
        except Exception as exc:
            text = str(exc)
            if "No such" in text or "not found" in text or "already in progress" in text:
                return  # gone already
            if not any(b in text for b in busy) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def remove_cold_run(
    client, cold_run: ColdRun | str, timeout: float = DEFAULT_REMOVE_TIMEOUT
) -> dict[str, list[str]]:
    """Remove every object of one cold run, matched by its namespace label only.

    Services first, then wait until the stack's containers are gone (stopped ones left
    after the wait are removed; a running one is an error), then volumes, secrets,
    configs and networks. An object whose name starts with ``warm-`` is never removed,
    and a volume that a container of another stack still uses is left and reported in
    ``kept``. Returns the names removed per kind. Raises :class:`ColdRunError`.
    """
    stack = cold_run.stack if isinstance(cold_run, ColdRun) else cold_run
    if parse_cold_stack(stack) is None:
        raise ColdRunError(f"refusing to remove stack {stack!r}: it is not a cold run's stack")
    api = _api(client)
    deadline = time.monotonic() + timeout
    removed: dict[str, list[str]] = {
        k: [] for k in ("services", "containers", "volumes", "secrets", "configs", "networks")
    }
    removed["kept"] = []

    def guarded(kind: str, raw: dict[str, Any]) -> str | None:
        name = _name(raw, kind)
        if not name or name.startswith(WARM_PREFIX):
            if name:
                removed["kept"].append(f"{kind[:-1]} {name} (warm name)")
            return None
        return name

    try:
        for raw in _labelled(api, "services", stack):
            if guarded("services", raw):
                _retry(lambda raw=raw: api.remove_service(raw["ID"]), (), deadline)
                removed["services"].append(_name(raw, "services"))
        # The engine stops and removes the task containers of removed services; wait
        # until none runs, then remove what is left stopped (leftovers of a crash).
        while True:
            left = _labelled(api, "containers", stack)
            running = [c for c in left if c.get("State") in ("running", "restarting")]
            if not running or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if running:
            raise ColdRunError(
                f"container {running[0].get('Id', '')[:12]} of cold run {stack} still runs "
                f"{timeout:g} s after its services were removed"
            )
        for raw in left:
            _retry(
                lambda raw=raw: api.remove_container(raw["Id"], force=True),
                ("in progress",),
                deadline,
            )
            removed["containers"].append(raw.get("Id", "")[:12])
        for raw in _labelled(api, "volumes", stack):
            name = guarded("volumes", raw)
            if not name:
                continue
            users = [
                c
                for c in api.containers(all=True, filters={"volume": name}) or []
                if (c.get("Labels") or {}).get(NAMESPACE_LABEL) != stack
            ]
            if users:
                removed["kept"].append(
                    f"volume {name} (used by container {users[0].get('Id', '')[:12]})"
                )
                continue
            _retry(lambda name=name: api.remove_volume(name), ("in use",), deadline)
            removed["volumes"].append(name)
        for kind, remove in (
            ("secrets", api.remove_secret),
            ("configs", api.remove_config),
            ("networks", api.remove_network),
        ):
            for raw in _labelled(api, kind, stack):
                name = guarded(kind, raw)
                if not name:
                    continue
                ident = raw.get("ID") or raw.get("Id") or name
                _retry(
                    lambda ident=ident, remove=remove: remove(ident),
                    ("in use", "active endpoints"),
                    deadline,
                )
                removed[kind].append(name)
    except ColdRunError:
        raise
    except Exception as exc:
        raise ColdRunError(f"removing cold run {stack} failed: {exc}") from exc
    for names in removed.values():
        names.sort()
    return removed
