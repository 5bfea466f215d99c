# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Swarm stack state, pure predicates over it, and one waiter. PRIVATE to the collection.

Three layers, each usable alone:

- :func:`read_stack` turns what the Docker engine says about one stack (services,
  tasks, networks, volumes, secrets, configs, containers, all matched by the label
  ``com.docker.stack.namespace=<stack>``) into plain dataclasses (:class:`StackState`).
  It is the only function here that talks to the engine.
- Predicates over a :class:`StackState` that do no I/O: :func:`converged`,
  :func:`deploy_failure`, :func:`failed_tasks`, :func:`is_gone`, :func:`deployed_version`,
  :func:`deployed_commit`. Unit tests feed them hand-made states.
- :func:`wait_until`, a small poll loop on ``time.monotonic()`` that returns a
  :class:`WaitResult` (ok, attempts, elapsed, last) and, on timeout, raises
  :class:`WaitTimeout` stating the last observed condition. :func:`wait_converged` and
  :func:`wait_gone` are built on it, woken early by the stack's engine events
  (:class:`StackEvents`); the health gate reuses it with its own probes.

Engine API 1.41 (Docker 20.10). Containers and volumes are listed through the engine
that answers (the manager the plays run on): on a multi-node swarm a volume lives on the
node where its task ran; :attr:`TaskState.node_id` says which node that is.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._progress import Progress
from ansible_collections.coopcloud.ci.plugins.module_utils._state import parse_time, utc_now

NAMESPACE_LABEL = "com.docker.stack.namespace"
#: Deploy labels the driver adds to every service of a stack it deploys.
COMMIT_LABEL = "coop-cloud.ccci.commit"
VERSION_LABEL = "coop-cloud.ccci.version"

#: Task states after which a task never runs again.
FAILED_STATES = frozenset({"failed", "rejected"})
#: How the engine's words begin when it could not start a task's container.
ENGINE_START_PREFIX = "starting container failed:"
#: The engine's own races while starting a container (see :attr:`TaskState.engine_fault`).
TRANSIENT_ENGINE_FAULTS = (
    "device or resource busy",
    "resource temporarily unavailable",
    "context deadline exceeded",
    "failed to create shim",
    "ttrpc: closed",
)
#: Engine faults tolerated per service since a deploy before they count as failures.
ENGINE_FAULTS_TOLERATED = 2
#: Service update states meaning "the swarm is still rolling the service".
UPDATING_STATES = frozenset({"updating", "rollback_started"})
#: Service update states meaning "the last update did not take".
BROKEN_UPDATE_STATES = frozenset({"paused", "rollback_paused", "rollback_completed"})

_OLD_VERSION_SUFFIX = re.compile(r"-[0-9a-f]{8}$")


class SwarmError(CcciError, RuntimeError):
    """Something on the swarm is not as asked. The message is one sentence for the user.

    Evidence travels with it: ``cmd``, ``rc``, ``stdout``, ``stderr`` when a command ran,
    ``tasks`` (task summaries with their own error text) and ``state`` (the last
    :class:`StackState` observed) when a wait ended.
    """

    def __init__(
        self,
        message: str,
        *,
        cmd: list[str] | None = None,
        rc: int | None = None,
        stdout: str = "",
        stderr: str = "",
        tasks: list[dict[str, Any]] | None = None,
        state: Any = None,
        result: WaitResult | None = None,
    ) -> None:
        super().__init__(message, cmd=cmd, rc=rc, stdout=stdout, stderr=stderr)
        self.tasks = tasks or []
        self.state = state
        self.result = result

    def evidence(self) -> dict[str, Any]:
        """The facts for ``fail_json``: only the keys that carry something."""
        out = super().evidence()
        if self.tasks:
            out["tasks"] = self.tasks
        if self.result is not None:
            out["attempts"] = self.result.attempts
            out["elapsed"] = round(self.result.elapsed, 3)
        return out


class WaitTimeout(SwarmError):
    """A wait ran out of time; the message states the last observed condition."""


class WaitFailed(SwarmError):
    """A wait stopped early: what it waits for can no longer happen (e.g. a rejected task)."""


# --- state ------------------------------------------------------------------------------


@dataclass
class TaskState:
    id: str
    service: str
    slot: int | None
    state: str
    desired_state: str
    message: str = ""
    error: str = ""
    image: str = ""
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    exit_code: int | None = None
    container_id: str | None = None
    node_id: str | None = None
    #: The task runs the service's current container spec (not a previous deploy's).
    current: bool = True
    health: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired_state == "running"

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    def text(self) -> str:
        """The task's own words: its error, else its status message."""
        return self.error or self.message or self.state

    @property
    def engine_lost(self) -> bool:
        """The task's container vanished under the engine: it stopped or restarted."""
        return self.failed and self.error.startswith("No such container:")

    @property
    def engine_fault(self) -> bool:
        """The engine, not the app, failed this task: a transient fault starting it.

        The container never ran; the engine's own words name a race of its own (a busy
        mount, a timed-out shim) that the swarm's next attempt does not meet. A recipe's
        fault (``executable file not found``, a bad mount) repeats on every attempt.
        """
        if self.state != "failed" or not self.error.startswith(ENGINE_START_PREFIX):
            return False
        words = self.error.lower()
        return any(fault in words for fault in TRANSIENT_ENGINE_FAULTS)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "slot": self.slot,
            "state": self.state,
            "desired_state": self.desired_state,
            "error": self.error,
            "message": self.message,
            "image": self.image,
            "exit_code": self.exit_code,
            "node_id": self.node_id,
            "updated_at": _iso(self.updated_at),
        }


@dataclass
class ServiceState:
    name: str
    short_name: str
    image: str
    replicas_desired: int
    replicas_running: int
    labels: dict[str, str] = field(default_factory=dict)
    updated_at: datetime.datetime | None = None
    update_state: str | None = None
    update_message: str = ""
    update_started_at: datetime.datetime | None = None
    mode: str = "replicated"
    tasks: list[TaskState] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "short_name": self.short_name,
            "image": self.image,
            "replicas_running": self.replicas_running,
            "replicas_desired": self.replicas_desired,
            "update_state": self.update_state,
        }


@dataclass
class VolumeInfo:
    name: str
    short_name: str
    mountpoint: str = ""
    driver: str = "local"
    node: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    #: The driver's options (an overlay-backed canonical's: type, device, o).
    options: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StackState:
    stack: str
    services: list[ServiceState] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[VolumeInfo] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    #: Containers of the stack on the answering engine, running or exited.
    containers: list[str] = field(default_factory=list)
    observed_at: datetime.datetime | None = None

    def service(self, short_name: str) -> ServiceState | None:
        for svc in self.services:
            if svc.short_name == short_name:
                return svc
        return None

    @property
    def deployed(self) -> bool:
        return bool(self.services)


def _iso(value: datetime.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def _short(stack: str, name: str) -> str:
    prefix = f"{stack}_"
    return name[len(prefix) :] if name.startswith(prefix) else name


def task_from_api(raw: dict[str, Any], service: str, current_spec: dict | None) -> TaskState:
    """One task of the engine's ``GET /tasks`` as a :class:`TaskState`."""
    status = raw.get("Status") or {}
    container = status.get("ContainerStatus") or {}
    spec = (raw.get("Spec") or {}).get("ContainerSpec") or {}
    return TaskState(
        id=raw.get("ID", ""),
        service=service,
        slot=raw.get("Slot"),
        state=status.get("State", ""),
        desired_state=raw.get("DesiredState", ""),
        message=status.get("Message", "") or "",
        error=status.get("Err", "") or "",
        image=spec.get("Image", ""),
        created_at=parse_time(raw.get("CreatedAt")),
        updated_at=parse_time(status.get("Timestamp") or raw.get("UpdatedAt")),
        exit_code=container.get("ExitCode"),
        container_id=container.get("ContainerID") or None,
        node_id=raw.get("NodeID") or None,
        current=current_spec is None or spec == current_spec,
    )


def service_from_api(raw: dict[str, Any], stack: str, tasks: list[dict]) -> ServiceState:
    """One service of ``GET /services`` plus its tasks as a :class:`ServiceState`."""
    spec = raw.get("Spec") or {}
    name = spec.get("Name", "")
    container_spec = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    mode = spec.get("Mode") or {}
    update = raw.get("UpdateStatus") or {}
    task_states = [task_from_api(t, name, container_spec) for t in tasks]
    task_states.sort(
        key=lambda t: (
            t.slot or 0,
            t.created_at or datetime.datetime.min.replace(tzinfo=datetime.UTC),
        )
    )
    running = sum(1 for t in task_states if t.running)
    if "Global" in mode:
        kind = "global"
        desired = sum(1 for t in task_states if t.desired_state == "running") or 1
    else:
        kind = "replicated"
        desired = int((mode.get("Replicated") or {}).get("Replicas", 1))
    return ServiceState(
        name=name,
        short_name=_short(stack, name),
        image=container_spec.get("Image", ""),
        replicas_desired=desired,
        replicas_running=running,
        labels=dict(spec.get("Labels") or {}),
        updated_at=parse_time(raw.get("UpdatedAt")),
        update_state=update.get("State") or None,
        update_message=update.get("Message", "") or "",
        update_started_at=parse_time(update.get("StartedAt")),
        mode=kind,
        tasks=task_states,
    )


def volume_info(raw: dict[str, Any], stack: str, node: str) -> VolumeInfo:
    """A volume of ``stack`` on ``node`` as the engine's volume list describes it."""
    return VolumeInfo(
        name=raw["Name"],
        short_name=_short(stack, raw["Name"]),
        mountpoint=raw.get("Mountpoint", ""),
        driver=raw.get("Driver", "local"),
        node=node,
        labels=dict(raw.get("Labels") or {}),
        options=dict(raw.get("Options") or {}),
    )


def read_stack(client, stack: str, *, health: bool = False) -> StackState:
    """Everything of ``stack`` the engine knows, matched by its namespace label only.

    ``health`` also inspects the containers of running tasks on the answering node to
    fill :attr:`TaskState.health` (one more call per container).
    """
    label = {"label": f"{NAMESPACE_LABEL}={stack}"}
    api = client.api
    services = []
    for raw in api.services(filters=label):
        tasks = api.tasks(filters={"service": raw["ID"]})
        services.append(service_from_api(raw, stack, tasks))
    services.sort(key=lambda s: s.short_name)
    if health:
        for svc in services:
            for task in svc.tasks:
                if task.running and task.container_id:
                    task.health = _container_health(api, task.container_id)
    node = ""
    volumes = []
    raw_volumes = (api.volumes(filters=label) or {}).get("Volumes") or []
    if raw_volumes:
        node = (client.info() or {}).get("Name", "")
    for vol in raw_volumes:
        volumes.append(volume_info(vol, stack, node))
    volumes.sort(key=lambda v: v.name)
    return StackState(
        stack=stack,
        services=services,
        networks=sorted(n["Name"] for n in api.networks(filters=label)),
        volumes=volumes,
        secrets=sorted(s["Spec"]["Name"] for s in api.secrets(filters=label)),
        configs=sorted(c["Spec"]["Name"] for c in api.configs(filters=label)),
        containers=sorted(c["Id"] for c in api.containers(all=True, filters=label)),
        observed_at=utc_now(),
    )


def _container_health(api, container_id: str) -> str | None:
    try:
        info = api.inspect_container(container_id)
    except Exception:  # on another node, or just removed: health unknown
        return None
    health = ((info.get("State") or {}).get("Health") or {}).get("Status")
    return health or None


# --- predicates (no I/O) ----------------------------------------------------------------


def _since_ok(task: TaskState, since: datetime.datetime | None) -> bool:
    if since is None:
        return True
    stamp = task.updated_at or task.created_at
    return stamp is not None and stamp >= since


def failed_tasks(state: StackState, since: datetime.datetime | None = None) -> list[TaskState]:
    """Tasks that ended Failed or Rejected (at or after ``since``), oldest first."""
    out = [t for svc in state.services for t in svc.tasks if t.failed and _since_ok(t, since)]
    out.sort(
        key=lambda t: (
            t.updated_at or t.created_at or datetime.datetime.min.replace(tzinfo=datetime.UTC)
        )
    )
    return out


def app_failures(tasks: list[TaskState]) -> list[TaskState]:
    """``tasks`` without the first :data:`ENGINE_FAULTS_TOLERATED` engine faults per service.

    The swarm starts a task the engine failed to start again; only when the engine keeps
    failing does it count against the app.
    """
    seen: dict[str, int] = {}
    out = []
    for task in tasks:
        if task.engine_fault:
            seen[task.service] = seen.get(task.service, 0) + 1
            if seen[task.service] <= ENGINE_FAULTS_TOLERATED:
                continue
        out.append(task)
    return out


def _latest_per_slot(svc: ServiceState) -> list[TaskState]:
    latest: dict[Any, TaskState] = {}
    for task in svc.tasks:
        key = task.slot if svc.mode == "replicated" else task.node_id
        seen = latest.get(key)
        if seen is None or (task.created_at or _MIN) >= (seen.created_at or _MIN):
            latest[key] = task
    return list(latest.values())


_MIN = datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _task_line(task: TaskState) -> str:
    return f"task {task.id[:12]} of {task.service} is {task.state}: {task.text()}"


def deploy_failure(
    state: StackState, since: datetime.datetime | None = None, max_failures: int = 3
) -> str | None:
    """Why this deploy can no longer converge, or ``None`` while it still may.

    Only tasks of the service's current spec count (a previous deploy's failures are
    history). A task Rejected at or after ``since`` (e.g. ``No such image``), a service with
    ``max_failures`` or more Failed tasks since then (it keeps failing), or an update the
    swarm paused or rolled back after ``since``. The sentence quotes the task's own error.
    """
    for svc in state.services:
        mine = [t for t in svc.tasks if t.failed and t.current and _since_ok(t, since)]
        rejected = [t for t in mine if t.state == "rejected"]
        if rejected:
            return f"service {svc.name} cannot start: {_task_line(rejected[-1])}"
        # The engine's own transient faults are retried by the swarm, not the app's.
        counted = app_failures(sorted(mine, key=lambda t: t.updated_at or t.created_at or _MIN))
        if len(counted) >= max_failures:
            return (
                f"service {svc.name} keeps failing ({len(counted)} failed tasks): "
                f"{_task_line(counted[-1])}"
            )
        if svc.update_state in BROKEN_UPDATE_STATES and (
            since is None or (svc.update_started_at or _MIN) >= since
        ):
            detail = f": {_task_line(mine[-1])}" if mine else ""
            return (
                f"the update of service {svc.name} did not take "
                f"({svc.update_state}: {svc.update_message}){detail}"
            )
    return None


def rolled_out(svc: ServiceState) -> bool:
    """Has the update in progress replaced every task of ``svc``, each now running?

    Swarm keeps an update ``updating`` for its ``monitor`` window (5 s by default) after
    the last new task runs, and only then says ``completed``. We need not wait for that:
    every slot's latest task was created by this update (at or after its start), runs
    the current spec and is running (a task with a health check is ``running`` only once
    it passed it) and none of an earlier spec still runs. A new task that dies inside the
    window still shows as a failed task or a paused or rolled-back update, which
    :func:`deploy_failure` and the health gate treat as fatal. A rollback in progress, or
    an update without a start time, is not rolled out.
    """
    if svc.update_state != "updating" or svc.update_started_at is None:
        return False
    if svc.replicas_running != svc.replicas_desired:
        return False
    if any(t.running and (not t.current or t.image != svc.image) for t in svc.tasks):
        return False
    latest = _latest_per_slot(svc)
    return bool(latest) and all(
        t.running and t.current and (t.created_at or _MIN) >= svc.update_started_at for t in latest
    )


def converged(state: StackState, since: datetime.datetime | None = None) -> tuple[bool, str]:
    """Is every service of the stack running its current spec? ``(ok, reason)``.

    Converged means, for every service: running replicas equal desired ones; every
    running task runs the service's current spec and image; no update in progress or
    broken (an update still in its monitor window whose new tasks all run counts as done,
    see :func:`rolled_out`); no task of the current spec Rejected at or after ``since``; and no slot whose
    latest task is a Failed one of the current spec since then. A task that failed once and was replaced by a running one
    does not block convergence (many apps restart once while a dependency boots);
    :func:`deploy_failure` catches a service that keeps failing, and callers wanting
    zero tolerance use :func:`failed_tasks`.
    """
    if not state.services:
        return False, f"stack {state.stack} has no services"
    parts = []
    for svc in state.services:
        rejected = [
            t for t in svc.tasks if t.state == "rejected" and t.current and _since_ok(t, since)
        ]
        if rejected:
            return False, f"service {svc.name}: {_task_line(rejected[-1])}"
        if svc.update_state in UPDATING_STATES and not rolled_out(svc):
            # quote the scheduler when a new task cannot start (e.g. "host-mode port
            # already in use on 1 node"): "update in progress" alone does not say why
            stuck = [
                t
                for t in _latest_per_slot(svc)
                if t.current and not t.running and t.desired_state == "running" and t.error
            ]
            detail = f"; {_task_line(stuck[0])}" if stuck else ""
            return False, (
                f"service {svc.name}: update {svc.update_state} ({svc.update_message}){detail}"
            )
        if svc.update_state in BROKEN_UPDATE_STATES and (
            since is None or (svc.update_started_at or _MIN) >= since
        ):
            return False, f"service {svc.name}: update {svc.update_state} ({svc.update_message})"
        for task in _latest_per_slot(svc):
            # Only the latest task of a slot counts: a failed one that was replaced is past.
            if task.failed and task.current and _since_ok(task, since):
                return False, f"service {svc.name}: {_task_line(task)}"
        stale = [t for t in svc.tasks if t.running and (not t.current or t.image != svc.image)]
        if stale:
            return False, (
                f"service {svc.name}: task {stale[0].id[:12]} still runs a previous spec "
                f"({stale[0].image}, want {svc.image})"
            )
        if svc.replicas_running != svc.replicas_desired:
            pending = [
                t for t in _latest_per_slot(svc) if not t.running and t.desired_state == "running"
            ]
            detail = f"; {_task_line(pending[0])}" if pending else ""
            return False, (
                f"service {svc.name}: {svc.replicas_running}/{svc.replicas_desired} running{detail}"
            )
        parts.append(f"{svc.short_name} {svc.replicas_running}/{svc.replicas_desired} {svc.image}")
    return True, f"stack {state.stack} converged: " + ", ".join(parts)


def is_gone(state: StackState) -> tuple[bool, str]:
    """No service, no container (running or exited) and no network of the stack is left."""
    left = []
    if state.services:
        left.append(f"{len(state.services)} services")
    if state.containers:
        left.append(f"{len(state.containers)} containers")
    if state.networks:
        left.append(f"networks {', '.join(state.networks)}")
    if left:
        return False, f"stack {state.stack} still has " + ", ".join(left)
    return True, f"stack {state.stack} is gone"


def _ordered(state: StackState) -> list[ServiceState]:
    """Services with ``app`` first: recipes put their version label there."""
    return sorted(state.services, key=lambda s: (s.short_name != "app", s.short_name))


def deployed_version(state: StackState) -> str | None:
    """The recipe version the stack runs, from its services' labels.

    Looks for, in order: the new form ``coop-cloud.<stack>.version`` (on ``app`` first,
    then any service), the old per-service form ``coop-cloud.<stack>.app.version``
    (``<tag>-<digest8>``: the digest suffix is dropped; on other services the old form
    carries their image's tag, not the recipe's), then the driver's own
    ``coop-cloud.ccci.version``. Empty labels are skipped.
    """
    new_key = f"coop-cloud.{state.stack}.version"
    services = _ordered(state)
    for svc in services:
        value = (svc.labels.get(new_key) or "").strip()
        if value:
            return value
    for svc in services:
        if svc.short_name != "app":  # other services' old labels carry their image's tag
            continue
        value = (svc.labels.get(f"coop-cloud.{state.stack}.{svc.short_name}.version") or "").strip()
        if value:
            return _OLD_VERSION_SUFFIX.sub("", value)
    for svc in services:
        value = (svc.labels.get(VERSION_LABEL) or "").strip()
        if value:
            return value
    return None


def deployed_commit(state: StackState) -> str | None:
    """The recipe commit the driver deployed (label ``coop-cloud.ccci.commit``).

    Only when every service carries the same commit: a stack of mixed or unlabelled
    services was not deployed whole from one commit by this driver, and gives ``None``.
    """
    commits = {(svc.labels.get(COMMIT_LABEL) or "").strip() for svc in state.services}
    if len(commits) != 1:
        return None
    commit = commits.pop()
    return commit or None


# --- waiting ----------------------------------------------------------------------------


@dataclass
class Observation:
    """What a probe saw: ``ok`` ends the wait, ``fatal`` ends it early with an error."""

    ok: bool
    reason: str
    value: Any = None
    fatal: bool = False


@dataclass
class WaitResult:
    ok: bool
    attempts: int
    elapsed: float
    last: Any
    reason: str


def wait_until(
    probe: Callable[[], Observation],
    timeout: float,
    interval: float = 1.0,
    *,
    what: str = "the condition",
    raise_on_timeout: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> WaitResult:
    """Call ``probe`` every ``interval`` seconds until it is ok, fatal, or ``timeout`` passed.

    Returns a :class:`WaitResult` whose ``last`` is the last observed value. A fatal
    observation raises :class:`WaitFailed` at once; running out of time raises
    :class:`WaitTimeout` (or returns ``ok=False`` when ``raise_on_timeout`` is false),
    and both messages state the last observed condition. A wait that lasts prints a
    progress line (``_progress``) every few seconds: the seconds waited and the last
    observation.
    """
    start = clock()
    progress = Progress(f"waiting for {what}", total=timeout, unit="s", clock=clock)
    attempts = 0
    while True:
        attempts += 1
        seen = probe()
        elapsed = clock() - start
        progress.update(elapsed, seen.reason)
        result = WaitResult(seen.ok, attempts, elapsed, seen.value, seen.reason)
        if seen.ok:
            progress.finish("done")
            return result
        if seen.fatal:
            raise WaitFailed(seen.reason, state=seen.value, result=result)
        if elapsed >= timeout:
            if not raise_on_timeout:
                return result
            raise WaitTimeout(
                f"timed out after {elapsed:.0f}s waiting for {what}; last seen: {seen.reason}",
                state=seen.value,
                result=result,
            )
        sleep(max(0.0, min(interval, timeout - elapsed)))


class StackEvents:
    """A sleep for :func:`wait_until` that an event of the stack cuts short.

    The engine's event stream (containers carrying the stack's namespace label; services
    and networks named ``<stack>_...``) is read in a background thread: a wait probes again
    as soon as something of the stack started, died, changed health or went away, and
    after ``interval`` at the latest when nothing happens. The manager records what a
    container did a moment after the engine reports it (a task is ``running`` once the
    agent passed on the health check's outcome), so after an event the next few probes
    come quickly (:data:`FOLLOW_UPS`) before the wait falls back to ``interval``. An
    engine that cannot stream events (a test double, an old engine) leaves it a plain
    sleep.
    """

    #: the sleeps after an event, before the interval applies again (seconds)
    FOLLOW_UPS = (0.1, 0.2, 0.3)

    def __init__(self, client, stack: str) -> None:
        self.stack = stack
        self._flag = threading.Event()
        self._follow_ups: list[float] = []
        self._stream = None
        try:
            self._stream = client.api.events(
                filters={"type": ["container", "service", "network"]}, decode=True
            )
        except Exception:  # no stream (a test double, an old engine): plain sleeps
            return
        threading.Thread(target=self._read, name=f"events of {stack}", daemon=True).start()

    def _ours(self, event: dict) -> bool:
        # a health check's exec_create/exec_start/exec_die come every few seconds and
        # change nothing; its outcome does ("health_status: healthy")
        if str(event.get("Action", "")).startswith("exec_"):
            return False
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        if attrs.get(NAMESPACE_LABEL) == self.stack:
            return True
        return str(attrs.get("name", "")).startswith(f"{self.stack}_")

    def _read(self) -> None:
        try:
            for event in self._stream:
                if isinstance(event, dict) and self._ours(event):
                    self._flag.set()
        except Exception:  # the stream was closed or broke: plain sleeps from now on
            pass

    def sleep(self, seconds: float) -> None:
        if self._follow_ups:
            seconds = min(seconds, self._follow_ups.pop(0))
        if self._flag.wait(seconds):
            self._follow_ups = list(self.FOLLOW_UPS)
        self._flag.clear()

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def __enter__(self) -> StackEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_converged(
    client,
    stack: str,
    timeout: float,
    since: datetime.datetime | None = None,
    *,
    interval: float = 1.0,
    max_failures: int = 3,
) -> WaitResult:
    """Wait until :func:`converged`; fail fast on :func:`deploy_failure`.

    The error (``WaitFailed`` or ``WaitTimeout``) carries the failed tasks with their own
    error text in ``.tasks`` and the last :class:`StackState` in ``.state``.
    """

    def probe() -> Observation:
        state = read_stack(client, stack)
        failure = deploy_failure(state, since, max_failures)
        if failure:
            return Observation(False, f"stack {stack} failed to deploy: {failure}", state, True)
        ok, reason = converged(state, since)
        return Observation(ok, reason, state)

    try:
        with StackEvents(client, stack) as events:
            return wait_until(
                probe, timeout, interval, what=f"stack {stack} to converge", sleep=events.sleep
            )
    except SwarmError as exc:
        if isinstance(exc.state, StackState):
            exc.tasks = [t.summary() for t in failed_tasks(exc.state, since)][-10:]
        raise


def wait_gone(client, stack: str, timeout: float, *, interval: float = 0.5) -> WaitResult:
    """Wait until no service, container or network of ``stack`` is left (see :func:`is_gone`)."""

    def probe() -> Observation:
        state = read_stack(client, stack)
        ok, reason = is_gone(state)
        return Observation(ok, reason, state)

    with StackEvents(client, stack) as events:
        return wait_until(
            probe, timeout, interval, what=f"stack {stack} to be gone", sleep=events.sleep
        )
