# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading snapshot archives from disk. PRIVATE to the collection.

Three ways to read one archive against its manifest entry (``bytes``, ``sha256``), each
built on :class:`_archive.TarScanner` and each byte hashed at most once:

* :func:`verify_archive` reads it whole: size, sha256 and every member header;
* :func:`scan_headers` checks the size and every header only, seeking past file
  contents: the cheap check a restore runs before it writes a byte;
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


def verify_archive(
    path: str, entry: Mapping[str, Any], max_members: int = _archive.DEFAULT_MAX_MEMBERS
) -> dict[str, Any]:
    """Read the archive whole: size and sha256 against ``entry`` (its manifest entry), and
    every member header against the hostile rules. Its summary, or the refusal."""
    scanner = _archive.TarScanner(f"archive {path}", max_members)
    total = 0
    problem: _archive.SnapshotError | None = None
    handle = _open_archive(path, 0)
    digest = _archive.BackgroundDigests()
    progress = Progress(f"verifying {os.path.basename(path)}", total=entry["bytes"])
    try:
        with handle:
            _check_size(path, handle, entry)
            while True:
                chunk = handle.read(_archive.CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                total += len(chunk)
                progress.add(len(chunk))
                if problem is None:
                    try:
                        scanner.feed(chunk)
                    except _archive.SnapshotError as exc:
                        problem = exc  # a digest mismatch is the clearer error: read on
        sha256 = digest.hexdigest()
        progress.finish()
    except BaseException:
        digest.close()
        raise
    return _verdict(path, entry, scanner, sha256, total, problem)


def _verdict(
    path: str,
    entry: Mapping[str, Any],
    scanner: _archive.TarScanner,
    sha256: str,
    total: int,
    problem: _archive.SnapshotError | None,
) -> dict[str, Any]:
    """An archive read whole: its summary, or the error that refuses it (digest first)."""
    if sha256 != entry["sha256"] or total != entry["bytes"]:
        raise _archive.CorruptSnapshotError(
            f"archive {path} does not match its sha256 in the manifest "
            f"(manifest {entry['sha256'][:16]}…, file {sha256[:16]}…): "
            "the snapshot is corrupt"
        )
    if problem is not None:
        raise problem
    summary = scanner.finish()
    return {"sha256": sha256, "bytes": total, **summary}


def scan_headers(
    path: str, entry: Mapping[str, Any], max_members: int = _archive.DEFAULT_MAX_MEMBERS
) -> None:
    """Check the archive's size and every member header, seeking past file contents.

    The cheap half of a verify: what the hostile rules look at, without hashing. It
    lets a restore refuse a hostile archive before a byte is written, and hash each
    byte only once, while it is extracted (:func:`extract_archive`).
    """
    scanner = _archive.TarScanner(f"archive {path}", max_members)
    handle = _open_archive(path, 1 << 16)
    try:
        with handle:
            _check_size(path, handle, entry)
            while not scanner.ended:
                block = handle.read(512)
                if not block:
                    break
                scanner.feed(block)
                skip = scanner.skip_data()
                if skip:
                    handle.seek(skip, os.SEEK_CUR)
        scanner.finish()  # a truncated archive is refused here
    except _archive.HostileArchiveError:
        raise
    except _archive.CorruptSnapshotError:
        verify_archive(path, entry, max_members)  # the digest mismatch is the clearer error
        raise


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

    Each byte is read once and hashed once (the archive's sha256, in a second
    thread); every member header is checked before the chunk holding it is passed on,
    so tar never sees a hostile member. Any refusal kills tar; the caller removes
    ``staging``. The digest is compared when the archive has been read whole.
    """
    scanner = _archive.TarScanner(f"archive {path}", max_members)
    handle = _open_archive(path, 0)
    digest = _archive.BackgroundDigests()
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
            total, problem = 0, None
            while chunk := handle.read(_archive.CHUNK):
                digest.update(chunk)
                total += len(chunk)
                progress.add(len(chunk))
                if problem is not None:
                    continue  # read on: a digest mismatch is the clearer error
                try:
                    scanner.feed(chunk)
                except _archive.SnapshotError as exc:
                    problem = exc
                    proc.kill()
                    continue
                if pipe is not None:
                    try:
                        pipe.write(chunk)
                    except BrokenPipeError:
                        pipe = None  # tar stopped reading: its exit status says why
        result = _verdict(path, entry, scanner, digest.hexdigest(), total, problem)
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
        digest.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.wait()
        raise
    finally:
        errors.close()
    return result
