# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Crash points for tests. PRIVATE to the collection: no compatibility promises.

Code that must survive a crash calls :func:`checkpoint` at the places where a crash is
most interesting (archives written but not yet swapped in, halfway through a swap, ...).
In production the call is one environment lookup and returns.

A test that wants to crash the process at a point sets two environment variables::

    CCCI_PAUSE_AT=snapshot.written       # the checkpoint name
    CCCI_PAUSE_DIR=/tmp/some-dir         # where the marker file goes

When the process reaches that checkpoint it creates ``$CCCI_PAUSE_DIR/<name>.reached``
(holding its pid) and blocks until the file is deleted. Meanwhile the test does what it
came for, typically ``SIGKILL``, and then checks what was left behind. Deleting the file
lets the process continue, which tests use to prove the point is on the normal path.
``CCCI_PAUSE_TIMEOUT`` (seconds, default 600) bounds the wait: a forgotten pause fails
loudly instead of hanging a test run forever.

A point that a play passes more than once (every deploy passes ``deploy.converged``) is
chosen by its occurrence: ``CCCI_PAUSE_AT=deploy.converged@2`` pauses the second time any
process of the play reaches it (the passes are counted in ``$CCCI_PAUSE_DIR/<name>.count``,
one byte appended per pass). The marker is then ``<name>@2.reached``.

Events for tests: with ``CCCI_EVENT_LOG=<file>`` set, :func:`event` appends one JSON line
per call (``event``, ``pid``, ``at`` as ``time.time()``, and the caller's fields). The
reliability battery gives each play its own file and reads when each process of a run
worked on a recipe and when each run held its lock (tests/reliability/test_kills.py).
"""

from __future__ import annotations

import json
import os
import time

ENV_AT = "CCCI_PAUSE_AT"
ENV_DIR = "CCCI_PAUSE_DIR"
ENV_TIMEOUT = "CCCI_PAUSE_TIMEOUT"
ENV_EVENTS = "CCCI_EVENT_LOG"

#: Every checkpoint name the collection uses, so tests can iterate over them.
POINTS: dict[str, str] = {}


def register(name: str, where: str) -> str:
    """Declare a checkpoint (done at import time by the code that uses it)."""
    POINTS[name] = where
    return name


def register_all(points: dict[str, str]) -> tuple[str, ...]:
    """Declare several checkpoints at once (name -> where); their names, in order."""
    return tuple(register(name, where) for name, where in points.items())


def checkpoint(name: str) -> None:
    """Pause here when ``CCCI_PAUSE_AT`` names this point; otherwise return at once."""
    wanted = os.environ.get(ENV_AT)
    if not wanted:
        return
    if wanted == name:
        _pause(name)
        return
    point, sep, nth = wanted.rpartition("@")
    if sep and point == name and nth.isdigit() and _count(name) == int(nth):
        _pause(wanted)


def _count(name: str) -> int:
    """Count one more pass of ``name`` (across the processes of a play); the new total."""
    directory = os.environ.get(ENV_DIR) or "/tmp"
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f"{name}.count"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, b".")
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def marker_path(name: str, directory: str | None = None) -> str:
    directory = directory or os.environ.get(ENV_DIR) or "/tmp"
    return os.path.join(directory, f"{name}.reached")


def _pause(name: str) -> None:
    marker = marker_path(name)
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    # Written whole, then renamed into place: a test that sees the marker reads the pid.
    partial = f"{marker}.{os.getpid()}.tmp"
    with open(partial, "w", encoding="ascii") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(partial, marker)
    timeout = float(os.environ.get(ENV_TIMEOUT, "600"))
    deadline = time.monotonic() + timeout
    while os.path.exists(marker):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"test crash point {name!r} waited {timeout:g}s for {marker} to be deleted"
            )
        time.sleep(0.02)


def event(name: str, **fields: object) -> None:
    """Append one event line to ``$CCCI_EVENT_LOG`` when it is set; otherwise return."""
    path = os.environ.get(ENV_EVENTS)
    if not path:
        return
    line = json.dumps({"event": name, "pid": os.getpid(), "at": time.time(), **fields})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
