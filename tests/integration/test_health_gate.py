"""health_gate on the real swarm, through ansible-runner: a healthy stack served over HTTP,
an image that does not exist (fails fast), a health check that always fails."""

from __future__ import annotations

import subprocess
import time

import pytest
from support.ansible import dump, run_module
from support.fixtures import free_port

pytestmark = pytest.mark.swarm

FQCN = "coopcloud.ci.health_gate"
COMMIT = "fa17446f2e24aa86e32a1d5771f9318b8cc80c40"

COMPOSE = """\
version: "3.8"
services:
  app:
    image: {image}
    command: ["httpd", "-f", "-p", "80", "-h", "/etc"]
    ports:
      - target: 80
        published: {port}
        protocol: tcp
        mode: host
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1{probe}"]
      interval: 1s
      timeout: 2s
      retries: 2
    deploy:
      labels:
        coop-cloud.ccci.commit: {commit}
"""


def deploy(tmp_path, stack: str, *, image="ccci/web:1.29", probe="/app-version") -> int:
    """``docker stack deploy`` of one httpd service serving /etc on a free host port."""
    port = free_port()
    compose = tmp_path / f"{stack}.yml"
    compose.write_text(COMPOSE.format(image=image, port=port, probe=probe, commit=COMMIT))
    proc = subprocess.run(
        ["docker", "stack", "deploy", "--detach=true", "--resolve-image", "never",
         "-c", str(compose), stack],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return port


def gate(args: dict, check: bool = False) -> tuple[dict, str]:
    started = time.monotonic()
    result = run_module(FQCN, args, check=check)
    wall = time.monotonic() - started
    res = result.last
    res["failed"] = result.tasks[-1]["event"] == "runner_on_failed"
    res["_wall"] = wall
    return res, dump(result)


def test_a_healthy_stack_passes_on_the_swarm_and_over_http(tmp_path, unique, cleanup_stacks):
    stack = f"hg-ok-{unique}"
    cleanup_stacks.append(stack)
    port = deploy(tmp_path, stack)
    args = {
        "stack": stack,
        "url": f"http://127.0.0.1:{port}/app-version",
        "body": r"^1\.29\n?$",
        "commit": COMMIT,
        "images": {"app": "ccci/web:1.29"},
        "wait_timeout": 120,
        "wait_sleep": 1,
    }
    res, log = gate(args)
    assert res["failed"] is False, log
    assert res["healthy"] is True and res["changed"] is False
    assert res["attempts"] >= 1 and 0 < res["elapsed"] < 120
    assert res["last"]["http"]["status"] == 200 and res["last"]["http"]["body"] == "1.29\n"
    svc = res["last"]["swarm"]["services"][0]
    assert svc["name"] == f"{stack}_app" and svc["commit"] == COMMIT
    # the health check passed before the swarm called the task running
    assert [t["health"] for t in svc["tasks"] if t["state"] == "running"] == ["healthy"]
    assert res["reason"] == (
        f"stack {stack} is healthy: app 1/1 (healthy); GET http://127.0.0.1:{port}/app-version "
        "-> 200, body matches /^1\\.29\\n?$/"
    )
    since = res["since"]

    # check mode probes too and gives the same answer, counting from the same deploy
    res, log = gate(args, check=True)
    assert res["healthy"] is True and res["changed"] is False and res["attempts"] == 1, log
    assert res["since"] == since

    # through the domain, resolved to the loopback address as curl --resolve does
    resolved = {
        **args,
        "url": f"http://app.example.test:{port}/app-version",
        "resolve": f"app.example.test:{port}:127.0.0.1",
    }
    res, log = gate(resolved)
    assert res["healthy"] is True, log
    assert f"(via 127.0.0.1:{port}) -> 200" in res["reason"]

    # a wrong expectation is reported with what was seen, and fail_on_unhealthy=false
    # lets the play branch on it
    res, log = gate({**args, "body": "1.30", "wait_timeout": 2, "fail_on_unhealthy": False})
    assert res["failed"] is False, log
    assert res["healthy"] is False
    assert res["reason"].endswith("but the body did not match /1.30/ (body: '1.29')")


def test_an_image_that_does_not_exist_fails_fast(tmp_path, unique, cleanup_stacks):
    stack = f"hg-noimg-{unique}"
    cleanup_stacks.append(stack)
    image = f"ccci/web:9.99-{unique}"
    port = deploy(tmp_path, stack, image=image)
    args = {"stack": stack, "url": f"http://127.0.0.1:{port}/", "wait_timeout": 120}
    for check in (False, True):
        res, log = gate(args, check=check)
        assert res["failed"] is True and res["healthy"] is False and res["fatal"] is True, log
        assert res["elapsed"] < 30 and res["_wall"] < 45, log
        assert res["msg"].startswith(f"stack {stack} (http://127.0.0.1:{port}/) cannot become")
        assert f"No such image: {image}" in res["msg"], res["msg"]
        assert any(f"No such image: {image}" in t["error"] for t in res["tasks"]), log
        assert res["last"]["http"]["skipped"] == "the stack is not healthy yet"
        assert res["changed"] is False


@pytest.mark.slow
def test_a_health_check_that_always_fails_is_unhealthy(tmp_path, unique, cleanup_stacks):
    stack = f"hg-sick-{unique}"
    cleanup_stacks.append(stack)
    deploy(tmp_path, stack, probe="/no-such-page")
    # a short gate times out while the task is still starting, naming the container health
    res, log = gate({"stack": stack, "wait_timeout": 8, "wait_sleep": 1}, check=True)
    assert res["failed"] is True and res["healthy"] is False and res["fatal"] is False, log
    assert res["msg"].startswith(f"stack {stack} did not become healthy within 8 s: ")
    assert "container health: unhealthy, failing streak" in res["msg"], res["msg"]
    assert "404 Not Found" in res["msg"]
    # a long one ends as soon as the swarm kills the unhealthy container (a failed task)
    res, log = gate({"stack": stack, "wait_timeout": 120, "wait_sleep": 1})
    assert res["failed"] is True and res["fatal"] is True, log
    assert res["elapsed"] < 90, log
    assert "dockerexec: unhealthy container" in res["msg"], res["msg"]
    assert any("unhealthy container" in t["error"] for t in res["tasks"])
    # check mode gives the same answer, at once: the failure is already on record
    res2, log = gate({"stack": stack, "wait_timeout": 120, "wait_sleep": 1}, check=True)
    assert res2["failed"] is True and res2["fatal"] is True and res2["attempts"] == 1, log
    assert "dockerexec: unhealthy container" in res2["msg"]
    assert res2["since"] == res["since"]
