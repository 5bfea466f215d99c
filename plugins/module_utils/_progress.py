# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress lines of long steps, while a module runs. PRIVATE to the collection.

A module cannot print while it runs: Ansible shows its result only when it returns. So
a long step (a snapshot, an extract, a verify, a wait for a deploy) writes its progress
as JSON lines to a file, and the ``coopcloud.ci.ci_log`` stdout callback prints the new
lines of that file while the task runs (it tails it once a second), so they reach the
CI log through ``ansible-playbook``'s own output.

The file is named by the environment variable :data:`ENV` (``CCCI_PROGRESS_FILE``),
which the callback sets in the controller before the first task, so every module it
starts on the controller inherits it. Without it (the default callback, ansible-runner
without ci_log, a module run on another host) a :class:`Progress` does nothing.

One line each, appended with ``O_APPEND`` (one ``write``: lines of parallel tasks never
interleave)::

    {"what": "snapshot of app_data", "done": 1234, "total": 5678, "unit": "B",
     "rate": 812.5, "elapsed": 4.2, "line": "snapshot of app_data: 1.2 KiB of 5.5 KiB (21 %), 0.8 KiB/s"}

Use::

    progress = Progress("snapshot of app_data", total=size, unit="B")
    for chunk in chunks:
        ...
        progress.add(len(chunk))      # writes a line at most every `interval` seconds
    progress.finish()                 # the last line, always

    # a wait: one line per poll that is due, what it waits for as the detail
    progress = Progress("deploy of app_stack", unit="s")
    progress.update(elapsed, detail="2/3 tasks running")

``interval`` (default 4 s) leaves the callback a second of slack to print at least one
line every 5 s. A step shorter than ``interval`` prints nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

ENV = "CCCI_PROGRESS_FILE"
INTERVAL = 4.0

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(amount: float, unit: str) -> str:
    """``amount`` of ``unit`` for a reader: bytes as KiB/MiB/GiB, seconds as ``12s``."""
    if unit == "B":
        value = float(amount)
        for name in _BYTE_UNITS:
            if abs(value) < 1024 or name == _BYTE_UNITS[-1]:
                return f"{value:.0f} B" if name == "B" else f"{value:.1f} {name}"
            value /= 1024
    if unit == "s":
        return f"{amount:.0f}s"
    number = f"{amount:.0f}" if float(amount).is_integer() else f"{amount:.1f}"
    return f"{number} {unit}" if unit else number


def line(
    what: str,
    done: float,
    total: float | None,
    unit: str,
    rate: float | None,
    detail: str | None = None,
) -> str:
    """``what: <done> of <total> (<pct> %), <rate>/s - <detail>``, with what is known."""
    text = f"{what}: {human(done, unit)}"
    if total:
        text += f" of {human(total, unit)} ({min(100.0, 100.0 * done / total):.0f} %)"
    if rate is not None and unit != "s":
        text += f", {human(rate, unit)}/s"
    if detail:
        text += f" - {detail}"
    return text


class Progress:
    """The progress of one step; see the module docstring. Never raises on I/O."""

    def __init__(
        self,
        what: str,
        total: float | None = None,
        unit: str = "B",
        *,
        path: str | None = None,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.what = what
        self.total = total
        self.unit = unit
        self.path = path if path is not None else os.environ.get(ENV) or None
        self.interval = interval
        self.clock = clock
        self.done = 0.0
        self.detail: str | None = None
        self.started = clock()
        self._next = self.started + interval
        self.lines = 0  # lines written, for tests and callers

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def add(self, amount: float, detail: str | None = None) -> None:
        """``amount`` more done; a line when one is due."""
        self.update(self.done + amount, detail)

    def update(self, done: float, detail: str | None = None) -> None:
        """``done`` so far; a line when one is due (every ``interval`` seconds)."""
        self.done = done
        if detail is not None:
            self.detail = detail
        if self.path is not None and self.clock() >= self._next:
            self._write()

    def finish(self, detail: str | None = None) -> None:
        """The last line (once the step took at least ``interval``: a short one stays quiet)."""
        if detail is not None:
            self.detail = detail
        if self.path is not None and (self.lines or self.clock() - self.started >= self.interval):
            self._write()

    def _write(self) -> None:
        now = self.clock()
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 and self.unit != "s" else None
        entry = {
            "what": self.what,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "rate": round(rate, 1) if rate is not None else None,
            "elapsed": round(elapsed, 1),
            "line": line(self.what, self.done, self.total, self.unit, rate, self.detail),
        }
        data = (json.dumps(entry, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            self.path = None  # progress is a courtesy: a step never fails for it
            return
        self.lines += 1
        while self._next <= now:
            self._next += self.interval


def read_lines(path: str, offset: int) -> tuple[list[str], int]:
    """The ``line`` texts appended to ``path`` since ``offset``, and the new offset.

    Only whole lines are read; a line that is not one of ours is skipped.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    texts = []
    for raw in data[:end].splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("line"), str):
            texts.append(entry["line"][:300])
    return texts, offset + end
