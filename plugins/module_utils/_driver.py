# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deploy drivers: put a recipe's stack on the swarm and take it off. PRIVATE to the collection.

One interface (:class:`Driver`), two implementations:

- :class:`StackDriver`, the embedded default: ``docker stack deploy`` of the recipe's
  compose files from a per-run checkout, with the app env in the process environment
  (compose interpolation reads it), secrets created through the Docker SDK, then our own
  convergence wait (:func:`._swarm.wait_converged`) that fails fast with the task's own
  error text.
- :class:`._abra.AbraDriver`, the same operations as the exact ``abra`` command lines
  (chaos deploy without abra's converge checks, then the same wait). abra cannot be
  installed on the CI test machines: it is tested on its argv and with a stand-in.

Both label every service they deploy with ``coop-cloud.ccci.commit`` (and
``coop-cloud.ccci.version``) through a small generated compose overlay, so the deployed
commit can be read back (:func:`._swarm.deployed_commit`) and a second identical deploy
can be skipped. The same overlay can publish one service port on the host in ``host``
mode (``publish``), for machines where the app is reached without a proxy (tests, CI
hosts without Traefik): ingress publishing needs IPVS, which not every kernel has.

Undeploy keeps the stack's secrets and volumes: ``docker stack rm`` would also delete
every secret carrying the stack's namespace label, and an app whose data was initialised
with a generated password must find the same password when it is reattached. So
undeploy removes the services, waits until their containers are gone, then removes the
stack's networks and configs. Remove then deletes volumes and secrets matched *only* by
the label ``com.docker.stack.namespace=<stack>`` (never by a name prefix).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    COMMIT_LABEL,
    NAMESPACE_LABEL,
    VERSION_LABEL,
    StackEvents,
    SwarmError,
    WaitResult,
    converged,
    deployed_commit,
    deployed_version,
    failed_tasks,
    read_stack,
    utc_now,
    wait_converged,
    wait_gone,
    wait_until,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    Observation as _Observation,
)

#: The generated overlay, written beside the recipe's compose files in the work dir.
LABELS_OVERLAY = "compose.ccci-labels.yml"
DEFAULT_DEPLOY_TIMEOUT = 300
DEFAULT_REMOVE_TIMEOUT = 120

Runner = Callable[..., subprocess.CompletedProcess]

#: Deploy label carrying a digest of the app env, the compose file list, the published
#: port and the placement constraints (``recipe_app`` and ``warm_canonical`` skip a deploy
#: when it is unchanged).
ENV_LABEL = "coop-cloud.ccci.env"

#: Crash point (tests/reliability/test_crashes.py): a play passes it once per deploy, so
#: ``CCCI_PAUSE_AT=deploy.converged@2`` stops at its second deploy.
P_CONVERGED = _faults.register(
    "deploy.converged", "stack driver: a deploy converged, its result not yet returned"
)


def env_digest(
    env: Mapping[str, Any],
    compose_files: Sequence[str],
    publish: Mapping[str, Any] | None = None,
    constraints: Sequence[str] | None = None,
) -> str:
    """sha256 of the app env, the compose file list and, when given, the published port
    and the placement constraints (secret values are not in the env)."""
    import hashlib
    import json

    doc: dict[str, Any] = {"env": dict(env), "compose_files": list(compose_files)}
    if publish:
        doc["publish"] = dict(publish)
    if constraints:
        doc["constraints"] = sorted(constraints)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


class DriverError(SwarmError):
    """A driver operation failed; carries ``cmd``, ``rc``, ``stdout``, ``stderr`` when a
    command ran, and the failed tasks when the wait after it did not converge."""


def _default_client():
    import docker

    return docker.from_env()


def compose_facts(workdir: str, compose_files: Sequence[str]) -> dict[str, Any]:
    """What the driver's overlay needs of the merged compose files: ``services`` (names,
    in order), ``version`` (the file format to use), ``start_first`` (services whose
    ``deploy.update_config.order`` is ``start-first``, the later file winning) and
    ``host_ports`` (services publishing a port in ``host`` mode)."""
    import yaml

    services: list[str] = []
    version = ""
    order: dict[str, str] = {}
    host_ports: set[str] = set()
    for rel in compose_files:
        path = os.path.join(workdir, rel)
        try:
            with open(path, encoding="utf-8") as handle:
                doc = yaml.safe_load(handle) or {}
        except OSError as exc:
            raise DriverError(f"compose file {rel} cannot be read in {workdir}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise DriverError(f"compose file {rel} is not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise DriverError(f"compose file {rel} is not a mapping")
        version = version or str(doc.get("version") or "")
        for name, spec in (doc.get("services") or {}).items():
            if name not in services:
                services.append(name)
            spec = spec if isinstance(spec, dict) else {}
            update = (spec.get("deploy") or {}).get("update_config") or {}
            if isinstance(update, dict) and update.get("order"):
                order[name] = str(update["order"])
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and port.get("mode") == "host":
                    host_ports.add(name)
    return {
        "services": services,
        "version": version or "3.8",
        "start_first": {name for name, value in order.items() if value == "start-first"},
        "host_ports": host_ports,
    }


def compose_services(workdir: str, compose_files: Sequence[str]) -> tuple[list[str], str]:
    """Service names of the compose files (merged) and the file format version to use."""
    facts = compose_facts(workdir, compose_files)
    return facts["services"], facts["version"]


def port_entry(port: int, published: int) -> dict[str, Any]:
    """A long-syntax compose ``ports`` item publishing ``port`` on the host in host mode."""
    return {"target": int(port), "published": int(published), "protocol": "tcp", "mode": "host"}


def check_publish(publish: Mapping[str, Any], services: Sequence[str], stack: str) -> None:
    """``publish`` ({service, port, published}) names a service of the compose files and
    valid ports; otherwise :class:`DriverError`."""
    service = publish.get("service")
    if service not in services:
        raise DriverError(
            f"service {service!r} to publish is not a service of stack {stack} "
            f"(its services: {', '.join(services) or 'none'})"
        )
    for key in ("port", "published"):
        value = publish.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise DriverError(f"publish.{key} of stack {stack} must be a TCP port, got {value!r}")


def labels_overlay(
    services: Sequence[str],
    version: str,
    labels: Mapping[str, str],
    publish: Mapping[str, Any] | None = None,
    constraints: Sequence[str] | None = None,
    *,
    app_labels: Mapping[str, str] | None = None,
    stop_first: Sequence[str] = (),
) -> str:
    """The overlay that adds ``labels`` to the deploy labels of every service and, with
    ``publish`` ({service, port, published}), publishes that port of that service on the
    host in host mode; ``constraints`` (e.g. ``node.id == <id>``) are added to every
    service's placement constraints (``docker stack deploy`` appends them to the recipe's).

    ``app_labels`` go to the ``app`` service only (to every service when there is no
    ``app``), as abra puts the version it deploys there. Services in ``stop_first``
    update ``stop-first``: a task publishing a host-mode port cannot start beside the one
    it replaces on the same node (the scheduler keeps it pending with "host-mode port
    already in use"), so a recipe's ``start-first`` would deadlock every upgrade."""
    import yaml

    def escape(values: Mapping[str, str]) -> dict[str, str]:
        return {k: str(v).replace("$", "$$") for k, v in values.items()}

    common, on_app = escape(labels), escape(app_labels or {})
    doc: dict[str, Any] = {"version": version, "services": {}}
    for name in services:
        spec: dict[str, Any] = {}
        mine = dict(common)
        if on_app and (name == "app" or "app" not in services):
            mine.update(on_app)
        if mine:
            spec["deploy"] = {"labels": mine}
        if constraints:
            spec.setdefault("deploy", {})["placement"] = {"constraints": list(constraints)}
        if name in stop_first:
            spec.setdefault("deploy", {})["update_config"] = {"order": "stop-first"}
        if publish and publish["service"] == name:
            spec["ports"] = [port_entry(publish["port"], publish["published"])]
        if spec:
            doc["services"][name] = spec
    header = "# Generated by coopcloud.ci: labels the deployed commit and version.\n"
    return header + yaml.safe_dump(doc, sort_keys=True)


def free_host_port() -> int:
    """A TCP port nothing listens on right now (on every address of this host)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


class Driver:
    """What every driver does. Results are plain dicts, ready for ``exit_json``."""

    name = "base"

    #: Inside :meth:`discarding`.
    _discarding = False

    def __init__(self, client=None, runner: Runner | None = None, interval: float = 1.0) -> None:
        self._client = client
        self._runner = runner or subprocess.run
        self.interval = interval

    # -- engine ------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = _default_client()
            except Exception as exc:
                raise DriverError(f"no Docker engine answers ({exc})") from exc
        return self._client

    def run(
        self,
        cmd: list[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        what: str,
    ) -> subprocess.CompletedProcess:
        """Run ``cmd``; a non-zero exit raises :class:`DriverError` with the evidence."""
        try:
            proc = self._runner(
                cmd,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise DriverError(f"{what} could not start {cmd[0]}: {exc}", cmd=cmd) from exc
        if proc.returncode != 0:
            err = (proc.stderr or proc.stdout or "").strip().splitlines()
            tail = err[-1] if err else f"exit status {proc.returncode}"
            raise DriverError(
                f"{what} failed: {tail}",
                cmd=cmd,
                rc=proc.returncode,
                stdout=proc.stdout or "",
                stderr=proc.stderr or "",
            )
        return proc

    # -- the interface -----------------------------------------------------------------

    def deploy(
        self,
        stack: str,
        workdir: str,
        compose_files: Sequence[str],
        env: Mapping[str, str],
        secrets: Mapping[str, str] | None = None,
        version: str | None = None,
        commit: str | None = None,
        timeout: float = DEFAULT_DEPLOY_TIMEOUT,
        labels: Mapping[str, str] | None = None,
        publish: Mapping[str, Any] | None = None,
        constraints: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Create missing ``secrets`` ({swarm name: value}), deploy, wait until converged.

        Every service gets the deploy labels ``coop-cloud.ccci.commit``/``.version`` and
        ``labels``; ``publish`` ({service, port, published}) publishes that container
        port of that service on the host port ``published`` in host mode; ``constraints``
        are added to every service's placement constraints (pinning a canonical to the
        node that holds its volumes, SPEC §7). Raises
        :class:`DriverError` (with the command's evidence and the failed
        tasks' own error text) when the deploy fails or does not converge in ``timeout``.
        """
        files = list(compose_files)
        overlay = self.write_labels_overlay(
            workdir,
            files,
            version,
            commit,
            labels,
            publish=publish,
            stack=stack,
            constraints=constraints,
        )
        cmd, proc_env, what = self.launch(stack, workdir, files, overlay, env, version)
        created = self.ensure_secrets(stack, secrets)
        return self.deploy_and_wait(
            stack, cmd, cwd=workdir, env=proc_env, created=created, timeout=timeout, what=what
        )

    def launch(
        self,
        stack: str,
        workdir: str,
        files: list[str],
        overlay: str | None,
        env: Mapping[str, str],
        version: str | None,
    ) -> tuple[list[str], dict[str, str], str]:
        """What :meth:`deploy` runs: the command deploying ``files`` (and the labels
        ``overlay``, when one was written), its environment, and its name for messages;
        prepares whatever that command reads."""
        raise NotImplementedError

    def undeploy(self, stack: str, timeout: float = DEFAULT_REMOVE_TIMEOUT) -> dict[str, Any]:
        """Remove the stack's services, containers, networks and configs; keep its volumes.

        Inside :meth:`discarding`, what the app holds is thrown away right after (a put-back
        of the known-good, a removal): its containers are removed at once
        (:meth:`drop_containers`) instead of stopped by the swarm, which gives each its
        grace period and, on a swarm network, a 2 s gossip delay first.
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def discarding(self) -> Iterator[None]:
        """Undeploys inside this block throw the app's data away after: no clean stop."""
        before, self._discarding = self._discarding, True
        try:
            yield
        finally:
            self._discarding = before

    def drop_if_discarding(self, stack: str) -> None:
        """Called by :meth:`undeploy` once the services are gone."""
        if self._discarding:
            self.drop_containers(stack)

    def remove(self, stack: str, timeout: float = DEFAULT_REMOVE_TIMEOUT) -> dict[str, Any]:
        raise NotImplementedError

    def state(self, stack: str):
        """The stack as :class:`._swarm.StackState` (read through the Docker SDK), with its
        volumes on the other node engines of ``CCCI_NODE_ENGINES`` too (:mod:`._remote`)."""
        from ansible_collections.coopcloud.ci.plugins.module_utils._remote import elsewhere

        state = read_stack(self.client, stack)
        volumes, containers = elsewhere(self.client, stack)
        state.volumes += [info for _engine, info in volumes]
        state.containers += containers
        return state

    def drop_containers(self, stack: str) -> list[str]:
        """Remove the stack's containers on this engine at once, as ``docker rm -f``.

        Only once its services are gone (else the swarm starts them again), and only when
        their data is thrown away after (:meth:`discarding`): the app gets no clean stop.
        A container the swarm removed meanwhile is no error.
        """
        api = self.client.api
        label = {"label": f"{NAMESPACE_LABEL}={stack}"}
        dropped = []
        for raw in api.containers(all=True, filters=label):
            if (raw.get("Labels") or {}).get(NAMESPACE_LABEL) != stack:
                continue
            try:
                api.remove_container(raw["Id"], force=True)
            except Exception as exc:  # gone already, or its removal under way
                text = str(exc).lower()
                if "no such container" not in text and "in progress" not in text:
                    raise DriverError(
                        f"container {raw['Id'][:12]} of stack {stack} cannot be removed: {exc}"
                    ) from exc
            dropped.append(raw["Id"])
        return dropped

    @staticmethod
    def undeploy_needed(state) -> bool:
        """Would :meth:`undeploy` change anything? Services, containers, networks or
        configs of the stack are left."""
        return bool(state.services or state.containers or state.networks or state.configs)

    @classmethod
    def remove_needed(cls, state) -> bool:
        """Would :meth:`remove` change anything? Also volumes or secrets are left."""
        return cls.undeploy_needed(state) or bool(state.volumes or state.secrets)

    def published_port(self, stack: str, service: str, port: int) -> int | None:
        """The host port on which service ``<stack>_<service>`` publishes container port
        ``port`` now, or ``None`` (no such service, or the port is not published)."""
        name = f"{stack}_{service}"
        for raw in self.client.api.services(filters={"name": name}):
            spec = raw.get("Spec") or {}
            # the name filter matches prefixes: keep the exact name of this stack only
            if spec.get("Name") != name or (spec.get("Labels") or {}).get(NAMESPACE_LABEL) != stack:
                continue
            for item in (spec.get("EndpointSpec") or {}).get("Ports") or []:
                if item.get("TargetPort") == port and item.get("PublishedPort"):
                    return int(item["PublishedPort"])
        return None

    def status(self, stack: str) -> dict[str, Any]:
        """Services, images, replicas, deployed version and commit, and a task summary."""
        return status_of(read_stack(self.client, stack))

    def volumes(self, stack: str) -> list[dict[str, Any]]:
        """The stack's volumes (by namespace label): name, short name, mountpoint, node."""
        return [v.summary() for v in read_stack(self.client, stack).volumes]

    # -- shared steps ------------------------------------------------------------------

    def ensure_secrets(self, stack: str, secrets: Mapping[str, str] | None) -> list[str]:
        """Create the missing ones, labelled with the stack namespace. Values never logged."""
        if not secrets:
            return []
        existing = {s.name for s in self.client.secrets.list()}
        created = []
        for name in sorted(secrets):
            if name in existing:
                continue
            value = secrets[name]
            if value is None or value == "":
                raise DriverError(f"secret {name} of stack {stack} is missing and has no value")
            try:
                self.client.secrets.create(
                    name=name, data=str(value).encode(), labels={NAMESPACE_LABEL: stack}
                )
            except Exception as exc:
                # The engine's message names the secret, never its value.
                raise DriverError(
                    f"secret {name} of stack {stack} cannot be created: {exc}"
                ) from exc
            created.append(name)
        return created

    def write_labels_overlay(
        self,
        workdir: str,
        compose_files: Sequence[str],
        version: str | None,
        commit: str | None,
        extra: Mapping[str, str] | None = None,
        publish: Mapping[str, Any] | None = None,
        stack: str = "",
        constraints: Sequence[str] | None = None,
    ) -> str | None:
        labels = dict(extra or {})
        if commit:
            labels[COMMIT_LABEL] = commit
        if version:
            labels[VERSION_LABEL] = version
        if not labels and not publish and not constraints:
            return None
        facts = compose_facts(workdir, compose_files)
        services = facts["services"]
        if publish:
            check_publish(publish, services, stack)
        # the version deployed overwrites the recipe's own label, as abra does
        app_labels = {f"coop-cloud.{stack}.version": version} if version and stack else {}
        hosted = set(facts["host_ports"]) | ({publish["service"]} if publish else set())
        stop_first = sorted(hosted & facts["start_first"])
        path = os.path.join(workdir, LABELS_OVERLAY)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(
                labels_overlay(
                    services,
                    facts["version"],
                    labels,
                    publish,
                    constraints,
                    app_labels=app_labels,
                    stop_first=stop_first,
                )
            )
        return LABELS_OVERLAY

    def deploy_and_wait(
        self,
        stack: str,
        cmd: list[str],
        *,
        cwd: str,
        env: Mapping[str, str],
        created: list[str],
        timeout: float,
        what: str,
    ) -> dict[str, Any]:
        """Run the deploy command ``cmd``, wait until the stack converged, and return the
        deploy result every driver gives. A :class:`DriverError` carries the command's
        evidence, the failed tasks and ``secrets_created``."""
        since = utc_now()
        start = time.monotonic()
        try:
            proc = self.run(cmd, cwd=cwd, env=env, what=what)
            try:
                waited = self.wait_converged(stack, timeout, since)
            except DriverError as exc:
                exc.cmd, exc.rc = cmd, proc.returncode
                exc.stdout, exc.stderr = proc.stdout, proc.stderr
                raise
        except DriverError as exc:
            exc.secrets_created = list(created)
            raise
        _faults.checkpoint(P_CONVERGED)
        return {
            "changed": True,
            "cmd": cmd,
            "rc": proc.returncode,
            "stdout": proc.stdout,
            "stderr": proc.stderr,
            "secrets_created": created,
            "elapsed": round(time.monotonic() - start, 3),
            "attempts": waited.attempts,
            "status": status_of(waited.last),
        }

    def wait_converged(self, stack: str, timeout: float, since) -> WaitResult:
        try:
            return wait_converged(self.client, stack, timeout, since, interval=self.interval)
        except SwarmError as exc:
            raise DriverError(
                exc.message, tasks=exc.tasks, state=exc.state, result=exc.result
            ) from exc

    def wait_gone(self, stack: str, timeout: float) -> WaitResult:
        try:
            return wait_gone(self.client, stack, timeout, interval=min(self.interval, 0.5))
        except SwarmError as exc:
            raise DriverError(exc.message, state=exc.state, result=exc.result) from exc

    def remove_secrets(self, stack: str) -> list[str]:
        """Delete the stack's secrets, matched only by the namespace label (the stack must
        be undeployed: swarm refuses to remove a secret a service uses)."""
        removed = []
        label = {"label": f"{NAMESPACE_LABEL}={stack}"}
        for secret in self.client.secrets.list(filters=label):
            if (secret.attrs.get("Spec", {}).get("Labels") or {}).get(NAMESPACE_LABEL) != stack:
                continue
            secret.remove()
            removed.append(secret.name)
        return sorted(removed)

    def remove_labelled(self, stack: str, timeout: float) -> dict[str, list[str]]:
        """Delete the stack's volumes and secrets, matched only by the namespace label."""
        removed: dict[str, list[str]] = {"volumes": [], "secrets": self.remove_secrets(stack)}
        from ansible_collections.coopcloud.ci.plugins.module_utils._remote import elsewhere

        label = {"label": f"{NAMESPACE_LABEL}={stack}"}
        deadline = time.monotonic() + timeout
        volumes = [
            v
            for v in self.client.volumes.list(filters=label)
            if (v.attrs.get("Labels") or {}).get(NAMESPACE_LABEL) == stack
        ]
        # the stack's volumes on the other nodes its tasks ran on
        volumes += [e.volumes.get(info.name) for e, info in elsewhere(self.client, stack)[0]]
        for volume in volumes:
            while True:
                try:
                    volume.remove()
                    break
                except Exception as exc:
                    # A container that used it may still be going away; then retry.
                    if "in use" not in str(exc) or time.monotonic() > deadline:
                        raise DriverError(
                            f"volume {volume.name} of stack {stack} cannot be removed: {exc}"
                        ) from exc
                    time.sleep(0.5)
            removed["volumes"].append(volume.name)
        removed["volumes"].sort()
        return removed


def status_of(state) -> dict[str, Any]:
    """A :class:`._swarm.StackState` as the status dict every driver returns."""
    ok, reason = converged(state)
    states: dict[str, int] = {}
    for svc in state.services:
        for task in svc.tasks:
            states[task.state] = states.get(task.state, 0) + 1
    return {
        "stack": state.stack,
        "deployed": state.deployed,
        "converged": ok,
        "reason": reason,
        "services": [s.summary() for s in state.services],
        "images": sorted({s.image for s in state.services}),
        "version": deployed_version(state),
        "commit": deployed_commit(state),
        "tasks": {"by_state": states, "failed": [t.summary() for t in failed_tasks(state)][-10:]},
        "volumes": [v.summary() for v in state.volumes],
        "secrets": list(state.secrets),
        "networks": list(state.networks),
    }


class StackDriver(Driver):
    """``docker stack deploy`` from a per-run checkout: the embedded default."""

    name = "stack"

    def __init__(
        self,
        client=None,
        runner: Runner | None = None,
        docker: str = "docker",
        interval: float = 1.0,
    ) -> None:
        super().__init__(client, runner, interval)
        self.docker = docker

    def deploy_argv(self, stack: str, compose_files: Sequence[str]) -> list[str]:
        argv = [
            self.docker,
            "stack",
            "deploy",
            "--detach=true",
            "--resolve-image",
            "never",
            "--prune",
        ]
        for rel in compose_files:
            argv += ["-c", rel]
        return [*argv, stack]

    def deploy(self, stack, workdir, compose_files, env, *args, **kwargs):
        files = list(compose_files)
        if not files:
            raise DriverError(f"stack {stack} has no compose files to deploy")
        return super().deploy(stack, workdir, files, env, *args, **kwargs)

    def launch(self, stack, workdir, files, overlay, env, version):
        if overlay:
            files = [*files, overlay]
        proc_env = {**os.environ, **{k: str(v) for k, v in env.items()}}
        return self.deploy_argv(stack, files), proc_env, f"docker stack deploy of {stack}"

    def undeploy(self, stack, timeout=DEFAULT_REMOVE_TIMEOUT):
        state = self.state(stack)  # containers on every node
        if not self.undeploy_needed(state):
            return {"changed": False, "removed": {}}
        removed: dict[str, list[str]] = {"services": [s.name for s in state.services]}
        if state.services:
            cmd = [self.docker, "service", "rm", *removed["services"]]
            self.run(cmd, what=f"removing the services of stack {stack}")
        self.drop_if_discarding(stack)

        def no_containers() -> _Observation:
            now = self.state(stack)
            left = len(now.services) + len(now.containers)
            return _Observation(left == 0, f"{left} services and containers of {stack} left", now)

        try:
            with StackEvents(self.client, stack) as events:
                wait_until(
                    no_containers,
                    timeout,
                    min(self.interval, 0.5),
                    what=f"the services of stack {stack} to stop",
                    sleep=events.sleep,
                )
        except SwarmError as exc:
            raise DriverError(exc.message, state=exc.state, result=exc.result) from exc
        now = read_stack(self.client, stack)
        deadline = time.monotonic() + timeout
        for kind, names in (("network", now.networks), ("config", now.configs)):
            if not names:
                continue
            cmd = [self.docker, kind, "rm", *names]
            while True:
                try:
                    self.run(cmd, what=f"removing the {kind}s of stack {stack}")
                    break
                except DriverError as exc:
                    # Endpoints and references go away a moment after the containers.
                    busy = "active endpoints" in exc.stderr or "in use" in exc.stderr
                    if not busy or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
                    names = getattr(read_stack(self.client, stack), f"{kind}s")
                    if not names:
                        break
                    cmd = [self.docker, kind, "rm", *names]
            removed[f"{kind}s"] = list(getattr(now, f"{kind}s"))
        self.wait_gone(stack, timeout)
        return {"changed": True, "removed": removed}

    def remove(self, stack, timeout=DEFAULT_REMOVE_TIMEOUT):
        with self.discarding():
            undeployed = self.undeploy(stack, timeout)
        removed = self.remove_labelled(stack, timeout)
        changed = undeployed["changed"] or bool(removed["volumes"] or removed["secrets"])
        return {"changed": changed, "removed": {**undeployed["removed"], **removed}}


DRIVERS = ("stack", "abra")


def get_driver(name: str, **kwargs) -> Driver:
    if name == "stack":
        return StackDriver(**kwargs)
    if name == "abra":
        from ansible_collections.coopcloud.ci.plugins.module_utils._abra import AbraDriver

        return AbraDriver(**kwargs)
    raise DriverError(f"driver {name!r} is unknown: use one of {', '.join(DRIVERS)}")
