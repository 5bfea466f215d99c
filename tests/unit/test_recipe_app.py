"""recipe_app's main(): arguments, check mode, diff, idempotence, failures.

The recipes are the real example git repositories; only the swarm is a stand-in (a
driver that records what it is asked and keeps a StackState), so no engine is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils import _app
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import Driver, DriverError
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    COMMIT_LABEL,
    ServiceState,
    StackState,
    TaskState,
    VolumeInfo,
)
from ansible_collections.coopcloud.ci.plugins.modules import recipe_app

DOMAIN = "t1.ccci.test"
STACK = "t1_ccci_test"


class FakeSecrets:
    def __init__(self):
        self.names: list[str] = []

    def list(self, **kwargs):
        return [type("S", (), {"name": n})() for n in self.names]


class FakeDriver(Driver):
    """Keeps one stack in memory; deploy/undeploy/remove change it like the real ones."""

    name = "fake"

    def __init__(self):
        super().__init__(client=type("C", (), {"secrets": FakeSecrets()})())
        self.stack = StackState(stack=STACK)
        self.calls: list[tuple] = []
        self.fail: DriverError | None = None
        self.published: dict | None = None

    def state(self, stack):
        return self.stack

    def deploy(self, stack, workdir, compose_files, env, secrets=None, version=None,
               commit=None, timeout=300, labels=None, publish=None):  # fmt: skip
        self.calls.append(("deploy", stack, list(compose_files), dict(env), version, commit,
                           sorted(secrets or {}), timeout))  # fmt: skip
        self.published = dict(publish) if publish else None
        assert Path(workdir, compose_files[0]).is_file()
        if self.fail:
            raise self.fail
        self.client.secrets.names += list(secrets or {})
        svc_labels = {COMMIT_LABEL: commit, f"coop-cloud.{stack}.version": version, **labels}
        task = TaskState("t1", f"{stack}_app", 1, "running", "running", image="ccci/web:1.29")
        self.stack = StackState(
            stack=stack,
            services=[
                ServiceState(
                    f"{stack}_app", "app", "ccci/web:1.29", 1, 1, labels=svc_labels, tasks=[task]
                )
            ],
            volumes=[VolumeInfo(f"{stack}_content", "content", "/m", "local", "vm")],
        )
        return {"changed": True, "cmd": ["docker", "stack", "deploy", stack], "rc": 0,
                "stdout": "Creating service\n", "stderr": "", "elapsed": 1.0,
                "secrets_created": sorted(secrets or {})}  # fmt: skip

    def published_port(self, stack, service, port):
        p = self.published
        if self.stack.services and p and (p["service"], p["port"]) == (service, port):
            return p["published"]
        return None

    def undeploy(self, stack, timeout=120):
        self.calls.append(("undeploy", stack))
        self.stack = StackState(stack=stack, volumes=self.stack.volumes)
        return {"changed": True, "removed": {"services": [f"{stack}_app"]}}

    def remove(self, stack, timeout=120):
        self.calls.append(("remove", stack))
        self.stack = StackState(stack=stack)
        return {"changed": True, "removed": {"volumes": [f"{stack}_content"]}}


@pytest.fixture
def driver(monkeypatch):
    fake = FakeDriver()
    monkeypatch.setattr(recipe_app, "get_driver", lambda name: fake)
    return fake


@pytest.fixture
def run(capsys, examples, driver, tmp_path):
    def _run(check: bool = False, diff: bool = False, **args) -> dict:
        args.setdefault("domain", DOMAIN)
        if args.get("state", "deployed") == "deployed":
            args.setdefault("recipe", "custom-html")
            args.setdefault("recipes_dir", str(Path(examples["custom-html"]["path"]).parent))
        return run_main(recipe_app, args, capsys, check=check, diff=diff)[1]

    return _run


def test_ref_and_version_are_mutually_exclusive(run, driver):
    out = run(ref="main", version="1.0.0+1.28")
    assert out["failed"] is True
    assert "mutually exclusive: ref|version" in out["msg"]
    assert driver.calls == []


def test_deployed_needs_a_recipe_and_a_valid_domain(run, driver):
    out = run(recipe=None, state="deployed")
    assert out["failed"] is True and "all of the following are missing: recipe" in out["msg"]
    out = run(recipe=None)
    assert (
        out["failed"] is True
        and "state is deployed but all of the following are missing: recipe" in out["msg"]
    )
    out = run(domain="Not A Domain")
    assert out["failed"] is True
    assert out["msg"].startswith("domain 'Not A Domain' is invalid")
    out = run(recipe="Bad_Name")
    assert out["failed"] is True and out["msg"].startswith("recipe name 'Bad_Name' is invalid")
    assert driver.calls == []


def test_unknown_version_and_ref(run, driver):
    out = run(version="9.9.9+9")
    assert out["failed"] is True
    assert out["msg"] == (
        "version '9.9.9+9' is not a version tag of recipe 'custom-html'; its versions are: "
        "1.0.0+1.28, 1.1.0+1.29"
    )
    out = run(ref="no-such-branch")
    assert out["failed"] is True and "ref 'no-such-branch' not found" in out["msg"]
    assert driver.calls == []


def test_check_mode_predicts_then_deploy_then_ok(run, driver, examples):
    tags = examples["custom-html"]["tags"]
    env = {"COMPOSE_FILE": "compose.yml:compose.ci.yml", "CI_HTTP_PORT": "8080"}
    check = run(check=True, diff=True, version="1.0.0+1.28", env=env)
    assert check["changed"] is True
    assert check["diff"] == {
        "before": {"state": "absent", "version": None, "commit": None},
        "after": {"state": "deployed", "version": "1.0.0+1.28", "commit": tags["1.0.0+1.28"]},
    }
    assert driver.calls == []

    real = run(diff=True, version="1.0.0+1.28", env=env, wait_timeout=77)
    assert real["changed"] is True
    assert real["diff"] == check["diff"]
    (call,) = driver.calls
    assert call[:3] == ("deploy", STACK, ["compose.yml", "compose.ci.yml"])
    assert call[3]["DOMAIN"] == DOMAIN and call[3]["CI_HTTP_PORT"] == "8080"
    assert call[3]["ENTRYPOINT_VERSION"] == "v1"  # from abra.sh
    assert call[4:6] == ("1.0.0+1.28", tags["1.0.0+1.28"]) and call[7] == 77
    assert (real["version"], real["commit"]) == ("1.0.0+1.28", tags["1.0.0+1.28"])
    assert real["services"][0]["replicas_running"] == 1
    assert real["volumes"][0]["name"] == f"{STACK}_content"

    # identical again: ok in check mode and for real, no deploy
    assert run(check=True, version="1.0.0+1.28", env=env)["changed"] is False
    again = run(version="1.0.0+1.28", env=env)
    assert again["changed"] is False and len(driver.calls) == 1
    assert again["commit"] == tags["1.0.0+1.28"]

    # same commit, other env: a deploy is needed
    assert run(check=True, version="1.0.0+1.28", env={**env, "CI_HTTP_PORT": "9090"})["changed"]
    # the default is the latest version tag
    latest = run(check=True, diff=True, env=env)
    assert latest["changed"] is True
    assert latest["diff"]["after"]["commit"] == tags["1.1.0+1.29"]
    assert latest["diff"]["before"]["commit"] == tags["1.0.0+1.28"]


def test_secrets_are_generated_or_taken_and_never_returned(run, driver, examples):
    notes_dir = str(Path(examples["notes"]["path"]).parent)
    out = run(recipe="notes", recipes_dir=notes_dir, secrets={"db_password": "s3cr3t-value"})
    assert out["changed"] is True
    assert out["secrets_created"] == [f"{STACK}_db_password_v1"]
    assert "s3cr3t-value" not in json.dumps(out)
    assert driver.calls[0][6] == [f"{STACK}_db_password_v1"]


def test_deploy_failure_carries_evidence(run, driver):
    driver.fail = DriverError(
        "stack t1_ccci_test failed to deploy: service t1_ccci_test_app cannot start: task x "
        "of t1_ccci_test_app is rejected: No such image: ccci/web:9.99-doesnotexist",
        cmd=["docker", "stack", "deploy", STACK], rc=0, stdout="Creating service\n", stderr="",
        tasks=[{"service": f"{STACK}_app", "state": "rejected",
                "error": "No such image: ccci/web:9.99-doesnotexist"}],
    )  # fmt: skip
    out = run(ref="broken")
    assert out["failed"] is True
    assert out["msg"].startswith(f"app {DOMAIN}: stack {STACK} failed to deploy")
    assert out["tasks"][0]["error"] == "No such image: ccci/web:9.99-doesnotexist"
    assert (out["rc"], out["stdout"], out["cmd"][-1]) == (0, "Creating service\n", STACK)
    assert out["resolved"]["ref"] == "broken" and len(out["resolved"]["commit"]) == 40
    assert out["changed"] is True
    assert out["secrets_created"] == []


def test_a_failed_deploy_reports_the_secrets_it_created(run, driver, examples):
    # the teardown removes what a failed deploy left: it needs the names
    driver.fail = DriverError(f"stack {STACK} failed to deploy: secret not found")
    driver.fail.secrets_created = [f"{STACK}_db_password_v1"]
    notes_dir = str(Path(examples["notes"]["path"]).parent)
    out = run(recipe="notes", recipes_dir=notes_dir)
    assert out["failed"] is True and out["changed"] is True
    assert out["secrets_created"] == [f"{STACK}_db_password_v1"]


def test_undeployed_and_absent(run, driver):
    out = run(state="undeployed", diff=True)
    assert out["changed"] is False and driver.calls == []
    assert out["diff"]["before"] == out["diff"]["after"] == {
        "state": "absent", "version": None, "commit": None}  # fmt: skip
    run(version="1.1.0+1.29")
    check = run(state="undeployed", check=True, diff=True)
    assert check["changed"] is True and [c[0] for c in driver.calls] == ["deploy"]
    assert check["diff"]["after"] == {"state": "undeployed", "version": None, "commit": None}
    out = run(state="undeployed", diff=True)
    assert out["changed"] is True and out["diff"] == check["diff"]
    assert out["services"] == [] and out["volumes"][0]["name"] == f"{STACK}_content"
    assert out["removed"] == {"services": [f"{STACK}_app"]}
    assert run(state="undeployed")["changed"] is False
    check = run(state="absent", check=True)
    assert check["changed"] is True and driver.calls[-1] == ("undeploy", STACK)
    out = run(state="absent")
    assert out["changed"] is True and out["state"] == "absent" and out["volumes"] == []
    assert run(state="absent")["changed"] is False


def test_publish_keeps_its_port_and_is_part_of_the_digest(run, driver, monkeypatch):
    monkeypatch.setattr(_app, "free_host_port", lambda: 31999)
    publish = {"service": "app", "port": 80}
    first = run(version="1.0.0+1.28", publish=publish)
    assert first["changed"] is True and first["published_port"] == 31999
    assert driver.published == {"service": "app", "port": 80, "published": 31999}
    # another free port now: the deployed one is reused, so the task is ok
    monkeypatch.setattr(_app, "free_host_port", lambda: 32000)
    again = run(version="1.0.0+1.28", publish=publish)
    assert again["changed"] is False and again["published_port"] == 31999
    assert len(driver.calls) == 1
    # the same port asked for explicitly: still ok; another one redeploys
    assert run(version="1.0.0+1.28", publish={**publish, "published": 31999})["changed"] is False
    moved = run(version="1.0.0+1.28", publish={**publish, "published": 31555})
    assert moved["changed"] is True and moved["published_port"] == 31555
    # an upgrade keeps the URL
    up = run(version="1.1.0+1.29", publish=publish)
    assert up["changed"] is True and up["published_port"] == 31555
    # dropping publish changes the digest too
    assert run(check=True, version="1.1.0+1.29")["changed"] is True


def test_publish_names_a_service_of_the_recipe(run, driver):
    out = run(publish={"service": "web", "port": 80, "published": 31000})
    assert out["failed"] is True
    assert out["msg"] == (
        f"app {DOMAIN}: service 'web' to publish is not a service of stack {STACK} "
        "(its services: app)"
    )
    bad = run(publish={"service": "app", "port": 80, "published": 70000})
    assert "publish.published of stack t1_ccci_test must be a TCP port, got 70000" in bad["msg"]
    assert driver.calls == []


def test_overlays_extend_compose_file_once(run, driver, examples):
    notes_dir = str(Path(examples["notes"]["path"]).parent)
    args = {"recipe": "notes", "recipes_dir": notes_dir, "version": "1.1.0+2.1"}
    run(**args, overlays=["compose.ci.yml", "db/compose.db-tune.yml"],
        env={"CI_HTTP_PORT": "8080"})  # fmt: skip
    assert driver.calls[-1][2] == ["compose.yml", "db/compose.db-tune.yml", "compose.ci.yml"]
    assert driver.calls[-1][3]["COMPOSE_FILE"] == (
        "compose.yml:db/compose.db-tune.yml:compose.ci.yml"
    )
    # a COMPOSE_FILE from env is the base the overlays extend
    run(**args, overlays=["db/compose.db-tune.yml"], env={"COMPOSE_FILE": "compose.yml"})
    assert driver.calls[-1][2] == ["compose.yml", "db/compose.db-tune.yml"]
    missing = run(**args, overlays=["compose.nope.yml"])
    assert missing["failed"] is True and "compose.nope.yml" in missing["msg"]
