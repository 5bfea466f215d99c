# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Known-good volume snapshots (WC3). PRIVATE to the collection: no compatibility promises.

One slot per recipe, ``<state_dir>/<recipe>/snapshot/``: ``manifest.json`` and one
uncompressed POSIX tar per volume (``<short-name>.tar``). See docs/snapshots.md for the
why; the short version:

* **take** runs GNU tar (``--sort=name --format=posix --numeric-owner``) on the volume's
  directory and streams its output through this process: every byte is written to the
  archive and parsed (every member header is checked against the hostile-archive rules,
  and a tree digest of the volume is computed from the members, equal to
  :func:`tree_digest` of the directory); each byte is hashed once, file contents for the
  tree digest and every other byte for the archive's ``headers_sha256``. Memory stays
  flat: one 1 MiB buffer. The archives and the manifest are written into ``snapshot.tmp-<random>``,
  fsynced, and swapped in by one atomic ``renameat2(RENAME_EXCHANGE)`` (or, where the
  kernel lacks it, two renames with ``snapshot.old-<random>``); :meth:`recover` puts
  things right after a crash at any point.
* **restore** streams each archive once through this process into GNU tar, which
  extracts it into a staging directory beside the target (same filesystem): every byte
  is hashed on its way (size, ``headers_sha256`` and tree digest against the manifest;
  ``sha256`` of the whole archive for one recorded before those existed) and every
  member header is checked against the hostile rules *before* the chunk holding it reaches tar. Only when
  every archive has passed is each staging directory exchanged atomically with its
  target, and the replaced tree removed; a corrupt or hostile archive leaves the targets
  untouched (its staging directory goes). A volume is therefore always either its old
  tree or the snapshot's. When a volume must first be created, every archive is verified
  before anything is created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._archive import (  # noqa: F401
    CHUNK,
    DEFAULT_MAX_MEMBERS,
    BackgroundDigests,
    CorruptSnapshotError,
    HostileArchiveError,
    SnapshotError,
    TarScanner,
    TreeSink,
    meta_digest,
    tree_digest,
    tree_digests,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._archive_io import (
    extract_archive,
    verify_archive,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._fsops import (
    TAR_CREATE,
    TAR_ENV,
    TAR_EXTRACT,
    clean_staging,
    exchange,
    gnu_tar,
    remove_tree,
    staging_name,
    tar_version,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import validate_volume_short
from ansible_collections.coopcloud.ci.plugins.module_utils._overlay import dirs_of
from ansible_collections.coopcloud.ci.plugins.module_utils._progress import Progress
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    SNAPSHOT_NAME,
    RecipePaths,
    dumps,
    fsync_dir,
    stamp,
    write_synced,
)

FORMAT = 1
MANIFEST = "manifest.json"
SLOT = SNAPSHOT_NAME

# Crash points (tests/reliability kills the process at each; see _faults).
(
    P_VOLUME_ARCHIVED,
    P_WRITTEN,
    P_MID_SWAP,
    P_SWAPPED,
    P_REMOVING,
    P_VERIFIED,
    P_STAGED,
    P_SWAPPED_ONE,
    P_RESTORED,
) = _faults.register_all(
    {
        "snapshot.volume-archived": "take: one archive written and fsynced, others not yet",
        "snapshot.written": "take: all archives and the manifest fsynced, not yet swapped in",
        "snapshot.mid-swap": "take (two-rename fallback): old moved aside, new not yet in place",
        "snapshot.swapped": "take: new snapshot in place, replaced one not yet removed",
        "snapshot.removing": "absent: slot moved aside, not yet deleted",
        "restore.verified": "restore: every archive verified, no volume swapped yet",
        "restore.staged": "restore: every archive extracted into staging, no volume swapped yet",
        "restore.swapped-one": "restore: the first volume swapped, the others not yet",
        "restore.swapped": "restore: every volume swapped, the replaced trees not yet removed",
    }
)


# --- the store ------------------------------------------------------------------------


class SnapshotStore:
    """The one last-good snapshot of ``recipe`` under ``state_dir``."""

    def __init__(self, state_dir: str, recipe: str, max_members: int = DEFAULT_MAX_MEMBERS) -> None:
        paths = RecipePaths.of(state_dir, recipe)
        self.state_dir, self.recipe = paths.state_dir, paths.recipe
        self.max_members = int(max_members)
        self.base, self.path = paths.directory, paths.snapshot
        self.manifest_path = os.path.join(self.path, MANIFEST)

    # reading ----------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(self._live_manifest_path())

    def _live_dir(self) -> str:
        """The complete snapshot: ``snapshot/``, or the one a crashed swap left aside."""
        if os.path.isdir(self.path):
            return self.path
        aside = self._aside_candidates()
        return aside[0] if aside else self.path

    def _live_manifest_path(self) -> str:
        return os.path.join(self._live_dir(), MANIFEST)

    def manifest_bytes(self) -> bytes:
        path = self._live_manifest_path()
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise SnapshotError(
                f"no snapshot of recipe {self.recipe!r}: {self.path} does not exist"
            ) from None

    def manifest(self) -> dict[str, Any]:
        raw = self.manifest_bytes()
        path = self._live_manifest_path()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise CorruptSnapshotError(
                f"snapshot manifest {path} is not valid JSON ({exc}): it is corrupt"
            ) from exc
        _check_manifest(data, self.recipe, path)
        return data

    def manifest_digest(self) -> str:
        return hashlib.sha256(self.manifest_bytes()).hexdigest()

    def info(self) -> dict[str, Any]:
        if not self.exists():
            return {"exists": False, "path": self.path, "manifest": {}, "manifest_digest": ""}
        return {
            "exists": True,
            "path": self.path,
            "manifest": self.manifest(),
            "manifest_digest": self.manifest_digest(),
        }

    def verify(self) -> dict[str, Any]:
        """Check every archive (size, digests, member headers) against the manifest."""
        manifest = self.manifest()
        live = self._live_dir()
        result = {}
        for short, entry in sorted(manifest["volumes"].items()):
            result[short] = self._verify_archive(os.path.join(live, entry["archive"]), entry)
        return {"manifest_digest": self.manifest_digest(), "volumes": result}

    def _verify_archive(self, path: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        return verify_archive(path, entry, self.max_members)

    # recovery ---------------------------------------------------------------------
    def _aside_candidates(self) -> list[str]:
        """``snapshot.old-*`` dirs holding a parseable manifest, newest first."""
        found = []
        if not os.path.isdir(self.base):
            return []
        for name in os.listdir(self.base):
            if not name.startswith(f"{SLOT}.old-"):
                continue
            path = os.path.join(self.base, name)
            try:
                with open(os.path.join(path, MANIFEST), "rb") as handle:
                    taken = json.loads(handle.read()).get("taken_at", "")
            except (OSError, ValueError, AttributeError):
                continue
            found.append((taken, path))
        return [p for _, p in sorted(found, reverse=True)]

    def recover(self) -> list[str]:
        """Put the slot right after a crash; returns what was done (for logs).

        ``snapshot/`` present: every leftover (``.tmp-``, ``.old-``, ``.del-``) goes.
        ``snapshot/`` missing: a crash between the two renames of the fallback swap left
        the previous snapshot in ``snapshot.old-*``: it is moved back. A half-written new
        snapshot (``snapshot.tmp-*``) is never promoted.
        """
        actions: list[str] = []
        if not os.path.isdir(self.base):
            return actions
        if not os.path.isdir(self.path):
            aside = self._aside_candidates()
            if aside:
                os.rename(aside[0], self.path)
                fsync_dir(self.base)
                actions.append(f"moved {aside[0]} back to {self.path}")
        for name in sorted(os.listdir(self.base)):
            if name.startswith((f"{SLOT}.tmp-", f"{SLOT}.old-", f"{SLOT}.del-")):
                remove_tree(os.path.join(self.base, name))
                actions.append(f"removed leftover {name}")
        return actions

    # taking -----------------------------------------------------------------------
    def take(
        self,
        volumes: Mapping[str, str],
        *,
        version: str | None = None,
        commit: str | None = None,
        domain: str | None = None,
        stack: str | None = None,
        extra: Mapping[str, Any] | None = None,
        archive: Callable[[str, str, str], dict[str, Any]] | None = None,
        archiver: str | None = None,
    ) -> dict[str, Any]:
        """Archive each ``short name -> directory`` and swap the new snapshot in.

        ``archive(source, dest, short)`` (with ``archiver`` naming it in the manifest)
        writes one volume's archive from another source than a local directory: the
        remote-node data path (:mod:`._remote`) streams it from that node's engine.
        """
        if not volumes:
            raise SnapshotError("nothing to snapshot: no volumes given")
        for short, directory in volumes.items():
            _check_short(short)
            if archive is None and not os.path.isdir(directory):
                raise SnapshotError(f"volume {short!r}: {directory} is not a directory")
        if archive is None:
            tar = gnu_tar()
            archiver = tar_version(tar)  # refuses a tar that is not GNU tar, before anything

            def archive(source: str, dest: str, short: str) -> dict[str, Any]:
                return self._archive(tar, source, dest, short)

        os.makedirs(self.base, mode=0o700, exist_ok=True)
        self.recover()
        tmp = os.path.join(self.base, f"{SLOT}.tmp-{secrets.token_hex(4)}")
        os.mkdir(tmp, 0o700)
        try:
            entries: dict[str, Any] = {}
            for short in sorted(volumes):
                entries[short] = {
                    "archive": f"{short}.tar",
                    **archive(volumes[short], os.path.join(tmp, f"{short}.tar"), short),
                }
                _faults.checkpoint(P_VOLUME_ARCHIVED)
            manifest = {
                "format": FORMAT,
                "recipe": self.recipe,
                "source": {"domain": domain, "stack": stack},
                "version": version,
                "commit": commit,
                "taken_at": stamp(),
                "archiver": archiver,
                "volumes": entries,
                **(dict(extra) if extra else {}),
            }
            write_synced(os.path.join(tmp, MANIFEST), dumps(manifest))
            fsync_dir(tmp)
            _faults.checkpoint(P_WRITTEN)
            self._swap_in(tmp)
        except BaseException:
            remove_tree(tmp)
            raise
        return manifest

    def _archive(self, tar: str, directory: str, dest: str, short: str) -> dict[str, Any]:
        """GNU tar writes ``dest``; this process follows the growing file as it is written.

        Following the file (rather than piping tar through this process) leaves the
        writing to tar exactly as a plain ``tar -cf`` does it, and hashes the bytes that
        are really on disk. The header scan runs in this thread, the digests in a second
        one (hashlib releases the GIL): each byte is hashed once, file contents by their
        file's sha256 (recorded in the tree digest), every other byte by ``headers_sha256``.
        """
        label = f"volume {short!r} ({directory})"
        scanner = TarScanner(label, self.max_members, digests=True, inline=False)
        digest = BackgroundDigests(TreeSink(), whole=False)
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            proc = subprocess.Popen(
                [tar, *TAR_CREATE, "--directory", directory, "."],
                stdout=out,
                stderr=errors,
                env=TAR_ENV,
            )
        except BaseException:
            digest.close()
            errors.close()
            raise
        finally:
            os.close(out)
        total = 0
        progress = Progress(f"snapshot of volume {short}")
        try:
            with open(dest, "rb", buffering=0) as handle:
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk:
                        if proc.poll() is None:
                            time.sleep(0.002)
                            progress.update(total)
                            continue
                        chunk = handle.read(CHUNK)  # what tar wrote just before it exited
                        if not chunk:
                            break
                    scanner.feed(chunk)
                    digest.update(chunk, scanner.take_events())
                    total += len(chunk)
                    progress.update(total)
                rc = proc.returncode
                if rc != 0:
                    errors.seek(0)
                    err = errors.read().decode(errors="replace").strip()
                    raise SnapshotError(
                        f"tar could not archive {label}: rc={rc}, stderr: {err[-2000:]}"
                    )
                summary = scanner.finish()
                os.fsync(handle.fileno())
            summary.update(digest.digests())
            progress.finish()
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            digest.close()
            raise
        finally:
            errors.close()
        return {
            "headers_sha256": summary["headers_sha256"],
            "bytes": total,
            "files": summary["files"],
            "members": summary["members"],
            "content_bytes": summary["content_bytes"],
            "tree_digest": summary["tree_digest"],
            "meta_digest": summary["meta_digest"],
            "source": directory,
        }

    def _swap_in(self, tmp: str) -> None:
        if os.path.isdir(self.path):
            if exchange(tmp, self.path):
                fsync_dir(self.base)
                _faults.checkpoint(P_SWAPPED)
                remove_tree(tmp)  # now holds the replaced snapshot
                return
            old = os.path.join(self.base, f"{SLOT}.old-{secrets.token_hex(4)}")
            os.rename(self.path, old)
            fsync_dir(self.base)
            _faults.checkpoint(P_MID_SWAP)
            os.rename(tmp, self.path)
            fsync_dir(self.base)
            _faults.checkpoint(P_SWAPPED)
            remove_tree(old)
            return
        os.rename(tmp, self.path)
        fsync_dir(self.base)
        _faults.checkpoint(P_SWAPPED)

    # removing ---------------------------------------------------------------------
    def remove(self) -> bool:
        """Delete the snapshot (moved aside first, so a crash never leaves half of one)."""
        if not os.path.isdir(self.base):
            return False
        self.recover()
        if not os.path.isdir(self.path):
            return False
        gone = os.path.join(self.base, f"{SLOT}.del-{secrets.token_hex(4)}")
        os.rename(self.path, gone)
        fsync_dir(self.base)
        _faults.checkpoint(P_REMOVING)
        remove_tree(gone)
        return True

    # restoring --------------------------------------------------------------------
    def restore(
        self,
        targets: Mapping[str, str | None],
        create: Callable[[str], str] | None = None,
    ) -> dict[str, Any]:
        """Make each ``short name -> directory`` exactly equal to its archive.

        Each archive is extracted into a staging directory beside its target while it is
        verified (size, digests, every member header checked before GNU tar sees it, each
        byte hashed once); only when every archive has passed are the staging
        directories exchanged with their targets, and the replaced trees removed. A
        refusal removes the staging directories: no target is touched. A target of
        ``None`` is a volume that does not exist yet: ``create(short)`` makes it and
        returns its directory, only once every archive has been verified whole (a corrupt
        or hostile snapshot creates nothing).
        """
        if not targets:
            raise SnapshotError("nothing to restore: no volumes given")
        if create is None and any(t is None for t in targets.values()):
            raise SnapshotError("a volume to restore into is missing and nothing creates it")
        tar = gnu_tar()
        self.recover()
        manifest = self.manifest()
        missing = sorted(set(targets) - set(manifest["volumes"]))
        if missing:
            raise SnapshotError(
                f"the snapshot of recipe {self.recipe!r} has no volume {', '.join(missing)} "
                f"(it holds: {', '.join(sorted(manifest['volumes']))})"
            )
        for short, target in targets.items():
            if target is None:
                continue
            parent = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(parent):
                raise SnapshotError(f"volume {short!r}: {parent} does not exist")
            if os.path.lexists(target) and not os.path.isdir(target):
                raise SnapshotError(f"volume {short!r}: {target} exists and is not a directory")
        verified = {}
        creating = any(target is None for target in targets.values())
        if creating:  # nothing is created for a snapshot that would be refused
            for short in sorted(targets):
                entry = manifest["volumes"][short]
                archive = os.path.join(self.path, entry["archive"])
                verified[short] = self._verify_archive(archive, entry)
            _faults.checkpoint(P_VERIFIED)
            targets = {
                short: (create(short) if target is None else target)
                for short, target in targets.items()
            }
        staged: dict[str, str] = {}
        parents: dict[str, os.stat_result] = {}  # their times, put back if nothing is swapped
        try:
            for short in sorted(targets):
                target = os.path.abspath(targets[short])
                clean_staging(target)
                parent = os.path.dirname(target)
                parents.setdefault(parent, os.stat(parent))
                staging = staging_name(target)
                os.mkdir(staging, 0o700)
                staged[short] = staging
                entry = manifest["volumes"][short]
                archive = os.path.join(self.path, entry["archive"])
                verified[short] = extract_archive(
                    [tar, *TAR_EXTRACT], TAR_ENV, archive, entry, staging, short, self.max_members
                )
            if not creating:
                _faults.checkpoint(P_VERIFIED)
            _faults.checkpoint(P_STAGED)
        except BaseException:
            for staging in staged.values():
                remove_tree(staging)
            # the archives are checked while they stream, so a refused one made and removed a
            # staging directory: its parent's times go back too (a refused restore changes nothing)
            for parent, was in parents.items():
                with contextlib.suppress(OSError):
                    os.utime(parent, ns=(was.st_atime_ns, was.st_mtime_ns))
            raise
        replaced = []
        for i, short in enumerate(sorted(targets)):
            target = os.path.abspath(targets[short])
            staging = staged[short]
            if os.path.isdir(target) and exchange(staging, target):
                replaced.append(staging)
            elif os.path.isdir(target):
                old = staging + ".old"
                os.rename(target, old)
                os.rename(staging, target)
                replaced.append(old)
            else:
                os.rename(staging, target)
            if i == 0 and len(targets) > 1:
                _faults.checkpoint(P_SWAPPED_ONE)
        _faults.checkpoint(P_RESTORED)
        for path in replaced:
            remove_tree(path)
        return {
            "manifest_digest": self.manifest_digest(),
            "volumes": {
                short: {
                    "target": os.path.abspath(targets[short]),
                    "tree_digest": manifest["volumes"][short]["tree_digest"],
                    **verified[short],
                }
                for short in targets
            },
        }


def _check_short(short: str) -> None:
    validate_volume_short(short, SnapshotError)


def _check_manifest(data: Any, recipe: str, path: str) -> None:
    def bad(why: str) -> CorruptSnapshotError:
        return CorruptSnapshotError(f"snapshot manifest {path} is invalid: {why}")

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    if data.get("format") != FORMAT:
        raise bad(f"format {data.get('format')!r} is not {FORMAT}")
    if data.get("recipe") != recipe:
        raise bad(f"it belongs to recipe {data.get('recipe')!r}, not {recipe!r}")
    volumes = data.get("volumes")
    if not isinstance(volumes, dict) or not volumes:
        raise bad("it lists no volumes")
    for short, entry in volumes.items():
        try:
            validate_volume_short(short, CorruptSnapshotError)
        except CorruptSnapshotError as exc:
            raise bad(str(exc)) from None
        if not isinstance(entry, dict) or entry.get("archive") != f"{short}.tar":
            raise bad(f"volume {short!r} does not name its archive {short}.tar")
        if not any(_hex64(entry.get(key)) for key in ("headers_sha256", "sha256")):
            raise bad(f"volume {short!r} has no valid headers_sha256 (or sha256)")
        if "sha256" in entry and not _hex64(entry["sha256"]):
            raise bad(f"volume {short!r} has no valid sha256")
        if not isinstance(entry.get("bytes"), int) or entry["bytes"] < 1024:
            raise bad(f"volume {short!r} has no valid size")
        for key in ("tree_digest", "meta_digest"):
            if not _hex64(entry.get(key)):
                raise bad(f"volume {short!r} has no valid {key}")


def _hex64(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


# --- the app side: the volumes of a stack on this node ----------------------------------


class AppSnapshot:
    """Snapshot and restore the volumes of the app at ``domain`` on the engine ``client``.

    Volumes are the stack's, matched by the label ``com.docker.stack.namespace=<stack>``
    (never by a name prefix), and are read and written through their local mountpoint:
    the module must therefore run on the node that holds them (SPEC §7).
    """

    def __init__(self, client: Any, store: SnapshotStore, domain: str) -> None:
        from ansible_collections.coopcloud.ci.plugins.module_utils._names import stack_name

        self.client = client
        #: The engine that holds the volumes (another node's for :mod:`._remote`).
        self.engine = client
        self.store = store
        self.domain = domain
        self.stack = stack_name(domain)

    # reading the engine ---------------------------------------------------------------
    def _state(self) -> Any:
        from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import read_stack

        return read_stack(self.client, self.stack)

    def volumes(self, only: list[str] | None = None) -> dict[str, Any]:
        """``short name -> VolumeInfo`` of the stack's volumes on this engine."""
        found = {v.short_name: v for v in self._state().volumes}
        if only:
            return {short: found.get(short) for short in only}
        return found

    def refuse_if_deployed(self, names: list[str]) -> None:
        """Fail while any service of the stack exists or a container mounts a volume."""
        state = self._state()
        if state.services:
            raise SnapshotError(
                f"app {self.domain} is deployed (services: "
                f"{', '.join(s.name for s in state.services)}): undeploy it first; "
                "snapshots are taken and restored only while the app is undeployed"
            )
        holders = set(state.containers)
        for name in names:
            for raw in self.engine.api.containers(all=True, filters={"volume": name}):
                holders.add(raw["Id"])
        if holders:
            raise SnapshotError(
                f"app {self.domain}: containers still use its volumes "
                f"({', '.join(sorted(h[:12] for h in holders))}); wait until the undeploy "
                "has removed them, or remove them"
            )

    def local_mountpoint(self, info: Any, write: bool = False) -> str:
        """The directory holding the volume's data on this machine.

        An overlay volume (an overlay-backed canonical, :mod:`._overlay`) is read through
        its lower tree, which is its merged view while the upper dir holds nothing (the
        canonical at rest); it is never written here: its known-good is put back by
        ``warm_canonical`` ``state=idle``.
        """
        dirs = dirs_of(getattr(info, "options", None))
        if dirs is not None:
            upper, lower = dirs.get("upperdir", ""), dirs.get("lowerdir", "")
            if write or not os.path.isdir(lower) or not os.path.isdir(upper) or os.listdir(upper):
                raise SnapshotError(
                    f"volume {info.name} is an overlay volume of a canonical "
                    + ("whose known-good is put back by warm_canonical state=idle, not restored "
                       "into" if write else "holding writes of a run in its upper dir "
                       f"{upper}: put its known-good back first (warm_canonical state=idle)")
                )  # fmt: skip
            return lower
        if info.driver != "local":
            raise SnapshotError(
                f"volume {info.name} uses the {info.driver!r} driver; only local volumes "
                "can be snapshotted"
            )
        if not info.mountpoint or not os.path.isdir(info.mountpoint):
            raise SnapshotError(
                f"volume {info.name} lives on node {info.node or '(unknown)'} but its "
                f"mountpoint {info.mountpoint!r} is not on this machine: run the task on "
                "that node (delegate_to)"
            )
        return info.mountpoint

    def node_name(self) -> str:
        """The engine's node name, for messages only ("this node" when it cannot tell)."""
        node = ""
        with contextlib.suppress(Exception):
            node = (self.client.info() or {}).get("Name", "")
        return node or "this node"

    def missing_error(self, short: str, where: str) -> SnapshotError:
        node = self.node_name()
        return SnapshotError(
            f"app {self.domain} has no volume {short!r} ({self.stack}_{short}) on node "
            f"{node}{where}: a volume lives on the node where the app's task "
            "ran; run the task on that node (delegate_to)"
        )

    # planning -------------------------------------------------------------------------
    @staticmethod
    def equal(mountpoint: str, entry: Mapping[str, Any]) -> bool:
        """Is the tree at ``mountpoint`` exactly the one recorded in ``entry``?"""
        if meta_digest(mountpoint) != entry.get("meta_digest"):
            return False  # metadata differ: no need to read any content
        return tree_digest(mountpoint) == entry.get("tree_digest")

    def plan_take(
        self, only: list[str] | None, version: str | None, commit: str | None, force: bool
    ) -> dict[str, Any]:
        vols = self.volumes(only)
        if not vols:
            raise SnapshotError(
                f"app {self.domain} has no volumes on node {self.node_name()} (none labelled "
                f"com.docker.stack.namespace={self.stack}): there is no data to snapshot; if "
                "the app ran on another node, run the task there (delegate_to)"
            )
        for short, info in vols.items():
            if info is None:
                raise self.missing_error(short, "")
        mounts = {short: self.local_mountpoint(info) for short, info in sorted(vols.items())}
        self.refuse_if_deployed([info.name for info in vols.values()])
        current = None
        try:
            current = self.store.manifest() if self.store.exists() else None
        except CorruptSnapshotError:
            current = None  # a new snapshot replaces a broken one
        reasons = []
        if force:
            reasons.append("force")
        if current is None:
            reasons.append("no snapshot")
        else:
            if set(current["volumes"]) != set(mounts):
                reasons.append("other volumes")
            if version is not None and current.get("version") != version:
                reasons.append("other version")
            if commit is not None and current.get("commit") != commit:
                reasons.append("other commit")
            if not reasons:
                for short, mount in mounts.items():
                    if not self.equal(mount, current["volumes"][short]):
                        reasons.append(f"volume {short} changed")
        return {"mounts": mounts, "current": current, "reasons": reasons}

    def plan_restore(self, only: list[str] | None, force: bool) -> dict[str, Any]:
        manifest = self.store.manifest()
        shorts = list(only) if only else sorted(manifest["volumes"])
        unknown = [s for s in shorts if s not in manifest["volumes"]]
        if unknown:
            raise SnapshotError(
                f"the snapshot of recipe {self.store.recipe!r} has no volume "
                f"{', '.join(unknown)} (it holds: {', '.join(sorted(manifest['volumes']))})"
            )
        vols = self.volumes(shorts)
        self.refuse_if_deployed([f"{self.stack}_{s}" for s in shorts])
        mounts: dict[str, str | None] = {}
        status: dict[str, str] = {}
        reasons = []
        if force:
            reasons.append("force")
        for short in shorts:
            info = vols.get(short)
            if info is None:
                mounts[short] = None
                status[short] = "missing"
                reasons.append(f"volume {short} is missing")
                continue
            mounts[short] = self.local_mountpoint(info, write=True)
            if force:
                status[short] = "unchecked"
            elif self.equal(mounts[short], manifest["volumes"][short]):
                status[short] = "equal"
            else:
                status[short] = "differs"
                reasons.append(f"volume {short} differs")
        return {"manifest": manifest, "mounts": mounts, "status": status, "reasons": reasons}

    def restore(
        self, targets: Mapping[str, str | None], create: Callable[[str], str] | None = None
    ) -> dict[str, Any]:
        """Restore the store's known-good into ``targets`` (as :meth:`plan_restore` names them)."""
        return self.store.restore(targets, create=create)

    def take(self, mounts: Mapping[str, str], **manifest: Any) -> dict[str, Any]:
        """Take the store's snapshot of ``mounts`` (as :meth:`plan_take` names them)."""
        return self.store.take(mounts, **manifest)

    def create_volume(self, short: str) -> str:
        name = f"{self.stack}_{short}"
        from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
            NAMESPACE_LABEL,
        )

        vol = self.client.volumes.create(
            name=name, driver="local", labels={NAMESPACE_LABEL: self.stack}
        )
        mount = (vol.attrs or {}).get("Mountpoint", "")
        if not mount or not os.path.isdir(mount):
            raise SnapshotError(
                f"volume {name} was created but its mountpoint {mount!r} is not on this "
                "machine: run the task on the Docker node itself (delegate_to)"
            )
        return mount
