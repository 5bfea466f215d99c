"""warm_lock inside real plays (ansible-runner, no swarm needed).

The lock is taken by one task and must stay valid for the rest of the play: its owner is
the ansible-playbook process, found among the module's parents. These tests run real
plays to prove that, the stale break after a play that died holding the lock, the
bounded wait naming the holder, and per-recipe serialization with cross-recipe overlap.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import yaml
from support.ansible import dump, run_playbook

from ansible_collections.coopcloud.ci.plugins.module_utils._lock import AppLock


def lock_task(name: str, **args) -> dict:
    args.setdefault("recipe", "{{ recipe }}")
    args.setdefault("state_dir", "{{ sd }}")
    return {"name": name, "coopcloud.ci.warm_lock": args}


def write_play(path: Path, tasks: list, always: list | None = None) -> str:
    body: list = [{"block": tasks, "always": always}] if always else tasks
    play = [{"name": path.stem, "hosts": "localhost", "gather_facts": False, "tasks": body}]
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    # run_playbook joins playbooks/ with the name; an absolute path stands on its own.
    return str(path)


def play(path: str, tmp_path: Path, **extravars):
    private = tmp_path / f"runner-{Path(path).stem}-{time.monotonic_ns()}"
    private.mkdir()
    return run_playbook(path, extravars, private_dir=private)


def test_the_lock_outlives_the_task_and_is_owned_by_the_play(tmp_path, state_dir, unique):
    recipe = f"lk-{unique}"
    book = write_play(
        tmp_path / "owner.yml",
        [
            lock_task("take the lock", run_id=unique),
            lock_task("take it again", run_id=unique),
            {"name": "wait a moment", "ansible.builtin.command": "sleep 1", "changed_when": False},
            {**lock_task("look from a later task", state="info"), "register": "later"},
            {
                # The owner's command line and its parent's, read while the play runs.
                "name": "owner and its parent",
                "ansible.builtin.shell": (
                    "pid={{ later.holder.pid }}; tr '\\0' ' ' < /proc/$pid/cmdline; echo; "
                    "ppid=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f2); "
                    "tr '\\0' ' ' < /proc/$ppid/cmdline"
                ),
                "register": "owner",
                "changed_when": False,
            },
        ],
        always=[lock_task("release the lock", run_id=unique, state="released")],
    )
    result = play(book, tmp_path, recipe=recipe, sd=str(state_dir))
    assert result.rc == 0, dump(result)
    took = result.task("take the lock")
    assert took["changed"] is True
    assert took["holder"]["run_id"] == unique
    assert took["holder"]["play"] == "owner.yml"
    assert result.task("take it again")["changed"] is False
    later = result.task("look from a later task")
    # Two tasks and a second later, the same owner is still alive: not stale.
    assert later["holder"] == took["holder"]
    assert later["stale"] is False
    owner_cmd, parent_cmd = result.task("owner and its parent")["stdout"].splitlines()
    assert "ansible-playbook" in owner_cmd and "owner.yml" in owner_cmd
    # The topmost ansible-playbook process: its parent (ansible-runner) is something else.
    assert parent_cmd != owner_cmd
    assert "ansible-playbook" not in parent_cmd.split(" ")[0]
    released = result.task("release the lock")
    assert released["changed"] is True
    assert not (state_dir / recipe / "lock").exists()


def test_a_play_that_died_holding_the_lock_leaves_a_stale_lock_the_next_play_breaks(
    tmp_path, state_dir, unique
):
    recipe = f"lk-{unique}"
    crashed = write_play(
        tmp_path / "crashed.yml",
        [
            lock_task("take the lock", run_id="dead00"),
            {"name": "die", "ansible.builtin.fail": {"msg": "simulated crash, no release"}},
        ],
    )
    result = play(crashed, tmp_path, recipe=recipe, sd=str(state_dir))
    assert result.rc != 0
    lock = AppLock(str(state_dir), recipe)
    left = lock.holder()
    assert left["run_id"] == "dead00"
    assert lock.is_stale(left)  # its ansible-playbook process has exited

    nxt = write_play(
        tmp_path / "next.yml",
        [lock_task("take the lock", run_id=unique)],
        always=[lock_task("release the lock", run_id=unique, state="released")],
    )
    result = play(nxt, tmp_path, recipe=recipe, sd=str(state_dir))
    assert result.rc == 0, dump(result)
    took = result.task("take the lock")
    assert took["broken"] == left
    assert took["holder"]["run_id"] == unique
    assert "broke the lock of" in result.stdout and "run dead00" in result.stdout
    assert lock.holder() is None


def test_check_mode_predicts_without_taking(tmp_path, state_dir, unique):
    recipe = f"lk-{unique}"
    book = write_play(tmp_path / "check.yml", [lock_task("take the lock", run_id=unique)])
    private = tmp_path / "runner-check"
    private.mkdir()
    result = run_playbook(
        book, {"recipe": recipe, "sd": str(state_dir)}, check=True, private_dir=private
    )
    assert result.rc == 0, dump(result)
    assert result.task("take the lock")["changed"] is True
    assert not (state_dir / recipe).exists()


def _timed_play(tmp_path: Path, name: str, run_id: str, hold: float) -> str:
    log = "{{ sd }}/" + name + ".json"
    return write_play(
        tmp_path / f"{name}.yml",
        [
            lock_task("take the lock", run_id=run_id, timeout=120, poll=0.2),
            {
                "name": "hold it",
                "ansible.builtin.shell": (
                    f"s=$(date +%s.%N); sleep {hold}; e=$(date +%s.%N); "
                    f'printf \'{{"start": %s, "end": %s}}\' $s $e > {log}'
                ),
            },
        ],
        always=[lock_task("release the lock", run_id=run_id, state="released")],
    )


def test_same_recipe_plays_never_overlap_other_recipes_do(tmp_path, state_dir, unique):
    same = f"lk-{unique}"
    other = f"lo-{unique}"
    plays = {
        "first": (_timed_play(tmp_path, "first", "00000a", 3), same),
        "second": (_timed_play(tmp_path, "second", "00000b", 3), same),
        "other": (_timed_play(tmp_path, "other", "00000c", 3), other),
    }
    results: dict = {}

    def go(name: str) -> None:
        book, recipe = plays[name]
        results[name] = play(book, tmp_path, recipe=recipe, sd=str(state_dir))

    threads = [threading.Thread(target=go, args=(name,)) for name in plays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    for name, result in results.items():
        assert result.rc == 0, name + "\n" + dump(result)
    spans = {n: json.loads((state_dir / f"{n}.json").read_text()) for n in plays}
    a, b = sorted((spans["first"], spans["second"]), key=lambda s: s["start"])
    assert a["end"] <= b["start"], spans  # one recipe: serialized
    # The second of the pair waited for the first.
    waits = sorted(results[n].task("take the lock")["waited"] for n in ("first", "second"))
    assert waits[1] >= 1.0, waits
    # Another recipe: no waiting, and it ran while the pair was running.
    assert results["other"].task("take the lock")["waited"] < 1.0
    c = spans["other"]
    assert c["start"] < b["end"] and c["end"] > a["start"], spans
    assert AppLock(str(state_dir), same).holder() is None
    assert AppLock(str(state_dir), other).holder() is None


def test_a_bounded_wait_fails_naming_the_holder(tmp_path, state_dir, unique):
    recipe = f"lk-{unique}"
    holder_book = _timed_play(tmp_path, "holder", "00000d", 8)
    waiter_book = write_play(
        tmp_path / "waiter.yml",
        [lock_task("take the lock", run_id=unique, timeout=1, poll=0.2)],
        always=[lock_task("release the lock", run_id=unique, state="released")],
    )
    results: dict = {}
    thread = threading.Thread(
        target=lambda: results.setdefault(
            "holder", play(holder_book, tmp_path, recipe=recipe, sd=str(state_dir))
        )
    )
    thread.start()
    lock = AppLock(str(state_dir), recipe)
    deadline = time.monotonic() + 60
    while lock.holder() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lock.holder() is not None
    began = time.monotonic()
    waiter = play(waiter_book, tmp_path, recipe=recipe, sd=str(state_dir))
    thread.join(120)
    assert waiter.rc != 0
    failed = waiter.task("take the lock")
    assert [t["event"] for t in waiter.tasks] == ["runner_on_failed", "runner_on_failed"]
    assert failed["lock_path"] == str(state_dir / recipe / "lock")
    assert failed["msg"].startswith(f"{recipe} is locked by run 00000d (pid ")
    assert "play holder.yml); waited 1" in failed["msg"]
    assert failed["holder"]["run_id"] == "00000d"
    # The waiter's own release in `always` refuses to touch the holder's lock.
    assert "refusing to release" in waiter.task("release the lock")["msg"]
    assert time.monotonic() - began < 60
    assert results["holder"].rc == 0, dump(results["holder"])
    assert lock.holder() is None
