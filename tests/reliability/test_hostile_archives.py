"""Hostile archives (issue 8, item 3): refused before a byte lands in the volume.

Each case is an archive built with Python's ``tarfile``: a harmless directory and file,
then one hostile member. It is installed as a snapshot slot whose manifest carries the
archive's correct sha256 and size, so only the hostile content can be the problem, and
restored through ``coopcloud.ci.volume_snapshot`` into the case's own app volume (all
cases in one play: tests/reliability/play.py). What must hold, per case: the task fails
naming the archive and the member; the volume's directory (its tree and the absence of any
staging directory beside it), the snapshot's bytes and the engine's objects of the case
are exactly what they were; no file appeared where the member pointed; and, restoring into
an app that has no volume yet, no volume is created.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from support.ansible import dump
from support.fixtures import init_state, remove_stack_everything

from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import tree_digest
from reliability.play import run_tasks
from reliability.world import World, differences

# one worker under pytest-xdist (--dist loadgroup): the tests share a module-scoped set-up
pytestmark = [pytest.mark.swarm, pytest.mark.xdist_group("test_hostile_archives")]

SNAP = "coopcloud.ci.volume_snapshot"
NS = "com.docker.stack.namespace"
RECIPE = "custom-html"
MAX_MEMBERS = 100


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", **pax) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if pax:
        info.pax_headers = dict(pax)
    return info


def many(count: int) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        for i in range(count):
            tar.addfile(member(f"./f{i:05d}"))

    return add


# (case id, add(tar, evil) - evil is a path unique to the case, words of the refusal)
CASES = [
    ("absolute path", lambda t, e: t.addfile(member(f"/tmp/{e}")), "is an absolute path"),
    ("absolute path into /etc", lambda t, e: t.addfile(member(f"/etc/{e}")),
     "is an absolute path"),
    ("dot-dot", lambda t, e: t.addfile(member(f"../../{e}")), "has a '..' component"),
    ("dot-dot inside a path", lambda t, e: t.addfile(member(f"./sub/../../../{e}")),
     "has a '..' component"),
    ("dot-dot hidden in a pax path", lambda t, e: t.addfile(member("./plain", path=f"../{e}")),
     "has a '..' component"),
    ("absolute path in a GNU long name",
     lambda t, e: _gnu(t, member("/tmp/" + e + "/" + "x" * 120)), "is an absolute path"),
    ("symlink to an absolute path",
     lambda t, e: t.addfile(member("./up", tarfile.SYMTYPE, "/etc")), "which leaves the volume"),
    ("symlink climbing out", lambda t, e: t.addfile(member("./up", tarfile.SYMTYPE, "../../..")),
     "which leaves the volume"),
    ("deep symlink climbing out",
     lambda t, e: t.addfile(member("./a/b/c", tarfile.SYMTYPE, "../../../x")),
     "which leaves the volume"),
    ("symlink then a child through it",
     lambda t, e: (t.addfile(member("./d", tarfile.SYMTYPE, "sub")),
                   t.addfile(member("./d/evil"))),
     "lies beneath a symlink of the archive"),
    ("symlink to . then a climb through it",
     lambda t, e: (t.addfile(member("./s", tarfile.SYMTYPE, ".")),
                   t.addfile(member("./s/s/s/x"))),
     "lies beneath a symlink of the archive"),
    ("hard link to an absolute path",
     lambda t, e: t.addfile(member("./h", tarfile.LNKTYPE, "/etc/shadow")),
     "is an absolute path"),
    ("hard link climbing out",
     lambda t, e: t.addfile(member("./h", tarfile.LNKTYPE, "../../../etc/passwd")),
     "has a '..' component"),
    ("hard link through a symlink",
     lambda t, e: (t.addfile(member("./s", tarfile.SYMTYPE, "sub")),
                   t.addfile(member("./h", tarfile.LNKTYPE, "s/file"))),
     "lies beneath a symlink of the archive"),
    ("character device", lambda t, e: t.addfile(member("./null", tarfile.CHRTYPE)),
     "is a character device file"),
    ("block device", lambda t, e: t.addfile(member("./sda", tarfile.BLKTYPE)),
     "is a block device file"),
    ("a file replacing the volume root", lambda t, e: t.addfile(member(".")),
     "replaces the volume root"),
    ("NUL byte in a pax path", lambda t, e: t.addfile(member("./n", path="a\x00/../../x")),
     "has a NUL byte in its name"),
    ("sparse member", lambda t, e: t.addfile(member("./sparse", **{"GNU.sparse.major": "1",
                                                                  "GNU.sparse.minor": "0"})),
     "is a sparse file"),
    ("unknown member type", lambda t, e: t.addfile(member("./odd", b"Z")),
     "has an unsupported type"),
    ("too many members", lambda t, e: many(MAX_MEMBERS + 1)(t),
     f"more than {MAX_MEMBERS} members (max_members)"),
    ("non-numeric pax uid", lambda t, e: t.addfile(member("./u", uid="0;id")),
     "'./u' has a pax uid record that is not a decimal number"),
    ("non-numeric pax size", lambda t, e: t.addfile(member("./z", size="1e3")),
     "'./z' has a pax size record that is not a decimal number"),
]  # fmt: skip
GLOBAL = "global pax header"  # a header of the whole archive, written by tarfile.open


def _gnu(tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    """One member in GNU format (a ././@LongLink header) inside the pax archive."""
    tar.fileobj.write(info.tobuf(tarfile.GNU_FORMAT, tar.encoding, tar.errors))
    tar.offset += len(info.tobuf(tarfile.GNU_FORMAT, tar.encoding, tar.errors))


def archive(case: str, add, evil: str) -> bytes:
    buf = io.BytesIO()
    extra = {"pax_headers": {"comment": "hello"}} if case == GLOBAL else {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, **extra) as tar:
        root = member(".", tarfile.DIRTYPE)
        root.mode = 0o755
        tar.addfile(root)
        sub = member("./sub", tarfile.DIRTYPE)
        tar.addfile(sub)
        body = b"fine\n"
        fine = member("./sub/file")
        fine.size = len(body)
        tar.addfile(fine, io.BytesIO(body))
        if add is not None:
            add(tar, evil)
    return buf.getvalue()


def install(slot: Path, raw: bytes) -> None:
    slot.mkdir(parents=True)
    (slot / "content.tar").write_bytes(raw)
    (slot / "manifest.json").write_text(json.dumps({
        "format": 1, "recipe": RECIPE, "version": None, "commit": None,
        "taken_at": "2026-01-01T00:00:00Z", "source": {},
        "volumes": {"content": {"archive": "content.tar",
                                "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                                "files": 1, "members": 3, "content_bytes": 5,
                                "tree_digest": "0" * 64, "meta_digest": "1" * 64}},
    }))  # fmt: skip


ALL = [(c, a, w) for c, a, w in CASES] + [
    (GLOBAL, None, "global extended headers are not accepted"),
    ("absolute path into an app without volumes",
     lambda t, e: t.addfile(member(f"/tmp/{e}")), "is an absolute path"),
]  # fmt: skip


@pytest.fixture(scope="module")
def batch(docker_client, tmp_path_factory):
    needle = secrets.token_hex(3)
    stacks, cases, tasks = [], {}, []
    try:
        for i, (case, add, words) in enumerate(ALL):
            tag = f"x{i:02d}-{needle}"
            stack, domain = f"{tag}_ccci_test", f"{tag}.ccci.test"
            stacks.append(stack)
            evil = f"ccci-evil-{tag}"
            state = init_state(tmp_path_factory.mktemp(f"hostile{i:02d}"))
            slot = state / RECIPE / "snapshot"
            install(slot, archive(case, add, evil))
            roots = [state]
            volume = None
            if "without volumes" not in case:
                vol = docker_client.volumes.create(name=f"{stack}_content", labels={NS: stack})
                volume = Path(vol.attrs["Mountpoint"])
                (volume / "index.html").write_text(f"current data of {tag}\n")
                os.symlink("index.html", volume / "home")
                roots.append(volume.parent)
            sentinels = [Path("/tmp") / evil, Path("/etc") / evil,
                         Path("/var/lib/docker/volumes") / evil, Path("/tmp/x")]  # fmt: skip
            world = World(docker_client, tag, roots, sentinels)
            args = {"recipe": RECIPE, "state_dir": str(state), "domain": domain,
                    "state": "restored", "max_members": MAX_MEMBERS}  # fmt: skip
            tasks.append({"name": f"restore {i}", SNAP: args, "ignore_errors": True})
            cases[case] = {"i": i, "words": words, "world": world, "before": world.take(),
                           "volume": volume, "slot": slot, "stack": stack}  # fmt: skip
        res = run_tasks(tasks)
        for c in cases.values():
            c["after"] = c["world"].take()
            c["digest"] = tree_digest(str(c["volume"])) if c["volume"] else None
        yield {"res": res, "cases": cases}
    finally:
        for stack in stacks:
            remove_stack_everything(stack)


@pytest.mark.parametrize("case", [c for c, _, _ in ALL])
def test_a_hostile_archive_is_refused_before_a_byte_is_written(batch, case):
    res, c = batch["res"], batch["cases"][case]
    events = [t for t in res.tasks if t["task"] == f"restore {c['i']}"]
    assert events and events[-1]["event"] == "runner_on_failed", dump(res)
    msg = events[-1]["res"]["msg"]
    assert c["words"] in msg, msg
    assert str(c["slot"] / "content.tar") in msg, msg
    assert "\n" not in msg and "Traceback" not in msg, msg
    changed = differences(c["before"], c["after"])
    assert changed == [], "\n".join(changed)
    if c["volume"] is not None:
        assert sorted(os.listdir(c["volume"].parent)) == ["_data"]
    else:
        assert c["after"]["engine"]["volumes"] == []  # no volume was created for it
