"""volume_snapshot on the real swarm, through ansible-runner, asserting the data itself.

Apps are deployed and undeployed with coopcloud.ci.recipe_app (the real driver). Cases
that need no running app (corruption, hostile archives, crashes) use real Docker volumes
carrying the stack's namespace label, which is all the module looks at.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.ansible import dump, run_module
from support.fixtures import free_port

from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import tree_digest

pytestmark = [pytest.mark.swarm, pytest.mark.slow]

SNAP = "coopcloud.ci.volume_snapshot"
APP = "coopcloud.ci.recipe_app"
NS = "com.docker.stack.namespace"


def recipes_dir(examples) -> str:
    return str(Path(examples["custom-html"]["path"]).parent)


def get(port: int, path: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            res = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3)
            if res.status_code == 200 or time.monotonic() > deadline:
                return res
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def mountpoint(client, name: str) -> Path:
    return Path(client.volumes.get(name).attrs["Mountpoint"])


def labelled_volume(client, stack: str, short: str) -> Path:
    vol = client.volumes.create(name=f"{stack}_{short}", labels={NS: stack})
    return Path(vol.attrs["Mountpoint"])


def fill(root: Path, seed: str) -> None:
    (root / "index.html").write_text(f"<h1>{seed}</h1>\n")
    (root / "assets").mkdir(exist_ok=True)
    (root / "assets" / "blob.bin").write_bytes(hashlib.sha256(seed.encode()).digest() * 40000)
    os.symlink("../index.html", root / "assets" / "home")
    os.chown(root / "assets", 101, 102)


def mutate(root: Path) -> None:
    """Change, delete and add files; chmod, chown, touch, add a symlink."""
    (root / "index.html").write_text("<h1>defaced</h1>\n")
    (root / "marker.html").unlink()
    (root / "added.html").write_text("new\n")
    os.chmod(root / "assets" / "blob.bin", 0o600)
    os.chown(root / "assets" / "blob.bin", 33, 33)
    os.utime(root / "assets", ns=(1, 1_000_000_000))
    os.symlink("index.html", root / "alias.html")


def snap(args: dict, **kw):
    res = run_module(SNAP, args, **kw)
    return res, (res.last if res.tasks else {})


def test_custom_html_deploy_mark_undeploy_snapshot_mutate_restore(
    examples, unique, cleanup_stacks, docker_client, state_dir
):
    domain, stack = f"s{unique}.ccci.test", f"s{unique}_ccci_test"
    other_domain, other_stack = f"r{unique}.ccci.test", f"r{unique}_ccci_test"
    cleanup_stacks.extend([stack, other_stack])
    port = free_port()
    deploy = {
        "recipe": "custom-html",
        "domain": domain,
        "recipes_dir": recipes_dir(examples),
        "env": {"COMPOSE_FILE": "compose.yml:compose.ci.yml", "CI_HTTP_PORT": str(port)},
        "wait_timeout": 120,
    }
    res = run_module(APP, deploy)
    assert res.rc == 0, dump(res)
    container = docker_client.containers.list(filters={"label": f"{NS}={stack}"})[0]
    marker = f"marker {unique}\n"
    rc, _ = container.exec_run(["sh", "-c", f"printf '{marker}' > /var/www/marker.html"])
    assert rc == 0
    assert get(port, "/marker.html").text == marker

    args = {"recipe": "custom-html", "domain": domain, "state_dir": str(state_dir),
            "version": examples["custom-html"]["latest"], "commit": res.last["commit"]}  # fmt: skip

    # while deployed: refused, nothing written
    res, out = snap({**args, "state": "present"})
    assert res.rc != 0
    assert f"app {domain} is deployed" in out["msg"] and "undeploy it first" in out["msg"]
    assert os.listdir(state_dir) == [".ccci-state"]  # only the marker it was made with

    res = run_module(APP, {"domain": domain, "state": "undeployed", "wait_timeout": 120})
    assert res.rc == 0, dump(res)
    assert docker_client.services.list(filters={"label": f"{NS}={stack}"}) == []
    volume = mountpoint(docker_client, f"{stack}_content")
    assert (volume / "marker.html").read_text() == marker  # the volume was kept
    fill(volume, unique)
    good = tree_digest(str(volume))

    # check -> real -> check again -> real again
    res, out = snap({**args, "state": "present"}, check=True, diff=True)
    assert res.rc == 0 and out["changed"] is True, dump(res)
    assert not (state_dir / "custom-html").exists()
    res, out = snap({**args, "state": "present"}, diff=True)
    assert res.rc == 0 and out["changed"] is True, dump(res)
    manifest = json.loads((state_dir / "custom-html/snapshot/manifest.json").read_text())
    assert out["manifest"] == manifest
    assert manifest["volumes"]["content"]["tree_digest"] == good
    archive = (state_dir / "custom-html/snapshot/content.tar").read_bytes()
    entry = manifest["volumes"]["content"]
    assert "sha256" not in entry and entry["bytes"] == len(archive)  # each byte hashed once
    assert [v["headers_sha256"] for v in out["volumes"]] == [entry["headers_sha256"]]
    assert (
        out["manifest_digest"]
        == hashlib.sha256(
            (state_dir / "custom-html/snapshot/manifest.json").read_bytes()
        ).hexdigest()
    )
    assert (snap({**args, "state": "present"}, check=True)[1]["changed"]) is False
    assert (snap({**args, "state": "present"})[1]["changed"]) is False

    mutate(volume)
    mutated = tree_digest(str(volume))
    assert mutated != good
    res, out = snap({**args, "state": "restored"}, check=True, diff=True)
    assert res.rc == 0 and out["changed"] is True, dump(res)
    assert out["diff"]["after"]["tree_digests"] == {"content": good}
    assert tree_digest(str(volume)) == mutated  # check mode changed nothing
    res, out = snap({**args, "state": "restored"})
    assert res.rc == 0 and out["changed"] is True, dump(res)
    assert tree_digest(str(volume)) == good
    assert sorted(os.listdir(volume.parent)) == ["_data"]
    assert (snap({**args, "state": "restored"}, check=True)[1]["changed"]) is False
    assert (snap({**args, "state": "restored"})[1]["changed"]) is False

    # restore into another app of the recipe: its volume is created, labelled, equal
    res, out = snap({**args, "domain": other_domain, "state": "restored"})
    assert res.rc == 0, dump(res)
    assert out["created_volumes"] == [f"{other_stack}_content"]
    other = docker_client.volumes.get(f"{other_stack}_content")
    assert other.attrs["Labels"] == {NS: other_stack}
    assert tree_digest(other.attrs["Mountpoint"]) == good

    # reattach: the restored data is what the app serves
    res = run_module(APP, deploy)
    assert res.rc == 0, dump(res)
    assert get(port, "/marker.html").text == marker
    assert get(port, "/index.html").text == f"<h1>{unique}</h1>\n"


def test_notes_two_volumes_round_trip(examples, unique, cleanup_stacks, docker_client, state_dir):
    domain, stack = f"n{unique}.ccci.test", f"n{unique}_ccci_test"
    cleanup_stacks.append(stack)
    res = run_module(APP, {"recipe": "notes", "domain": domain,
                           "recipes_dir": recipes_dir(examples), "wait_timeout": 120})  # fmt: skip
    assert res.rc == 0, dump(res)
    db = docker_client.services.get(f"{stack}_db")
    assert db.attrs["Spec"]["Labels"]["ccci.example.overlay"] == "db-tune"  # the overlay
    res = run_module(APP, {"domain": domain, "state": "undeployed", "wait_timeout": 120})
    assert res.rc == 0, dump(res)
    content = mountpoint(docker_client, f"{stack}_content")
    data = mountpoint(docker_client, f"{stack}_data")
    assert (data / "notes.db").read_text() == "schema=1\n"  # written by the db at first boot
    (content / "note-1.txt").write_text("first note\n")
    good = {"content": tree_digest(str(content)), "data": tree_digest(str(data))}
    args = {"recipe": "notes", "domain": domain, "state_dir": str(state_dir)}
    res, out = snap({**args, "state": "present"})
    assert res.rc == 0, dump(res)
    assert sorted(out["manifest"]["volumes"]) == ["content", "data"]
    assert {k: v["tree_digest"] for k, v in out["manifest"]["volumes"].items()} == good
    (data / "notes.db").write_text("schema=2\n")
    (data / "ready").unlink()
    (content / "note-1.txt").unlink()
    (content / "note-2.txt").write_text("second\n")
    res, out = snap({**args, "state": "restored"})
    assert res.rc == 0 and out["changed"] is True, dump(res)
    assert {"content": tree_digest(str(content)), "data": tree_digest(str(data))} == good


def test_flipped_byte_is_refused_and_the_volume_untouched(unique, cleanup_stacks, docker_client,
                                                          state_dir):  # fmt: skip
    stack = f"f{unique}_ccci_test"
    cleanup_stacks.append(stack)
    volume = labelled_volume(docker_client, stack, "content")
    fill(volume, unique)
    (volume / "marker.html").write_text("marker\n")
    args = {"recipe": "custom-html", "domain": f"f{unique}.ccci.test", "state_dir": str(state_dir)}
    res, out = snap({**args, "state": "present"})
    assert res.rc == 0, dump(res)
    archive = state_dir / "custom-html/snapshot/content.tar"
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    archive.write_bytes(bytes(raw))
    mutate(volume)
    mutated = tree_digest(str(volume))
    res, out = snap({**args, "state": "restored"})
    assert res.rc != 0
    assert f"archive {archive} does not match its sha256" in out["msg"]
    assert tree_digest(str(volume)) == mutated
    assert sorted(os.listdir(volume.parent)) == ["_data"]
    assert archive.exists()  # nothing deleted


HOSTILE = {
    "absolute": (lambda t: t.addfile(tarfile.TarInfo("/etc/ccci-evil")), "absolute path"),
    "dotdot": (lambda t: t.addfile(tarfile.TarInfo("../../ccci-evil")), "'..' component"),
    "symlink-out": (
        lambda t: t.addfile(_link("up", tarfile.SYMTYPE, "../../../../etc")),
        "leaves the volume",
    ),
    "hardlink-out": (
        lambda t: t.addfile(_link("h", tarfile.LNKTYPE, "/etc/shadow")),
        "absolute path",
    ),
    "device": (lambda t: t.addfile(_link("null", tarfile.CHRTYPE, "")), "device file"),
}


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_before_a_byte_is_written(unique, cleanup_stacks,
                                                             docker_client, state_dir, case):  # fmt: skip
    stack = f"h{unique}_ccci_test"
    cleanup_stacks.append(stack)
    volume = labelled_volume(docker_client, stack, "content")
    fill(volume, unique)
    before = tree_digest(str(volume))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("./fine.txt")
        tar.addfile(ok)
        HOSTILE[case][0](tar)
    raw = buf.getvalue()
    slot = state_dir / "custom-html" / "snapshot"
    slot.mkdir(parents=True)
    (slot / "content.tar").write_bytes(raw)
    (slot / "manifest.json").write_text(json.dumps({
        "format": 1, "recipe": "custom-html", "version": None, "commit": None,
        "taken_at": "2026-01-01T00:00:00Z", "source": {},
        "volumes": {"content": {"archive": "content.tar",
                                "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                                "files": 1, "tree_digest": "0" * 64, "meta_digest": "1" * 64}},
    }))  # fmt: skip
    args = {"recipe": "custom-html", "domain": f"h{unique}.ccci.test", "state_dir": str(state_dir)}
    res, out = snap({**args, "state": "restored"})
    assert res.rc != 0, dump(res)
    assert HOSTILE[case][1] in out["msg"] and "content.tar" in out["msg"]
    assert tree_digest(str(volume)) == before
    assert sorted(os.listdir(volume.parent)) == ["_data"]
    assert not Path("/etc/ccci-evil").exists()


def test_snapshot_killed_mid_way_leaves_the_previous_one_intact(
    unique, cleanup_stacks, docker_client, state_dir, tmp_path, monkeypatch
):
    stack = f"k{unique}_ccci_test"
    cleanup_stacks.append(stack)
    volume = labelled_volume(docker_client, stack, "content")
    fill(volume, unique)
    args = {"recipe": "custom-html", "domain": f"k{unique}.ccci.test", "state_dir": str(state_dir)}
    res, out = snap({**args, "state": "present", "version": "1"})
    assert res.rc == 0, dump(res)
    previous = out["manifest_digest"]
    (volume / "index.html").write_text("newer data\n")

    pause = tmp_path / "pause"
    monkeypatch.setenv("CCCI_PAUSE_AT", "snapshot.written")
    monkeypatch.setenv("CCCI_PAUSE_DIR", str(pause))
    results = []
    runner = threading.Thread(
        target=lambda: results.append(snap({**args, "state": "present", "version": "2"}))
    )
    runner.start()
    marker = pause / "snapshot.written.reached"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, "the module never reached the crash point"
        assert runner.is_alive(), results and dump(results[0][0])
        time.sleep(0.05)
    pid = int(marker.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().find(b"python") >= 0
    os.kill(pid, signal.SIGKILL)  # the module process, with the new snapshot fully written
    runner.join(120)
    monkeypatch.delenv("CCCI_PAUSE_AT")
    res, out = results[0]
    assert res.rc != 0  # the task failed: its process died
    assert any(n.startswith("snapshot.tmp-") for n in os.listdir(state_dir / "custom-html"))

    res, out = snap({**args, "state": "info", "verify": True})
    assert res.rc == 0, dump(res)
    assert out["manifest_digest"] == previous and out["manifest"]["version"] == "1"
    assert out["verified"]["content"]["files"] >= 2
    # the next real call clears the leftovers, and works
    res, out = snap({**args, "state": "present", "version": "2"})
    assert res.rc == 0 and out["changed"] is True, dump(res)
    assert out["recovered"] and sorted(os.listdir(state_dir / "custom-html")) == ["snapshot"]
    assert out["manifest"]["volumes"]["content"]["tree_digest"] == tree_digest(str(volume))
