"""volume_snapshot's main(): every state, check mode, diff, idempotence and refusals.

Only the Docker engine is a stand-in (support's :class:`FakeEngine`, answering the few API
calls the module makes); the volumes are real directories and the snapshots real archives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.fake_canonical_engine import FakeEngine
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import tree_digest
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import NAMESPACE_LABEL
from ansible_collections.coopcloud.ci.plugins.modules import volume_snapshot

DOMAIN = "app.example.org"
STACK = "app_example_org"
LABEL = f"{NAMESPACE_LABEL}={STACK}"


@pytest.fixture
def engine(tmp_path, monkeypatch) -> FakeEngine:
    eng = FakeEngine(tmp_path / "volumes")
    monkeypatch.setattr(volume_snapshot, "docker_client", lambda *_: eng)
    return eng


@pytest.fixture
def volume(engine, tmp_path) -> Path:
    mount = tmp_path / "volumes" / f"{STACK}_content" / "_data"
    mount.mkdir(parents=True)
    (mount / "index.html").write_text("<h1>hi</h1>\n")
    (mount / "sub").mkdir()
    (mount / "sub" / "marker").write_text("marker\n")
    engine.add_volume(f"{STACK}_content", mount, {NAMESPACE_LABEL: STACK})
    return mount


def run(args: dict, capsys, check: bool = False, diff: bool = False) -> tuple[int, dict]:
    return run_main(volume_snapshot, args, capsys, check=check, diff=diff)


def base(state_dir: Path, **more) -> dict:
    return {"recipe": "custom-html", "domain": DOMAIN, "state_dir": str(state_dir), **more}


def test_present_check_real_again(volume, state_dir, capsys):
    args = base(state_dir, state="present", version="1.0.0+1.28", commit="a" * 40)
    rc, out = run(args, capsys, check=True, diff=True)
    assert rc == 0, out
    assert out["changed"] is True and out["reasons"] == ["no snapshot"]
    assert not (state_dir / "custom-html").exists()  # check mode wrote nothing
    assert out["diff"]["before"] == {}
    assert out["diff"]["after"]["version"] == "1.0.0+1.28"

    rc, out = run(args, capsys, diff=True)
    assert rc == 0, out
    assert out["changed"] is True
    manifest = json.loads((state_dir / "custom-html" / "snapshot" / "manifest.json").read_text())
    assert out["manifest"] == manifest
    assert manifest["source"] == {"domain": DOMAIN, "stack": STACK}
    assert manifest["volumes"]["content"]["tree_digest"] == tree_digest(str(volume))
    assert out["volumes"][0]["name"] == "content"
    assert out["volumes"][0]["volume"] == f"{STACK}_content"
    assert out["volumes"][0]["files"] == 2
    assert out["diff"]["after"]["manifest_digest"] == out["manifest_digest"]

    rc, again = run(args, capsys, check=True)
    assert (rc, again["changed"]) == (0, False)
    rc, again = run(args, capsys)
    assert (rc, again["changed"]) == (0, False)
    assert again["manifest_digest"] == out["manifest_digest"]

    rc, forced = run({**args, "force": True}, capsys)
    assert forced["changed"] is True and forced["reasons"] == ["force"]


def test_present_sees_changes_and_other_versions(volume, state_dir, capsys):
    args = base(state_dir, state="present", version="1")
    run(args, capsys)
    _, out = run({**args, "version": "2"}, capsys, check=True)
    assert out["changed"] is True and out["reasons"] == ["other version"]
    (volume / "index.html").write_text("<h1>edited</h1>\n")
    _, out = run(args, capsys, check=True)
    assert out["changed"] is True and out["reasons"] == ["volume content changed"]


def test_restored_check_real_again(volume, state_dir, capsys):
    run(base(state_dir, state="present"), capsys)
    good = tree_digest(str(volume))
    (volume / "sub" / "marker").unlink()
    (volume / "extra").write_text("x")
    args = base(state_dir, state="restored")
    rc, out = run(args, capsys, check=True, diff=True)
    assert (rc, out["changed"]) == (0, True), out
    assert out["reasons"] == ["volume content differs"]
    assert out["diff"]["before"]["tree_digests"] == {"content": "(differs)"}
    assert out["diff"]["after"]["tree_digests"] == {"content": good}
    assert (volume / "extra").exists()  # check mode changed nothing
    rc, out = run(args, capsys)
    assert (rc, out["changed"]) == (0, True), out
    assert tree_digest(str(volume)) == good
    rc, out = run(args, capsys, check=True)
    assert out["changed"] is False
    rc, out = run(args, capsys)
    assert out["changed"] is False


def test_restored_creates_a_missing_volume_of_another_app(volume, engine, state_dir, capsys):
    run(base(state_dir, state="present"), capsys)
    good = tree_digest(str(volume))
    other = base(state_dir, state="restored", domain="other.example.org")
    rc, out = run(other, capsys, check=True)
    assert out["changed"] is True and out["reasons"] == ["volume content is missing"]
    assert "other_example_org_content" not in engine.api.volume_list
    rc, out = run(other, capsys)
    assert rc == 0, out
    assert out["created_volumes"] == ["other_example_org_content"]
    created = engine.api.volume_list["other_example_org_content"]
    assert created["Labels"] == {"com.docker.stack.namespace": "other_example_org"}
    assert tree_digest(created["Mountpoint"]) == good


def test_refused_while_deployed(volume, engine, state_dir, capsys):
    engine.api.service_list = [{"ID": "s1", "Spec": {"Name": f"{STACK}_app", "Labels": {
        "com.docker.stack.namespace": STACK}}}]  # fmt: skip
    rc, out = run(base(state_dir, state="present"), capsys)
    assert rc == 1
    assert "app app.example.org is deployed (services: app_example_org_app)" in out["msg"]
    assert not (state_dir / "custom-html").exists()


def test_refused_while_a_stopped_container_mounts_the_volume(volume, engine, state_dir, capsys):
    run(base(state_dir, state="present"), capsys)
    engine.api.containers_by_volume[f"{STACK}_content"] = ["0123456789abcdef"]
    (volume / "index.html").write_text("changed")
    rc, out = run(base(state_dir, state="restored"), capsys)
    assert rc == 1
    assert "containers still use its volumes (0123456789ab)" in out["msg"]
    assert (volume / "index.html").read_text() == "changed"


def test_volume_on_another_node_asks_for_delegate_to(engine, state_dir, capsys):
    engine.add_volume(f"{STACK}_content", "/nonexistent/elsewhere/_data", {NAMESPACE_LABEL: STACK})
    rc, out = run(base(state_dir, state="present"), capsys)
    assert rc == 1
    assert "is not on this machine: run the task on that node (delegate_to)" in out["msg"]
    rc, out = run(base(state_dir, state="present", domain="none.example.org"), capsys)
    assert rc == 1
    assert "has no volumes on node" in out["msg"] and "delegate_to" in out["msg"]
    rc, out = run(base(state_dir, state="present", volumes=["data"]), capsys)
    assert rc == 1 and "no volume 'data' (app_example_org_data) on node node-1" in out["msg"]


def test_info_absent_and_verify(volume, state_dir, capsys):
    args = base(state_dir)
    rc, out = run({**args, "state": "info"}, capsys)
    assert (rc, out["exists"], out["manifest"]) == (0, False, {})
    run({**args, "state": "present"}, capsys)
    rc, out = run({**args, "state": "info", "verify": True}, capsys)
    assert out["exists"] is True and out["changed"] is False
    assert out["verified"]["content"]["files"] == 2
    archive = state_dir / "custom-html" / "snapshot" / "content.tar"
    data = bytearray(archive.read_bytes())
    data[700] ^= 1
    archive.write_bytes(bytes(data))
    rc, out = run({**args, "state": "info", "verify": True}, capsys)
    assert rc == 1 and f"archive {archive} does not match its sha256" in out["msg"]
    # volumes equal to the recorded digests need no archive: ok, nothing read
    rc, out = run({**args, "state": "restored"}, capsys)
    assert (rc, out["changed"]) == (0, False)
    (volume / "index.html").write_text("changed\n")
    changed = tree_digest(str(volume))
    rc, out = run({**args, "state": "restored"}, capsys)
    assert rc == 1 and f"archive {archive} does not match its sha256" in out["msg"]
    assert tree_digest(str(volume)) == changed
    rc, out = run({**args, "state": "absent"}, capsys, check=True)
    assert out["changed"] is True and archive.exists()
    rc, out = run({**args, "state": "absent"}, capsys, diff=True)
    assert out["changed"] is True and not archive.parent.exists()
    assert out["diff"]["after"] == {}
    rc, out = run({**args, "state": "absent"}, capsys)
    assert out["changed"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"recipe": "Bad/Name"}, "recipe name 'Bad/Name' is invalid"),
        ({"state_dir": "relative/dir"}, "is relative"),
        ({"state_dir": "/"}, "state directory '/' is refused"),
        ({"domain": "not a domain", "state": "present"}, "domain 'not a domain' is invalid"),
        ({"state": "restored", "domain": None}, "domain"),
        ({"max_members": 0}, "max_members 0 is invalid"),
        ({"state": "restored"}, "no snapshot of recipe 'custom-html' to restore"),
    ],
)
def test_bad_arguments_fail_with_one_line_and_touch_nothing(engine, state_dir, capsys, args,
                                                            message):  # fmt: skip
    full = {**base(state_dir), **args}
    full = {k: v for k, v in full.items() if v is not None}
    rc, out = run(full, capsys)
    assert rc == 1
    assert message in out["msg"]
    assert "\n" not in out["msg"]
    assert os.listdir(state_dir) == [".ccci-state"]  # only the marker
