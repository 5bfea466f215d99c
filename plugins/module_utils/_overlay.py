# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Overlay-backed canonical volumes (issue 14). PRIVATE to the collection: no
compatibility promises.

Where the kernel's overlay filesystem serves, a canonical's volumes are Docker ``local``
volumes of ``type=overlay`` (docs/canonicals.md): the lower is the known-good tree of
the volume, extracted from the snapshot and verified against the manifest's tree digest
(``<state>/<recipe>/known-good/volumes/<short>``, never written by anything but a
promotion or a re-extract), the upper and work dirs are per-canonical scratch dirs
(``<state>/<recipe>/overlay/<short>/{upper,work}``). Putting the known-good back is then
emptying the upper and work dirs of the undeployed canonical: it costs what the run
wrote. The tar snapshot stays the durable, verified copy.

:func:`refusal` decides (once per canonical, at seeding) whether overlay can work, and
why not; :class:`Overlay` owns the trees, the scratch dirs and the volumes' options.
The known-good trees are replaced like the snapshot slot: built in
``known-good.tmp-<random>``, swapped in by one ``renameat2(RENAME_EXCHANGE)``; a crash
leaves the old trees or the new ones, and :meth:`Overlay.recover` removes leftovers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._archive import (
    CorruptSnapshotError,
    tree_digest,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._fsops import exchange, remove_tree
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    RecipePaths,
    fsync_dir,
    read_json,
    write_json,
)

OVERLAY = "overlay"
RESTORE = "restore"
ORIGIN = "origin.json"

P_LOWER_BUILT, P_LOWER_SWAPPED, P_DISCARDING, P_REEXTRACTING = _faults.register_all(
    {
        "overlay.lower-built": "seeded (overlay): the new known-good trees extracted and "
        "verified beside the old ones, not yet swapped in",
        "overlay.lower-swapped": "seeded (overlay): the new known-good trees swapped in, the "
        "registry not yet seeded",
        "overlay.discarding": "idle (overlay): the first volume's writes discarded, the "
        "others not yet",
        "overlay.re-extracting": "verify (overlay): a differing known-good tree found, the "
        "fresh one not yet extracted over it",
    }
)


# --- can overlay work here? -------------------------------------------------------------


def mount_fstype(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The file system type of the mount holding ``path`` ("" when it cannot tell)."""
    real = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, (right.split() or [""])[0]
    return fstype


def kernel_has_overlay(filesystems: str = "/proc/filesystems") -> bool:
    try:
        with open(filesystems, encoding="utf-8") as handle:
            return any(line.split()[-1:] == [OVERLAY] for line in handle)
    except OSError:
        return False


def refusal(
    *,
    wanted: bool,
    kernel: bool,
    docker_root: str | None,
    docker_root_fs: str,
    state_fs: str,
    node: str | None,
    local_node: str | None,
    drivers: Mapping[str, str],
) -> str | None:
    """Why overlay volumes cannot back this canonical (one clause), or None: they can."""
    if not wanted:
        return "overlay volumes are turned off (ccci_canonical_overlay: false)"
    if not kernel:
        return "the kernel has no overlay file system (/proc/filesystems lists none)"
    if not docker_root:
        return "the Docker engine does not report its data root"
    if docker_root_fs == OVERLAY:
        return f"Docker's data root {docker_root} is itself on overlayfs"
    if state_fs == OVERLAY:
        return "the state dir is on overlayfs, which cannot hold upper dirs"
    if node and local_node and node != local_node:
        return (
            f"the canonical is pinned to swarm node {node}, not this engine's node "
            f"{local_node}: its scratch dirs must be beside its volumes"
        )
    other = sorted(f"{short} ({drv})" for short, drv in drivers.items() if drv != "local")
    if other:
        return f"volumes use a driver other than local: {', '.join(other)}"
    return None


def decide(
    client: Any, state_dir: str, node: str | None, drivers: Mapping[str, str], wanted: bool
) -> dict[str, Any]:
    """``{mechanism: overlay|restore, reason}`` for a canonical about to be seeded."""
    info = (client.info() or {}) if wanted else {}
    root = info.get("DockerRootDir") or None
    why = refusal(
        wanted=wanted,
        kernel=kernel_has_overlay(),
        docker_root=root,
        docker_root_fs=mount_fstype(root) if root else "",
        state_fs=mount_fstype(state_dir),
        node=node,
        local_node=(info.get("Swarm") or {}).get("NodeID") or None,
        drivers=drivers,
    )
    return {"mechanism": RESTORE if why else OVERLAY, "reason": why}


def dirs_of(options: Mapping[str, str] | None) -> dict[str, str] | None:
    """``{lowerdir, upperdir, workdir}`` of an overlay volume's options (else None)."""
    if not options or options.get("type") != OVERLAY:
        return None
    return dict(p.partition("=")[::2] for p in options.get("o", "").split(","))


@contextlib.contextmanager
def merged_view(options: Mapping[str, str]) -> Iterator[str]:
    """A directory showing an undeployed overlay volume's data (lower and upper merged).

    The lower tree itself while the upper dir is empty (the canonical at rest); else a
    read-only overlay of the upper over the lower, mounted in a temporary directory for
    the ``with`` block (whiteouts and opaque dirs of the upper are honoured)."""
    dirs = dirs_of(options) or {}
    lower, upper = dirs.get("lowerdir", ""), dirs.get("upperdir", "")
    if not os.path.isdir(upper) or not os.listdir(upper):
        yield lower
        return
    where = tempfile.mkdtemp(prefix="ccci-merged-")
    try:
        proc = subprocess.run(
            ["mount", "-t", OVERLAY, OVERLAY, "-o", f"ro,lowerdir={upper}:{lower}", where],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise OSError(proc.returncode, f"mount of the merged view failed: {proc.stderr}")
        try:
            yield where
        finally:
            subprocess.run(["umount", where], capture_output=True, check=False)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


def mechanism(registry: Mapping[str, Any] | None) -> str:
    """How the canonical's known-good is put back (a registry without the key: restore)."""
    return ((registry or {}).get("put_back") or {}).get("mechanism") or RESTORE


# --- the trees and the volumes ------------------------------------------------------------


def _copy_root_attrs(source: str, target: str) -> None:
    """The root of a merged view shows the upper dir's attributes: make them the lower's."""
    st = os.lstat(source)
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, st.st_mode & 0o7777)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def _used(path: str) -> int:
    """Bytes in the regular files under ``path`` (what a run wrote into an upper dir)."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                continue
    return total


class Overlay:
    """The known-good trees and overlay scratch dirs of one recipe's canonical."""

    def __init__(self, state_dir: str, recipe: str) -> None:
        paths = RecipePaths.of(state_dir, recipe)
        self.base, self.root, self.scratch = paths.directory, paths.known_good, paths.overlay

    def lower(self, short: str) -> str:
        return os.path.join(self.root, "volumes", short)

    def upper(self, short: str) -> str:
        return os.path.join(self.scratch, short, "upper")

    def work(self, short: str) -> str:
        return os.path.join(self.scratch, short, "work")

    def options(self, short: str) -> dict[str, str]:
        """The ``local`` driver's options of the canonical's volume ``short``."""
        dirs = (
            f"lowerdir={self.lower(short)},upperdir={self.upper(short)},workdir={self.work(short)}"
        )
        return {"type": OVERLAY, "device": OVERLAY, "o": dirs}

    def origin(self) -> dict[str, Any] | None:
        """What the live trees were built from: ``{manifest_digest, volumes}``."""
        data = read_json(os.path.join(self.root, ORIGIN), default=None)
        return data if isinstance(data, dict) else None

    def matches(self, digest: str, shorts: Iterable[str]) -> bool:
        origin = self.origin() or {}
        return origin.get("manifest_digest") == digest and all(
            os.path.isdir(self.lower(s)) for s in shorts
        )

    # recovery ---------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Leftovers of a crashed build or swap: the trees in place, the rest removed."""
        actions: list[str] = []
        if not os.path.isdir(self.base):
            return actions
        name = os.path.basename(self.root)
        if not os.path.isdir(self.root):
            olds = sorted(n for n in os.listdir(self.base) if n.startswith(f"{name}.old-"))
            if olds:
                os.rename(os.path.join(self.base, olds[0]), self.root)
                fsync_dir(self.base)
                actions.append(f"moved {olds[0]} back to {self.root}")
        for left in sorted(os.listdir(self.base)):
            if left.startswith((f"{name}.tmp-", f"{name}.old-")):
                remove_tree(os.path.join(self.base, left))
                actions.append(f"removed leftover {left}")
        return actions

    # building the known-good trees -----------------------------------------------------
    def build(self, store: Any, manifest: Mapping[str, Any], digest: str) -> dict[str, Any]:
        """Extract every archive of the slot into new trees, verify each against the
        manifest's tree digest, and swap them in atomically for the old ones."""
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        self.recover()
        tmp = os.path.join(self.base, f"{os.path.basename(self.root)}.tmp-{secrets.token_hex(4)}")
        os.makedirs(os.path.join(tmp, "volumes"), mode=0o700)
        shorts = sorted(manifest["volumes"])
        try:
            store.restore({s: os.path.join(tmp, "volumes", s) for s in shorts})
            for short in shorts:
                self._check_tree(os.path.join(tmp, "volumes", short), manifest, short)
            write_json(os.path.join(tmp, ORIGIN), {"manifest_digest": digest, "volumes": shorts})
            fsync_dir(tmp)
            _faults.checkpoint(P_LOWER_BUILT)
            if os.path.isdir(self.root) and exchange(tmp, self.root):
                old = tmp
            else:
                old = os.path.join(self.base, f"{os.path.basename(self.root)}.old-x")
                if os.path.isdir(self.root):
                    os.rename(self.root, old)
                os.rename(tmp, self.root)
            fsync_dir(self.base)
        except BaseException:
            if os.path.isdir(self.root):
                remove_tree(tmp)
            raise
        _faults.checkpoint(P_LOWER_SWAPPED)
        remove_tree(old)
        return {"built": shorts}

    @staticmethod
    def _check_tree(path: str, manifest: Mapping[str, Any], short: str) -> None:
        if tree_digest(path) != manifest["volumes"][short]["tree_digest"]:
            raise CorruptSnapshotError(
                f"the known-good tree {path} extracted from the snapshot does not match the "
                f"tree digest of volume {short!r} in the manifest: the snapshot is corrupt"
            )

    def verify(self, manifest: Mapping[str, Any]) -> dict[str, str]:
        """Per volume: ``equal``, ``differs`` or ``missing`` (reads every byte)."""
        out = {}
        for short, entry in sorted(manifest["volumes"].items()):
            lower = self.lower(short)
            if not os.path.isdir(lower):
                out[short] = "missing"
            else:
                out[short] = "equal" if tree_digest(lower) == entry["tree_digest"] else "differs"
        return out

    def reextract(self, store: Any, manifest: Mapping[str, Any], shorts: list[str]) -> None:
        """Extract the named trees again from the verified archives (each swapped in
        atomically by the store), and check them against the manifest."""
        _faults.checkpoint(P_REEXTRACTING)
        os.makedirs(os.path.join(self.root, "volumes"), mode=0o700, exist_ok=True)
        store.restore({s: self.lower(s) for s in shorts})
        for short in shorts:
            self._check_tree(self.lower(short), manifest, short)

    # the writes of a run -----------------------------------------------------------------
    def written(self, short: str) -> int | None:
        """Bytes a run left in the upper dir; None when the upper dir holds nothing and
        its root equals the lower's (the merged view is exactly the known-good)."""
        upper, lower = self.upper(short), self.lower(short)
        try:
            names = os.listdir(upper)
            a, b = os.lstat(upper), os.lstat(lower)
        except FileNotFoundError:
            return 0
        same_root = (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == (
            b.st_mode, b.st_uid, b.st_gid, b.st_mtime_ns,
        )  # fmt: skip
        if not names and same_root:
            return None
        return _used(upper)

    def discard(self, shorts: list[str]) -> dict[str, int]:
        """Empty the upper and work dirs of each volume (the app is undeployed): bytes
        discarded per volume. Each dir is moved aside and replaced by a fresh one first,
        so a crash leaves the old upper or a fresh one, never a half-emptied one."""
        out: dict[str, int] = {}
        for i, short in enumerate(sorted(shorts)):
            out[short] = self.written(short) or 0
            folder = os.path.join(self.scratch, short)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            gone = os.path.join(folder, f"discard-{secrets.token_hex(4)}")
            os.mkdir(gone, 0o700)
            for part in ("upper", "work"):
                path = os.path.join(folder, part)
                if os.path.lexists(path):
                    os.rename(path, os.path.join(gone, part))
                os.mkdir(path, 0o700)
            _copy_root_attrs(self.lower(short), self.upper(short))
            fsync_dir(folder)
            for left in os.listdir(folder):
                if left.startswith("discard-"):
                    remove_tree(os.path.join(folder, left))
            if i == 0 and len(shorts) > 1:
                _faults.checkpoint(P_DISCARDING)
        return out

    def remove(self) -> bool:
        """Delete the trees and the scratch dirs (the volumes must be gone)."""
        found = False
        for path in (self.scratch, self.root):
            if os.path.lexists(path):
                remove_tree(path)
                found = True
        self.recover()
        return found

    # the Docker volumes -------------------------------------------------------------------
    def ensure_volumes(
        self, client: Any, stack: str, found: Mapping[str, Any], shorts: list[str]
    ) -> list[str]:
        """Make each ``<stack>_<short>`` an overlay volume with this canonical's options
        (a plain or other volume of the undeployed canonical is replaced); what changed."""
        from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import NAMESPACE_LABEL

        changed = []
        for short in sorted(shorts):
            name, want = f"{stack}_{short}", self.options(short)
            info = found.get(short)
            if info is not None and dict(info.options or {}) == want:
                continue
            if info is not None:
                client.api.remove_volume(name)
            client.volumes.create(
                name=name, driver="local", driver_opts=want, labels={NAMESPACE_LABEL: stack}
            )
            changed.append(name)
        return changed
