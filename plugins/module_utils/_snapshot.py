# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Known-good volume snapshots (WC3). PRIVATE to the collection: no compatibility promises.

One slot per recipe, ``<state_dir>/<recipe>/snapshot/``: ``manifest.json`` and one
uncompressed POSIX tar per volume (``<short-name>.tar``). See docs/snapshots.md for the
why; the short version:

* **take** runs GNU tar (``--sort=name --format=posix --numeric-owner``) on the volume's
  directory and streams its output through this process: every byte is written to the
  archive, hashed (sha256 of the archive) and parsed (every member header is checked
  against the hostile-archive rules, and a tree digest of the volume is computed from the
  members, equal to :func:`tree_digest` of the directory). Memory stays flat: one 1 MiB
  buffer. The archives and the manifest are written into ``snapshot.tmp-<random>``,
  fsynced, and swapped in by one atomic ``renameat2(RENAME_EXCHANGE)`` (or, where the
  kernel lacks it, two renames with ``snapshot.old-<random>``); :meth:`recover` puts
  things right after a crash at any point.
* **restore** first verifies every archive (sha256 and size against the manifest, and
  every member header against the hostile rules) before anything is written; then GNU tar
  extracts each archive into a staging directory beside the target (same filesystem);
  then each staging directory is exchanged atomically with its target, and the replaced
  tree is removed. A volume is therefore always either its old tree or the snapshot's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    validate_recipe,
    validate_state_dir,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    dumps,
    fsync_dir,
    stamp,
)

FORMAT = 1
MANIFEST = "manifest.json"
SLOT = "snapshot"
DEFAULT_MAX_MEMBERS = 1_000_000
CHUNK = 1 << 20
_SHORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_PAX_MAX = 1 << 20

TAR_CREATE = [
    "--create",
    "--file=-",
    "--format=posix",
    "--pax-option=delete=atime,delete=ctime",
    "--sort=name",
    "--numeric-owner",
    "--no-acls",
    "--no-xattrs",
    "--no-selinux",
]
TAR_EXTRACT = [
    "--extract",
    "--numeric-owner",
    "--same-owner",
    "--same-permissions",
    "--no-acls",
    "--no-xattrs",
    "--no-selinux",
]
_TAR_ENV = {"LC_ALL": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"}

P_VOLUME_ARCHIVED = _faults.register(
    "snapshot.volume-archived", "take: one archive written and fsynced, others not yet"
)
P_WRITTEN = _faults.register(
    "snapshot.written", "take: all archives and the manifest fsynced, not yet swapped in"
)
P_MID_SWAP = _faults.register(
    "snapshot.mid-swap", "take (two-rename fallback): old moved aside, new not yet in place"
)
P_SWAPPED = _faults.register(
    "snapshot.swapped", "take: new snapshot in place, replaced one not yet removed"
)
P_REMOVING = _faults.register("snapshot.removing", "absent: slot moved aside, not yet deleted")
P_VERIFIED = _faults.register(
    "restore.verified", "restore: every archive verified, nothing extracted yet"
)
P_STAGED = _faults.register(
    "restore.staged", "restore: every archive extracted into staging, no volume swapped yet"
)
P_SWAPPED_ONE = _faults.register(
    "restore.swapped-one", "restore: the first volume swapped, the others not yet"
)
P_RESTORED = _faults.register(
    "restore.swapped", "restore: every volume swapped, the replaced trees not yet removed"
)


class SnapshotError(CcciError, RuntimeError):
    """A snapshot cannot be taken, read or restored. The message is for the user."""


class CorruptSnapshotError(SnapshotError):
    """The snapshot on disk does not match its manifest (or the manifest is broken)."""


class HostileArchiveError(SnapshotError):
    """An archive holds a member that could write outside the volume, or too many."""


# --- tree digests ---------------------------------------------------------------------


def _field(value: bytes) -> bytes:
    return b"%d:%s," % (len(value), value)


def _record(path: bytes, kind: bytes, *fields: bytes) -> bytes:
    return b"".join(_field(f) for f in (path, kind, *fields)) + b"\n"


def _meta(mode: int, uid: int, gid: int, mtime_ns: int) -> tuple[bytes, ...]:
    return (b"%o" % mode, b"%d" % uid, b"%d" % gid, b"%d" % mtime_ns)


class _TreeHasher:
    """Both digests of a tree, fed entry by entry in traversal order.

    ``tree`` covers everything (content too); ``meta`` covers the same records without
    file contents: cheap to compute from ``lstat`` alone, so an unchanged ``meta`` is the
    only case where file contents need reading to tell whether a tree changed.
    """

    def __init__(self) -> None:
        self.tree = hashlib.sha256(b"ccci-tree-1\n")
        self.meta = hashlib.sha256(b"ccci-meta-1\n")
        self.entries = 0

    def add(
        self,
        path: bytes,
        kind: bytes,
        meta: tuple[bytes, ...],
        extra: bytes = b"",
        content: bytes | None = None,
    ) -> None:
        self.entries += 1
        rec = _record(path, kind, *meta, extra)
        self.meta.update(rec)
        if content is not None:
            rec = _record(path, kind, *meta, extra, content)
        self.tree.update(rec)


class _TreeSink:
    """Turns :class:`TarScanner` events into the tree and meta digests."""

    def __init__(self) -> None:
        self.hasher = _TreeHasher()
        self._file: Any = None
        self._open: tuple = ()

    def process(self, events: list[Any]) -> None:
        add = self.hasher.add
        for ev in events:
            if type(ev) is memoryview:
                self._file.update(ev)
            elif ev is None:
                path, meta, size = self._open
                add(path, b"f", meta, size, self._file.hexdigest().encode())
                self._file = None
            elif ev[0] == "o":
                self._open = ev[1:]
                self._file = hashlib.sha256()
            else:
                add(ev[1], ev[2], ev[3], ev[4])

    def digests(self) -> dict[str, str]:
        return {
            "tree_digest": self.hasher.tree.hexdigest(),
            "meta_digest": self.hasher.meta.hexdigest(),
        }


def _walk(root: bytes) -> Iterator[tuple[bytes, bytes, os.stat_result]]:
    """``(relative, absolute, lstat)`` depth-first, names sorted bytewise in each directory.

    This is the order GNU tar's ``--sort=name`` archives a tree in.
    """
    st = os.lstat(root)
    yield b".", root, st
    stack: list[Iterator[tuple[bytes, bytes]]] = []

    def children(rel: bytes, absolute: bytes) -> Iterator[tuple[bytes, bytes]]:
        names = sorted(os.listdir(absolute))
        prefix = b"" if rel == b"." else rel + b"/"
        return ((prefix + n, absolute + b"/" + n) for n in names)

    stack.append(children(b".", root))
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        rel, absolute = item
        st = os.lstat(absolute)
        yield rel, absolute, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(children(rel, absolute))


def _digests(path: str, content: bool) -> tuple[str, str, int]:
    root = os.fsencode(os.path.abspath(path))
    if not os.path.isdir(root):
        raise SnapshotError(f"{path} is not a directory")
    hasher = _TreeHasher()
    first_of: dict[tuple[int, int], bytes] = {}
    for rel, absolute, st in _walk(root):
        mode = st.st_mode
        meta = _meta(stat.S_IMODE(mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        if stat.S_ISREG(mode):
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                first = first_of.get(key)
                if first is not None:
                    hasher.add(rel, b"h", (), first)
                    continue
                first_of[key] = rel
            digest = _file_sha256(absolute) if content else None
            hasher.add(rel, b"f", meta, b"%d" % st.st_size, digest)
        elif stat.S_ISDIR(mode):
            hasher.add(rel, b"d", meta)
        elif stat.S_ISLNK(mode):
            hasher.add(rel, b"l", meta, os.readlink(absolute))
        elif stat.S_ISFIFO(mode):
            hasher.add(rel, b"p", meta)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = b"c" if stat.S_ISCHR(mode) else b"b"
            hasher.add(rel, kind, meta, b"%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
        # sockets: tar does not archive them, so they are not part of a tree either
    return hasher.tree.hexdigest(), hasher.meta.hexdigest(), hasher.entries


def _file_sha256(path: bytes) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = handle.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest().encode()


def tree_digest(path: str) -> str:
    """One sha256 over the whole tree at ``path``, the proof that "the exact bytes are back".

    Covers, for every entry in a fixed order (depth-first, names sorted bytewise): its
    relative path, type, permission bits, numeric uid and gid, mtime in nanoseconds; for
    files the size and the sha256 of the content; for symlinks the target; for a second
    hard link to a file, the path of the first. Sockets are left out (tar cannot carry
    them); extended attributes and ACLs are not covered.
    """
    return _digests(path, content=True)[0]


def meta_digest(path: str) -> str:
    """:func:`tree_digest` without file contents (``lstat`` only): a cheap change detector."""
    return _digests(path, content=False)[1]


def tree_digests(path: str) -> dict[str, Any]:
    tree, meta, entries = _digests(path, content=True)
    return {"tree_digest": tree, "meta_digest": meta, "entries": entries}


# --- the tar stream scanner -----------------------------------------------------------

_ALLOWED = {
    b"0": b"f", b"\0": b"f", b"7": b"f",  # regular (7 = contiguous: a regular file)
    b"1": b"h", b"2": b"l", b"5": b"d", b"6": b"p",
}  # fmt: skip


def _number(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field, "big", signed=False) & ((1 << (8 * len(field) - 1)) - 1)
        if field[0] & 0x40:  # negative
            value -= 1 << (8 * len(field) - 1)
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise CorruptSnapshotError(f"bad {what} field {field!r}") from None


def _pax_int(pax: Mapping[bytes, bytes], key: bytes, what: str) -> int:
    """A decimal pax record (``size``, ``uid``, ``gid``), or refuse the archive as corrupt."""
    text = pax[key]
    if not text.isdigit():
        raise CorruptSnapshotError(
            f"{what} has a pax {key.decode()} record that is not a decimal number: {text!r}"
        )
    return int(text)


def _mtime_ns(text: bytes) -> int:
    sign = -1 if text.startswith(b"-") else 1
    whole, _, frac = text.lstrip(b"-").partition(b".")
    frac = (frac + b"000000000")[:9]
    try:
        return sign * (int(whole or b"0") * 1_000_000_000 + int(frac))
    except ValueError:
        raise CorruptSnapshotError(f"bad pax mtime {text!r}") from None


def _clean_path(name: bytes, what: str) -> bytes:
    """The member path relative to the volume root, or refuse it."""
    if not name:
        raise HostileArchiveError(f"{what} has an empty name")
    if b"\0" in name:
        raise HostileArchiveError(f"{what} {name!r} has a NUL byte in its name")
    if name.startswith(b"/"):
        raise HostileArchiveError(f"{what} {name!r} is an absolute path")
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise HostileArchiveError(f"{what} {name!r} has a '..' component")
    return b"/".join(parts) or b"."


def _symlink_stays_inside(path: bytes, target: bytes) -> bool:
    if not target or target.startswith(b"/"):
        return False
    depth = path.count(b"/")  # the link's directory, in components below the root
    if path == b".":
        return False
    for part in target.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            depth -= 1
            if depth < 0:
                return False
        else:
            depth += 1
    return True


class TarScanner:
    """Parses a tar stream fed in chunks: hostile checks, counts and (optionally) digests.

    ``feed`` raises :class:`HostileArchiveError` at the first header that breaks a rule,
    *before* the caller passes that chunk on, and :class:`CorruptSnapshotError` at a
    header whose checksum is wrong.
    """

    def __init__(
        self,
        label: str,
        max_members: int = DEFAULT_MAX_MEMBERS,
        digests: bool = False,
        inline: bool = True,
    ) -> None:
        self.label = label
        self.max_members = max_members
        #: With ``digests``, the tree records and file contents to hash, in order; a
        #: :class:`_TreeSink` turns them into digests (inline, or in another thread).
        self.events: list[Any] | None = [] if digests else None
        self.sink = _TreeSink() if digests and inline else None
        self.members = 0
        self.files = 0
        self.content_bytes = 0
        self.ended = False
        self._hdr = bytearray()
        self._data_left = 0
        self._pad_left = 0
        self._collect: bytearray | None = None
        self._collect_kind = b""
        self._in_file = False
        self._pax: dict[bytes, bytes] = {}
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._symlinks: set[bytes] = set()

    # feeding ----------------------------------------------------------------------
    def feed(self, data: memoryview | bytes) -> None:
        view = memoryview(data)  # slicing bytes would copy every file's content
        pos = 0
        size = len(view)
        while pos < size and not self.ended:
            if self._data_left:
                k = min(self._data_left, size - pos)
                if self._in_file:
                    self.events.append(view[pos : pos + k])
                elif self._collect is not None:
                    if len(self._collect) + k > _PAX_MAX:
                        raise HostileArchiveError(
                            f"{self.label}: an extended header is larger than {_PAX_MAX} bytes"
                        )
                    self._collect += view[pos : pos + k]
                pos += k
                self._data_left -= k
                if not self._data_left:
                    self._end_data()
                continue
            if self._pad_left:
                k = min(self._pad_left, size - pos)
                pos += k
                self._pad_left -= k
                continue
            if not self._hdr and size - pos >= 512:
                block = bytes(view[pos : pos + 512])
                pos += 512
            else:
                k = min(512 - len(self._hdr), size - pos)
                self._hdr += view[pos : pos + k]
                pos += k
                if len(self._hdr) < 512:
                    continue
                block = bytes(self._hdr)
                self._hdr.clear()
            self._header(block)
        if self.sink is not None:
            self.sink.process(self.events)
            self.events.clear()

    def take_events(self) -> list[Any]:
        events, self.events = self.events, []
        return events

    def finish(self) -> dict[str, Any]:
        if not self.ended:
            raise CorruptSnapshotError(
                f"{self.label} is truncated: the stream ends before the end-of-archive marker"
            )
        summary: dict[str, Any] = {
            "members": self.members,
            "files": self.files,
            "content_bytes": self.content_bytes,
        }
        if self.sink is not None:
            summary.update(self.sink.digests())
        return summary

    # headers ----------------------------------------------------------------------
    def _header(self, block: bytes) -> None:
        if block == bytes(512):
            self.ended = True
            return
        stored = _number(block[148:156], "checksum")
        unsigned = sum(block[:148]) + 256 + sum(block[156:])
        if stored != unsigned:
            signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
            if stored != signed:
                raise CorruptSnapshotError(
                    f"{self.label}: header {self.members + 1} has a bad checksum "
                    "(the archive is corrupt)"
                )
        kind = block[156:157]
        size = _number(block[124:136], "size")
        if kind in (b"x", b"L", b"K"):
            self._collect = bytearray()
            self._collect_kind = kind
            self._start_data(size, False)
            return
        if kind == b"g":
            raise HostileArchiveError(f"{self.label}: global extended headers are not accepted")
        self.members += 1
        if self.members > self.max_members:
            raise HostileArchiveError(
                f"{self.label} has more than {self.max_members} members (max_members)"
            )
        pax, self._pax = self._pax, {}
        long_name, self._long_name = self._long_name, None
        long_link, self._long_link = self._long_link, None
        name = pax.get(b"path") or long_name
        if name is None:
            name = block[0:100].split(b"\0", 1)[0]
            if block[257:263] == b"ustar\x00":
                prefix = block[345:500].split(b"\0", 1)[0]
                if prefix:
                    name = prefix + b"/" + name
        link = pax.get(b"linkpath") or long_link or block[157:257].split(b"\0", 1)[0]
        what = f"{self.label}: member"
        if b"size" in pax:
            size = _pax_int(pax, b"size", f"{what} {name!r}")
        if kind in (b"3", b"4"):
            dev = "character" if kind == b"3" else "block"
            raise HostileArchiveError(f"{what} {name!r} is a {dev} device file")
        if kind not in _ALLOWED:
            raise HostileArchiveError(f"{what} {name!r} has an unsupported type {kind!r}")
        for key in pax:
            if key.startswith(b"GNU.sparse"):
                raise HostileArchiveError(f"{what} {name!r} is a sparse file (not supported)")
        path = _clean_path(name, what)
        t = _ALLOWED[kind]
        if path == b"." and t != b"d":
            raise HostileArchiveError(f"{what} {name!r} replaces the volume root")
        if self._symlinks:
            self._refuse_beneath_symlink(path, name, what)
        if t == b"l":
            if not _symlink_stays_inside(path, link):
                raise HostileArchiveError(
                    f"{what} {name!r} is a symlink to {link!r}, which leaves the volume"
                )
            self._symlinks.add(path)
        elif t == b"h":
            target = _clean_path(link, f"{what} {name!r}: hard link target")
            if target == b".":
                raise HostileArchiveError(f"{what} {name!r} is a hard link to the volume root")
            if self._symlinks:
                self._refuse_beneath_symlink(target, link, f"{what} {name!r}: hard link target")
            link = target
        if self.events is None and t != b"f":
            self._start_data(size, False)
            return
        mode = _number(block[100:108], "mode") & 0o7777
        uid = (
            _pax_int(pax, b"uid", f"{what} {name!r}")
            if b"uid" in pax
            else _number(block[108:116], "uid")
        )
        gid = (
            _pax_int(pax, b"gid", f"{what} {name!r}")
            if b"gid" in pax
            else _number(block[116:124], "gid")
        )
        if b"mtime" in pax:
            mtime = _mtime_ns(pax[b"mtime"])
        else:
            mtime = _number(block[136:148], "mtime") * 1_000_000_000
        if t == b"f":
            self.files += 1
            self.content_bytes += size
        if self.events is None:
            self._start_data(size, False)
            return
        meta = _meta(mode, uid, gid, mtime)
        if t == b"f":
            self.events.append(("o", path, meta, b"%d" % size))
            self._start_data(size, True)
            return
        if t == b"h":
            self.events.append(("r", path, b"h", (), link))
        elif t == b"l":
            self.events.append(("r", path, b"l", meta, link))
        else:
            self.events.append(("r", path, t, meta, b""))
        self._start_data(size, False)

    def _refuse_beneath_symlink(self, path: bytes, name: bytes, what: str) -> None:
        parts = path.split(b"/")
        for i in range(1, len(parts)):
            if b"/".join(parts[:i]) in self._symlinks:
                raise HostileArchiveError(f"{what} {name!r} lies beneath a symlink of the archive")

    def _start_data(self, size: int, in_file: bool) -> None:
        if size < 0:
            raise CorruptSnapshotError(f"{self.label}: a member has a negative size")
        self._in_file = in_file
        self._data_left = size
        self._pad_left = (-size) % 512
        if not size:
            self._end_data()

    def _end_data(self) -> None:
        if self._in_file:
            self.events.append(None)
            self._in_file = False
        elif self._collect is not None:
            data, self._collect = bytes(self._collect), None
            if self._collect_kind == b"x":
                self._pax = _parse_pax(data, self.label)
            elif self._collect_kind == b"L":
                self._long_name = data.split(b"\0", 1)[0]
            else:
                self._long_link = data.split(b"\0", 1)[0]


def _parse_pax(data: bytes, label: str) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptSnapshotError(f"{label}: malformed extended header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise CorruptSnapshotError(f"{label}: malformed extended header")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


# --- small system helpers -------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        fn = _c().renameat2
    except AttributeError:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a)


def _remove_tree(path: str) -> None:
    """Remove a tree we own (never follows symlinks); ``rm`` is several times faster."""
    if not os.path.lexists(path):
        return
    proc = subprocess.run(
        ["rm", "-rf", "--one-file-system", "--", path],
        capture_output=True,
        env=_TAR_ENV,
        check=False,
    )
    if proc.returncode != 0 and os.path.lexists(path):
        shutil.rmtree(path)


def _tar() -> str:
    path = shutil.which("tar", path=_TAR_ENV["PATH"])
    if not path:
        raise SnapshotError("GNU tar is not installed on this node (apt-get install tar)")
    return path


class _Background:
    """The archive's sha256 (and, given a sink, the tree digests) computed in a thread.

    hashlib releases the GIL, so this overlaps with reading and header parsing. Chunks
    must be immutable ``bytes``; at most eight batches are queued: memory stays flat.
    """

    def __init__(self, sink: _TreeSink | None = None) -> None:
        self._hash = hashlib.sha256()
        self.sink = sink
        self._queue: queue.Queue[tuple | None] = queue.Queue(maxsize=8)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="digests", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            chunk, events = item
            self._hash.update(chunk)
            if events:
                self.sink.process(events)

    def update(self, chunk: bytes, events: list[Any] | None = None) -> None:
        self._queue.put((chunk, events))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()


# --- the store ------------------------------------------------------------------------


class SnapshotStore:
    """The one last-good snapshot of ``recipe`` under ``state_dir``."""

    def __init__(self, state_dir: str, recipe: str, max_members: int = DEFAULT_MAX_MEMBERS) -> None:
        self.state_dir = validate_state_dir(state_dir)
        self.recipe = validate_recipe(recipe)
        self.max_members = int(max_members)
        self.base = os.path.join(self.state_dir, self.recipe)
        self.path = os.path.join(self.base, SLOT)
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
        """Check every archive (size, sha256, member headers) against the manifest."""
        manifest = self.manifest()
        live = self._live_dir()
        result = {}
        for short, entry in sorted(manifest["volumes"].items()):
            result[short] = self._verify_archive(os.path.join(live, entry["archive"]), entry)
        return {"manifest_digest": self.manifest_digest(), "volumes": result}

    def _verify_archive(self, path: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        scanner = TarScanner(f"archive {path}", self.max_members)
        total = 0
        problem: SnapshotError | None = None
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise CorruptSnapshotError(
                f"archive {path} named in the snapshot manifest is missing"
            ) from None
        digest = _Background()
        try:
            with handle:
                size = os.fstat(handle.fileno()).st_size
                if size != entry["bytes"]:
                    raise CorruptSnapshotError(
                        f"archive {path} has {size} bytes but the manifest records "
                        f"{entry['bytes']}: the snapshot is corrupt"
                    )
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    total += len(chunk)
                    if problem is None:
                        try:
                            scanner.feed(chunk)
                        except SnapshotError as exc:
                            problem = exc  # a digest mismatch is the clearer error: read on
            sha256 = digest.hexdigest()
        except BaseException:
            digest.close()
            raise
        if sha256 != entry["sha256"] or total != entry["bytes"]:
            raise CorruptSnapshotError(
                f"archive {path} does not match its sha256 in the manifest "
                f"(manifest {entry['sha256'][:16]}…, file {sha256[:16]}…): "
                "the snapshot is corrupt"
            )
        if problem is not None:
            raise problem
        summary = scanner.finish()
        return {"sha256": sha256, "bytes": total, **summary}

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
                _remove_tree(os.path.join(self.base, name))
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
    ) -> dict[str, Any]:
        """Archive each ``short name -> directory`` and swap the new snapshot in."""
        if not volumes:
            raise SnapshotError("nothing to snapshot: no volumes given")
        for short, directory in volumes.items():
            _check_short(short)
            if not os.path.isdir(directory):
                raise SnapshotError(f"volume {short!r}: {directory} is not a directory")
        tar = _tar()
        archiver = _tar_version(tar)  # refuses a tar that is not GNU tar, before anything
        os.makedirs(self.base, mode=0o700, exist_ok=True)
        self.recover()
        tmp = os.path.join(self.base, f"{SLOT}.tmp-{secrets.token_hex(4)}")
        os.mkdir(tmp, 0o700)
        try:
            entries: dict[str, Any] = {}
            for short in sorted(volumes):
                archive = f"{short}.tar"
                entries[short] = {
                    "archive": archive,
                    **self._archive(tar, volumes[short], os.path.join(tmp, archive), short),
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
            _write_synced(os.path.join(tmp, MANIFEST), dumps(manifest))
            fsync_dir(tmp)
            _faults.checkpoint(P_WRITTEN)
            self._swap_in(tmp)
        except BaseException:
            _remove_tree(tmp)
            raise
        return manifest

    def _archive(self, tar: str, directory: str, dest: str, short: str) -> dict[str, Any]:
        """GNU tar writes ``dest``; this process follows the growing file as it is written.

        Following the file (rather than piping tar through this process) leaves the
        writing to tar exactly as a plain ``tar -cf`` does it, and hashes the bytes that
        are really on disk. The archive's sha256 runs in a second thread (hashlib releases
        the GIL), the header scan and the per-file digests in this one.
        """
        label = f"volume {short!r} ({directory})"
        scanner = TarScanner(label, self.max_members, digests=True, inline=False)
        digest = _Background(_TreeSink())
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            proc = subprocess.Popen(
                [tar, *TAR_CREATE, "--directory", directory, "."],
                stdout=out,
                stderr=errors,
                env=_TAR_ENV,
            )
        except BaseException:
            digest.close()
            errors.close()
            raise
        finally:
            os.close(out)
        total = 0
        try:
            with open(dest, "rb", buffering=0) as handle:
                while True:
                    chunk = handle.read(CHUNK)
                    if not chunk:
                        if proc.poll() is None:
                            time.sleep(0.002)
                            continue
                        chunk = handle.read(CHUNK)  # what tar wrote just before it exited
                        if not chunk:
                            break
                    scanner.feed(chunk)
                    digest.update(chunk, scanner.take_events())
                    total += len(chunk)
                rc = proc.returncode
                if rc != 0:
                    errors.seek(0)
                    err = errors.read().decode(errors="replace").strip()
                    raise SnapshotError(
                        f"tar could not archive {label}: rc={rc}, stderr: {err[-2000:]}"
                    )
                summary = scanner.finish()
                os.fsync(handle.fileno())
            sha256 = digest.hexdigest()
            summary.update(digest.sink.digests())
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            digest.close()
            raise
        finally:
            errors.close()
        return {
            "sha256": sha256,
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
                _remove_tree(tmp)  # now holds the replaced snapshot
                return
            old = os.path.join(self.base, f"{SLOT}.old-{secrets.token_hex(4)}")
            os.rename(self.path, old)
            fsync_dir(self.base)
            _faults.checkpoint(P_MID_SWAP)
            os.rename(tmp, self.path)
            fsync_dir(self.base)
            _faults.checkpoint(P_SWAPPED)
            _remove_tree(old)
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
        _remove_tree(gone)
        return True

    # restoring --------------------------------------------------------------------
    def restore(
        self,
        targets: Mapping[str, str | None],
        create: Callable[[str], str] | None = None,
    ) -> dict[str, Any]:
        """Make each ``short name -> directory`` exactly equal to its archive.

        Every archive named is verified first (sha256, size, every member header);
        nothing is written before all pass. A target of ``None`` is a volume that does not
        exist yet: ``create(short)`` makes it and returns its directory, only once every
        archive has passed (a corrupt or hostile snapshot creates nothing). Each archive
        is then extracted into a staging directory beside its target and exchanged with
        it; the replaced tree is removed.
        """
        if not targets:
            raise SnapshotError("nothing to restore: no volumes given")
        if create is None and any(t is None for t in targets.values()):
            raise SnapshotError("a volume to restore into is missing and nothing creates it")
        tar = _tar()
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
        for short in sorted(targets):
            entry = manifest["volumes"][short]
            verified[short] = self._verify_archive(os.path.join(self.path, entry["archive"]), entry)
        _faults.checkpoint(P_VERIFIED)
        targets = {
            short: (create(short) if target is None else target)
            for short, target in targets.items()
        }
        staged: dict[str, str] = {}
        try:
            for short in sorted(targets):
                target = os.path.abspath(targets[short])
                _clean_staging(target)
                staging = _staging_name(target)
                os.mkdir(staging, 0o700)
                staged[short] = staging
                archive = os.path.join(self.path, manifest["volumes"][short]["archive"])
                proc = subprocess.run(
                    [tar, *TAR_EXTRACT, "--file", archive, "--directory", staging],
                    capture_output=True,
                    env=_TAR_ENV,
                    check=False,
                )
                if proc.returncode != 0:
                    raise SnapshotError(
                        f"tar could not extract {archive} into {staging}: "
                        f"rc={proc.returncode}, stderr: "
                        f"{proc.stderr.decode(errors='replace').strip()[-2000:]}"
                    )
            _faults.checkpoint(P_STAGED)
        except BaseException:
            for staging in staged.values():
                _remove_tree(staging)
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
            _remove_tree(path)
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


def _staging_name(target: str) -> str:
    parent, base = os.path.split(target)
    return os.path.join(parent, f".{base}.ccci-restore-{secrets.token_hex(4)}")


def _clean_staging(target: str) -> None:
    """Remove staging directories a crashed restore left beside ``target``."""
    parent, base = os.path.split(target)
    prefix = f".{base}.ccci-restore-"
    for name in os.listdir(parent):
        if name.startswith(prefix):
            _remove_tree(os.path.join(parent, name))


def _write_synced(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


_TAR_VERSION: dict[str, str] = {}


def _tar_version(tar: str) -> str:
    if tar not in _TAR_VERSION:
        out = subprocess.run([tar, "--version"], capture_output=True, text=True, check=False)
        first = (out.stdout.splitlines() or ["unknown"])[0]
        if "GNU tar" not in first:
            raise SnapshotError(f"{tar} is not GNU tar ({first!r}); install GNU tar")
        _TAR_VERSION[tar] = first
    return _TAR_VERSION[tar]


def _check_short(short: str) -> None:
    if not isinstance(short, str) or not _SHORT_RE.match(short):
        raise SnapshotError(f"volume name {short!r} is invalid")


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
        if not isinstance(short, str) or not _SHORT_RE.match(short):
            raise bad(f"volume name {short!r} is invalid")
        if not isinstance(entry, dict) or entry.get("archive") != f"{short}.tar":
            raise bad(f"volume {short!r} does not name its archive {short}.tar")
        if not re.match(r"^[0-9a-f]{64}$", str(entry.get("sha256", ""))):
            raise bad(f"volume {short!r} has no valid sha256")
        if not isinstance(entry.get("bytes"), int) or entry["bytes"] < 1024:
            raise bad(f"volume {short!r} has no valid size")
        for key in ("tree_digest", "meta_digest"):
            if not re.match(r"^[0-9a-f]{64}$", str(entry.get(key, ""))):
                raise bad(f"volume {short!r} has no valid {key}")


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
            for raw in self.client.api.containers(all=True, filters={"volume": name}):
                holders.add(raw["Id"])
        if holders:
            raise SnapshotError(
                f"app {self.domain}: containers still use its volumes "
                f"({', '.join(sorted(h[:12] for h in holders))}); wait until the undeploy "
                "has removed them, or remove them"
            )

    @staticmethod
    def local_mountpoint(info: Any) -> str:
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

    def missing_error(self, short: str, where: str) -> SnapshotError:
        node = ""
        with contextlib.suppress(Exception):  # only for the message
            node = (self.client.info() or {}).get("Name", "")
        return SnapshotError(
            f"app {self.domain} has no volume {short!r} ({self.stack}_{short}) on node "
            f"{node or 'this node'}{where}: a volume lives on the node where the app's task "
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
            node = ""
            with contextlib.suppress(Exception):  # only for the message
                node = (self.client.info() or {}).get("Name", "")
            raise SnapshotError(
                f"app {self.domain} has no volumes on node {node or 'this node'} (none labelled "
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
            mounts[short] = self.local_mountpoint(info)
            if force:
                status[short] = "unchecked"
            elif self.equal(mounts[short], manifest["volumes"][short]):
                status[short] = "equal"
            else:
                status[short] = "differs"
                reasons.append(f"volume {short} differs")
        return {"manifest": manifest, "mounts": mounts, "status": status, "reasons": reasons}

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
