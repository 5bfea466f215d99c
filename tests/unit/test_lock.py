"""The per-app lock: owner records, bounded waits, stale breaks, releases, races."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.fixtures import dead_pid, lock_owner

from ansible_collections.coopcloud.ci.plugins.module_utils import _lock
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import (
    AppLock,
    LockError,
    LockTimeout,
    list_locks,
)

ME = os.getpid()
COLLECTIONS = str(Path(__file__).resolve().parents[2] / "collections")


def plant(lock: AppLock, **fields) -> dict:
    """Write an owner record straight into the lock file, as another run would have."""
    record = lock_owner(recipe=lock.recipe, play="quick.yml", **fields)
    os.makedirs(lock.directory, exist_ok=True)
    Path(lock.path).write_text(json.dumps(record))
    return record


@pytest.fixture
def lock(state_dir) -> AppLock:
    return AppLock(str(state_dir), "custom-html")


def test_acquire_writes_a_complete_owner_record(lock):
    info = lock.acquire("a1b2c3", timeout=0, owner_pid=ME, play="quick.yml")
    on_disk = json.loads(Path(lock.path).read_text())
    assert on_disk == info.holder
    assert on_disk["run_id"] == "a1b2c3"
    assert on_disk["pid"] == ME
    assert on_disk["start"] == _lock.process_start(ME)
    assert on_disk["host"] == _lock.host_name()
    assert on_disk["play"] == "quick.yml"
    assert on_disk["recipe"] == "custom-html"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", on_disk["since"])
    assert info.changed is True and info.broken is None and info.waited < 1
    assert lock.holder() == on_disk
    assert not lock.is_stale(on_disk)
    # Only the lock and its guard: no temporary left behind.
    assert sorted(os.listdir(lock.directory)) == [".lock.guard", "lock"]


def test_acquire_again_by_the_same_run_changes_nothing(lock):
    first = lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    before = Path(lock.path).read_bytes()
    again = lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    assert again.changed is False
    assert again.holder == first.holder
    assert Path(lock.path).read_bytes() == before


def test_a_held_lock_fails_after_the_bounded_wait_naming_the_holder(lock):
    plant(lock, run_id="a1b2c3", since="2026-05-01T10:00:00Z")
    began = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        lock.acquire("ffffff", timeout=0.6, poll=0.1, owner_pid=ME)
    elapsed = time.monotonic() - began
    assert 0.6 <= elapsed < 3
    message = str(caught.value)
    assert message.startswith(
        f"custom-html is locked by run a1b2c3 (pid {ME} on host {_lock.host_name()}, "
        "since 2026-05-01T10:00:00Z, play quick.yml); waited 0.6"
    )
    assert caught.value.holder["run_id"] == "a1b2c3"
    assert caught.value.waited >= 0.6
    assert json.loads(Path(lock.path).read_text())["run_id"] == "a1b2c3"


def test_timeout_zero_is_one_look(lock):
    plant(lock)
    began = time.monotonic()
    # one look: no wait, only the look itself (milliseconds; more on a loaded machine)
    with pytest.raises(LockTimeout, match=r"waited 0(\.\d+)? s"):
        lock.acquire("ffffff", timeout=0, owner_pid=ME)
    assert time.monotonic() - began < 0.5


def test_a_waiter_gets_the_lock_when_the_holder_releases(lock):
    lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    timer = threading.Timer(0.4, lock.release, args=("a1b2c3",))
    timer.start()
    try:
        info = lock.acquire("b2c3d4", timeout=10, poll=0.05, owner_pid=ME)
    finally:
        timer.join()
    assert info.holder["run_id"] == "b2c3d4"
    assert 0.3 <= info.waited < 5
    assert info.broken is None


def test_a_dead_owner_is_stale_and_broken_and_returned(lock):
    old = plant(lock, run_id="dead00", pid=dead_pid(), start=12345)
    assert lock.is_stale(lock.holder())
    info = lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    assert info.broken == old
    assert info.changed is True
    assert lock.holder()["run_id"] == "a1b2c3"


def test_a_reused_pid_is_told_apart_by_its_start_time(lock):
    # Our own pid is alive, but the recorded start time is another process's.
    record = plant(lock, pid=ME, start=_lock.process_start(ME) - 1)
    assert lock.is_stale(record)
    assert lock.acquire("a1b2c3", timeout=0, owner_pid=ME).broken == record


def test_an_owner_from_another_boot_is_stale(lock):
    record = plant(lock, boot_id="00000000-0000-0000-0000-000000000000")
    assert _lock.boot_id() is not None
    assert lock.is_stale(record)


def test_a_zombie_owner_is_stale(lock):
    proc = subprocess.Popen(["true"])
    try:
        for _ in range(200):
            stat = _lock._proc_stat(proc.pid)
            if stat and stat[0] == "Z":
                break
            time.sleep(0.01)
        assert _lock._proc_stat(proc.pid)[0] == "Z"
        record = plant(lock, pid=proc.pid, start=_lock.process_start(proc.pid))
        assert lock.is_stale(record)
    finally:
        proc.wait()


def test_a_live_owner_is_not_stale(lock):
    assert not lock.is_stale(plant(lock))
    assert not lock.is_stale(None)


def test_an_owner_from_another_host_is_never_broken_automatically(lock):
    record = plant(lock, host="elsewhere.example", pid=dead_pid())
    assert not lock.is_stale(record)
    with pytest.raises(LockTimeout) as caught:
        lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    assert "on host elsewhere.example" in str(caught.value)
    assert "another host, elsewhere.example, and is never broken automatically" in str(caught.value)
    assert "force" in str(caught.value)
    info = lock.acquire("a1b2c3", timeout=0, owner_pid=ME, force=True)
    assert info.broken == record
    assert lock.holder()["run_id"] == "a1b2c3"


@pytest.mark.parametrize("content", [b"", b'{"run_id": "a1b2', b"[1, 2]", b'{"run_id": "x"}'])
def test_a_corrupt_lock_file_is_stale_only_after_the_grace_period(state_dir, content):
    lock = AppLock(str(state_dir), "custom-html", corrupt_grace=30)
    os.makedirs(lock.directory)
    Path(lock.path).write_bytes(content)
    holder = lock.holder()
    assert holder["corrupt"] is True
    assert not lock.is_stale(holder)
    with pytest.raises(LockTimeout, match="unreadable lock file") as caught:
        lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    assert lock.path in str(caught.value)
    assert Path(lock.path).read_bytes() == content
    old = time.time() - 31
    os.utime(lock.path, (old, old))
    assert lock.is_stale(lock.holder())
    info = lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    assert info.broken["corrupt"] is True
    assert lock.holder()["run_id"] == "a1b2c3"


def test_release_only_what_this_run_holds(lock):
    lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    with pytest.raises(
        LockError,
        match=r"refusing to release the lock of custom-html: it is held by run a1b2c3 .* not by run b2c3d4",
    ):
        lock.release("b2c3d4")
    assert lock.holder()["run_id"] == "a1b2c3"
    assert lock.predict_release("a1b2c3") is True
    assert lock.release("a1b2c3") is True
    assert not os.path.exists(lock.path)
    assert lock.release("a1b2c3") is False  # idempotent
    assert lock.predict_release("a1b2c3") is False


def test_release_with_force_takes_anyones_lock(lock):
    plant(lock, host="elsewhere.example")
    assert lock.release("b2c3d4", force=True) is True
    assert lock.holder() is None


def test_a_corrupt_lock_is_not_released_without_force(lock):
    os.makedirs(lock.directory)
    Path(lock.path).write_bytes(b"")
    with pytest.raises(LockError, match="unreadable lock file"):
        lock.release("a1b2c3")
    assert lock.release("a1b2c3", force=True) is True


def test_same_run_id_with_a_dead_owner_is_taken_again(lock):
    old = plant(lock, run_id="a1b2c3", pid=dead_pid())
    info = lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    assert info.changed is True
    assert info.broken == old
    assert lock.holder()["pid"] == ME


def test_predict_acquire_changes_nothing(lock):
    assert lock.predict_acquire("a1b2c3") == (True, None, None)
    assert not os.path.exists(lock.directory)
    live = plant(lock)
    assert lock.predict_acquire("a1b2c3") == (True, live, None)
    assert lock.predict_acquire("a1b2c3", force=True) == (True, live, live)
    assert lock.predict_acquire("0000aa") == (False, live, None)
    dead = plant(lock, pid=dead_pid())
    assert lock.predict_acquire("a1b2c3") == (True, dead, dead)
    assert lock.holder() == dead


def test_bad_input_is_refused_before_anything_is_written(state_dir):
    with pytest.raises(LockError, match="recipe name 'Bad/Name' is invalid"):
        AppLock(str(state_dir), "Bad/Name")
    with pytest.raises(LockError, match="relative"):
        AppLock("state", "custom-html")
    lock = AppLock(str(state_dir), "custom-html")
    with pytest.raises(LockError, match="run id 'nope' is invalid"):
        lock.acquire("nope", timeout=0, owner_pid=ME)
    with pytest.raises(LockError, match=r"owner process .* does not run"):
        lock.acquire("a1b2c3", timeout=0, owner_pid=dead_pid())
    assert os.listdir(state_dir) == [".ccci-state"]  # only the marker


def test_without_an_ansible_playbook_parent_an_owner_pid_is_required(lock):
    assert _lock.find_owner_pid() is None  # pytest does not run under ansible-playbook
    with pytest.raises(LockError, match=r"no ansible-playbook process was found .* owner_pid"):
        lock.acquire("a1b2c3", timeout=0)
    assert lock.holder() is None


def test_a_failed_write_leaves_neither_lock_nor_temporary(lock, monkeypatch):
    def boom(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_lock.os, "fsync", boom)
    with pytest.raises(OSError, match="No space left"):
        lock.acquire("a1b2c3", timeout=0, owner_pid=ME)
    monkeypatch.undo()
    assert sorted(os.listdir(lock.directory)) == [".lock.guard"]


FAKE_PLAYBOOK = r"""
import os, subprocess, sys
sys.path.insert(0, {collections!r})
from ansible_collections.coopcloud.ci.plugins.module_utils import _lock
if "outer.yml" in sys.argv:
    # A play whose task runs another ansible-playbook (a different command line).
    inner = subprocess.run([sys.executable, __file__, "inner.yml"], capture_output=True, text=True)
    print("outer", os.getpid(), inner.stdout.strip())
    sys.exit(0)
child = os.fork()
if child == 0:
    # A per-task worker: forked, so the same command line; the module runs under sh.
    code = "import sys; sys.path.insert(0, {collections!r}); " \
        "from ansible_collections.coopcloud.ci.plugins.module_utils import _lock; " \
        "print(_lock.find_owner_pid(), _lock.play_of(_lock.find_owner_pid()))"
    out = subprocess.run(["sh", "-c", sys.executable + ' -c "' + code + '"; true'],
                         capture_output=True, text=True)
    sys.stdout.write(out.stdout)
    sys.stdout.flush()
    os._exit(0)
os.waitpid(child, 0)
print("top", os.getpid())
"""


def _fake_playbook(tmp_path) -> Path:
    path = tmp_path / "ansible-playbook"
    path.write_text(FAKE_PLAYBOOK.format(collections=COLLECTIONS))
    return path


def test_the_owner_is_the_play_process_not_its_short_lived_worker(tmp_path):
    script = _fake_playbook(tmp_path)
    out = subprocess.run(
        [sys.executable, str(script), "-i", "inv.yml", "-e", "@vars.yml", "--check", "quick.yml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    found, play, _top, top_pid = out
    assert found == top_pid
    assert play == "quick.yml"


def test_a_play_started_by_another_play_owns_its_own_locks(tmp_path):
    script = _fake_playbook(tmp_path)
    out = subprocess.run(
        [sys.executable, str(script), "outer.yml"], capture_output=True, text=True, check=True
    ).stdout.split()
    # outer <outer pid> <found> <play> top <inner pid>
    _outer, outer_pid, found, play, _top, inner_pid = out
    assert found == inner_pid != outer_pid
    assert play == "inner.yml"


def _contend(lock, barrier, index: int, winners: list, losers: list) -> None:
    run_id = f"{index:06x}"
    barrier.wait()
    try:
        lock.acquire(run_id, timeout=0, owner_pid=ME)
        winners.append(run_id)
    except LockTimeout:
        losers.append(run_id)


def test_threads_racing_never_both_win(lock):
    threads = 8
    for _round in range(60):
        barrier = threading.Barrier(threads)
        winners: list[str] = []
        losers: list[str] = []
        pool = [
            threading.Thread(target=_contend, args=(lock, barrier, i, winners, losers))
            for i in range(threads)
        ]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert len(winners) == 1, winners
        assert len(losers) == threads - 1
        assert lock.holder()["run_id"] == winners[0]
        assert lock.release(winners[0]) is True


def _mutex_worker(state_dir: str, index: int, owner: int, rounds: int, errors) -> None:
    lock = AppLock(state_dir, "custom-html")
    run_id = f"{index:06x}"
    counter = Path(state_dir) / "counter"
    inside = Path(state_dir) / "inside"
    for _ in range(rounds):
        lock.acquire(run_id, timeout=60, poll=0.002, owner_pid=owner)
        try:
            fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            errors.put(f"{run_id} entered while another holder was inside")
            fd = None
        value = int(counter.read_text())
        time.sleep(0.001)
        counter.write_text(str(value + 1))
        if fd is not None:
            os.close(fd)
            os.unlink(inside)
        lock.release(run_id)


def test_processes_taking_turns_never_overlap(state_dir):
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    (state_dir / "counter").write_text("0")
    workers, rounds = 6, 40
    procs = [
        ctx.Process(target=_mutex_worker, args=(str(state_dir), i, ME, rounds, errors))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * workers
    assert errors.empty()
    assert int((state_dir / "counter").read_text()) == workers * rounds
    assert AppLock(str(state_dir), "custom-html").holder() is None


def _break_worker(state_dir: str, index: int, owner: int, barrier, results) -> None:
    lock = AppLock(state_dir, "custom-html")
    barrier.wait()
    try:
        info = lock.acquire(f"{index:06x}", timeout=0, owner_pid=owner)
        results.put(("won", f"{index:06x}", info.broken is not None))
    except LockTimeout as exc:
        results.put(("lost", f"{index:06x}", exc.holder["run_id"]))


@pytest.mark.slow  # processes racing
def test_processes_racing_to_break_a_stale_lock_only_one_wins(lock):
    ctx = multiprocessing.get_context("fork")
    workers = 6
    gone = dead_pid()
    for _round in range(25):
        plant(lock, run_id="dead00", pid=gone, start=1)
        barrier = ctx.Barrier(workers)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_break_worker, args=(lock.state_dir, i, ME, barrier, results))
            for i in range(workers)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        outcomes = [results.get(timeout=5) for _ in range(workers)]
        won = [o for o in outcomes if o[0] == "won"]
        assert len(won) == 1, outcomes
        assert won[0][2] is True  # the winner broke the stale owner
        # Every loser saw the winner's fresh record, never the stale one.
        assert {o[2] for o in outcomes if o[0] == "lost"} == {won[0][1]}
        assert lock.holder()["run_id"] == won[0][1]
        lock.release(won[0][1])


def test_list_locks_reports_every_recipe_lock(state_dir):
    a = AppLock(str(state_dir), "custom-html")
    a.acquire("a1b2c3", timeout=0, owner_pid=ME)
    b = AppLock(str(state_dir), "notes")
    plant(b, run_id="dead00", pid=dead_pid())
    c = AppLock(str(state_dir), "empty-one")
    os.makedirs(c.directory)
    Path(c.path).write_bytes(b"")
    AppLock(str(state_dir), "idle-one").acquire("0000bb", timeout=0, owner_pid=ME)
    AppLock(str(state_dir), "idle-one").release("0000bb")
    (state_dir / "alerts").mkdir()
    (state_dir / "runs").mkdir()
    found = list_locks(str(state_dir))
    assert [(e["recipe"], e["stale"]) for e in found] == [
        ("custom-html", False),
        ("empty-one", False),
        ("notes", True),
    ]
    assert found[0]["run_id"] == "a1b2c3"
    assert found[0]["path"] == a.path
    assert found[1]["corrupt"] is True
    assert list_locks(str(state_dir / "nothing-here")) == []


def test_describe_reads_like_a_sentence():
    assert _lock.describe(None) == "nobody"
    assert (
        _lock.describe(
            {"run_id": "a1b2c3", "pid": 123, "host": "x", "since": "2026-01-01T00:00:00Z"}
        )
        == "run a1b2c3 (pid 123 on host x, since 2026-01-01T00:00:00Z)"
    )


# -- the work lock: a dead owner's run may still work (issue 15, item 1) -----------------

HOLD_WORK = """
import os, sys, time
sys.path.insert(0, {collections!r})
from ansible_collections.coopcloud.ci.plugins.module_utils import _lock
with _lock.working({state_dir!r}, "custom-html", run_id="dead00"):
    open({ready!r}, "w").close()
    time.sleep({seconds})
"""


def hold_work(lock: AppLock, tmp_path: Path, seconds: float) -> subprocess.Popen:
    """Another process working on the recipe, as an orphaned module does, for ``seconds``."""
    ready = tmp_path / "holding"
    code = HOLD_WORK.format(collections=COLLECTIONS, state_dir=lock.state_dir,
                            ready=str(ready), seconds=seconds)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(200):
        if ready.exists():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the holder never took the work lock")


def test_a_dead_owner_whose_run_still_works_is_waited_for_then_broken(lock, tmp_path):
    old = plant(lock, run_id="dead00", pid=dead_pid(), start=12345)
    worker = hold_work(lock, tmp_path, 1.5)
    try:
        holder = lock.holder()
        assert lock.orphaned(holder) and not lock.is_stale(holder)
        assert [e["stale"] for e in list_locks(lock.state_dir)] == [False]
        # a short wait ends naming the orphan and the work lock
        with pytest.raises(LockTimeout) as caught:
            lock.acquire("a1b2c3", timeout=0.2, poll=0.05, owner_pid=ME)
        assert "run dead00" in str(caught.value)
        assert "its play is gone, but a process of that run still works" in str(caught.value)
        assert lock.work_path in str(caught.value)
        # a longer one gets the lock once the orphan's work ended, and says how long
        info = lock.acquire("a1b2c3", timeout=30, poll=0.05, owner_pid=ME)
        assert worker.wait(10) == 0  # its work ended (it held the file to the end)
        assert info.broken == old and info.changed
        assert 0.5 < info.orphan_wait <= info.waited
    finally:
        worker.kill()
        worker.wait()


def test_work_is_refused_when_another_live_run_holds_the_lock(lock, tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        plant(lock, run_id="0ther0", pid=sleeper.pid, start=_lock.process_start(sleeper.pid))
        refused = "refusing to change the canonical of custom-html: its lock is held by run 0ther0"
        with (
            pytest.raises(LockError, match=refused),
            _lock.working(lock.state_dir, "custom-html", run_id="a1b2c3"),
        ):
            raise AssertionError("worked under another run's lock")
        assert not lock.work_busy()  # the refused work holds nothing
        # the holder's own run works; so does any run once its owner is dead
        with _lock.working(lock.state_dir, "custom-html", run_id="0ther0"):
            assert lock.work_busy() and not lock.is_stale(lock.holder())
    finally:
        sleeper.kill()
        sleeper.wait()
    with _lock.working(lock.state_dir, "custom-html", run_id="a1b2c3"):
        assert lock.orphaned(lock.holder())
    assert lock.is_stale(lock.holder())


def test_work_without_a_lock_or_a_state_dir_goes_on_and_writes_nothing(lock, tmp_path):
    os.makedirs(lock.directory)
    before = os.stat(lock.directory).st_mtime_ns
    with _lock.working(lock.state_dir, "custom-html"):  # this process: an ancestor of itself
        assert lock.work_busy()
    assert not lock.work_busy()
    # the work lock is a flock on the recipe's folder: nothing written there
    assert os.listdir(lock.directory) == [] and os.stat(lock.directory).st_mtime_ns == before
    missing = tmp_path / "no-state"
    with _lock.working(str(missing), "custom-html"):
        pass
    assert not missing.exists()
