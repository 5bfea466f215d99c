"""_engine: who answers at an engine's socket, and errors that mean it does not answer.

The identity is taken from the real kernel: a unix socket served by a child process,
which is then replaced by another, as a restarted dockerd is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import requests

from ansible_collections.coopcloud.ci.plugins.module_utils import _engine
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError, failure
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import RunRecord, verdict_of

SERVE = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


def serve(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def stop(proc: subprocess.Popen, path) -> None:
    proc.kill()
    proc.wait()
    path.unlink()


def test_boot_names_the_process_that_answers_and_restarted_sees_a_new_one(tmp_path):
    path = tmp_path / "docker.sock"
    url = f"unix://{path}"
    first = serve(path)
    try:
        seen = _engine.boot(url)
        assert seen["answers"] and seen["pid"] == first.pid and seen["address"] == url
        assert abs(seen["started"] - time.time()) < 60
        assert _engine.restarted([seen]) is None  # the same process: nothing happened
        # the clock was adjusted (the kernel's boot time moves with it): still the same one
        assert _engine.restarted([{**seen, "started": seen["started"] - 13.0}]) is None
    finally:
        stop(first, path)
    gone = _engine.restarted([seen])
    assert gone.startswith(f"the Docker engine at {url} stopped during the run and does not")
    second = serve(path)
    try:
        said = _engine.restarted([seen])
        assert said.startswith(f"the Docker engine at {url} restarted during the run (process "
                               f"{first.pid} then {second.pid})")  # fmt: skip
        assert "this run's result is not the change's" in said
    finally:
        stop(second, path)
    # no identity over TCP; an engine that did not answer at the start is not judged
    assert _engine.boot("tcp://127.0.0.1:2375") is None
    assert (
        _engine.restarted([{"address": url, "pid": None, "started": None, "answers": False}])
        is None
    )


def test_addresses_are_the_environments_engine_then_the_nodes():
    nodes = json.dumps({"a": "unix:///run/a.sock", "b": "unix:///var/run/docker.sock"})
    assert _engine.addresses({"CCCI_NODE_ENGINES": nodes}) == [
        "unix:///var/run/docker.sock", "unix:///run/a.sock"]  # fmt: skip
    assert _engine.addresses({"DOCKER_HOST": "tcp://h:2375", "CCCI_NODE_ENGINES": "nope"}) == [
        "tcp://h:2375"]  # fmt: skip


def refused(tmp_path) -> Exception:
    """What the SDK's HTTP stack raises at a socket nobody answers (real, not made up)."""
    import docker

    try:
        docker.DockerClient(base_url=f"unix://{tmp_path}/none.sock").version()
    except Exception as exc:  # the point is what it is
        return exc
    raise AssertionError("a socket nobody serves answered")


def test_unreachable_knows_a_gone_engine_from_an_erring_one(tmp_path):
    gone = refused(tmp_path)
    assert _engine.unreachable(gone), repr(gone)
    assert _engine.unreachable(requests.exceptions.ConnectionError(ConnectionRefusedError(111)))
    assert _engine.unreachable("Cannot connect to the Docker daemon at unix:///x. Is the "
                               "docker daemon running?")  # fmt: skip
    assert not _engine.unreachable(requests.exceptions.ReadTimeout("read timed out"))
    assert not _engine.unreachable(FileNotFoundError(2, "No such file or directory"))
    assert not _engine.unreachable("open /x: no such file or directory")
    with pytest.raises(httpx.HTTPError) as caught:  # an app's URL that refuses
        httpx.get("http://127.0.0.1:9/", timeout=2)
    assert not _engine.unreachable(caught.value)  # the HTTP client's error, not the engine's
    assert "engine_fault" not in failure(caught.value)

    out = failure(gone, "deploy")
    assert out["engine_fault"] is True
    assert out["msg"].startswith("deploy: the Docker engine at ")
    assert "does not answer" in out["msg"]
    cli = CcciError("docker stack deploy failed", rc=1,
                    stderr="error during connect: Get http://x: dial unix: connect refused")  # fmt: skip
    assert failure(cli)["engine_fault"] is True
    assert "engine_fault" not in failure(CcciError("no such recipe"))


@pytest.mark.parametrize(
    ("stages", "error", "engine", "verdict"),
    [
        ({"install": "fail"}, None, False, "FAIL"),
        ({"install": "fail"}, None, True, "ERROR"),
        ({"install": "pass"}, None, True, "ERROR"),
        ({"install": "pass"}, None, False, "PASS"),
    ],
)
def test_an_engine_fault_makes_the_verdict_error_whatever_the_stages(
    stages, error, engine, verdict
):
    assert verdict_of(stages, error, engine) == verdict


def test_the_record_keeps_the_engines_and_a_restart_ends_it_error(tmp_path):
    seen = [{"address": "unix:///x.sock", "pid": 7, "started": 1.0, "answers": True}]
    record = RunRecord.start(tmp_path, "a1b2c3", "quick", "notes", engines=seen)
    record.stage("upgrade", "fail", "task x failed: No such container: s_app.1.x")
    said = "the Docker engine at unix:///x.sock restarted during the run (process 7 then 9)"
    assert record.finish(error="the put-back failed", engine=said) == "ERROR"
    with open(record.path, encoding="utf-8") as handle:
        data = json.load(handle)
    assert data["engines"] == seen and data["engine_fault"] is True
    assert data["error"] == f"the put-back failed; {said}"
