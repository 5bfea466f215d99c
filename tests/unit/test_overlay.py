"""The pure parts of overlay-backed canonicals (plugins/module_utils/_overlay.py): the
decision and its reasons, reading mountinfo, and the known-good trees and scratch dirs on
a real file system with a real snapshot store (no kernel mount: that is integration)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _overlay
from ansible_collections.coopcloud.ci.plugins.module_utils._archive import (
    CorruptSnapshotError,
    tree_digest,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore

OK = {
    "wanted": True,
    "kernel": True,
    "docker_root": "/var/lib/docker",
    "docker_root_fs": "ext4",
    "state_fs": "ext4",
    "node": "n1",
    "local_node": "n1",
    "drivers": {"content": "local"},
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"node": None}, None),  # not pinned yet: this engine's node will be
        ({"wanted": False}, "turned off (ccci_canonical_overlay: false)"),
        ({"kernel": False}, "the kernel has no overlay file system"),
        ({"docker_root": None}, "does not report its data root"),
        ({"docker_root_fs": "overlay"}, "data root /var/lib/docker is itself on overlayfs"),
        ({"state_fs": "overlay"}, "the state dir is on overlayfs"),
        ({"node": "n2"}, "pinned to swarm node n2, not this engine's node n1"),
        ({"drivers": {"content": "nfs", "db": "local"}}, "other than local: content (nfs)"),
    ],
)
def test_refusal_names_the_first_reason(change, reason):
    got = _overlay.refusal(**{**OK, **change})
    assert (got is None) if reason is None else (reason in got), got


def test_mount_fstype_takes_the_longest_mount_point(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/vda rw\n"
        "30 22 0:40 / /var/lib/docker rw - overlay overlay rw,lowerdir=x\n"
        "31 22 0:41 / /var/lib/docker2 rw - tmpfs tmpfs rw\n"
        "32 22 0:42 / /mnt/with\\040space rw - xfs /dev/vdb rw\n"
    )
    assert _overlay.mount_fstype("/var/lib/docker/volumes", str(info)) == "overlay"
    assert _overlay.mount_fstype("/var/lib/docker2", str(info)) == "tmpfs"
    assert _overlay.mount_fstype("/var/lib/dockerx", str(info)) == "ext4"
    assert _overlay.mount_fstype("/mnt/with space/x", str(info)) == "xfs"
    assert _overlay.mount_fstype("/x", str(tmp_path / "missing")) == ""


def test_kernel_has_overlay_reads_proc_filesystems(tmp_path):
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tsysfs\n\text4\nnodev\toverlay\n")
    assert _overlay.kernel_has_overlay(str(fs)) is True
    fs.write_text("nodev\tsysfs\n\text4\n")
    assert _overlay.kernel_has_overlay(str(fs)) is False
    assert _overlay.kernel_has_overlay(str(tmp_path / "none")) is False


def test_mechanism_and_options():
    assert _overlay.mechanism(None) == "restore"
    assert _overlay.mechanism({"status": "idle"}) == "restore"
    assert _overlay.mechanism({"put_back": {"mechanism": "overlay"}}) == "overlay"
    ov = _overlay.Overlay("/var/lib/ci-warm", "notes")
    opts = ov.options("data")
    assert opts["type"] == opts["device"] == "overlay"
    assert opts["o"] == (
        "lowerdir=/var/lib/ci-warm/notes/known-good/volumes/data,"
        "upperdir=/var/lib/ci-warm/notes/overlay/data/upper,"
        "workdir=/var/lib/ci-warm/notes/overlay/data/work"
    )
    assert _overlay.dirs_of(opts)["upperdir"] == ov.upper("data")
    assert _overlay.dirs_of({"type": "none", "o": "bind"}) is None


def _data(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("alpha\n")
    (root / "big.bin").write_bytes(os.urandom(64 * 1024))
    os.link(root / "big.bin", root / "hard.bin")
    os.symlink("sub/a.txt", root / "link")
    os.utime(root, ns=(1_000_000_000, 1_000_000_000))
    return root


def test_build_discard_verify_and_reextract_on_a_real_store(tmp_path):
    state = tmp_path / "state"
    store = SnapshotStore(str(state), "notes")
    src = {"content": _data(tmp_path / "src-content"), "db": _data(tmp_path / "src-db")}
    store.take({s: str(p) for s, p in src.items()}, version="1.0.0+1", commit="a" * 40)
    manifest, digest = store.manifest(), store.manifest_digest()
    ov = _overlay.Overlay(str(state), "notes")
    assert not ov.matches(digest, manifest["volumes"])

    assert ov.build(store, manifest, digest) == {"built": ["content", "db"]}
    assert ov.matches(digest, manifest["volumes"])
    for short in src:
        assert tree_digest(ov.lower(short)) == manifest["volumes"][short]["tree_digest"]
    assert ov.verify(manifest) == {"content": "equal", "db": "equal"}

    # a fresh canonical: no scratch dirs yet, so "written" (0 bytes) until discarded
    assert ov.written("content") == 0
    assert ov.discard(["content", "db"]) == {"content": 0, "db": 0}
    assert ov.written("content") is None and ov.written("db") is None
    root = os.lstat(ov.upper("db"))
    assert root.st_mtime_ns == os.lstat(ov.lower("db")).st_mtime_ns  # merged root = lower's

    # what a run wrote: a new file in the upper dir; discarding costs what it wrote
    (Path(ov.upper("db")) / "new.bin").write_bytes(b"x" * 5000)
    (Path(ov.work("db")) / "work").mkdir()
    assert ov.written("db") == 5000
    assert ov.discard(["db"]) == {"db": 5000}
    assert os.listdir(ov.upper("db")) == [] and os.listdir(ov.work("db")) == []
    assert sorted(os.listdir(Path(ov.upper("db")).parent)) == ["upper", "work"]

    # a tree edited by hand differs; re-extracting brings it back, atomically per volume
    (Path(ov.lower("content")) / "sub" / "a.txt").write_text("edited\n")
    assert ov.verify(manifest) == {"content": "differs", "db": "equal"}
    ov.reextract(store, manifest, ["content"])
    assert ov.verify(manifest) == {"content": "equal", "db": "equal"}

    # a rebuild of the same snapshot swaps whole trees; leftovers of a crash go
    (state / "notes" / "known-good.tmp-dead").mkdir()
    ov.build(store, manifest, digest)
    assert sorted(os.listdir(state / "notes")) == ["known-good", "overlay", "snapshot"]
    assert ov.remove() is True and sorted(os.listdir(state / "notes")) == ["snapshot"]


def test_recover_moves_back_trees_left_aside_by_the_two_rename_swap(tmp_path):
    ov = _overlay.Overlay(str(tmp_path), "notes")
    aside = tmp_path / "notes" / "known-good.old-x"
    (aside / "volumes" / "db").mkdir(parents=True)
    assert ov.recover() == [f"moved known-good.old-x back to {ov.root}"]
    assert os.path.isdir(ov.lower("db"))


def test_a_snapshot_whose_tree_does_not_match_is_refused_and_the_trees_stay(tmp_path):
    state = tmp_path / "state"
    store = SnapshotStore(str(state), "notes")
    store.take({"db": str(_data(tmp_path / "src"))}, version="1", commit="b" * 40)
    manifest = store.manifest()
    ov = _overlay.Overlay(str(state), "notes")
    ov.build(store, manifest, store.manifest_digest())
    before = tree_digest(ov.lower("db"))
    lying = {**manifest, "volumes": {"db": {**manifest["volumes"]["db"], "tree_digest": "0" * 64}}}
    with pytest.raises(CorruptSnapshotError, match="does not match the tree digest"):
        ov.build(store, lying, "other")
    assert tree_digest(ov.lower("db")) == before
    assert sorted(os.listdir(state / "notes")) == ["known-good", "snapshot"]
