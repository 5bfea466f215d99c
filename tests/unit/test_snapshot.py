"""_snapshot: tree digests, the store (take, verify, restore, remove), hostile archives,
corruption and crashes at every checkpoint. Real files, real GNU tar; no docker."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils import _snapshot as snap
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    CorruptSnapshotError,
    HostileArchiveError,
    SnapshotError,
    SnapshotStore,
    TarScanner,
    meta_digest,
    tree_digest,
)

ROOT = Path(__file__).resolve().parents[2]


def make_tree(root: Path, seed: int = 0) -> Path:
    """A tree with everything tar carries: files (empty, small, > 1 MiB), nested and empty
    dirs with odd modes, owners, nanosecond mtimes, symlinks (relative, dangling inside),
    hard links, a fifo, long and non-ASCII names."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(f"<h1>hello {seed}</h1>\n")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(os.urandom(1 << 16) * 40)  # 2.5 MiB, spans chunks
    sub = root / "a" / "deep" / "er"
    sub.mkdir(parents=True)
    (sub / "leaf.txt").write_text("leaf\n")
    (root / "a-c").write_text("sorts after a/ in a directory walk, before it as a string\n")
    (root / "emptydir").mkdir()
    os.chmod(root / "emptydir", 0o2750)
    (root / ("L" * 150)).write_text("long name\n")
    (root / "ünïcødé.txt").write_text("utf-8 name\n")
    os.symlink("a/deep/er/leaf.txt", root / "link-rel")
    os.symlink("../../index.html", sub.parent / "link-up")
    os.symlink("nowhere-yet", root / "dangling")
    os.link(root / "index.html", root / "hard-index")
    os.mkfifo(root / "pipe")
    os.chown(root / "a", 1234, 5678)
    os.lchown(root / "link-rel", 42, 43)
    os.chmod(root / "index.html", 0o640)
    os.chmod(root / "empty", 0o4755)
    os.utime(root / "big.bin", ns=(1, 1_600_000_000_123_456_789))
    os.utime(sub, ns=(1, 1_500_000_000_000_000_001))
    os.utime(root / "link-rel", ns=(1, 1_400_000_000_999_999_999), follow_symlinks=False)
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "vol" / "_data")


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    return SnapshotStore(str(tmp_path / "state"), "custom-html")


def mutate(root: Path) -> None:
    (root / "index.html").write_text("changed\n")
    (root / "a" / "deep" / "er" / "leaf.txt").unlink()
    (root / "new-file").write_text("added\n")
    os.chmod(root / "a-c", 0o600)
    os.chown(root / "empty", 99, 99)
    os.utime(root / "big.bin", ns=(1, 1_600_000_000_123_456_788))
    os.symlink("index.html", root / "new-link")
    os.unlink(root / "dangling")
    os.symlink("somewhere-else", root / "dangling")
    (root / "emptydir" / "x").mkdir()


def listing(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# --- tree digests ---------------------------------------------------------------------


def test_tree_digest_is_stable_and_sees_every_kind_of_change(tree):
    first = tree_digest(str(tree))
    assert tree_digest(str(tree)) == first
    assert len(first) == 64
    changes = [
        lambda: (tree / "index.html").write_text("<h1>hello 1</h1>\n"),  # same size
        lambda: os.chmod(tree / "a-c", 0o600),
        lambda: os.chown(tree / "a-c", 7, 0),
        lambda: os.chown(tree / "a-c", 0, 7),
        lambda: os.utime(tree / "big.bin", ns=(1, 1_600_000_000_123_456_790)),
        lambda: os.utime(tree / "a", ns=(5, 5)),
        lambda: (os.unlink(tree / "link-rel"), os.symlink("index.html", tree / "link-rel")),
        lambda: (tree / "emptydir" / "f").write_bytes(b""),
        lambda: os.unlink(tree / "hard-index"),
    ]
    seen = {first}
    for change in changes:
        st = os.stat(tree / "emptydir")
        change()
        os.utime(tree / "emptydir", ns=(st.st_atime_ns, st.st_mtime_ns))  # only the change
        digest = tree_digest(str(tree))
        assert digest not in seen, change
        seen.add(digest)


def test_hard_link_structure_is_part_of_the_digest(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        root.mkdir()
        (root / "a").write_text("same\n")
        os.utime(root / "a", ns=(1, 10**18))
    os.link(one / "a", one / "b")
    (two / "b").write_text("same\n")
    os.utime(two / "b", ns=(1, 10**18))
    os.utime(one, ns=(1, 10**18))
    os.utime(two, ns=(1, 10**18))
    assert tree_digest(str(one)) != tree_digest(str(two))


def test_meta_digest_ignores_content_only(tree):
    meta = meta_digest(str(tree))
    full = tree_digest(str(tree))
    st = os.stat(tree / "index.html")
    (tree / "index.html").write_text("<h1>hello X</h1>\n")  # same size
    os.utime(tree / "index.html", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert meta_digest(str(tree)) == meta
    assert tree_digest(str(tree)) != full


def test_digest_of_a_non_directory_fails(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SnapshotError, match="is not a directory"):
        tree_digest(str(tmp_path / "f"))


# --- take, verify, restore --------------------------------------------------------------


def test_take_writes_manifest_and_archive_whose_digests_match_the_tree(store, tree):
    manifest = store.take({"content": str(tree)}, version="1.1.0+1.29", commit="abc1234",
                          domain="x.example.org", stack="x_example_org")  # fmt: skip
    path = Path(store.path)
    assert sorted(os.listdir(path)) == ["content.tar", "manifest.json"]
    raw = (path / "manifest.json").read_bytes()
    assert json.loads(raw) == manifest
    assert store.manifest_digest() == hashlib.sha256(raw).hexdigest()
    entry = manifest["volumes"]["content"]
    archive = (path / "content.tar").read_bytes()
    # each byte hashed once: file contents through the tree digest, every other byte here
    assert "sha256" not in entry
    assert entry["headers_sha256"] == headers_sha256(path / "content.tar")
    assert entry["bytes"] == len(archive)
    # the digests computed from the tar stream equal those of the directory walk
    assert entry["tree_digest"] == tree_digest(str(tree))
    assert entry["meta_digest"] == meta_digest(str(tree))
    regular = sum(
        1 for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "hard-index"
    )
    assert entry["files"] == regular
    assert manifest["version"] == "1.1.0+1.29" and manifest["commit"] == "abc1234"
    assert manifest["source"] == {"domain": "x.example.org", "stack": "x_example_org"}
    assert manifest["recipe"] == "custom-html" and manifest["format"] == 1
    assert manifest["taken_at"].endswith("Z")
    assert "GNU tar" in manifest["archiver"]
    assert store.verify()["volumes"]["content"]["headers_sha256"] == entry["headers_sha256"]
    assert sorted(os.listdir(path.parent)) == ["snapshot"]  # no leftovers


def test_restore_makes_the_volume_exactly_equal_again(store, tree):
    before = tree_digest(str(tree))
    store.take({"content": str(tree)})
    mutate(tree)
    assert tree_digest(str(tree)) != before
    result = store.restore({"content": str(tree)})
    assert tree_digest(str(tree)) == before
    assert result["volumes"]["content"]["tree_digest"] == before
    assert not (tree / "new-file").exists() and not (tree / "new-link").is_symlink()
    assert (tree / "a" / "deep" / "er" / "leaf.txt").read_text() == "leaf\n"
    assert os.readlink(tree / "dangling") == "nowhere-yet"
    assert os.stat(tree / "a").st_uid == 1234
    assert stat.S_ISFIFO(os.lstat(tree / "pipe").st_mode)
    assert os.stat(tree / "hard-index").st_ino == os.stat(tree / "index.html").st_ino
    # nothing left beside the volume
    assert listing(tree.parent) == ["_data"]


def test_restore_into_a_new_directory_elsewhere(store, tree, tmp_path):
    before = tree_digest(str(tree))
    store.take({"content": str(tree)})
    other = tmp_path / "other-app" / "_data"
    other.parent.mkdir()
    store.restore({"content": str(other)})
    assert tree_digest(str(other)) == before
    assert tree_digest(str(tree)) == before


def test_two_volumes_and_a_partial_restore(store, tmp_path):
    a = make_tree(tmp_path / "a" / "_data", seed=1)
    b = tmp_path / "b" / "_data"
    b.mkdir(parents=True)
    (b / "notes.db").write_text("schema=1\n")
    da, db = tree_digest(str(a)), tree_digest(str(b))
    manifest = store.take({"content": str(a), "data": str(b)})
    assert sorted(manifest["volumes"]) == ["content", "data"]
    mutate(a)
    (b / "notes.db").write_text("schema=2\n")
    store.restore({"data": str(b)})
    assert tree_digest(str(b)) == db and tree_digest(str(a)) != da
    store.restore({"content": str(a), "data": str(b)})
    assert tree_digest(str(a)) == da


def test_restore_of_an_unknown_volume_fails_and_names_what_exists(store, tree):
    store.take({"content": str(tree)})
    with pytest.raises(SnapshotError, match=r"has no volume data \(it holds: content\)"):
        store.restore({"data": str(tree)})


def test_a_new_snapshot_replaces_the_old_one(store, tree):
    first = store.take({"content": str(tree)}, version="1")
    (tree / "index.html").write_text("v2\n")
    second = store.take({"content": str(tree)}, version="2")
    assert store.manifest() == second
    assert second["volumes"]["content"]["tree_digest"] != first["volumes"]["content"]["tree_digest"]
    assert sorted(os.listdir(Path(store.path).parent)) == ["snapshot"]


def test_no_snapshot_is_a_clear_error(store, tree):
    assert store.info() == {
        "exists": False,
        "path": store.path,
        "manifest": {},
        "manifest_digest": "",
    }
    with pytest.raises(SnapshotError, match="no snapshot of recipe 'custom-html'"):
        store.restore({"content": str(tree)})


def test_remove(store, tree):
    store.take({"content": str(tree)})
    assert store.remove() is True
    assert not os.path.exists(store.path)
    assert store.remove() is False


def test_bad_volume_names_and_sources(store, tree, tmp_path):
    with pytest.raises(SnapshotError, match=r"volume name '\.\./x' is invalid"):
        store.take({"../x": str(tree)})
    with pytest.raises(SnapshotError, match="is not a directory"):
        store.take({"content": str(tmp_path / "missing")})
    with pytest.raises(SnapshotError, match="no volumes given"):
        store.take({})


# --- corruption -------------------------------------------------------------------------


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("where", ["content", "header"])
def test_flipped_byte_is_refused_and_the_volume_untouched(store, tree, where):
    store.take({"content": str(tree)})
    archive = Path(store.path) / "content.tar"
    mutate(tree)
    changed = tree_digest(str(tree))
    flip_byte(archive, 5000 if where == "content" else 1030)
    with pytest.raises(
        CorruptSnapshotError, match=re.escape(f"archive {archive} does not match its sha256")
    ):
        store.restore({"content": str(tree)})
    assert tree_digest(str(tree)) == changed
    assert listing(tree.parent) == ["_data"]
    with pytest.raises(CorruptSnapshotError, match=r"content\.tar"):
        store.verify()


def headers_sha256(archive: Path) -> str:
    """sha256 of every byte of ``archive`` that is not a regular file's content (tarfile's
    reading of where contents lie, independent of our scanner)."""
    raw = archive.read_bytes()
    with tarfile.open(archive) as tar:
        contents = [(m.offset_data, m.size) for m in tar.getmembers() if m.isreg()]
    digest, pos = hashlib.sha256(), 0
    for start, size in contents:
        digest.update(raw[pos:start])
        pos = start + size
    digest.update(raw[pos:])
    return digest.hexdigest()


def test_any_flipped_byte_anywhere_is_refused_before_a_byte_is_written(store, tree):
    """WC3 with the headers digest: header, extended header, content, padding, the
    end-of-archive blocks and the record padding after them, each refused by verify and
    by restore (into the volume, and into a new one), the volume untouched."""
    store.take({"content": str(tree)})
    archive = Path(store.path) / "content.tar"
    good = archive.read_bytes()
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    big, small = members["./big.bin"], members["./index.html"]
    end = max(m.offset_data + -(-m.size // 512) * 512 for m in members.values())
    offsets = {
        "first header": 3,
        "extended header data": big.offset + 512 + 20,
        "ustar header mode": big.offset_data - 512 + 101,
        "content": big.offset_data + 1_500_000,
        "last content byte": small.offset_data + small.size - 1,
        "padding": small.offset_data + small.size,
        "end-of-archive block": end + 7,
        "second end block": end + 512 + 300,
        "record padding": len(good) - 1,
    }
    assert offsets["record padding"] >= end + 1024  # GNU tar pads to whole records
    mutate(tree)
    changed = tree_digest(str(tree))
    created: list[str] = []
    for where, offset in offsets.items():
        flipped = bytearray(good)
        flipped[offset] ^= 0x01
        archive.write_bytes(bytes(flipped))
        refusal = re.escape(f"archive {archive} does not match its sha256")
        with pytest.raises(CorruptSnapshotError, match=refusal):
            store.verify()
        with pytest.raises(CorruptSnapshotError, match=refusal):
            store.restore({"content": str(tree)})
        with pytest.raises(CorruptSnapshotError, match=refusal):
            store.restore({"content": None}, create=lambda short: created.append(short) or "")
        assert (where, created) == (where, [])  # nothing created for a refused snapshot
        assert (where, tree_digest(str(tree))) == (where, changed)
        assert (where, listing(tree.parent)) == (where, ["_data"])
    archive.write_bytes(good)
    store.restore({"content": str(tree)})
    assert tree_digest(str(tree)) != changed


def test_a_snapshot_recorded_with_the_whole_archive_sha256_still_verifies(store, tree):
    """Manifests written before ``headers_sha256`` (and by the remote data path) carry the
    whole archive's sha256: read, verified and restored as before, and refused alike."""
    before = tree_digest(str(tree))
    store.take({"content": str(tree)})
    path = Path(store.path)
    archive = path / "content.tar"
    data = json.loads((path / "manifest.json").read_text())
    entry = data["volumes"]["content"]
    del entry["headers_sha256"]
    entry["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(data))
    assert store.verify()["volumes"]["content"]["sha256"] == entry["sha256"]
    mutate(tree)
    assert store.restore({"content": str(tree)})["volumes"]["content"]["sha256"] == entry["sha256"]
    assert tree_digest(str(tree)) == before
    mutate(tree)
    changed = tree_digest(str(tree))
    flip_byte(archive, archive.stat().st_size - 1)
    with pytest.raises(CorruptSnapshotError, match=r"does not match its sha256 in the manifest"):
        store.restore({"content": str(tree)})
    assert tree_digest(str(tree)) == changed
    del entry["sha256"]
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorruptSnapshotError, match=r"has no valid headers_sha256 \(or sha256\)"):
        store.verify()


def test_truncated_archive_and_missing_archive(store, tree):
    store.take({"content": str(tree)})
    archive = Path(store.path) / "content.tar"
    os.truncate(archive, archive.stat().st_size - 512)
    with pytest.raises(CorruptSnapshotError, match=r"content.tar has \d+ bytes but the manifest"):
        store.verify()
    archive.unlink()
    with pytest.raises(CorruptSnapshotError, match=r"content\.tar named in the snapshot manifest"):
        store.restore({"content": str(tree)})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: "{not json", "is not valid JSON"),
        (lambda m: {**m, "format": 9}, "format 9 is not 1"),
        (lambda m: {**m, "recipe": "other"}, "belongs to recipe 'other'"),
        (
            lambda m: {**m, "volumes": {"content": {**m["volumes"]["content"],
                                                    "archive": "../../etc/passwd"}}},
            "does not name its archive content.tar",
        ),
        (
            lambda m: {**m, "volumes": {"content": {**m["volumes"]["content"], "sha256": "0" * 64}}},
            "does not match its sha256",
        ),
    ],
)  # fmt: skip
def test_edited_manifest_is_refused_naming_the_file(store, tree, edit, message):
    store.take({"content": str(tree)})
    path = Path(store.path) / "manifest.json"
    edited = edit(json.loads(path.read_text()))
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    before = tree_digest(str(tree))
    with pytest.raises(CorruptSnapshotError, match=message) as exc:
        store.restore({"content": str(tree)})
    assert "manifest.json" in str(exc.value) or "content.tar" in str(exc.value)
    assert tree_digest(str(tree)) == before


# --- hostile archives -----------------------------------------------------------------


def plant(
    store: SnapshotStore,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    fmt: int = tarfile.PAX_FORMAT,
    pax: dict | None = None,
) -> Path:
    """Install a hand-made archive as the snapshot, with a manifest that matches it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax or {}) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    path = Path(store.path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "content.tar").write_bytes(raw)
    manifest = {
        "format": 1,
        "recipe": store.recipe,
        "version": None,
        "commit": None,
        "taken_at": "2026-01-01T00:00:00Z",
        "source": {},
        "volumes": {
            "content": {
                "archive": "content.tar",
                "sha256": hashlib.sha256(raw).hexdigest(),
                "bytes": len(raw),
                "files": 1,
                "tree_digest": "0" * 64,
                "meta_digest": "0" * 64,
            }
        },
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"x",
           link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"")
    else:
        data = None
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


HOSTILE = {
    "absolute path": ([member("/etc/cron.d/evil")], "is an absolute path"),
    "dot-dot": ([member("./a/../../evil")], "has a '..' component"),
    "symlink absolute": ([member("etc", tarfile.SYMTYPE, link="/etc")], "leaves the volume"),
    "symlink climbs out": (
        [member("a", tarfile.DIRTYPE), member("a/up", tarfile.SYMTYPE, link="../../x")],
        "leaves the volume",
    ),
    "symlink to root parent": ([member("up", tarfile.SYMTYPE, link="..")], "leaves the volume"),
    "member beneath a symlink": (
        [member("d", tarfile.SYMTYPE, link="."), member("d/f")],
        "lies beneath a symlink",
    ),
    "hardlink absolute": ([member("h", tarfile.LNKTYPE, link="/etc/shadow")], "absolute path"),
    "hardlink outside": ([member("h", tarfile.LNKTYPE, link="../shadow")], "'..' component"),
    "hardlink through a symlink": (
        [member("s", tarfile.SYMTYPE, link="a"), member("h", tarfile.LNKTYPE, link="s/f")],
        "lies beneath a symlink",
    ),
    "character device": ([member("null", tarfile.CHRTYPE)], "character device file"),
    "block device": ([member("sda", tarfile.BLKTYPE)], "block device file"),
    "root replaced": ([member(".", tarfile.SYMTYPE, link="x")], "replaces the volume root"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_before_a_byte_is_written(store, tree, case):
    members, message = HOSTILE[case]
    plant(store, [member("./ok.txt"), *members])
    before = tree_digest(str(tree))
    mtime = os.stat(tree).st_mtime_ns
    with pytest.raises(HostileArchiveError, match=message) as exc:
        store.restore({"content": str(tree)})
    assert "content.tar" in str(exc.value)
    assert tree_digest(str(tree)) == before and os.stat(tree).st_mtime_ns == mtime
    assert listing(tree.parent) == ["_data"]  # no staging directory was even made
    with pytest.raises(HostileArchiveError):
        store.verify()


def test_too_many_members_is_hostile(tmp_path, tree):
    store = SnapshotStore(str(tmp_path / "state"), "custom-html", max_members=5)
    plant(store, [member(f"f{i}") for i in range(6)])
    with pytest.raises(HostileArchiveError, match="more than 5 members"):
        store.restore({"content": str(tree)})


def test_global_headers_and_gnu_long_names(store, tree):
    plant(store, [member("a")], pax={"comment": "x"})
    with pytest.raises(HostileArchiveError, match="global extended headers"):
        store.verify()
    long = "d" * 120 + "/" + "f" * 120
    plant(store, [member("d" * 120, tarfile.DIRTYPE), member(long, data=b"data")],
          fmt=tarfile.GNU_FORMAT)  # fmt: skip
    result = store.verify()["volumes"]["content"]
    assert result["members"] == 2 and result["files"] == 1


def test_gnu_long_name_attack_is_caught(store):
    plant(store, [member("x" * 50 + "/../../" + "y" * 60)], fmt=tarfile.GNU_FORMAT)
    with pytest.raises(HostileArchiveError, match=r"'\.\.' component"):
        store.verify()


def test_hostile_tree_is_never_snapshotted_and_the_old_snapshot_stays(store, tree):
    store.take({"content": str(tree)})
    digest = store.manifest_digest()
    os.symlink("/etc/passwd", tree / "escape")
    with pytest.raises(HostileArchiveError, match=r"escape.*leaves the volume"):
        store.take({"content": str(tree)})
    assert store.manifest_digest() == digest
    store.verify()
    assert sorted(os.listdir(Path(store.path).parent)) == ["snapshot"]
    os.unlink(tree / "escape")
    os.mknod(tree / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with pytest.raises(HostileArchiveError, match="character device"):
        store.take({"content": str(tree)})
    assert store.manifest_digest() == digest


def test_max_members_applies_when_taking(tmp_path, tree):
    store = SnapshotStore(str(tmp_path / "state"), "custom-html", max_members=3)
    with pytest.raises(HostileArchiveError, match="more than 3 members"):
        store.take({"content": str(tree)})
    assert not os.path.exists(store.path)


@pytest.mark.slow  # many archives
def test_scanner_handles_chunks_of_any_size(tree, tmp_path):
    out = tmp_path / "t.tar"
    subprocess.run(["tar", *(a for a in snap.TAR_CREATE if a != "--file=-"), f"--file={out}", "-C", str(tree), "."],
                   check=True)  # fmt: skip
    raw = out.read_bytes()
    results = set()
    for step in (1, 7, 511, 512, 513, 4096, len(raw)):
        scanner = TarScanner("t", digests=True)
        for i in range(0, len(raw), step):
            scanner.feed(raw[i : i + step])
        results.add(json.dumps(scanner.finish(), sort_keys=True))
    assert len(results) == 1
    result = json.loads(results.pop())
    assert result["tree_digest"] == tree_digest(str(tree))
    assert result["headers_sha256"] == headers_sha256(out)  # whatever the chunks


def test_scanner_refuses_a_truncated_stream():
    scanner = TarScanner("t")
    scanner.feed(b"")
    with pytest.raises(CorruptSnapshotError, match="truncated"):
        scanner.finish()


# --- crashes ----------------------------------------------------------------------------

CHILD = """
import sys
sys.path.insert(0, {collections!r})
from ansible_collections.coopcloud.ci.plugins.module_utils import _snapshot as snap
if {no_exchange!r}:
    snap.exchange = lambda a, b: False
store = snap.SnapshotStore({state!r}, "custom-html")
op = {op!r}
if op == "take":
    store.take({volumes!r}, version="2")
elif op == "restore":
    store.restore({volumes!r})
else:
    store.remove()
print("finished")
"""


def run_until(point: str, op: str, state: str, volumes: dict, pause_dir: Path,
              no_exchange: bool = False) -> subprocess.Popen:  # fmt: skip
    """Start the operation in a child process; return once it waits at ``point``."""
    code = CHILD.format(collections=str(ROOT / "collections"), no_exchange=no_exchange,
                        state=state, op=op, volumes=volumes)  # fmt: skip
    env = {**os.environ, "CCCI_PAUSE_AT": point, "CCCI_PAUSE_DIR": str(pause_dir)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    marker = pause_dir / f"{point}.reached"
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child ended before {point}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{point} never reached"
        time.sleep(0.01)
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


TAKE_POINTS = {
    # point: (use the two-rename fallback, which snapshot survives: "old" or "new")
    "snapshot.volume-archived": (False, "old"),
    "snapshot.written": (False, "old"),
    "snapshot.swapped": (False, "new"),
    "snapshot.mid-swap": (True, "old"),
}


@pytest.mark.parametrize("point", sorted(TAKE_POINTS))
def test_killed_snapshot_leaves_a_complete_verifying_snapshot(store, tmp_path, point):
    no_exchange, survivor = TAKE_POINTS[point]
    a = make_tree(tmp_path / "a" / "_data", seed=1)
    b = make_tree(tmp_path / "b" / "_data", seed=2)
    volumes = {"content": str(a), "data": str(b)}
    old = store.take(volumes, version="1")
    old_digest = store.manifest_digest()
    (a / "index.html").write_text("the new data\n")
    proc = run_until(point, "take", store.state_dir, volumes, tmp_path / "pause", no_exchange)
    kill(proc)
    # readers see a complete snapshot even before anything is repaired
    assert store.exists()
    store.verify()
    actions = store.recover()
    assert actions, "the crash left something to put right"
    store.verify()
    assert sorted(os.listdir(store.base)) == ["snapshot"]
    if survivor == "old":
        assert store.manifest_digest() == old_digest and store.manifest() == old
    else:
        assert store.manifest()["version"] == "2"
        assert store.manifest()["volumes"]["content"]["tree_digest"] == tree_digest(str(a))
    # and the next take works normally
    store.take(volumes, version="3")
    assert store.manifest()["version"] == "3"


def test_checkpoints_are_on_the_normal_path(store, tmp_path, tree):
    """Deleting the marker lets the process finish: the point really is on the path."""
    proc = run_until("snapshot.written", "take", store.state_dir, {"content": str(tree)},
                     tmp_path / "pause")  # fmt: skip
    (tmp_path / "pause" / "snapshot.written.reached").unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == b"finished"
    assert store.manifest()["version"] == "2"


@pytest.mark.parametrize(
    ("point", "expect"),
    [("restore.verified", "old"), ("restore.staged", "old"), ("restore.swapped", "new")],
)
def test_killed_restore_leaves_each_volume_whole(store, tmp_path, tree, point, expect):
    good = tree_digest(str(tree))
    store.take({"content": str(tree)})
    mutate(tree)
    changed = tree_digest(str(tree))
    proc = run_until(point, "restore", store.state_dir, {"content": str(tree)},
                     tmp_path / "pause")  # fmt: skip
    kill(proc)
    assert tree_digest(str(tree)) == (good if expect == "new" else changed)
    store.restore({"content": str(tree)})  # the documented way back: restore again
    assert tree_digest(str(tree)) == good
    assert listing(tree.parent) == ["_data"]  # leftovers of the crash were removed


def test_killed_restore_between_two_volumes(store, tmp_path):
    a = make_tree(tmp_path / "a" / "_data", seed=1)
    b = make_tree(tmp_path / "b" / "_data", seed=2)
    good = {"content": tree_digest(str(a)), "data": tree_digest(str(b))}
    volumes = {"content": str(a), "data": str(b)}
    store.take(volumes)
    mutate(a)
    mutate(b)
    kill(run_until("restore.swapped-one", "restore", store.state_dir, volumes,
                   tmp_path / "pause"))  # fmt: skip
    assert tree_digest(str(a)) == good["content"]  # the first is in place, whole
    store.restore(volumes)
    assert {k: tree_digest(v) for k, v in volumes.items()} == good


def test_killed_removal_leaves_no_half_snapshot(store, tmp_path, tree):
    store.take({"content": str(tree)})
    kill(run_until("snapshot.removing", "remove", store.state_dir, {}, tmp_path / "pause"))
    assert not store.exists()
    store.recover()
    assert os.listdir(store.base) == []


# --- the crash-point hook ---------------------------------------------------------------


def test_checkpoint_is_a_no_op_unless_named(monkeypatch, tmp_path):
    monkeypatch.setenv("CCCI_PAUSE_DIR", str(tmp_path))
    monkeypatch.setenv("CCCI_PAUSE_AT", "elsewhere")
    _faults.checkpoint("snapshot.written")
    monkeypatch.delenv("CCCI_PAUSE_AT")
    _faults.checkpoint("snapshot.written")
    assert os.listdir(tmp_path) == []
    assert "snapshot.written" in _faults.POINTS and "restore.staged" in _faults.POINTS


def test_checkpoint_blocks_until_the_marker_is_deleted(monkeypatch, tmp_path):
    monkeypatch.setenv("CCCI_PAUSE_DIR", str(tmp_path))
    monkeypatch.setenv("CCCI_PAUSE_AT", "here")
    # A failing assertion below must not leave the paused thread blocking pytest's exit.
    monkeypatch.setenv("CCCI_PAUSE_TIMEOUT", "30")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (_faults.checkpoint("here"), done.set()), daemon=True)
    thread.start()
    marker = tmp_path / "here.reached"
    try:
        deadline = time.monotonic() + 10
        while not marker.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert marker.read_text().strip() == str(os.getpid())
        time.sleep(0.1)
        assert not done.is_set()
    finally:
        marker.unlink(missing_ok=True)
    thread.join(10)
    assert done.is_set()


def test_checkpoint_times_out_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("CCCI_PAUSE_DIR", str(tmp_path))
    monkeypatch.setenv("CCCI_PAUSE_AT", "stuck")
    monkeypatch.setenv("CCCI_PAUSE_TIMEOUT", "0.1")
    with pytest.raises(RuntimeError, match=r"waited 0\.1s"):
        _faults.checkpoint("stuck")


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (_member("/etc/passwd"), "absolute (the filter strips the slash; we refuse)"),
        (_member("a/../../x"), ".."),
        (_member("link", tarfile.SYMTYPE, "/etc"), "absolute symlink"),
        (_member("link", tarfile.SYMTYPE, "../../outside"), "symlink out of the root"),
        (_member("hard", tarfile.LNKTYPE, "../x"), "hard link with .."),
        (_member("dev", tarfile.CHRTYPE), "character device"),
        (_member("blk", tarfile.BLKTYPE), "block device"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_scanner_refuses_what_pep_706_data_filter_refuses(member, why, tmp_path):
    """Our rules are stricter than the standard library's: docs/snapshots.md, "tarfile"."""
    if member.name.startswith("/"):
        assert tarfile.data_filter(member, str(tmp_path)).name == member.name.lstrip("/")
    else:
        with pytest.raises(tarfile.FilterError):
            tarfile.data_filter(member, str(tmp_path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(b"") if member.isreg() else None)
    scanner = TarScanner("t")
    with pytest.raises(HostileArchiveError):
        scanner.feed(buf.getvalue())
        scanner.finish()


def test_data_filter_would_change_what_a_snapshot_must_keep(tmp_path):
    """Why extraction is not tarfile's: its safe filters rewrite modes we restore exactly."""
    setuid = _member("bin/tool", mode=0o4755)
    assert tarfile.data_filter(setuid, str(tmp_path)).mode == 0o755
    assert tarfile.tar_filter(setuid, str(tmp_path)).mode == 0o755
