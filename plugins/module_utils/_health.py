# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health gate: HTTP and swarm probes, their pure predicates, one gate. PRIVATE to the collection.

The gate is what both lanes and the reconciler trust to say "this deploy works". It is
built like the swarm layer under it (:mod:`._swarm`):

- Checks are plain dataclasses: :class:`HttpCheck` (a URL, optionally reached through a
  curl-style ``resolve``, expected status codes and a body pattern) and
  :class:`SwarmCheck` (a stack converged since the deploy, at the commit and images just
  deployed, no failed task, container health checks healthy).
- Pure predicates decide from what was observed, with no I/O: :func:`http_ok` over a
  status and a body, :func:`swarm_ok` over a :class:`._swarm.StackState`. Unit tests feed
  them hand-made answers.
- Probes do the I/O once and return an :class:`._swarm.Observation`: :func:`probe_http`
  (httpx) and :func:`probe_swarm` (the Docker SDK through :func:`._swarm.read_stack`).
- :func:`gate` polls every check with :func:`._swarm.wait_until` (the one waiter of the
  collection) until all are ok in the same round, one is fatal, or time runs out, and
  returns a :class:`GateResult` whose ``reason`` states the last observed condition.

Container health on a multi-node swarm: the engine the gate talks to can only inspect
the containers on its own node. Docker marks a swarm task ``running`` only once its
container's health check passed (until then the task is ``starting``, and a container
that stays unhealthy is killed and its task ``failed``), so tasks on other nodes are
still gated through their task state.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._engine import (
    fault_sentence,
    unreachable,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    COMMIT_LABEL,
    Observation,
    StackEvents,
    StackState,
    TaskState,
    WaitFailed,
    app_failures,
    converged,
    deploy_failure,
    failed_tasks,
    read_stack,
    wait_until,
)

#: How much of a body is kept in results and messages.
BODY_EXCERPT = 300
#: How much of a body is read and searched.
BODY_LIMIT = 1024 * 1024


class HealthCheckError(CcciError, ValueError):
    """A check is wrongly specified (bad URL, resolve, regex or time). One sentence."""


# --- checks -----------------------------------------------------------------------------


def _split_hostport(url_host: str) -> str:
    return url_host.strip("[]").lower()


@dataclass
class Resolve:
    """``host:port:address`` as curl takes it: connect to ``address:port`` for ``host:port``."""

    host: str
    port: int
    address: str

    @classmethod
    def parse(cls, text: str) -> Resolve:
        match = re.fullmatch(r"\s*([^:\s]+):(\d{1,5}):(\[[0-9A-Fa-f:.]+\]|[^\s\[\]]+)\s*", text)
        if not match:
            raise HealthCheckError(
                f"resolve {text!r} is not of the form host:port:address "
                "(for example app.example.org:443:127.0.0.1)"
            )
        host, port, address = match.group(1), int(match.group(2)), match.group(3).strip("[]")
        if not 0 < port < 65536:
            raise HealthCheckError(f"resolve {text!r} has a port outside 1-65535")
        return cls(host.lower(), port, address)

    @property
    def netloc(self) -> str:
        try:
            is_v6 = ipaddress.ip_address(self.address).version == 6
        except ValueError:
            is_v6 = False
        return f"[{self.address}]:{self.port}" if is_v6 else f"{self.address}:{self.port}"


@dataclass
class HttpCheck:
    """One HTTP GET and what its answer must be.

    ``resolve`` (``host:port:address``, as curl's ``--resolve``) connects to
    ``address:port`` while the request keeps the URL's host name for the ``Host`` header,
    TLS SNI and certificate verification. ``host_header`` overrides the ``Host`` header
    only. ``body`` is a regular expression searched in the body. ``ca_path`` is a CA
    bundle to verify against instead of the system's.
    """

    url: str
    resolve: str | None = None
    host_header: str | None = None
    status: Sequence[int] = (200,)
    body: str | None = None
    validate_certs: bool = True
    request_timeout: float = 5.0
    ca_path: str | None = None
    _pattern: re.Pattern | None = field(default=None, init=False, repr=False)
    _resolve: Resolve | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        import httpx

        try:
            url = httpx.URL(self.url)
        except Exception as exc:
            raise HealthCheckError(f"url {self.url!r} is not a valid URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise HealthCheckError(f"url {self.url!r} must be an http:// or https:// URL")
        self.status = [int(s) for s in (self.status or [200])]
        if self.body is not None:
            try:
                self._pattern = re.compile(self.body)
            except re.error as exc:
                raise HealthCheckError(
                    f"body {self.body!r} is not a valid regular expression: {exc}"
                ) from exc
        if self.request_timeout <= 0:
            raise HealthCheckError("request_timeout must be more than 0 seconds")
        if self.resolve:
            res = Resolve.parse(self.resolve)
            host = _split_hostport(url.host)
            port = url.port or (443 if url.scheme == "https" else 80)
            if (res.host, res.port) != (host, port):
                raise HealthCheckError(
                    f"resolve {self.resolve!r} does not apply to url {self.url}: "
                    f"it names {res.host}:{res.port}, the URL {host}:{port}"
                )
            self._resolve = res

    @property
    def pattern(self) -> re.Pattern | None:
        return self._pattern

    @property
    def target(self) -> str:
        """The URL, with where it is really connected to when ``resolve`` is set."""
        if self._resolve:
            return f"{self.url} (via {self._resolve.netloc})"
        return self.url


def _parse_since(value: datetime.datetime | str | None) -> datetime.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Docker writes nanoseconds; datetime takes at most microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text)
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError as exc:
            raise HealthCheckError(
                f"since {value!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)"
            ) from exc
    if parsed.tzinfo is None:  # a naive time is UTC, as Docker's and Ansible's are
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


@dataclass
class SwarmCheck:
    """A stack that must be healthy since the deploy at ``since``.

    ``since`` (an aware datetime or an ISO string; naive means UTC) is the deploy time:
    tasks that failed before it are history. ``None`` means the last deploy (from the
    ``UpdatedAt`` of the stack's services, see :func:`deploy_time`), resolved by
    :func:`probe_swarm` on the first observation. ``commit``: every service must carry
    ``COMMIT_LABEL`` with this value.
    ``images``: service short name -> image each must run. ``require_healthy``: containers
    with a health check must report ``healthy`` (those without one pass).
    ``max_task_failures``: failed tasks of the stack tolerated since ``since``; one more is
    fatal.
    """

    stack: str
    since: datetime.datetime | str | None = None
    commit: str | None = None
    images: Mapping[str, str] | None = None
    require_healthy: bool = True
    max_task_failures: int = 0

    def __post_init__(self) -> None:
        self.since = _parse_since(self.since)
        if self.max_task_failures < 0:
            raise HealthCheckError("max_task_failures must be 0 or more")
        self.images = dict(self.images or {})


# --- HTTP -------------------------------------------------------------------------------


def _want(status: Sequence[int]) -> str:
    codes = ", ".join(str(s) for s in status)
    return f"want {codes}" if len(status) == 1 else f"want one of {codes}"


def excerpt(body: str, limit: int = BODY_EXCERPT) -> str:
    body = body or ""
    return body if len(body) <= limit else body[:limit] + "..."


def http_ok(status: int, body: str, check: HttpCheck) -> tuple[bool, str]:
    """Is this answer what ``check`` wants? ``(ok, reason)``; pure, no I/O."""
    head = f"GET {check.target} -> {status}"
    if status not in check.status:
        return False, f"{head} ({_want(check.status)})"
    if check.pattern is not None:
        if check.pattern.search(body or "") is None:
            shown = excerpt(" ".join((body or "").split()), 80)
            return False, f"{head} but the body did not match /{check.body}/ (body: {shown!r})"
        return True, f"{head}, body matches /{check.body}/"
    return True, head


def _ssl_context(check: HttpCheck) -> ssl.SSLContext | bool:
    if not check.validate_certs:
        return False
    return ssl.create_default_context(cafile=check.ca_path)


def http_client(check: HttpCheck):
    """An ``httpx.Client`` for one check: its TLS settings, no proxies, no redirects."""
    import httpx

    return httpx.Client(
        verify=_ssl_context(check),
        timeout=check.request_timeout,
        follow_redirects=False,
        # The probe connects where it is told; HTTP(S)_PROXY from the environment would
        # send a resolve'd or loopback request somewhere else.
        trust_env=False,
    )


def _error_text(exc: Exception, check: HttpCheck, where: str) -> str:
    import httpx

    text = str(exc) or type(exc).__name__
    low = text.lower()
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__.replace("Timeout", " timeout").lower().strip()
        return f"no answer from {where} within {check.request_timeout:g} s ({kind})"
    if "refused" in low:
        return f"connection refused to {where}"
    if "certificate" in low or "ssl" in low or "tls" in low:
        return f"TLS with {where} failed: {text}"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {where}: {text}"
    return f"{type(exc).__name__} from {where}: {text}"


def probe_http(check: HttpCheck, client=None) -> Observation:
    """One GET of ``check.url``; the observation's value is ``{status, body, ...}``."""
    import httpx

    url = httpx.URL(check.url)
    host = _split_hostport(url.host)
    port = url.port or (443 if url.scheme == "https" else 80)
    headers = {}
    extensions: dict[str, Any] = {}
    target = url
    if check._resolve is not None:
        target = url.copy_with(host=check._resolve.address)
        headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            extensions["sni_hostname"] = host
        where = check._resolve.netloc
    else:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if check.host_header:
        headers["Host"] = check.host_header
    value: dict[str, Any] = {"url": check.url, "status": None, "body": None, "ok": False}
    own = client is None
    if own:
        client = http_client(check)
    started = time.monotonic()
    try:
        request = client.build_request("GET", target, headers=headers, extensions=extensions)
        response = client.send(request, stream=True)
        try:
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) >= BODY_LIMIT:
                    break
            encoding = response.encoding or "utf-8"
            body = raw[:BODY_LIMIT].decode(encoding, errors="replace")
        finally:
            response.close()
    except httpx.HTTPError as exc:
        reason = f"GET {check.url} -> {_error_text(exc, check, where)}"
        value.update(error=reason, elapsed=round(time.monotonic() - started, 3))
        return Observation(False, reason, value)
    finally:
        if own:
            client.close()
    ok, reason = http_ok(response.status_code, body, check)
    value.update(
        status=response.status_code,
        body=excerpt(body),
        ok=ok,
        elapsed=round(time.monotonic() - started, 3),
    )
    return Observation(ok, reason, value)


# --- swarm ------------------------------------------------------------------------------


@dataclass
class ContainerHealth:
    """A container's health as its engine reports it (``State.Health``)."""

    status: str | None
    failing_streak: int = 0
    output: str = ""

    def text(self) -> str:
        if self.status in (None, "healthy"):
            return self.status or "no health check"
        out = " ".join((self.output or "").split())
        detail = f", failing streak {self.failing_streak}" if self.failing_streak else ""
        last = f"; last check said: {excerpt(out, 160)}" if out else ""
        return f"{self.status}{detail}{last}"


#: One ``docker stack deploy`` updates its services one after another within this window.
DEPLOY_WINDOW = datetime.timedelta(seconds=30)


def deploy_time(state: StackState) -> datetime.datetime | None:
    """When the stack was last deployed, from its services' ``UpdatedAt``.

    The newest ``UpdatedAt`` is the end of the last deploy; a deploy updates its services
    one after another, so the start is the oldest ``UpdatedAt`` within
    :data:`DEPLOY_WINDOW` before it (a task of the first service may fail before the last
    service is updated). ``None`` for a stack without services.
    """
    stamps = sorted(s.updated_at for s in state.services if s.updated_at is not None)
    if not stamps:
        return None
    newest = stamps[-1]
    return next(s for s in stamps if s >= newest - DEPLOY_WINDOW)


_NO_LIMIT = 2**31


def _fatal_tasks(state: StackState, check: SwarmCheck) -> str | None:
    since = check.since
    # Rejected tasks and broken updates only: failed tasks are counted stack-wide below.
    failure = deploy_failure(state, since, max_failures=_NO_LIMIT)
    if failure:
        return failure
    # As in _swarm: a task of a previous spec is not this deploy's failure.
    # The engine's own transient faults are retried by the swarm (_swarm.app_failures).
    failed = app_failures([t for t in failed_tasks(state, since) if t.current])
    lost = [t for t in failed if t.engine_lost]
    if lost:
        return (
            f"the Docker engine lost the container of task {lost[-1].id[:12]} of "
            f"{lost[-1].service} (it stopped or restarted under the app): {lost[-1].text()}"
        )
    if len(failed) > check.max_task_failures:
        last = failed[-1]
        return (
            f"{len(failed)} task{'s' if len(failed) > 1 else ''} of stack {state.stack} "
            f"failed since the deploy (max_task_failures={check.max_task_failures}): "
            f"task {last.id[:12]} of {last.service} is {last.state}: {last.text()}"
        )
    return None


def _current_tasks(state: StackState) -> list[TaskState]:
    return [
        t
        for svc in state.services
        for t in svc.tasks
        if t.desired_state == "running" and t.state in ("starting", "running")
    ]


def swarm_ok(
    state: StackState,
    check: SwarmCheck,
    health: Mapping[str, ContainerHealth] | None = None,
) -> tuple[bool, str, bool]:
    """Is the stack healthy as ``check`` wants? ``(ok, reason, fatal)``; pure, no I/O.

    In order: a rejected task, a broken update or more than ``max_task_failures`` failed
    tasks since ``check.since`` is fatal (the reason quotes the task's own error text); then
    the stack must be :func:`._swarm.converged`, every service carry ``check.commit`` and
    run the image of ``check.images``, and (``require_healthy``) every container with a
    health check report ``healthy``. ``starting`` and ``unhealthy`` are not fatal: a
    health check may still pass, and the swarm replaces a container that stays unhealthy
    (its failed task then counts against ``max_task_failures``). ``health`` maps a task
    id to its container's :class:`ContainerHealth` for the details in the reason; without
    an entry, :attr:`._swarm.TaskState.health` is used.
    """
    health = health or {}
    if not state.services:
        return False, f"stack {state.stack} has no services", False
    fatal = _fatal_tasks(state, check)
    if fatal:
        return False, fatal, True
    if check.require_healthy:
        # A task whose container has not passed its health check yet stays "starting":
        # say what its health check says rather than just "0/1 running".
        for task in _current_tasks(state):
            seen = health.get(task.id) or ContainerHealth(task.health)
            if task.state == "starting" and seen.status in ("starting", "unhealthy"):
                why = (
                    f"service {task.service}: task {task.id[:12]} is starting, "
                    f"container health: {seen.text()}"
                )
                return False, why, False
    ok, reason = converged(state, check.since)
    if not ok:
        return False, reason, False
    for svc in state.services:
        if check.commit is not None:
            label = (svc.labels.get(COMMIT_LABEL) or "").strip()
            if label != check.commit:
                why = f"service {svc.name} carries commit {label or '(none)'}, want {check.commit}"
                return False, why, False
    for short, image in sorted((check.images or {}).items()):
        svc = state.service(short)
        if svc is None:
            names = ", ".join(s.short_name for s in state.services)
            return False, f"stack {state.stack} has no service {short} (it has {names})", False
        if not _same_image(svc.image, image):
            return False, f"service {svc.name} runs {svc.image}, want {image}", False
    parts = []
    for svc in state.services:
        states = []
        for task in (t for t in svc.tasks if t.running):
            seen = health.get(task.id) or ContainerHealth(task.health)
            if check.require_healthy and seen.status in ("starting", "unhealthy"):
                why = f"service {svc.name}: container of task {task.id[:12]} is {seen.text()}"
                return False, why, False
            if seen.status:
                states.append(seen.status)
        note = f" ({', '.join(sorted(set(states)))})" if states else ""
        parts.append(f"{svc.short_name} {svc.replicas_running}/{svc.replicas_desired}{note}")
    return True, f"stack {state.stack} is healthy: " + ", ".join(parts), False


def _same_image(running: str, want: str) -> bool:
    """``ccci/web:1.29@sha256:...`` runs ``ccci/web:1.29``; a digest asked must match."""
    if running == want:
        return True
    if "@" not in want:
        return running.split("@", 1)[0] == want
    return False


def container_health(api, container_id: str) -> ContainerHealth:
    """``State.Health`` of one container on the answering engine (unknown if not here)."""
    try:
        info = api.inspect_container(container_id)
    except Exception:  # on another node, or just removed: nothing to say
        return ContainerHealth(None)
    raw = (info.get("State") or {}).get("Health") or {}
    log = raw.get("Log") or []
    output = (log[-1].get("Output") or "") if log else ""
    return ContainerHealth(raw.get("Status") or None, int(raw.get("FailingStreak") or 0), output)


def swarm_summary(
    state: StackState, check: SwarmCheck, health: Mapping[str, ContainerHealth]
) -> dict[str, Any]:
    """The last observed swarm state, for results: services, tasks, failures."""
    services = []
    for svc in state.services:
        item = svc.summary()
        item["commit"] = svc.labels.get(COMMIT_LABEL)
        item["tasks"] = [
            {
                "id": t.id,
                "state": t.state,
                "desired_state": t.desired_state,
                "error": t.error,
                "health": (health.get(t.id) or ContainerHealth(t.health)).status,
                "node_id": t.node_id,
            }
            for t in svc.tasks
            if t.desired_state == "running"
        ]
        services.append(item)
    return {
        "stack": state.stack,
        "since": _iso(check.since),
        "services": services,
        "failed_tasks": [t.summary() for t in failed_tasks(state, check.since)][-10:],
    }


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def probe_swarm(client, check: SwarmCheck) -> Observation:
    """Read the stack once and judge it with :func:`swarm_ok`.

    When ``check.since`` is ``None`` it is set here, once, to :func:`deploy_time` of the
    first state that has services. An engine that does not answer is not fatal: the
    observation says so and the gate keeps trying. The observation's value is :func:`swarm_summary`
    with ``ok`` and ``reason``; its ``state`` key holds the :class:`StackState`.
    """
    try:
        state = read_stack(client, check.stack, health=check.require_healthy)
    except Exception as exc:  # docker.errors.APIError, requests' ConnectionError, ...
        if unreachable(exc):  # gone, not busy: what it showed of the stack cannot be judged
            reason = fault_sentence(exc)
            value = {"stack": check.stack, "ok": False, "reason": reason, "engine_fault": True}
            return Observation(False, reason, value, True)
        reason = f"cannot read stack {check.stack} from the Docker engine: {exc}"
        return Observation(False, reason, {"stack": check.stack, "ok": False, "reason": reason})
    if check.since is None:
        check.since = deploy_time(state)
    health: dict[str, ContainerHealth] = {}
    if check.require_healthy:
        for task in _current_tasks(state):
            if task.container_id and (
                task.state == "starting" or task.health in ("starting", "unhealthy")
            ):
                seen = container_health(client.api, task.container_id)
                if seen.status is not None:  # else keep what read_stack saw
                    health[task.id] = seen
    ok, reason, fatal = swarm_ok(state, check, health)
    value = swarm_summary(state, check, health)
    value.update(ok=ok, reason=reason, state=state)
    return Observation(ok, reason, value, fatal)


# --- the gate ---------------------------------------------------------------------------


@dataclass
class GateResult:
    """What :func:`gate` found. ``last`` holds ``swarm`` and ``http`` as last observed."""

    healthy: bool
    attempts: int
    elapsed: float
    last: dict[str, Any]
    reason: str
    fatal: bool = False
    #: The engine, not the app, ended the gate: it went away or lost the app's containers.
    engine_fault: bool = False
    #: Failed tasks of the stack with their own error text (evidence on failure).
    tasks: list[dict[str, Any]] = field(default_factory=list)
    since: datetime.datetime | None = None
    #: The last observed :class:`StackState` (not for results: not JSON).
    state: StackState | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 3),
            "last": self.last,
            "reason": self.reason,
            "since": _iso(self.since),
        }


def gate_name(checks: Sequence[HttpCheck | SwarmCheck]) -> str:
    """How messages name what is gated: ``stack x (http://...)`` or the URL."""
    swarm = [c for c in checks if isinstance(c, SwarmCheck)]
    http = [c for c in checks if isinstance(c, HttpCheck)]
    if swarm and http:
        return f"stack {swarm[0].stack} ({', '.join(c.url for c in http)})"
    if swarm:
        return f"stack {swarm[0].stack}"
    return ", ".join(c.url for c in http)


def gate(
    checks: Sequence[HttpCheck | SwarmCheck],
    timeout: float,
    interval: float = 2.0,
    *,
    docker_client=None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    http_clients: Mapping[int, Any] | None = None,
) -> GateResult:
    """Probe every check each round until all are ok in the same round.

    The swarm checks go first: HTTP is not probed in a round whose stack is not healthy
    yet (``last.http`` then says so). A fatal swarm observation (rejected task, too many
    failed tasks, broken update) ends the gate at once. Never raises for an unhealthy
    target: the result says ``healthy`` and why not, in one sentence with the last
    observed condition. ``http_clients`` maps ``id(check)`` to a client to use.
    """
    if not checks:
        raise HealthCheckError("the gate needs at least one check (a url or a stack)")
    swarm = [c for c in checks if isinstance(c, SwarmCheck)]
    http = [c for c in checks if isinstance(c, HttpCheck)]
    if swarm and docker_client is None:
        raise HealthCheckError("a swarm check needs a Docker client")
    clients = dict(http_clients or {})
    owned = []
    for check in http:
        if id(check) not in clients:
            clients[id(check)] = http_client(check)
            owned.append(clients[id(check)])
    name = gate_name(checks)
    last_state: dict[str, StackState | None] = {"state": None}

    def probe() -> Observation:
        seen: dict[str, Any] = {}
        for check in swarm:
            obs = probe_swarm(docker_client, check)
            last_state["state"] = obs.value.pop("state", None)
            seen["swarm"] = obs.value
            if not obs.ok:
                if http:
                    seen["http"] = {"url": http[0].url, "ok": False, "status": None,
                                    "body": None, "skipped": "the stack is not healthy yet"}  # fmt: skip
                return Observation(False, obs.reason, seen, obs.fatal)
        reasons = [seen["swarm"]["reason"]] if swarm else []
        for check in http:
            obs = probe_http(check, clients[id(check)])
            seen["http"] = obs.value
            if not obs.ok:
                return Observation(False, obs.reason, seen)
            reasons.append(obs.reason)
        return Observation(True, "; ".join(reasons), seen)

    fatal = False
    # a real wait on a stack probes again as soon as the stack's containers change (their
    # health above all), not only every `interval`
    events = StackEvents(docker_client, swarm[0].stack) if swarm and sleep is time.sleep else None
    try:
        try:
            res = wait_until(
                probe, timeout, interval, what=f"{name} to be healthy",
                raise_on_timeout=False, clock=clock, sleep=events.sleep if events else sleep,
            )  # fmt: skip
            healthy, attempts, elapsed, last, why = (
                res.ok, res.attempts, res.elapsed, res.last, res.reason,
            )  # fmt: skip
        except WaitFailed as exc:
            fatal = True
            res = exc.result
            healthy, attempts, elapsed, last = False, res.attempts, res.elapsed, res.last
            why = exc.message
    finally:
        for client in owned:
            client.close()
        if events:
            events.close()
    if healthy:
        reason = why
    elif fatal:
        reason = f"{name} cannot become healthy (gave up after {elapsed:.1f} s): {why}"
    else:
        reason = f"{name} did not become healthy within {timeout:g} s: {why}"
    state = last_state["state"]
    since = swarm[0].since if swarm else None
    failed = failed_tasks(state, since) if state is not None and not healthy else []
    tasks = [t.summary() for t in failed][-10:]
    engine_fault = fatal and (
        bool((last or {}).get("swarm", {}).get("engine_fault"))
        or any(t.engine_lost for t in failed)
    )
    return GateResult(
        healthy=healthy, attempts=attempts, elapsed=elapsed, last=last or {}, reason=reason,
        fatal=fatal, engine_fault=engine_fault, tasks=tasks, since=since, state=state,
    )  # fmt: skip
