# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A canonical's data on another swarm node. PRIVATE to the collection: no compatibility
promises.

A volume lives on the node where its task ran (SPEC §7), and a canonical is pinned to
one node for its whole life. When that node is not the one the plays talk to, its
volumes cannot be read from this machine's file system: they are reached through that
node's own Docker API (its address from ``CCCI_NODE_ENGINES``, one entry per node, as
the inventory's node hosts give it), with a short-lived helper container on that node
that mounts the volume and is never started. The engine streams the volume's tree as a
tar (``GET /containers/{id}/archive``) and extracts one into it (``PUT``); this process
scans, hashes and stores the stream exactly as the local path does GNU tar's output, so
the snapshot store, its manifest, its verification and its hostile-archive rules are
the same. See docs/multinode.md.

Differences from the local path, on purpose and documented: the engine's tar keeps
modification times to the second (the digests of a remote canonical are those of its
archives, taken and compared through the same path), and a restore swaps the staged
tree in by two renames run by one started helper container on the node (busybox has no
``renameat2`` exchange): once started it runs to its end whatever happens to this
process, and only the engine dying between the two renames can interrupt it, which the
next restore of that volume completes (:meth:`RemoteAppSnapshot.recover`).
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._archive import (
    CHUNK,
    BackgroundDigests,
    SnapshotError,
    TarScanner,
    TreeSink,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._engine import (
    NODE_ENGINES_ENV,
    node_engines,
    unreachable,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    AppSnapshot,
    SnapshotStore,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    NAMESPACE_LABEL,
    VolumeInfo,
    read_stack,
    volume_info,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._volume_files import file_name

ENGINES_ENV = NODE_ENGINES_ENV
HELPER_ENV = "CCCI_HELPER_IMAGE"
DEFAULT_HELPER = "busybox:stable"
ARCHIVER = "docker-engine-api"
MOUNT = "/ccci-volume"
# a restore works in the volume's own directory on its node (beside ``_data``, on the
# same file system, so each rename is atomic), bound into a helper at PARENT
PARENT = "/ccci-parent"
STAGING, STAGED, OLD = ".ccci-staging", ".ccci-staged", ".ccci-old"
HELPER_LABEL = "coopcloud.ci.helper"
# put an interrupted swap right (the staged tree in, else the old one back), then clear
RECOVER = (
    f"cd {PARENT} && {{ [ -d _data ] || [ ! -d {STAGED} ] || mv {STAGED} _data; }} && "
    f"{{ [ -d _data ] || [ ! -d {OLD} ] || mv {OLD} _data; }} && "
    f"rm -rf {STAGING} {STAGED} {OLD}"
)
PREPARE = f"{RECOVER} && mkdir -m 0700 {STAGING}"
# the staged tree is complete once renamed; then old out, new in, old removed
SWAP = (
    f"cd {PARENT} && mv {STAGING} {STAGED} && mv _data {OLD} && mv {STAGED} _data && rm -rf {OLD}"
)
(P_REMOTE_STAGED,) = _faults.register_all(
    {
        "remote.staged": "remote restore: every archive extracted beside its volume on the "
        "node, no volume swapped yet"
    }
)


class NodeError(SnapshotError):
    """The node that holds a canonical's data cannot be used. One sentence for the user."""


def engines(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``node hostname -> Docker engine URL`` from ``CCCI_NODE_ENGINES`` (a JSON object)."""
    try:
        return node_engines(environ)
    except ValueError as exc:
        raise NodeError(str(exc)) from None


def way_back(recipe: str, host: str) -> str:
    return (
        f"bring node {host} back (docker node update --availability active {host}; start "
        "its engine or rejoin it), or give up this canonical on purpose: warm_canonical "
        f"state=absent confirm=true for {recipe}, and a green cold run seeds it afresh "
        "(docs/multinode.md)"
    )


def pinned_node(manager: Any, node_id: str, recipe: str) -> dict[str, str]:
    """The node a canonical is pinned to, as the swarm's manager sees it; refuses a node
    that is gone, down or drained: its data lives there only, and no second copy is made."""
    import docker.errors

    try:
        raw = manager.api.inspect_node(node_id)
    except docker.errors.NotFound:
        raise NodeError(
            f"the canonical of {recipe} is pinned to swarm node {node_id}, which is gone "
            "from the swarm: its volumes and known-good data lived there only, so nothing "
            f"was done and no copy is made elsewhere; {way_back(recipe, node_id)}"
        ) from None
    host = (raw.get("Description") or {}).get("Hostname") or node_id
    state = (raw.get("Status") or {}).get("State", "unknown")
    availability = (raw.get("Spec") or {}).get("Availability", "active")
    why = ""
    if state != "ready":
        why = f"{state} (its engine does not answer the swarm)"
    elif availability != "active":
        why = f"{availability}ed" if availability == "drain" else availability
    if why:
        raise NodeError(
            f"the canonical of {recipe} is pinned to swarm node {host} ({node_id[:12]}), "
            f"which is {why}: its volumes and known-good data live on that node only, so "
            f"nothing was done and no copy is made elsewhere; {way_back(recipe, host)}"
        )
    return {"id": node_id, "hostname": host}


def node_by_hostname(manager: Any, host: str, recipe: str) -> str:
    """The id of the swarm node named ``host``."""
    for raw in manager.api.nodes(filters={"name": host}):
        if (raw.get("Description") or {}).get("Hostname") == host:
            return raw["ID"]
    raise NodeError(
        f"the known-good data of {recipe} was taken on node {host}, which is not in this "
        "swarm: seed the canonical from a cold run on a node of this swarm"
    )


def node_client(host: str, recipe: str, environ: Mapping[str, str] | None = None) -> Any:
    """A Docker SDK client for the engine of node ``host``."""
    import docker

    url = engines(environ).get(host)
    if not url:
        raise NodeError(
            f"the canonical of {recipe} is pinned to swarm node {host}, and this machine "
            f"does not know how to reach that node's engine: add it to {ENGINES_ENV} (a JSON "
            f'object such as {{"{host}": "ssh://root@{host}"}}; docs/multinode.md)'
        )
    return docker.DockerClient(base_url=url, use_ssh_client=url.startswith("ssh://"))


def engine_errors(host: str, url: str, what: str):
    """Turns a failure of node ``host``'s engine (it does not answer, restarts, or breaks
    a stream off) into one sentence naming that engine. The canonical's status, written
    before the step, says what was under way; the next run restores it before use."""
    import docker.errors
    import requests.exceptions

    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise NodeError(
                f"the Docker engine of node {host} ({url}) failed while {what}: {exc}; the "
                "canonical's status says what was under way, and the next run restores its "
                "known-good before use once that engine answers again",
                # gone, not erring: the stages stop the run on it (_engine)
                **({"engine_fault": True} if unreachable(exc) else {}),
            ) from None

    return guard()


def _guarded(what: str):
    """Method decorator: :func:`engine_errors` around the call, naming ``what``."""

    def wrap(method):
        def inner(self, *args, **kwargs):
            with engine_errors(self.host, self.url, what):
                return method(self, *args, **kwargs)

        inner.__name__, inner.__doc__ = method.__name__, method.__doc__
        return inner

    return wrap


class RemoteAppSnapshot(AppSnapshot):
    """:class:`._snapshot.AppSnapshot` for volumes on another node, through its engine.

    ``client`` is the swarm manager's engine (services); ``engine`` the node's (volumes,
    containers). A volume is named by its name on that node where the local path names
    its mountpoint.
    """

    def __init__(
        self, manager: Any, engine: Any, store: SnapshotStore, domain: str, host: str
    ) -> None:
        super().__init__(manager, store, domain)
        self.engine = engine
        self.host = host
        self.url = engines().get(host) or engine.api.base_url  # for messages
        self.helper_image = os.environ.get(HELPER_ENV) or DEFAULT_HELPER

    # reading the engines ----------------------------------------------------------------
    @_guarded("listing the app's volumes and containers")
    def _state(self) -> Any:
        state = read_stack(self.client, self.stack)
        label = {"label": f"{NAMESPACE_LABEL}={self.stack}"}
        raw = (self.engine.api.volumes(filters=label) or {}).get("Volumes") or []
        state.volumes = sorted(
            (volume_info(v, self.stack, self.host) for v in raw), key=lambda v: v.name
        )
        state.containers = [c["Id"] for c in self.engine.api.containers(all=True, filters=label)]
        return state

    def node_name(self) -> str:
        return self.host

    def local_mountpoint(self, info: Any, write: bool = False) -> str:
        # the volume's name on its node: the helper container mounts it, to read or write
        if info.driver != "local":
            raise SnapshotError(
                f"volume {info.name} on node {self.host} uses the {info.driver!r} driver; "
                "only local volumes can be snapshotted"
            )
        return info.name

    # the helper container ---------------------------------------------------------------
    def _image(self) -> str:
        import docker.errors

        try:
            self.engine.images.get(self.helper_image)
        except docker.errors.ImageNotFound:
            try:
                self.engine.images.pull(self.helper_image)
            except docker.errors.APIError as exc:
                raise SnapshotError(
                    f"the helper image {self.helper_image} is not on node {self.host} and "
                    f"cannot be pulled ({exc}): load it there, or name one that is in "
                    f"{HELPER_ENV}"
                ) from None
        return self.helper_image

    @contextlib.contextmanager
    def helper(self, source: str, bind: str = MOUNT) -> Iterator[str]:
        """A created (never started) container on the node with ``source`` (a volume's
        name, or a volume's directory) bound at ``bind``."""
        api = self.engine.api
        cid = api.create_container(
            self._image(), ["true"], labels={HELPER_LABEL: self.stack},
            host_config=self._host_config(source, bind),
        )["Id"]  # fmt: skip
        try:
            yield cid
        finally:
            api.remove_container(cid, force=True)

    def _stream(self, volume: str) -> Iterator[bytes]:
        with self.helper(volume) as cid:
            stream, _stat = self.engine.api.get_archive(cid, f"{MOUNT}/.", chunk_size=CHUNK)
            yield from stream

    # digests, archives ------------------------------------------------------------------
    def _scan(self, volume: str, out: Any = None) -> dict[str, Any]:
        label = f"volume {volume} on node {self.host}"
        scanner = TarScanner(label, self.store.max_members, digests=True, inline=False)
        digest = BackgroundDigests(TreeSink())
        total = 0
        try:
            for chunk in self._stream(volume):
                scanner.feed(chunk)
                digest.update(chunk, scanner.take_events())
                if out is not None:
                    out.write(chunk)
                total += len(chunk)
            summary = scanner.finish()
            sha256 = digest.hexdigest()
        except BaseException:
            digest.close()
            raise
        return {"sha256": sha256, "bytes": total, **summary, **digest.sink.digests()}

    @_guarded("reading a volume's tree")
    def equal(self, volume: str, entry: Mapping[str, Any]) -> bool:
        return self._scan(volume)["tree_digest"] == entry.get("tree_digest")

    @_guarded("streaming a volume into the snapshot")
    def archive(self, volume: str, dest: str, short: str) -> dict[str, Any]:
        """Write ``volume``'s tree from the node into ``dest`` (an archive of the store)."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb", buffering=CHUNK) as out:
            entry = self._scan(volume, out)
            out.flush()
            os.fsync(out.fileno())
        return {
            "sha256": entry["sha256"],
            "bytes": entry["bytes"],
            "files": entry["files"],
            "members": entry["members"],
            "content_bytes": entry["content_bytes"],
            "tree_digest": entry["tree_digest"],
            "meta_digest": entry["meta_digest"],
            "source": f"{self.host}:{volume}",
        }

    def take(self, mounts: Mapping[str, str], **manifest: Any) -> dict[str, Any]:
        return self.store.take(
            mounts, archive=self.archive, archiver=ARCHIVER, **manifest, extra={"node": self.host}
        )

    # restoring --------------------------------------------------------------------------
    @_guarded("creating a volume")
    def create_volume(self, short: str) -> str:
        name = f"{self.stack}_{short}"
        self.engine.volumes.create(name=name, driver="local", labels={NAMESPACE_LABEL: self.stack})
        return name

    @_guarded("restoring the known-good into the volumes")
    def restore(
        self, targets: Mapping[str, str | None], create: Callable[[str], str] | None = None
    ) -> dict[str, Any]:
        """Make each named volume on the node exactly its archive, as the local path does:
        every archive is verified first; each is then extracted by the node's engine into
        a staging directory beside its volume's ``_data`` (the staged root given the
        archive's owner, mode and time), and only once every volume is staged is each
        swapped in (:data:`SWAP`). A kill before the swap leaves the old trees whole, one
        after it the new ones."""
        manifest = self.store.manifest()
        self.store.verify()  # sha256, size and every member header, before any write
        names = {
            short: name
            if name is not None
            else (create(short) if create else self.create_volume(short))
            for short, name in sorted(targets.items())
        }
        parents = {short: self._volume_dir(name) for short, name in names.items()}
        for short in sorted(names):
            entry = manifest["volumes"][short]
            self._run(parents[short], PREPARE)
            path = os.path.join(self.store.path, entry["archive"])
            with self.helper(parents[short], PARENT) as cid, open(path, "rb") as handle:
                with tarfile.open(fileobj=handle, mode="r:") as head:
                    root = head.next()
                handle.seek(0)
                if not self.engine.api.put_archive(cid, f"{PARENT}/{STAGING}", handle):
                    raise SnapshotError(f"node {self.host} refused the archive for {names[short]}")
                if root is not None and root.name in (".", "./"):
                    self.engine.api.put_archive(cid, "/", _root_entry(root, f"{PARENT}/{STAGING}"))
        _faults.checkpoint(P_REMOTE_STAGED)
        for short in sorted(names):
            self._run(parents[short], SWAP)
        done = {
            short: {
                "target": f"{self.host}:{name}",
                "tree_digest": manifest["volumes"][short]["tree_digest"],
            }
            for short, name in names.items()
        }
        return {"manifest_digest": self.store.manifest_digest(), "volumes": done}

    def plan_restore(self, only: list[str] | None, force: bool) -> dict[str, Any]:
        # a swap the engine broke off between its two renames is put right before the
        # volumes are read (their ``_data`` may be the one missing)
        self.recover()
        return super().plan_restore(only, force)

    @_guarded("putting an interrupted restore right")
    def recover(self) -> None:
        """Remove the stack's finished helpers left by a killed run, and put each of its
        volumes' directories right (:data:`RECOVER`) when a restore left work there."""
        api = self.engine.api
        for c in api.containers(all=True, filters={"label": f"{HELPER_LABEL}={self.stack}"}):
            if c.get("State") != "running":
                api.remove_container(c["Id"], force=True)
        label = {"label": f"{NAMESPACE_LABEL}={self.stack}"}
        for v in (api.volumes(filters=label) or {}).get("Volumes") or []:
            if v.get("Driver") == "local" and os.path.basename(v.get("Mountpoint", "")) == "_data":
                self._run(os.path.dirname(v["Mountpoint"]), RECOVER)

    def _volume_dir(self, name: str) -> str:
        mount = self.engine.api.inspect_volume(name).get("Mountpoint", "")
        if os.path.basename(mount) != "_data":
            raise SnapshotError(
                f"volume {name} on node {self.host} has mountpoint {mount!r}, not a local "
                "volume's .../_data: it cannot be restored atomically"
            )
        return os.path.dirname(mount)

    def _host_config(self, source: str, bind: str = PARENT) -> Any:
        return self.engine.api.create_host_config(binds={source: {"bind": bind, "mode": "rw"}})

    def _run(self, parent: str, script: str, bind: str = PARENT) -> None:
        """Run ``script`` in a started helper on the node with ``parent`` (a volume's
        directory, or a volume's name) bound at ``bind``; once started it runs to its end
        on the node, whatever befalls this process."""
        api = self.engine.api
        cid = api.create_container(
            self._image(), ["sh", "-c", script], labels={HELPER_LABEL: self.stack},
            host_config=self._host_config(parent, bind),
        )["Id"]  # fmt: skip
        try:
            api.start(cid)
            code = api.wait(cid).get("StatusCode", 1)
            if code != 0:
                out = api.logs(cid).decode(errors="replace").strip()[-400:]
                raise SnapshotError(
                    f"on node {self.host}, the helper for {parent} exited {code}: {out}"
                )
        finally:
            api.remove_container(cid, force=True)

    # one small file in a volume (the upgrade stage's marker) ------------------------------
    @_guarded("writing a file into a volume")
    def write_file(self, volume: str, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(file_name(name))
        info.size, info.mode = len(data), 0o644
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info, io.BytesIO(data))
        with self.helper(volume) as cid:
            if not self.engine.api.put_archive(cid, MOUNT, out.getvalue()):
                raise SnapshotError(f"node {self.host} refused to write {name} into {volume}")

    @_guarded("reading a file from a volume")
    def read_file(self, volume: str, name: str) -> bytes | None:
        """The file's bytes, or None when it is not there."""
        import docker.errors

        with self.helper(volume) as cid:
            try:
                stream, _stat = self.engine.api.get_archive(cid, f"{MOUNT}/{file_name(name)}")
            except docker.errors.NotFound:
                return None
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream)), mode="r:") as tar:
                member = tar.next()
                handle = tar.extractfile(member) if member is not None else None
                return handle.read() if handle is not None else None

    @_guarded("removing a file from a volume")
    def remove_file(self, volume: str, name: str) -> None:
        self._run(volume, f"rm -f {MOUNT}/{file_name(name)}", bind=MOUNT)


def _root_entry(root: tarfile.TarInfo, path: str = MOUNT) -> bytes:
    """A one-member tar that gives the tree's root (``path`` in the helper) its metadata:
    the engine skips a ``.`` member, but applies owner, mode and time to a named directory."""
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type = tarfile.DIRTYPE
    info.mode, info.uid, info.gid, info.mtime = root.mode, root.uid, root.gid, root.mtime
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info)
    return out.getvalue()


# --- the other nodes' engines: volumes of a stack wherever its tasks ran -------------------


def other_engines(client: Any, environ: Mapping[str, str] | None = None) -> list[tuple[str, Any]]:
    """``(hostname, client)`` of every node engine in ``CCCI_NODE_ENGINES`` but ``client``'s."""
    known = engines(environ)
    if not known:
        return []
    import docker

    here = (client.info() or {}).get("Name", "")
    return [
        (host, docker.DockerClient(base_url=url, use_ssh_client=url.startswith("ssh://")))
        for host, url in sorted(known.items())
        if host != here
    ]


def elsewhere(client: Any, stack: str) -> tuple[list[tuple[Any, VolumeInfo]], list[str]]:
    """The stack's volumes (each with its engine) and containers on the other node engines."""
    label = {"label": f"{NAMESPACE_LABEL}={stack}"}
    volumes, containers = [], []
    for host, engine in other_engines(client):
        for v in (engine.api.volumes(filters=label) or {}).get("Volumes") or []:
            if (v.get("Labels") or {}).get(NAMESPACE_LABEL) == stack:
                volumes.append((engine, volume_info(v, stack, host)))
        containers += [c["Id"] for c in engine.api.containers(all=True, filters=label)]
    return volumes, containers


def app_snapshot(client: Any, store: SnapshotStore, domain: str) -> AppSnapshot:
    """The app's snapshot view where its volumes are: this engine's node when they are
    there, else the one other node that holds them (the node its tasks ran on)."""
    from ansible_collections.coopcloud.ci.plugins.module_utils._names import stack_name

    local = AppSnapshot(client, store, domain)
    if local.volumes():
        return local
    nodes = sorted({info.node for _engine, info in elsewhere(client, stack_name(domain))[0]})
    if len(nodes) > 1:
        raise SnapshotError(
            f"app {domain} has volumes on several nodes ({', '.join(nodes)}): a snapshot "
            "is taken on one node; remove the strays or pin the app to one node"
        )
    if not nodes:
        return local  # its own sentence: no volumes on this node
    host = nodes[0]
    return RemoteAppSnapshot(client, node_client(host, store.recipe), store, domain, host)
