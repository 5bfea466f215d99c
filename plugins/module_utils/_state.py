# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""State files on disk. PRIVATE to the collection: no compatibility promises.

Every state file (registry, manifest, alert, run record) is written atomically: a
temporary sibling, fsync, rename over the target, fsync of the directory. A reader
therefore sees the old file or the new one, never a torn one.

Also the one home of the state layout (:data:`DEFAULT_STATE_DIR`, :class:`RecipePaths`,
the marker of a state dir made on purpose: :func:`init_state_dir`, :func:`require_state_dir`)
and of time: :func:`utc_now`, :func:`stamp` (the one text form of a moment in state
files) and :func:`parse_time` (every moment the collection reads).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (  # noqa: F401
    DEFAULT_STATE_DIR,
    CcciError,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    validate_recipe,
    validate_state_dir,
)


class StateError(CcciError, RuntimeError):
    """A state file is missing, unreadable or malformed. The message names the file."""


# --- layout -------------------------------------------------------------------------------


REGISTRY_NAME = "canonical.json"
SNAPSHOT_NAME = "snapshot"
LOCK_NAME = "lock"


@dataclass(frozen=True)
class RecipePaths:
    """Where one recipe's warm state lives: ``<state_dir>/<recipe>/...`` (SPEC §3).

    :meth:`of` checks both parts first (an absolute state dir other than ``/``, a valid
    recipe name); the registry, the snapshot store, the lock and the status all use it.
    """

    state_dir: str
    recipe: str

    @classmethod
    def of(cls, state_dir: object, recipe: object) -> RecipePaths:
        return cls(validate_state_dir(state_dir), validate_recipe(recipe))

    @property
    def directory(self) -> str:
        return os.path.join(self.state_dir, self.recipe)

    @property
    def registry(self) -> str:
        return os.path.join(self.directory, REGISTRY_NAME)

    @property
    def snapshot(self) -> str:
        return os.path.join(self.directory, SNAPSHOT_NAME)

    @property
    def lock(self) -> str:
        return os.path.join(self.directory, LOCK_NAME)

    @property
    def work(self) -> str:
        """What the work lock is taken on: the recipe's folder itself. Every process changing
        the recipe's canonical holds a shared ``flock`` on it for its whole life
        (``_lock.working``), so the lock is never judged stale while one still runs; a lock
        on the directory writes nothing, so a refused change leaves the state as it was."""
        return self.directory

    @property
    def known_good(self) -> str:
        """The known-good trees of an overlay-backed canonical (:mod:`._overlay`)."""
        return os.path.join(self.directory, "known-good")

    @property
    def overlay(self) -> str:
        """The canonical's overlay upper and work dirs, one folder per volume."""
        return os.path.join(self.directory, "overlay")

    @property
    def secrets(self) -> str:
        """The recipe's secrets key (``secrets/key``, :mod:`._secretkey`): root only."""
        return os.path.join(self.directory, "secrets")


# --- time ---------------------------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{6})\d+")


def utc_now() -> datetime.datetime:
    """Now, as an aware UTC datetime."""
    return datetime.datetime.now(datetime.UTC)


def stamp(moment: datetime.datetime | None = None) -> str:
    """UTC ISO-8601 with a ``Z``, to the second: ``2026-11-26T23:30:56Z`` (default: now)."""
    return (moment or utc_now()).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime.datetime | None:
    """A moment as an aware UTC datetime, or ``None`` when ``value`` is not one.

    Reads ISO-8601 with ``Z``, an offset or none (naive means UTC), Docker's RFC 3339
    with nanoseconds, and datetimes; Docker's zero time ``0001-01-01...`` is ``None``.
    """
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str) and value.strip() and not value.startswith("0001-01-01"):
        text = _FRACTION.sub(r"\1", value.strip().replace("z", "Z"))
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: str, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (it must not exist: FileExistsError) holding ``data``, synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str, data: bytes, mode: int = 0o644) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def dumps(obj: Any) -> bytes:
    """The one JSON form of state files: sorted keys, two-space indent, newline."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str, obj: Any, mode: int = 0o644) -> None:
    atomic_write_bytes(path, dumps(obj), mode)


def read_json(path: str, default: Any = StateError) -> Any:
    """The parsed file; ``default`` when it does not exist (or raise when none is given)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        if default is StateError:
            raise StateError(f"state file {path} does not exist") from None
        return default
    except OSError as exc:
        raise StateError(f"state file {path} cannot be read: {exc.strerror}") from exc
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise StateError(
            f"state file {path} is not valid JSON ({exc}); it may be truncated or hand-edited"
        ) from exc


# --- the state dir itself -----------------------------------------------------------------

#: The file that makes a folder a state dir. Only :func:`init_state_dir` writes it (through
#: ``bin/ccci init-state`` or the ``ci_host`` role); every play and ``bin/ccci`` refuse a
#: state dir without it, so a mistyped ``ccci_state_dir`` is an error, never a new folder.
STATE_MARKER = ".ccci-state"
#: The layout version the marker records; a state dir of a newer version is refused.
STATE_FORMAT = 1


def marker_path(state_dir: str) -> str:
    return os.path.join(state_dir, STATE_MARKER)


def init_hint(state_dir: str) -> str:
    return (
        f"initialise it on purpose with `bin/ccci init-state --state-dir {state_dir}` "
        "(or apply the coopcloud.ci.ci_host role)"
    )


def require_state_dir(state_dir: object) -> str:
    """The state dir, normalised, if it was initialised on purpose; else :class:`StateError`
    naming the path and how to initialise it. Creates nothing."""
    path = validate_state_dir(state_dir)
    marker = marker_path(path)
    data = read_json(marker, default=None) if os.path.isfile(marker) else None
    if not isinstance(data, dict):
        raise StateError(
            f"state dir {path} is not initialised (no valid {marker}): a mistyped "
            f"ccci_state_dir? Nothing was created. To use it, {init_hint(path)}"
        )
    version = data.get("format")
    if not isinstance(version, int) or version > STATE_FORMAT:
        raise StateError(
            f"state dir {path} has format {version!r} ({marker}); this coopcloud.ci reads "
            f"format {STATE_FORMAT}: use the coopcloud.ci that made it"
        )
    return path


def init_state_dir(state_dir: object, by: str = "bin/ccci init-state") -> bool:
    """Make ``state_dir`` a state dir on purpose: create it (and its parents) and write
    the marker. An existing folder is adopted (a state dir of a release before markers);
    an initialised one is left alone. True when something was written."""
    path = validate_state_dir(state_dir)
    if os.path.isfile(marker_path(path)):
        require_state_dir(path)
        return False
    os.makedirs(path, mode=0o755, exist_ok=True)
    write_json(marker_path(path), {"format": STATE_FORMAT, "created_at": stamp(), "created_by": by})
    return True
