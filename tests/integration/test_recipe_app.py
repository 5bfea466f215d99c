"""recipe_app on the real swarm, run the way operators run it: through ansible-runner."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from support.ansible import dump, run_module
from support.fixtures import free_port

pytestmark = [pytest.mark.swarm, pytest.mark.slow]

MODULE = "coopcloud.ci.recipe_app"


def recipes_dir(examples) -> str:
    return str(Path(examples["custom-html"]["path"]).parent)


def get(port: int, path: str = "/", timeout: float = 20.0) -> httpx.Response:
    """GET from the app's host port, retrying while the published port comes up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def html_args(examples, unique: str, cleanup_stacks: list, port: int | None = None, **more):
    """The module's arguments for custom-html as app ``t<unique>.ccci.test`` (its stack is
    removed after the test), behind the CI overlay on host ``port`` unless ``publish`` is
    given; ``more`` adds or overrides options."""
    cleanup_stacks.append(f"t{unique}_ccci_test")
    args = {"recipe": "custom-html", "domain": f"t{unique}.ccci.test",
            "recipes_dir": recipes_dir(examples), "wait_timeout": 120}  # fmt: skip
    if "publish" not in more:
        port = port or free_port()
        args["env"] = {"COMPOSE_FILE": "compose.yml:compose.ci.yml", "CI_HTTP_PORT": str(port)}
    return {**args, **more}


def test_custom_html_lifecycle(examples, unique, cleanup_stacks, docker_client):
    html = examples["custom-html"]
    domain = f"t{unique}.ccci.test"
    stack = f"t{unique}_ccci_test"
    port = free_port()
    args = html_args(examples, unique, cleanup_stacks, port, version=html["previous"])

    # check mode first: predicts a deploy, does nothing
    res = run_module(MODULE, args, check=True, diff=True)
    assert res.rc == 0, dump(res)
    assert res.last["changed"] is True
    assert res.last["diff"]["after"] == {
        "state": "deployed", "version": "1.0.0+1.28", "commit": html["tags"]["1.0.0+1.28"]}  # fmt: skip
    assert res.last["diff"]["before"] == {"state": "absent", "version": None, "commit": None}
    assert (
        docker_client.services.list(filters={"label": f"com.docker.stack.namespace={stack}"}) == []
    )

    # real deploy at 1.0.0+1.28 serves over real HTTP
    res = run_module(MODULE, args, diff=True)
    assert res.rc == 0, dump(res)
    out = res.last
    assert out["changed"] is True
    assert (out["version"], out["commit"]) == ("1.0.0+1.28", html["tags"]["1.0.0+1.28"])
    assert [(s["short_name"], s["image"], s["replicas_running"], s["replicas_desired"])
            for s in out["services"]] == [("app", "ccci/web:1.28", 1, 1)]  # fmt: skip
    assert [v["name"] for v in out["volumes"]] == [f"{stack}_content"]
    assert get(port).text == f"<h1>{domain}</h1>\n"
    assert get(port, "/.served-by").text.strip() == "1.28"

    # a second identical task is ok, and check mode agrees
    again_check = run_module(MODULE, args, check=True)
    again = run_module(MODULE, args)
    assert again_check.rc == 0 and again.rc == 0, dump(again)
    assert again_check.last["changed"] is False
    assert again.last["changed"] is False
    assert again.last["commit"] == html["tags"]["1.0.0+1.28"]

    # check mode predicts the upgrade, the upgrade moves the image
    up = {**args, "version": None, "ref": html["latest"]}
    up.pop("version")
    predicted = run_module(MODULE, up, check=True, diff=True)
    assert predicted.rc == 0, dump(predicted)
    assert predicted.last["changed"] is True
    assert predicted.last["diff"]["before"]["commit"] == html["tags"]["1.0.0+1.28"]
    assert predicted.last["diff"]["after"] == {
        "state": "deployed", "version": "1.1.0+1.29", "commit": html["tags"]["1.1.0+1.29"]}  # fmt: skip
    assert get(port, "/.served-by").text.strip() == "1.28"  # check mode touched nothing
    res = run_module(MODULE, up, diff=True)
    assert res.rc == 0, dump(res)
    assert res.last["changed"] is True
    assert (res.last["version"], res.last["commit"]) == ("1.1.0+1.29", html["tags"]["1.1.0+1.29"])
    assert res.last["diff"] == predicted.last["diff"]
    assert res.last["services"][0]["image"] == "ccci/web:1.29"
    # the image moved: /etc/app-version of the new image is what the entrypoint copied
    assert get(port, "/.served-by").text.strip() == "1.29"
    # the data did not: the first boot's index.html is still served
    assert get(port).text == f"<h1>{domain}</h1>\n"

    # undeploy keeps the volume and its data
    volume = docker_client.volumes.get(f"{stack}_content")
    marker = Path(volume.attrs["Mountpoint"]) / "marker.txt"
    marker.write_bytes(b"warm data " + unique.encode())
    undeploy = {"domain": domain, "state": "undeployed", "wait_timeout": 120}
    check = run_module(MODULE, undeploy, check=True)
    assert check.rc == 0 and check.last["changed"] is True, dump(check)
    res = run_module(MODULE, undeploy, diff=True)
    assert res.rc == 0, dump(res)
    assert res.last["changed"] is True
    assert res.last["state"] == "undeployed"
    assert res.last["services"] == []
    assert res.last["removed"]["services"] == [f"{stack}_app"]
    assert (
        docker_client.services.list(filters={"label": f"com.docker.stack.namespace={stack}"}) == []
    )
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"com.docker.stack.namespace={stack}"}
        )
        == []
    )
    assert marker.read_bytes() == b"warm data " + unique.encode()
    assert [v["name"] for v in res.last["volumes"]] == [f"{stack}_content"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    res = run_module(MODULE, undeploy)
    assert res.rc == 0 and res.last["changed"] is False, dump(res)

    # reattach: the marker is served by the redeployed app
    res = run_module(MODULE, up)
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert get(port, "/marker.txt").content == b"warm data " + unique.encode()

    # absent removes the app and its volume; again is ok
    absent = {"domain": domain, "state": "absent", "wait_timeout": 120}
    check = run_module(MODULE, absent, check=True)
    assert check.last["changed"] is True, dump(check)
    assert docker_client.volumes.list(filters={"label": f"com.docker.stack.namespace={stack}"})
    res = run_module(MODULE, absent)
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert res.last["removed"]["volumes"] == [f"{stack}_content"]
    assert res.last["state"] == "absent"
    assert (
        docker_client.volumes.list(filters={"label": f"com.docker.stack.namespace={stack}"}) == []
    )
    res = run_module(MODULE, absent)
    assert res.rc == 0 and res.last["changed"] is False, dump(res)


def test_broken_ref_fails_fast_with_the_task_error(examples, unique, cleanup_stacks):
    html = examples["custom-html"]
    stack = f"t{unique}_ccci_test"
    args = html_args(examples, unique, cleanup_stacks, ref=html["broken_branch"], wait_timeout=300)
    start = time.monotonic()
    res = run_module(MODULE, args)
    elapsed = time.monotonic() - start
    assert res.rc != 0
    out = res.last
    assert res.tasks[-1]["event"] == "runner_on_failed", dump(res)
    assert "No such image: ccci/web:9.99-doesnotexist" in out["msg"], out["msg"]
    assert out["msg"].startswith(f"app t{unique}.ccci.test: stack {stack} failed to deploy")
    assert any(t["error"] == "No such image: ccci/web:9.99-doesnotexist" for t in out["tasks"])
    assert out["rc"] == 0 and out["cmd"][:3] == ["docker", "stack", "deploy"]
    assert out["resolved"]["commit"] == html["broken_ref"]
    # fast: far under the 300 s wait_timeout (the rejection shows within seconds)
    assert elapsed < 60, elapsed


def test_notes_with_overlay_secret_and_two_volumes(examples, unique, cleanup_stacks, docker_client):
    notes = examples["notes"]
    domain = f"n{unique}.ccci.test"
    stack = f"n{unique}_ccci_test"
    cleanup_stacks.append(stack)
    args = {
        "recipe": "notes",
        "domain": domain,
        "recipes_dir": recipes_dir(examples),
        "wait_timeout": 120,
    }
    res = run_module(MODULE, args)
    assert res.rc == 0, dump(res)
    out = res.last
    assert (out["version"], out["commit"]) == (notes["latest"], notes["tags"][notes["latest"]])
    assert out["secrets_created"] == [f"{stack}_db_password_v1"]
    assert [v["short_name"] for v in out["volumes"]] == ["content", "data"]
    assert {s["short_name"]: s["image"] for s in out["services"]} == {
        "app": "ccci/web:2.1", "db": "ccci/busybox:latest"}  # fmt: skip
    db = docker_client.services.get(f"{stack}_db")
    assert db.attrs["Spec"]["Labels"]["ccci.example.overlay"] == "db-tune"
    env = db.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert "DB_CACHE_MB=128" in env  # .env.sample value, through the overlay's ${DB_CACHE_MB}
    secret = docker_client.secrets.get(f"{stack}_db_password_v1")
    assert secret.attrs["Spec"]["Labels"] == {"com.docker.stack.namespace": stack}
    # the db read the 32-byte generated secret (abra.sh's DB_ENTRYPOINT_VERSION=v2 config)
    data = Path(docker_client.volumes.get(f"{stack}_data").attrs["Mountpoint"])
    deadline = time.monotonic() + 20
    while not (data / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (data / "ready").read_text() == "db ready (password of 32 bytes)\n"
    assert f"{stack}_db_entrypoint_v2" in {c.name for c in docker_client.configs.list()}

    # undeploy keeps the secret (a reattached db must find the same password)
    res = run_module(MODULE, {"domain": domain, "state": "undeployed"})
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert docker_client.secrets.get(secret.id).id == secret.id
    res = run_module(MODULE, args)
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert res.last["secrets_created"] == []


def test_fixed_after_broken_is_idempotent(examples, unique, cleanup_stacks):
    """The rejected tasks of the broken spec stay in the task history: they are history."""
    html = examples["custom-html"]
    port = free_port()
    args = html_args(examples, unique, cleanup_stacks, port, ref=html["broken_branch"])
    assert run_module(MODULE, args).rc != 0
    fixed = {**args, "ref": html["latest"]}
    res = run_module(MODULE, fixed)
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert get(port, "/.served-by").text.strip() == "1.29"
    res = run_module(MODULE, fixed)
    assert res.rc == 0 and res.last["changed"] is False, dump(res)


def test_publish_keeps_the_host_port_across_redeploy_and_upgrade(examples, unique, cleanup_stacks):
    """publish: without the CI overlay, the app answers on the host port chosen for it."""
    html = examples["custom-html"]
    publish = {"service": "app", "port": 80}
    args = html_args(examples, unique, cleanup_stacks, version=html["previous"], publish=publish)
    res = run_module(MODULE, args)
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    port = res.last["published_port"]
    assert get(port, "/.served-by").text.strip() == "1.28"
    res = run_module(MODULE, args)
    assert res.rc == 0 and res.last["changed"] is False, dump(res)
    assert res.last["published_port"] == port
    res = run_module(MODULE, {**args, "version": html["latest"]})
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert res.last["published_port"] == port
    assert get(port, "/.served-by").text.strip() == "1.29"
