# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading snapshot archives from disk. PRIVATE to the collection.

Two ways to read one archive against its manifest entry (``bytes`` and its digests:
``headers_sha256`` with ``tree_digest``, or an older entry's ``sha256``), each built on
:class:`_archive.TarScanner` and each byte hashed once:

* :func:`verify_archive` reads it whole: size, digests and every member header;
* :func:`extract_archive` streams it into GNU tar's extract, hashing every byte on its
  way and checking every header before the chunk holding it is passed on.

Each long read reports its progress (``_progress``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _archive
from ansible_collections.coopcloud.ci.plugins.module_utils._progress import Progress


def _open_archive(path: str, buffering: int) -> Any:
    try:
        return open(path, "rb", buffering=buffering)
    except FileNotFoundError:
        raise _archive.CorruptSnapshotError(
            f"archive {path} named in the snapshot manifest is missing"
        ) from None


def _check_size(path: str, handle: Any, entry: Mapping[str, Any]) -> None:
    size = os.fstat(handle.fileno()).st_size
    if size != entry["bytes"]:
        raise _archive.CorruptSnapshotError(
            f"archive {path} has {size} bytes but the manifest records "
            f"{entry['bytes']}: the snapshot is corrupt"
        )


def _pipe_to(proc: subprocess.Popen) -> Any:
    """The stdin of ``proc`` with a 1 MiB pipe buffer where the kernel allows it."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, _archive.CHUNK)
    return proc.stdin


class _Check:
    """One archive read against its manifest entry, each byte hashed once, in a thread.

    An entry with ``headers_sha256`` (every snapshot taken here) is checked by the
    scanner's digests: every byte that is not file content against ``headers_sha256``,
    every file's content through its sha256 in the tree digest. An entry with ``sha256``
    (snapshots taken before, and those streamed from another node) is checked by the
    whole archive's sha256, the headers by the scanner.
    """

    def __init__(self, path: str, entry: Mapping[str, Any], max_members: int) -> None:
        self.path = path
        self.entry = entry
        self.whole = "sha256" in entry
        self.scanner = _archive.TarScanner(
            f"archive {path}", max_members, digests=not self.whole, inline=False
        )
        self.digest = _archive.BackgroundDigests(
            None if self.whole else _archive.TreeSink(), whole=self.whole
        )
        self.total = 0
        self.problem: _archive.SnapshotError | None = None

    @property
    def reading(self) -> bool:
        """Whether the rest of the archive still counts (a whole-archive digest does)."""
        return self.problem is None or self.whole

    def feed(self, chunk: bytes) -> bool:
        """Hash and scan ``chunk``; whether it may be passed on (every header in it passed)."""
        self.total += len(chunk)
        if self.problem is None:
            try:
                self.scanner.feed(chunk)
            except _archive.SnapshotError as exc:
                self.problem = exc  # a digest mismatch is the clearer error: read on
        self.digest.update(chunk, self.scanner.take_events() if self.problem is None else None)
        return self.problem is None

    def close(self) -> None:
        self.digest.close()

    def verdict(self) -> dict[str, Any]:
        """The archive read whole: its summary, or the error that refuses it (digest first)."""
        entry = self.entry
        if self.whole:
            sha256 = self.digest.hexdigest()
            if sha256 != entry["sha256"] or self.total != entry["bytes"]:
                raise self._mismatch(
                    "its sha256", f"manifest {entry['sha256'][:16]}…, file {sha256[:16]}…"
                )
            if self.problem is not None:
                raise self.problem
            return {"sha256": sha256, "bytes": self.total, **self.scanner.finish()}
        digests = self.digest.digests()
        if isinstance(self.problem, _archive.HostileArchiveError):
            raise self.problem
        if (
            self.problem is not None
            or not self.scanner.ended
            or self.total != entry["bytes"]
            or digests["headers_sha256"] != entry["headers_sha256"]
            or digests["tree_digest"] != entry["tree_digest"]
        ):
            raise self._mismatch(
                "its sha256 digests",
                "headers_sha256 of its headers and padding, tree_digest of its members "
                "and each file's content sha256",
            )
        return {
            "headers_sha256": digests["headers_sha256"],
            "bytes": self.total,
            **self.scanner.finish(),
        }

    def _mismatch(self, what: str, detail: str) -> _archive.CorruptSnapshotError:
        return _archive.CorruptSnapshotError(
            f"archive {self.path} does not match {what} in the manifest ({detail}): "
            "the snapshot is corrupt"
        )


def verify_archive(
    path: str, entry: Mapping[str, Any], max_members: int = _archive.DEFAULT_MAX_MEMBERS
) -> dict[str, Any]:
    """Read the archive whole: size and digests against ``entry`` (its manifest entry),
    and every member header against the hostile rules. Its summary, or the refusal."""
    handle = _open_archive(path, 0)
    check = _Check(path, entry, max_members)
    progress = Progress(f"verifying {os.path.basename(path)}", total=entry["bytes"])
    try:
        with handle:
            _check_size(path, handle, entry)
            while check.reading and (chunk := handle.read(_archive.CHUNK)):
                check.feed(chunk)
                progress.add(len(chunk))
        result = check.verdict()
        progress.finish()
    finally:
        check.close()
    return result


def extract_archive(
    extract: list[str],
    env: Mapping[str, str],
    path: str,
    entry: Mapping[str, Any],
    staging: str,
    short: str,
    max_members: int = _archive.DEFAULT_MAX_MEMBERS,
) -> dict[str, Any]:
    """Stream the archive into ``extract`` (GNU tar's extract argv) run in ``staging``,
    verifying it on the way.

    Each byte is read once and hashed once (in a second thread, see :class:`_Check`);
    every member header is checked before the chunk holding it is passed on,
    so tar never sees a hostile member. Any refusal kills tar; the caller removes
    ``staging``. The digests are compared when the archive has been read whole.
    """
    handle = _open_archive(path, 0)
    check = _Check(path, entry, max_members)
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    progress = Progress(f"restoring volume {short}", total=entry["bytes"])
    proc = None
    try:
        with handle:
            _check_size(path, handle, entry)
            proc = subprocess.Popen(
                [*extract, "--file=-", "--directory", staging],
                stdin=subprocess.PIPE,
                stderr=errors,
                env=dict(env),
            )
            pipe = _pipe_to(proc)
            while check.reading and (chunk := handle.read(_archive.CHUNK)):
                progress.add(len(chunk))
                if not check.feed(chunk):
                    if pipe is not None:
                        proc.kill()  # tar never sees a refused member
                        pipe = None
                    continue
                if pipe is not None:
                    try:
                        pipe.write(chunk)
                    except BrokenPipeError:
                        pipe = None  # tar stopped reading: its exit status says why
        result = check.verdict()
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        rc = proc.wait()
        if rc != 0:
            errors.seek(0)
            err = errors.read().decode(errors="replace").strip()
            raise _archive.SnapshotError(
                f"tar could not extract {path} into {staging}: rc={rc}, stderr: {err[-2000:]}"
            )
        progress.finish()
    except BaseException:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
        raise
    finally:
        check.close()
        errors.close()
    return result
