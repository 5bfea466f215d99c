"""Corruption (issue 8, item 2): a damaged snapshot or registry is refused with an error
naming the file, nothing is deleted or created, and the documented way back works.

Snapshots: one known-good app volume (``g<id>``) is snapshotted once; every case gets its
own copy of that snapshot in its own state directory, damages it one way, and restores it
through ``coopcloud.ci.volume_snapshot`` into its own app volume, which holds other data
(what a failed quick run leaves). All cases run as one play (tests/reliability/play.py),
so the battery stays short:

1. ``state: restored`` and ``state: info, verify: true`` both fail, naming the file;
2. a task lists the world again (tests/reliability/world.py): the snapshot's bytes, the
   volume's whole directory (its tree, and no staging directory beside it) and the
   engine's objects of the case must equal what they were before step 1;
3. the way back (docs/snapshots.md, docs/reliability.md): re-seed by taking a new snapshot
   of the known-good app (``state: present, force: true``), then restore it - the
   volume's tree digest is then exactly the known-good one, and the snapshot verifies.

Registries: a truncated ``canonical.json`` is named by every reader (the registry, the
``warm_canonical`` module, ``restore.yml``), is never replaced or deleted, and a re-seed
works once the operator has moved it aside.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.ansible import dump, run_module, run_playbook
from support.fixtures import init_state, remove_stack_everything

from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    SnapshotStore,
    tree_digest,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import StateError
from reliability.play import run_tasks
from reliability.world import World, differences, normal

pytestmark = [pytest.mark.swarm]

SNAP = "coopcloud.ci.volume_snapshot"
NS = "com.docker.stack.namespace"
RECIPE = "custom-html"
WORLD = str(Path(__file__).with_name("world.py"))


def fill(root: Path, seed: str) -> None:
    """Files, a directory with another owner, a symlink and a hard link."""
    (root / "index.html").write_text(f"<h1>{seed}</h1>\n")
    (root / "assets").mkdir(exist_ok=True)
    (root / "assets" / "blob.bin").write_bytes(hashlib.sha256(seed.encode()).digest() * 4000)
    os.symlink("../index.html", root / "assets" / "home")
    os.link(root / "index.html", root / "assets" / "index-again.html")
    os.chown(root / "assets", 101, 102)


def _flip(path: Path, at: Callable[[int], int]) -> None:
    raw = bytearray(path.read_bytes())
    raw[at(len(raw))] ^= 0x01
    path.write_bytes(bytes(raw))


def _truncate(path: Path, keep: Callable[[int], int]) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: keep(len(raw))])


def _edit(slot: Path, change: Callable[[dict], None]) -> None:
    data = json.loads((slot / "manifest.json").read_text())
    change(data)
    (slot / "manifest.json").write_text(json.dumps(data))


def _add_volume(data: dict) -> None:
    entry = dict(data["volumes"]["content"])
    entry["archive"] = "extra.tar"
    data["volumes"]["extra"] = entry


# (case id, damage(slot dir), words of the error; {archive} and {manifest} are the paths)
CASES = [
    ("flipped byte in an archive", lambda s: _flip(s / "content.tar", lambda n: n // 2),
     "archive {archive} does not match its sha256"),
    ("flipped byte in a member header", lambda s: _flip(s / "content.tar", lambda n: 3),
     "archive {archive} does not match its sha256"),
    ("truncated archive", lambda s: _truncate(s / "content.tar", lambda n: n // 2),
     "archive {archive} has"),
    ("archive cut to nothing", lambda s: _truncate(s / "content.tar", lambda n: 0),
     "archive {archive} has 0 bytes"),
    ("archive missing", lambda s: (s / "content.tar").unlink(),
     "archive {archive} named in the snapshot manifest is missing"),
    ("manifest: changed digest",
     lambda s: _edit(s, lambda d: d["volumes"]["content"].update(sha256="0" * 64)),
     "archive {archive} does not match its sha256"),
    ("manifest: changed size",
     lambda s: _edit(s, lambda d: d["volumes"]["content"].update(
         bytes=d["volumes"]["content"]["bytes"] + 512)),
     "but the manifest records"),
    ("manifest: invalid JSON", lambda s: _truncate(s / "manifest.json", lambda n: n // 2),
     "snapshot manifest {manifest} is not valid JSON"),
    ("manifest: a volume added", lambda s: _edit(s, _add_volume),
     "extra.tar named in the snapshot manifest is missing"),
    ("manifest: another recipe", lambda s: _edit(s, lambda d: d.update(recipe="notes")),
     "snapshot manifest {manifest} is invalid: it belongs to recipe 'notes'"),
]  # fmt: skip


def _mount(client, name: str) -> Path:
    return Path(client.volumes.get(name).attrs["Mountpoint"])


@pytest.fixture(scope="module")
def batch(docker_client, tmp_path_factory):
    """Every case damaged, refused, looked at and re-seeded in one play."""
    needle = secrets.token_hex(3)
    good_domain, good_stack = f"g{needle}.ccci.test", f"g{needle}_ccci_test"
    stacks = [good_stack]
    try:
        good = _mount_new(docker_client, good_stack)
        fill(good, f"known-good {needle}")
        good_digest = tree_digest(str(good))
        template = tmp_path_factory.mktemp("template")
        SnapshotStore(str(template), RECIPE).take(
            {"content": str(good)}, domain=good_domain, stack=good_stack, version="1.1.0+1.29"
        )
        cases, tasks, after_tasks, back_tasks = {}, [], [], []
        for i, (case, damage, words) in enumerate(CASES):
            tag = f"k{i:02d}-{needle}"
            stack, domain = f"{tag}_ccci_test", f"{tag}.ccci.test"
            stacks.append(stack)
            state = init_state(tmp_path_factory.mktemp(f"state{i:02d}"))
            slot = state / RECIPE / "snapshot"
            shutil.copytree(template / RECIPE, state / RECIPE, symlinks=True)
            volume = _mount_new(docker_client, stack)
            fill(volume, f"current data of {tag}")
            damage(slot)
            world = World(docker_client, tag, [state, volume.parent])
            args = {"recipe": RECIPE, "state_dir": str(state)}
            tasks += [
                {"name": f"restore {i}", SNAP: {**args, "domain": domain, "state": "restored"},
                 "ignore_errors": True},
                {"name": f"verify {i}", SNAP: {**args, "state": "info", "verify": True},
                 "ignore_errors": True},
            ]  # fmt: skip
            after_tasks.append(
                {"name": f"world {i}", "ansible.builtin.command":
                 {"argv": [sys.executable, WORLD, tag, str(state), str(volume.parent)]}}
            )  # fmt: skip
            back_tasks += [
                {"name": f"re-seed {i}",
                 SNAP: {**args, "domain": good_domain, "state": "present", "force": True}},
                {"name": f"restore again {i}", SNAP: {**args, "domain": domain,
                                                      "state": "restored"}},
                {"name": f"verify again {i}", SNAP: {**args, "state": "info", "verify": True}},
            ]  # fmt: skip
            cases[case] = {
                "i": i,
                "words": words.format(
                    archive=slot / "content.tar", manifest=slot / "manifest.json"
                ),
                "before": normal(world.take()),
                "volume": volume,
                "stack": stack,
            }
        res = run_tasks(tasks + after_tasks + back_tasks)
        yield {"res": res, "cases": cases, "good_digest": good_digest}
    finally:
        for stack in stacks:
            remove_stack_everything(stack)


def failed(res, name: str) -> bool:
    """Did the task ``name`` fail (ansible-runner's event, whatever the result holds)?"""
    events = [t["event"] for t in res.tasks if t["task"] == name]
    assert events, f"no task {name!r} ran"
    return events[-1] == "runner_on_failed"


def _mount_new(client, stack: str) -> Path:
    vol = client.volumes.create(name=f"{stack}_content", labels={NS: stack})
    return Path(vol.attrs["Mountpoint"])


# one worker under pytest-xdist (--dist loadgroup): these share the module-scoped set-up
@pytest.mark.xdist_group("test_corruption")
@pytest.mark.parametrize("case", [c for c, _, _ in CASES])
def test_a_damaged_snapshot_is_named_nothing_changes_and_a_reseed_restores(batch, case):
    res, c = batch["res"], batch["cases"][case]
    i = c["i"]
    for step in (f"restore {i}", f"verify {i}"):
        assert failed(res, step), dump(res)
        out = res.task(step)
        assert c["words"] in out["msg"], (step, out["msg"])
        assert "\n" not in out["msg"] and "Traceback" not in out["msg"], out["msg"]
    after = json.loads(res.task(f"world {i}")["stdout"])
    assert differences(c["before"], after) == [], f"{case}: the failed restore changed the world"
    # the way back: a new snapshot of the known-good data, restored
    for step in (f"re-seed {i}", f"restore again {i}", f"verify again {i}"):
        assert not failed(res, step), (step, res.task(step))
    assert res.task(f"restore again {i}")["changed"] is True
    assert res.task(f"verify again {i}")["verified"]["content"]["files"] == 2
    assert tree_digest(str(c["volume"])) == batch["good_digest"]
    assert sorted(os.listdir(c["volume"].parent)) == ["_data"]


# --- a truncated registry ---------------------------------------------------------------


def test_a_truncated_registry_is_named_by_every_reader_and_never_replaced(
    state_dir, unique, docker_client, tmp_path
):
    reg = Registry(str(state_dir), RECIPE)
    reg.seed(f"warm-{RECIPE}.ccci.test", "1.1.0+1.29", "2a927ef4fd1d", unique, "d" * 64)
    path = Path(reg.path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    world = World(docker_client, unique, [state_dir])
    before = world.take()

    # the library
    for call in (reg.load, reg.at_rest, lambda: reg.set_status("quick", unique),
                 lambda: reg.seed(f"warm-{RECIPE}.ccci.test", "1.1.0+1.29", "2a927ef4fd1d",
                                  unique, "e" * 64)):  # fmt: skip
        with pytest.raises(StateError) as caught:
            call()
        assert f"{path} is not valid JSON" in str(caught.value)
    # the module the lanes and the operator plays read it through
    res = run_module("coopcloud.ci.warm_canonical",
                     {"recipe": RECIPE, "state": "info", "state_dir": str(state_dir),
                      "domain_suffix": "ccci.test"})  # fmt: skip
    assert res.rc != 0, dump(res)
    assert str(path) in res.last["msg"] and "not valid JSON" in res.last["msg"], res.last
    # the operator's restore play refuses, naming the file, and touches nothing
    private = tmp_path / "runner"
    private.mkdir()
    res = run_playbook("restore.yml", {"recipe": RECIPE, "ccci_state_dir": str(state_dir),
                                       "ccci_run_id": unique, "ccci_lock_timeout": 5},
                       private_dir=private)  # fmt: skip
    assert res.rc != 0, dump(res)
    failed = [t for t in res.tasks if t["event"] == "runner_on_failed"]
    assert str(path) in failed[-1]["res"]["msg"], dump(res)
    after = world.take()
    changed = differences(before, after)
    # restore.yml takes the recipe's lock before it reads anything, and releases it: the
    # lock's empty flock guard file stays (by design, docs/reliability.md), nothing else.
    guard = {f"{state_dir}/{RECIPE}:", f"{state_dir}/{RECIPE}/.lock.guard:"}
    assert [d for d in changed if d.split(" ", 1)[0] not in guard] == [], "\n".join(changed)
    assert not (state_dir / RECIPE / "lock").exists()

    # the way back (docs/reliability.md): move the file aside, then a green cold run of the
    # latest version re-seeds it (here the registry call that run makes)
    aside = path.with_name("canonical.json.broken")
    path.rename(aside)
    data = reg.seed(f"warm-{RECIPE}.ccci.test", "1.1.0+1.29", "2a927ef4fd1d", unique, "e" * 64)
    assert reg.load() == data and data["status"] == "idle" and data["snapshot_digest"] == "e" * 64
    assert aside.read_bytes() == whole[: len(whole) // 2]  # kept for the post-mortem
