# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure archive code. PRIVATE to the collection: no compatibility promises.

What a snapshot archive is, without any file system or Docker around it: the tree
digests of a directory (content and metadata, the same whether computed from the
directory or from the archive's members), the incremental POSIX tar header scanner that
checks every member against the hostile-archive rules, and pax extended-header parsing.
Why a scanner of our own and not ``tarfile``: docs/snapshots.md.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError

CHUNK = 1 << 20
DEFAULT_MAX_MEMBERS = 1_000_000
_PAX_MAX = 1 << 20
_ZERO_BLOCK = bytes(512)


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
    return b"".join([_field(f) for f in (path, kind, *fields)]) + b"\n"


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
        if content is not None:  # the same record with the content field before its end
            rec = rec[:-1] + _field(content) + b"\n"
        self.tree.update(rec)


class TreeSink:
    """Turns :class:`TarScanner` events into the tree and meta digests, and the headers
    digest: every byte of the archive is hashed once, file contents by their file's
    sha256 (which the tree digest records), every other byte (headers, extended headers,
    padding, end-of-archive blocks) by ``headers_sha256``."""

    def __init__(self) -> None:
        self.hasher = _TreeHasher()
        self.headers = hashlib.sha256()
        self._file: Any = None
        self._open: tuple = ()

    def process(self, events: list[Any]) -> None:
        add = self.hasher.add
        for ev in events:
            kind = type(ev)
            if kind is memoryview:
                self._file.update(ev)
            elif kind is bytes:
                self.headers.update(ev)
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
            "headers_sha256": self.headers.hexdigest(),
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
    try:  # the common form: octal digits, ended by NUL or space
        return int(field.rstrip(b"\0 "), 8)
    except ValueError:
        pass
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
        #: :class:`TreeSink` turns them into digests (inline, or in another thread).
        self.events: list[Any] | None = [] if digests else None
        self.sink = TreeSink() if digests and inline else None
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
        events = self.events  # with digests: file contents as views, every other byte ...
        raw = bytearray()  # ... gathered here and passed on once (only its own order counts)
        while pos < size and not self.ended:
            if self._data_left:
                k = min(self._data_left, size - pos)
                if self._in_file:
                    events.append(view[pos : pos + k])
                else:
                    if events is not None:
                        raw += view[pos : pos + k]
                    if self._collect is not None:
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
                if events is not None:
                    raw += view[pos : pos + k]
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
            if events is not None:
                raw += block
            self._header(block)
        if events is not None:
            raw += view[pos:]  # what follows the end-of-archive marker
            if raw:
                events.append(bytes(raw))
        if self.sink is not None:
            self.sink.process(self.events)
            self.events.clear()

    def take_events(self) -> list[Any]:
        if self.events is None:
            return []
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
        if block == _ZERO_BLOCK:
            self.ended = True
            return
        stored = _number(block[148:156], "checksum")
        unsigned = sum(block) - sum(block[148:156]) + 256  # the checksum field counts as spaces
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


class BackgroundDigests:
    """The digests of an archive computed in a thread of their own, while it streams.

    hashlib releases the GIL, so this overlaps with reading and header parsing. Given a
    ``sink``, its thread turns the scanner's events into the tree digests and the headers
    digest (each byte hashed once); ``whole`` adds the sha256 of the whole archive in a
    second thread, the check of archives recorded before the headers digest existed (and
    of those streamed from another node). Chunks must be immutable ``bytes``; at most
    eight batches are queued per thread: memory stays flat.
    """

    def __init__(self, sink: TreeSink | None = None, whole: bool = True) -> None:
        self._hash = hashlib.sha256() if whole else None
        self.sink = sink
        self._closed = False
        self._threads: list[tuple[queue.Queue, threading.Thread]] = []
        self._whole = self._start("digests", self._hash.update) if whole else None
        self._events = self._start("tree-digests", sink.process) if sink is not None else None

    def _start(self, name: str, work: Any) -> queue.Queue:
        box: queue.Queue = queue.Queue(maxsize=8)

        def run() -> None:
            while True:
                item = box.get()
                if item is None:
                    return
                work(item)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append((box, thread))
        return box

    def update(self, chunk: bytes, events: list[Any] | None = None) -> None:
        if self._whole is not None:
            self._whole.put(chunk)
        if events:
            self._events.put(events)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for box, _thread in self._threads:
                box.put(None)
            for _box, thread in self._threads:
                thread.join()

    def hexdigest(self) -> str:
        """The whole archive's sha256 (``whole``), once every chunk is hashed."""
        self.close()
        return self._hash.hexdigest()

    def digests(self) -> dict[str, str]:
        """The sink's digests (tree, meta, headers), once every event is processed."""
        self.close()
        return self.sink.digests()
