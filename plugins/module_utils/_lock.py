# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-app lock ``<state_dir>/<recipe>/lock``. PRIVATE to the collection: no compatibility
promises.

Warm runs of one app are serialized (SPEC WC8, §5). The lock must live from the start of a
play to its end, much longer than the module process that takes it, so it cannot be a
kernel lock (``flock``/``fcntl``) held by that process: the kernel drops those when the
process exits. It is an **owner file** instead:

* The owner record is JSON ``{run_id, pid, start, boot_id, host, since, play, recipe}``.
  ``pid`` is the long-lived process the lock belongs to: the ``ansible-playbook`` process
  running the play (found by :func:`find_owner_pid`), or an explicit ``owner_pid``.
  ``start`` is that process's start time (``/proc/<pid>/stat`` field 22) and ``boot_id``
  the kernel's boot id, so a reused pid or a reboot is told apart from the real owner.
* The record is written whole to a temporary sibling, fsynced, then published with
  ``link(2)``, which fails when ``lock`` exists: a lock file never appears half written,
  and two acquirers can never both create it.
* Every look-then-act step (acquire, stale break, release) runs inside a short critical
  section: an exclusive ``flock`` on ``<state_dir>/<recipe>/.lock.guard`` held only for the
  few system calls of that step (the kernel releases it if the process dies). This closes
  the classic stale-break race where two contenders both judge the old owner dead and the
  second removes the lock the first just took.
* A holder is **stale** when it was recorded on this host, its process is gone (no such
  pid, a zombie, a different start time or another boot) **and** no process of its run
  still works on the recipe. The owner process dying does not end the run's work: Ansible's
  workers call ``setsid()``, so a module survives a SIGKILL to ``ansible-playbook`` alone
  and goes on to its end. Every module that changes a canonical therefore holds a shared
  ``flock`` on the recipe's folder (the work lock, ``RecipePaths.work``) for its whole
  life (:func:`working`); the kernel drops it when that process ends, however it ends.
  While the owner is gone but the work lock is held, the holder is *orphaned*: not stale, and an
  acquirer waits for the orphan's work to end (bounded by its timeout) and says so
  (``LockInfo.orphan_wait``). A stale holder is broken, and the broken record is returned
  so the caller logs it. A holder recorded on another host
  is never judged stale: its process cannot be seen from here; ``force`` takes it.
* A lock file that is not a valid owner record (empty, truncated, hand-edited) is stale
  only once it is older than a grace period (``corrupt_grace``), and is never released by
  :meth:`AppLock.release` without ``force``.

Why not a library: ``filelock`` and ``fasteners`` were checked. Their kernel locks end with
the process that holds them; ``filelock``'s marker (soft) locks outlive it but always
record the *calling* process (``os.getpid()``) as the owner, so the lock would look stale
as soon as the module exits, carry no run id, and can only be released by the object that
took it, in the same process. None of them fits a lock taken by one short process on
behalf of another and released by a third; the owner file here is a few hundred lines and
needs nothing beyond the standard library on the host that runs the play.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import itertools
import json
import os
import secrets
import socket
import time
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    validate_run_id,
    validate_state_dir,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    LOCK_NAME,
    RecipePaths,
    fsync_dir,
    stamp,
    write_synced,
)

GUARD_NAME = ".lock.guard"
#: Seconds a lock file that is not a valid owner record must age before it counts as stale.
CORRUPT_GRACE = 60.0
_OWNER_PROGRAMS = ("ansible-playbook",)
_MAX_RECORD = 64 * 1024

# Crash points (tests/reliability/test_crashes.py kills the whole play at each).
P_TAKEN = _faults.register("lock.taken", "acquire: the owner file published, nothing else done")
P_RELEASING = _faults.register(
    "lock.releasing", "release: about to remove the owner file of the run that holds it"
)


class LockError(CcciError, RuntimeError):
    """The lock cannot be taken or released. The message names the recipe and the holder."""


class LockTimeout(LockError):
    """The bounded wait ended with the lock still held by someone else."""

    def __init__(self, message: str, holder: dict[str, Any] | None, waited: float):
        super().__init__(message, holder=holder, waited=waited, broken=None)
        self.holder = holder
        self.waited = waited


@dataclasses.dataclass
class LockInfo:
    """The result of :meth:`AppLock.acquire`.

    ``holder`` is the owner record now in the lock (this run's), ``waited`` the seconds
    spent waiting, ``broken`` the stale (or forced) record that was removed to take the
    lock, if any, and ``changed`` False when this run already held it.
    """

    holder: dict[str, Any]
    waited: float
    broken: dict[str, Any] | None = None
    changed: bool = True
    #: Seconds of ``waited`` spent on a holder whose owner was gone while a process of its
    #: run still worked on the recipe (held the work lock).
    orphan_wait: float = 0.0


# ---------------------------------------------------------------------------- processes


def host_name() -> str:
    return socket.gethostname()


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, starttime)`` of a process from ``/proc/<pid>/stat``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None when it does not run."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[2]


def process_alive(pid: int, start: int | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, started at ``start``."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # No /proc here: the pid exists; a start time cannot be compared.
        return True
    state, _ppid, started = stat
    if state in ("Z", "X"):
        return False
    return start is None or started == start


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _is_owner_program(argv: list[str]) -> bool:
    # `ansible-playbook ...` or `/venv/bin/python /venv/bin/ansible-playbook ...`
    return any(os.path.basename(arg) in _OWNER_PROGRAMS for arg in argv[:2])


def ancestors(pid: int | None = None) -> list[int]:
    """``pid`` (default: this process) and its parents, nearest first, up to pid 1."""
    pid = os.getpid() if pid is None else pid
    chain: list[int] = []
    while pid > 1 and pid not in chain:
        chain.append(pid)
        stat = _proc_stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return chain


def find_owner_pid(start_pid: int | None = None) -> int | None:
    """The ``ansible-playbook`` process that runs the play this process belongs to.

    Walks the parents from ``start_pid`` (this process) to the first process whose command
    line is ``ansible-playbook``; that is usually a per-task worker *forked* from the play's
    main process (same command line), so the walk goes on up while the parent has the very
    same command line and returns the topmost of them: the process that lives until the
    play ends. A play started by a module of another play is told apart by its different
    command line. None when no such ancestor exists (then pass ``owner_pid``).
    """
    pid = os.getpid() if start_pid is None else start_pid
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        argv = _cmdline(pid)
        stat = _proc_stat(pid)
        if argv and _is_owner_program(argv):
            while stat is not None and stat[1] > 1 and _cmdline(stat[1]) == argv:
                pid = stat[1]
                stat = _proc_stat(pid)
            return pid
        if stat is None:
            return None
        pid = stat[1]
    return None


#: ansible-playbook options whose value may be a YAML file but is not a playbook.
_VALUE_OPTIONS = frozenset(
    (
        "-i",
        "--inventory",
        "--inventory-file",
        "-e",
        "--extra-vars",
        "--vault-id",
        "--vault-password-file",
        "--vault-pass-file",
        "--connection-password-file",
        "--become-password-file",
        "-M",
        "--module-path",
        "--private-key",
        "--key-file",
    )
)


def play_of(pid: int) -> str | None:
    """The playbook file names on the command line of ``pid`` (``quick.yml``), or None."""
    argv = _cmdline(pid)
    books = []
    for before, arg in itertools.pairwise(argv):
        if before in _VALUE_OPTIONS or arg.startswith(("-", "@")):
            continue
        if arg.endswith((".yml", ".yaml")):
            books.append(os.path.basename(arg))
    return " ".join(books) or None


# ---------------------------------------------------------------------------- records


def describe(holder: dict[str, Any] | None) -> str:
    """``run a1b2c3 (pid 123 on host x, since ..., play quick.yml)`` for messages."""
    if holder is None:
        return "nobody"
    if holder.get("corrupt"):
        return (
            f"an unreadable lock file ({holder.get('reason')}, last written {holder.get('since')})"
        )
    play = f", play {holder['play']}" if holder.get("play") else ""
    return (
        f"run {holder.get('run_id')} (pid {holder.get('pid')} on host {holder.get('host')}, "
        f"since {holder.get('since')}{play})"
    )


def _parse_record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("run_id"), str) or not isinstance(record.get("host"), str):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    return record


class AppLock:
    """The lock of one recipe's warm state: ``<state_dir>/<recipe>/lock``.

    :meth:`acquire` and :meth:`release` are safe against each other from any number of
    threads and processes on this host. Writers of the recipe's other state files (the
    registry, the snapshot) rely on this lock being held; they do not lock themselves.
    """

    def __init__(self, state_dir: str, recipe: str, corrupt_grace: float = CORRUPT_GRACE):
        try:
            paths = RecipePaths.of(state_dir, recipe)
        except ValidationError as exc:
            raise LockError(str(exc)) from None
        self.state_dir, self.recipe = paths.state_dir, paths.recipe
        self.directory, self.path, self.work_path = paths.directory, paths.lock, paths.work
        self.guard_path = os.path.join(self.directory, GUARD_NAME)
        self.corrupt_grace = corrupt_grace

    # -- reading

    def holder(self) -> dict[str, Any] | None:
        """The owner record in the lock file; None when unlocked.

        A file that is not a valid owner record is returned as
        ``{"corrupt": True, "reason": ..., "since": <mtime>, "age": <seconds>}``.
        """
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                raw = handle.read(_MAX_RECORD + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LockError(f"the lock file {self.path} cannot be read: {exc.strerror}") from exc
        record = _parse_record(raw) if len(raw) <= _MAX_RECORD else None
        if record is not None:
            return record
        return {
            "corrupt": True,
            "reason": "empty" if not raw else "not an owner record",
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime)),
            "age": round(max(0.0, time.time() - stat.st_mtime), 1),
        }

    def is_stale(self, holder: dict[str, Any] | None) -> bool:
        """True when the holder's process is certainly gone and no process of its run still
        works on the recipe (see the module docstring)."""
        return self.owner_gone(holder) and not self.work_busy()

    def orphaned(self, holder: dict[str, Any] | None) -> bool:
        """True when the holder's owner is gone but a process still holds the work lock."""
        return self.owner_gone(holder) and self.work_busy()

    def work_busy(self) -> bool:
        """True while some process holds the recipe's work lock (:func:`working`)."""
        try:
            fd = os.open(self.work_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's flock
        return False

    def owner_gone(self, holder: dict[str, Any] | None) -> bool:
        """True when the holder's owner process is certainly gone."""
        if holder is None:
            return False
        if holder.get("corrupt"):
            return float(holder.get("age", 0)) >= self.corrupt_grace
        if holder.get("host") != host_name():
            return False
        recorded_boot = holder.get("boot_id")
        current_boot = boot_id()
        if recorded_boot and current_boot and recorded_boot != current_boot:
            return True
        start = holder.get("start")
        return not process_alive(holder["pid"], start if isinstance(start, int) else None)

    def check_ours(self, holder: dict[str, Any] | None, run_id: str | None) -> None:
        """Raise :class:`LockError` when a live run other than this process's holds the lock.

        This process's run: ``run_id``, or the owner pid among this process's ancestors.
        """
        if (
            holder is not None
            and not holder.get("corrupt")
            and holder.get("host") == host_name()
            and (run_id is None or holder.get("run_id") != run_id)
            and holder.get("pid") not in ancestors()
            and not self.owner_gone(holder)
        ):
            raise LockError(
                f"refusing to change the canonical of {self.recipe}: its lock is held by "
                f"{describe(holder)}, not by this run"
                + (f" {run_id}" if run_id else "")
                + "; this process's play is gone or never took the lock"
            )

    def _owns(self, holder: dict[str, Any] | None, run_id: str) -> bool:
        return bool(holder) and not holder.get("corrupt") and holder.get("run_id") == run_id

    # -- the critical section

    @contextlib.contextmanager
    def _guard(self):
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.guard_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _publish(self, record: dict[str, Any]) -> None:
        """Create the lock file holding ``record``; FileExistsError when it exists."""
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        tmp = os.path.join(self.directory, f".lock.{record['run_id']}.{secrets.token_hex(4)}.tmp")
        try:
            write_synced(tmp, data, 0o644)
            try:
                os.link(tmp, self.path)
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    raise FileExistsError(self.path) from None
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # A file system without hard links: create exclusively, then write.
                write_synced(self.path, data, 0o644)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(self.directory)

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fsync_dir(self.directory)

    # -- acquire / release

    def new_record(
        self, run_id: str, owner_pid: int | None = None, play: str | None = None
    ) -> dict[str, Any]:
        """The owner record this process would write for ``run_id``."""
        pid = owner_pid if owner_pid is not None else find_owner_pid()
        if pid is None:
            raise LockError(
                f"cannot lock {self.recipe}: no ansible-playbook process was found among the "
                "parents of this process to own the lock; run the task on the host that runs "
                "the play or give owner_pid"
            )
        start = process_start(pid)
        if start is None:
            raise LockError(f"cannot lock {self.recipe}: the owner process {pid} does not run")
        return {
            "recipe": self.recipe,
            "run_id": run_id,
            "pid": pid,
            "start": start,
            "boot_id": boot_id(),
            "host": host_name(),
            "since": stamp(),
            "play": play if play is not None else play_of(pid),
        }

    def try_acquire(
        self, record: dict[str, Any], force: bool = False
    ) -> tuple[bool, dict[str, Any] | None, dict[str, Any] | None]:
        """One look, under the guard: ``(got_it, holder, broken)``.

        ``got_it`` is True when the lock is now ``record``'s run's; ``holder`` is the record
        in the lock afterwards; ``broken`` the stale (or, with ``force``, live) record that
        was removed to take it.
        """
        run_id = record["run_id"]
        with self._guard():
            holder = self.holder()
            stale = self.is_stale(holder)
            if self._owns(holder, run_id) and not stale:
                return True, holder, None
            broken = None
            if holder is not None:
                if not (force or stale):
                    return False, holder, None
                broken = holder
                self._remove()
            try:
                self._publish(record)
            except FileExistsError:  # someone outside this protocol created it
                return False, self.holder(), broken
            return True, record, broken

    def predict_acquire(
        self, run_id: str, force: bool = False
    ) -> tuple[bool, dict[str, Any] | None, dict[str, Any] | None]:
        """One look without changing anything (check mode): ``(changed, holder, would_break)``.

        ``changed`` False: this run holds it already. ``would_break``: the stale (or with
        ``force`` any) holder a real acquire would break. When another live run holds it,
        ``changed`` is True and ``holder`` is that run: a real acquire would wait for it.
        """
        holder = self.holder()
        stale = self.is_stale(holder)
        if self._owns(holder, run_id) and not stale:
            return False, holder, None
        if holder is not None and (force or stale):
            return True, holder, holder
        return True, holder, None

    def acquire(
        self,
        run_id: str,
        timeout: float = 600,
        poll: float = 2.0,
        owner_pid: int | None = None,
        play: str | None = None,
        force: bool = False,
    ) -> LockInfo:
        """Take the lock for ``run_id``, waiting up to ``timeout`` seconds.

        Taking it again for the same run is a no-op (``changed`` False). A stale holder is
        broken (``broken``). With ``force`` any holder is broken. Raises :class:`LockTimeout`
        naming the holder when the wait ends, :class:`LockError` on bad input.
        """
        try:
            validate_run_id(run_id)
        except ValidationError as exc:
            raise LockError(str(exc)) from None
        if timeout < 0 or poll <= 0:
            raise LockError(f"cannot lock {self.recipe}: timeout must be >= 0 and poll > 0")
        record = self.new_record(run_id, owner_pid=owner_pid, play=play)
        began = time.monotonic()
        deadline = began + timeout
        orphan_since: float | None = None
        orphan_wait = 0.0
        while True:
            got, holder, broken = self.try_acquire(record, force=force)
            now = time.monotonic()
            if orphan_since is not None:
                orphan_wait += now - orphan_since
                orphan_since = None
            waited = round(now - began, 3)
            if got:
                _faults.event("lock-taken", recipe=self.recipe, run_id=run_id)
                _faults.checkpoint(P_TAKEN)
                return LockInfo(
                    holder=holder or record,
                    waited=waited,
                    broken=broken,
                    changed=holder is record,
                    orphan_wait=round(orphan_wait, 3),
                )
            orphan = self.orphaned(holder)
            left = deadline - time.monotonic()
            if left <= 0:
                message = self.timeout_message(holder, waited, orphan=orphan)
                raise LockTimeout(message, holder, waited)
            if orphan:
                orphan_since = time.monotonic()
            _faults.event("lock-wait", recipe=self.recipe, run_id=run_id, orphan=orphan)
            time.sleep(min(poll, left))

    def timeout_message(
        self, holder: dict[str, Any] | None, waited: float, orphan: bool = False
    ) -> str:
        message = f"{self.recipe} is locked by {describe(holder)}; waited {waited:g} s"
        if orphan:
            message += (
                " (its play is gone, but a process of that run still works on the recipe: it "
                f"holds a flock on {self.work_path}; the lock is free once that process ends)"
            )
        elif holder and holder.get("corrupt"):
            message += (
                f" (the lock file {self.path} is not a valid owner record; it counts as stale "
                f"once {self.corrupt_grace:g} s old, or release it with force)"
            )
        elif holder and holder.get("host") != host_name():
            message += (
                f" (the lock was taken on another host, {holder.get('host')}, and is never "
                "broken automatically: if that run is gone, release it with force)"
            )
        return message

    def release(self, run_id: str, force: bool = False) -> bool:
        """Release the lock held by ``run_id``; True when a lock file was removed.

        Idempotent: False when there is no lock. Refuses (:class:`LockError`) a lock held
        by another run, or an unreadable lock file, unless ``force``.
        """
        _faults.checkpoint(P_RELEASING)
        with self._guard():
            if not self.predict_release(run_id, force):
                return False
            self._remove()
            return True

    def predict_release(self, run_id: str, force: bool = False) -> bool:
        """What :meth:`release` would return, without changing anything (check mode)."""
        holder = self.holder()
        if holder is None:
            return False
        if not (force or self._owns(holder, run_id)):
            raise LockError(
                f"refusing to release the lock of {self.recipe}: it is held by "
                f"{describe(holder)}, not by run {run_id}; use force to release it anyway"
            )
        return True


@contextlib.contextmanager
def working(state_dir: str, recipe: str, run_id: str | None = None):
    """Hold the recipe's work lock for the life of a module that changes its canonical.

    A shared ``flock`` on ``RecipePaths.work`` (the recipe's folder: nothing is written), taken before the first change and dropped
    by the kernel when this process ends, however it ends: while it is held the recipe's
    lock is never judged stale (:meth:`AppLock.is_stale`), so a run whose
    ``ansible-playbook`` died cannot be overtaken by the next run while this module still
    works. Then, under the lock's guard, the safe point of an orphan: when the lock is held
    by a live run that is not this process's (neither ``run_id`` nor an ancestor process),
    this process's play is gone and another run took over, so nothing is touched
    (:class:`LockError`). With no lock at all (a module used outside a locked play, or no
    recipe folder yet: then nothing is held and nothing created), or a dead holder (this
    run's own, or an operator's way back after a crash), work goes on.
    """
    lock = AppLock(state_dir, recipe)
    if not os.path.isdir(lock.directory):
        # no recipe folder: no lock to keep (the work fails, or makes the first state)
        yield
        return
    fd = os.open(lock.work_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    started = False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if lock.holder() is not None:  # published whole (link): a read without the guard
            with lock._guard():
                lock.check_ours(lock.holder(), run_id)
        _faults.event("work-start", recipe=recipe, run_id=run_id)
        started = True
        yield
    finally:
        os.close(fd)  # closing drops the flock
        if started:
            _faults.event("work-end", recipe=recipe, run_id=run_id)


def list_locks(state_dir: str, corrupt_grace: float = CORRUPT_GRACE) -> list[dict[str, Any]]:
    """The holder of every recipe lock under ``state_dir``, sorted by recipe.

    Each entry is the owner record plus ``recipe``, ``path`` and ``stale``. The sweep
    refuses to start while any entry is not stale.
    """
    root = validate_state_dir(state_dir)
    found: list[dict[str, Any]] = []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return found
    for name in names:
        if not os.path.isfile(os.path.join(root, name, LOCK_NAME)):
            continue
        try:
            lock = AppLock(root, name, corrupt_grace=corrupt_grace)
        except LockError:
            continue  # not a recipe folder (alerts/, runs/)
        holder = lock.holder()
        if holder is None:
            continue
        entry = dict(holder)
        entry["recipe"] = name
        entry["path"] = lock.path
        entry["stale"] = lock.is_stale(holder)
        found.append(entry)
    return found
