"""The drivers without an engine: argv, the labels overlay, evidence on failure."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.coopcloud.ci.plugins.module_utils import _abra
from ansible_collections.coopcloud.ci.plugins.module_utils import _driver as drv
from ansible_collections.coopcloud.ci.plugins.module_utils._abra import AbraDriver
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import (
    DriverError,
    StackDriver,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    ServiceState,
    StackState,
    WaitResult,
)


class Recorder:
    """Stands in for subprocess.run: records argv, cwd and env; answers as told."""

    def __init__(self, answers=None):
        self.calls = []
        self.answers = list(answers or [])

    def __call__(self, cmd, cwd=None, env=None, **kwargs):
        self.calls.append({"cmd": cmd, "cwd": cwd, "env": env})
        rc, out, err = self.answers.pop(0) if self.answers else (0, "ok\n", "")
        return subprocess.CompletedProcess(cmd, rc, out, err)


class FakeSecrets:
    def __init__(self, names=()):
        self.items = [type("S", (), {"name": n})() for n in names]
        self.created = []

    def list(self, **kwargs):
        return list(self.items)

    def create(self, name, data, labels):
        self.created.append((name, data, labels))


class FakeApi:
    """The engine's container calls: ``containers`` by label, ``remove_container``."""

    def __init__(self, containers=(), refuse=None):
        self.listed = list(containers)  # (id, labels)
        self.refuse = refuse or {}  # id -> the engine's error text
        self.removed = []

    def containers(self, all=False, filters=None):
        key, _, value = filters["label"].partition("=")
        return [
            {"Id": i, "Labels": labels} for i, labels in self.listed if labels.get(key) == value
        ]

    def remove_container(self, cid, force=False):
        if cid in self.refuse:
            raise RuntimeError(self.refuse[cid])
        self.removed.append((cid, force))


class FakeClient:
    def __init__(self, secrets=(), containers=()):
        self.secrets = FakeSecrets(secrets)
        self.api = FakeApi(containers)


COMPOSE = """\
version: "3.8"
services:
  app:
    image: ccci/web:1.29
  db:
    image: ccci/busybox:latest
"""
OVERLAY = """\
version: "3.8"
services:
  db:
    deploy:
      labels: ["x=y"]
  cache:
    image: ccci/busybox:latest
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    root = tmp_path / "recipe"
    (root / "db").mkdir(parents=True)
    (root / "compose.yml").write_text(COMPOSE)
    (root / "db" / "compose.tune.yml").write_text(OVERLAY)
    return root


def test_compose_services_merges_files_in_order(recipe):
    assert drv.compose_services(str(recipe), ["compose.yml", "db/compose.tune.yml"]) == (
        ["app", "db", "cache"],
        "3.8",
    )


def test_compose_services_errors_name_the_file(recipe):
    with pytest.raises(DriverError, match=r"compose file missing.yml cannot be read"):
        drv.compose_services(str(recipe), ["missing.yml"])
    (recipe / "bad.yml").write_text("services: [\n")
    with pytest.raises(DriverError, match=r"compose file bad.yml is not valid YAML"):
        drv.compose_services(str(recipe), ["bad.yml"])


def test_labels_overlay_labels_every_service_and_escapes_dollars():
    text = drv.labels_overlay(["app", "db"], "3.8", {"coop-cloud.ccci.commit": "abc", "v": "$X"})
    doc = yaml.safe_load(text)
    assert doc == {
        "version": "3.8",
        "services": {
            "app": {"deploy": {"labels": {"coop-cloud.ccci.commit": "abc", "v": "$$X"}}},
            "db": {"deploy": {"labels": {"coop-cloud.ccci.commit": "abc", "v": "$$X"}}},
        },
    }


def test_stack_deploy_argv_and_environment(recipe, monkeypatch):
    runner = Recorder()
    client = FakeClient(secrets=["s_ccci_test_db_password_v1"])
    driver = StackDriver(client=client, runner=runner)
    seen = {}

    def fake_wait(stack, timeout, since):
        seen.update(stack=stack, timeout=timeout, since=since)
        return WaitResult(True, 2, 1.5, StackState(stack=stack), "converged")

    monkeypatch.setattr(driver, "wait_converged", fake_wait)
    monkeypatch.setenv("CCCI_FROM_PROCESS", "kept")
    out = driver.deploy(
        "s_ccci_test",
        str(recipe),
        ["compose.yml", "db/compose.tune.yml"],
        {"DOMAIN": "s.ccci.test", "STACK_NAME": "s_ccci_test", "CI_HTTP_PORT": 8080},
        secrets={"s_ccci_test_db_password_v1": "old", "s_ccci_test_smtp_v2": "hunter2"},
        version="1.1.0+1.29",
        commit="fa17446f2e24aa86e32a1d5771f9318b8cc80c40",
        timeout=42,
    )
    assert runner.calls[0]["cmd"] == [
        "docker", "stack", "deploy", "--detach=true", "--resolve-image", "never", "--prune",
        "-c", "compose.yml", "-c", "db/compose.tune.yml", "-c", "compose.ccci-labels.yml",
        "s_ccci_test",
    ]  # fmt: skip
    assert runner.calls[0]["cwd"] == str(recipe)
    env = runner.calls[0]["env"]
    assert env["CCCI_FROM_PROCESS"] == "kept"
    assert env["CI_HTTP_PORT"] == "8080" and env["STACK_NAME"] == "s_ccci_test"
    # only the missing secret is created, labelled with the namespace
    assert client.secrets.created == [
        ("s_ccci_test_smtp_v2", b"hunter2", {"com.docker.stack.namespace": "s_ccci_test"})
    ]
    assert out["secrets_created"] == ["s_ccci_test_smtp_v2"]
    assert "hunter2" not in repr(out)
    overlay = yaml.safe_load((recipe / "compose.ccci-labels.yml").read_text())
    labels = {
        "coop-cloud.ccci.commit": "fa17446f2e24aa86e32a1d5771f9318b8cc80c40",
        "coop-cloud.ccci.version": "1.1.0+1.29",
    }
    # the version deployed overwrites the recipe's own label on app, as abra does
    on_app = {**labels, "coop-cloud.s_ccci_test.version": "1.1.0+1.29"}
    assert overlay["services"] == {
        "app": {"deploy": {"labels": on_app}},
        **{n: {"deploy": {"labels": labels}} for n in ("db", "cache")},
    }
    assert seen["stack"] == "s_ccci_test" and seen["timeout"] == 42
    assert out["changed"] is True and out["attempts"] == 2


def test_failed_command_carries_the_evidence(recipe):
    runner = Recorder(
        [
            (
                1,
                "",
                "failed to create service s_app: Error response from daemon: "
                "rpc error: code = InvalidArgument\n",
            )
        ]
    )
    driver = StackDriver(client=FakeClient(), runner=runner)
    with pytest.raises(DriverError) as err:
        driver.deploy("s_ccci_test", str(recipe), ["compose.yml"], {}, timeout=1)
    exc = err.value
    assert str(exc).startswith("docker stack deploy of s_ccci_test failed: failed to create")
    assert exc.rc == 1 and "InvalidArgument" in exc.stderr
    assert exc.cmd[:3] == ["docker", "stack", "deploy"]
    assert exc.evidence()["rc"] == 1


def test_missing_secret_without_value_is_refused(recipe):
    driver = StackDriver(client=FakeClient(), runner=Recorder())
    with pytest.raises(DriverError, match="secret s_x_v1 of stack s is missing and has no value"):
        driver.ensure_secrets("s", {"s_x_v1": ""})


def test_no_compose_files_is_refused(recipe):
    with pytest.raises(DriverError, match="has no compose files"):
        StackDriver(client=FakeClient(), runner=Recorder()).deploy("s", str(recipe), [], {})


# --- abra ----------------------------------------------------------------------------------


def test_abra_argv():
    abra = AbraDriver(client=FakeClient(), runner=Recorder(), server="ci.example.org")
    assert abra.deploy_argv("t1.ccci.test") == [
        "abra", "app", "deploy", "-C", "-c", "-D", "-f", "-n", "t1.ccci.test"]  # fmt: skip
    assert abra.undeploy_argv("t1.ccci.test") == ["abra", "app", "undeploy", "-n", "t1.ccci.test"]
    assert abra.remove_argv("t1.ccci.test") == ["abra", "app", "remove", "-f", "-n", "t1.ccci.test"]
    assert abra.new_argv("custom-html", "t1.ccci.test", "1.1.0+1.29") == [
        "abra", "app", "new", "-n", "-s", "ci.example.org", "-D", "t1.ccci.test",
        "custom-html", "1.1.0+1.29"]  # fmt: skip
    assert abra.new_argv("custom-html", "t1.ccci.test")[-1] == "custom-html"
    assert AbraDriver.domain_of("t1_ccci_test") == "t1.ccci.test"


def test_abra_deploy_prepares_a_per_run_abra_dir(recipe, tmp_path, monkeypatch):
    runner = Recorder()
    abra_dir = tmp_path / "abra"
    abra = AbraDriver(client=FakeClient(), runner=runner, server="ci", abra_root=str(tmp_path))
    abra_dir = tmp_path / "t1_ccci_test"
    monkeypatch.setattr(
        abra,
        "wait_converged",
        lambda stack, timeout, since: WaitResult(True, 1, 0.1, StackState(stack=stack), "ok"),
    )
    env = {
        "TYPE": "custom-html",
        "DOMAIN": "t1.ccci.test",
        "STACK_NAME": "t1_ccci_test",
        "NOTES": 'say "hi"',
    }
    abra.deploy(
        "t1_ccci_test", str(recipe), ["compose.yml"], env, version="1.1.0+1.29", commit="abc1234"
    )
    call = runner.calls[0]
    assert call["cmd"] == ["abra", "app", "deploy", "-C", "-c", "-D", "-f", "-n", "t1.ccci.test"]
    assert call["env"]["ABRA_DIR"] == str(abra_dir)
    link = abra_dir / "recipes" / "custom-html"
    assert link.is_symlink() and link.resolve() == recipe.resolve()
    text = (abra_dir / "servers" / "ci" / "t1.ccci.test.env").read_text()
    assert text.splitlines() == [
        "TYPE=custom-html:1.1.0+1.29",
        'COMPOSE_FILE="compose.yml:compose.ccci-labels.yml"',
        'DOMAIN="t1.ccci.test"',
        'NOTES="say \\"hi\\""',
        'STACK_NAME="t1_ccci_test"',
    ]


def test_abra_undeploy_and_remove_argv(monkeypatch, tmp_path):
    runner = Recorder()
    abra = AbraDriver(client=FakeClient(), runner=runner, abra_root=str(tmp_path))
    servers = tmp_path / "t1_ccci_test" / "servers" / "default"
    servers.mkdir(parents=True)
    (servers / "t1.ccci.test.env").write_text("TYPE=custom-html\n")
    from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import ServiceState

    deployed = StackState(
        stack="t1_ccci_test",
        services=[ServiceState("t1_ccci_test_app", "app", "ccci/web:1.29", 1, 1)],
    )
    monkeypatch.setattr(drv, "read_stack", lambda client, stack: deployed)
    monkeypatch.setattr(_abra, "read_stack", lambda client, stack: deployed)
    monkeypatch.setattr(abra, "wait_gone", lambda stack, timeout: None)
    monkeypatch.setattr(
        abra,
        "remove_labelled",
        lambda stack, timeout: {"volumes": ["t1_ccci_test_content"], "secrets": []},
    )
    ns = "com.docker.stack.namespace"
    abra.client.api.listed = [("c1", {ns: "t1_ccci_test"}), ("c2", {ns: "t1_ccci_test_x"})]
    out = abra.remove("t1_ccci_test")
    # the data goes: the stack's containers (only its own) are removed at once, no clean stop
    assert abra.client.api.removed == [("c1", True)]
    assert [c["cmd"] for c in runner.calls] == [
        ["abra", "app", "undeploy", "-n", "t1.ccci.test"],
        ["abra", "app", "remove", "-f", "-n", "t1.ccci.test"],
    ]
    assert out["removed"]["volumes"] == ["t1_ccci_test_content"]
    assert {c["env"]["ABRA_DIR"] for c in runner.calls} == {str(tmp_path / "t1_ccci_test")}
    assert not (tmp_path / "t1_ccci_test").exists()  # the app's ABRA_DIR goes with it
    # nothing deployed: undeploy is a no-op that runs nothing
    monkeypatch.setattr(_abra, "read_stack", lambda client, stack: StackState(stack=stack))
    runner.calls.clear()
    assert abra.undeploy("t1_ccci_test") == {"changed": False, "removed": {}}
    assert runner.calls == []


def test_drop_containers_removes_the_stacks_own_at_once_and_only_when_discarding(monkeypatch):
    ns = "com.docker.stack.namespace"
    client = FakeClient(containers=[("a", {ns: "s1"}), ("b", {ns: "s1"}), ("c", {ns: "s10"})])
    client.api.refuse = {"b": "404 Client Error: No such container: b"}  # the swarm was first
    driver = drv.StackDriver(client=client, runner=Recorder())
    assert driver.drop_containers("s1") == ["a", "b"]
    assert client.api.removed == [("a", True)]
    client.api.refuse = {"a": "500 Server Error: driver failed"}
    with pytest.raises(DriverError, match="container a of stack s1 cannot be removed"):
        driver.drop_containers("s1")
    # undeploy drops them only inside discarding(): otherwise the swarm stops them cleanly
    client.api.refuse, client.api.removed = {}, []
    deployed = StackState(stack="s1", services=[ServiceState("s1_app", "app", "x", 1, 1)])
    monkeypatch.setattr(drv, "read_stack", lambda client, stack: deployed)
    monkeypatch.setattr(drv.StackDriver, "state", lambda self, stack: deployed)
    monkeypatch.setattr(drv, "wait_until", lambda *a, **k: None)
    monkeypatch.setattr(driver, "wait_gone", lambda stack, timeout: None)
    driver.undeploy("s1")
    assert client.api.removed == []
    with driver.discarding():
        driver.undeploy("s1")
    assert client.api.removed == [("a", True), ("b", True)]
    assert not driver._discarding


def test_abra_env_needs_a_recipe(recipe):
    abra = AbraDriver(client=FakeClient(), runner=Recorder())
    with pytest.raises(DriverError, match="names no recipe"):
        abra.prepare_abra_dir("t1_ccci_test", str(recipe), {"DOMAIN": "t1.ccci.test"}, None)


def test_get_driver():
    assert isinstance(drv.get_driver("stack", client=FakeClient()), StackDriver)
    assert isinstance(drv.get_driver("abra", client=FakeClient()), AbraDriver)
    with pytest.raises(DriverError, match="driver 'helm' is unknown: use one of stack, abra"):
        drv.get_driver("helm")


# --- publish ---------------------------------------------------------------------------------


def test_labels_overlay_publishes_one_port_in_host_mode():
    doc = yaml.safe_load(
        drv.labels_overlay(
            ["app", "db"], "3.8", {"l": "v"}, {"service": "app", "port": 80, "published": 31234}
        )
    )
    assert doc["services"]["app"] == {
        "deploy": {"labels": {"l": "v"}},
        "ports": [{"target": 80, "published": 31234, "protocol": "tcp", "mode": "host"}],
    }
    assert doc["services"]["db"] == {"deploy": {"labels": {"l": "v"}}}


def test_check_publish_refuses_unknown_services_and_bad_ports():
    drv.check_publish({"service": "app", "port": 80, "published": 8080}, ["app"], "s")
    with pytest.raises(DriverError, match=r"service 'web' to publish is not a service of stack s"):
        drv.check_publish({"service": "web", "port": 80, "published": 8080}, ["app"], "s")
    for bad in (0, 65536, "80", True, None):
        with pytest.raises(DriverError, match=r"publish.published of stack s must be a TCP port"):
            drv.check_publish({"service": "app", "port": 80, "published": bad}, ["app"], "s")


def test_stack_deploy_writes_the_port_into_the_generated_overlay(recipe, monkeypatch):
    driver = StackDriver(client=FakeClient(), runner=Recorder())
    monkeypatch.setattr(
        driver,
        "wait_converged",
        lambda stack, timeout, since: WaitResult(True, 1, 0.1, StackState(stack=stack), "ok"),
    )
    publish = {"service": "db", "port": 5432, "published": 31432}
    driver.deploy("s_ccci_test", str(recipe), ["compose.yml"], {}, publish=publish)
    overlay = yaml.safe_load((recipe / "compose.ccci-labels.yml").read_text())
    assert overlay["services"]["db"]["ports"] == [
        {"target": 5432, "published": 31432, "protocol": "tcp", "mode": "host"}
    ]
    assert set(overlay["services"]) == {"db"}  # no labels asked: only the published service
    with pytest.raises(DriverError, match="service 'cache' to publish is not a service"):
        driver.deploy(
            "s_ccci_test", str(recipe), ["compose.yml"], {}, publish={**publish, "service": "cache"}
        )


def test_published_port_reads_the_exact_service_of_the_stack():
    def service(name, stack, ports):
        return {"Spec": {"Name": name, "Labels": {"com.docker.stack.namespace": stack},
                         "EndpointSpec": {"Ports": ports}}}  # fmt: skip

    port = {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 31080, "PublishMode": "host"}
    services = [
        # the name filter matches prefixes: a longer name and another stack's service
        service("s_app2", "s", [{**port, "PublishedPort": 1}]),
        service("s_app", "other", [{**port, "PublishedPort": 2}]),
        service("s_app", "s", [{**port, "TargetPort": 443, "PublishedPort": 3}, port]),
    ]
    client = FakeClient()
    client.api = type("Api", (), {"services": lambda self, filters: services})()
    driver = StackDriver(client=client, runner=Recorder())
    assert driver.published_port("s", "app", 80) == 31080
    assert driver.published_port("s", "app", 8080) is None
    assert driver.published_port("s", "db", 80) is None
    services.clear()
    assert driver.published_port("s", "app", 80) is None


def test_free_host_port_is_bindable():
    import socket

    port = drv.free_host_port()
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", port))


def test_host_ports_update_stop_first_and_a_failed_deploy_names_its_secrets(tmp_path):
    (tmp_path / "compose.yml").write_text(
        "version: '3.8'\n"
        "services:\n"
        "  app: {image: x, deploy: {update_config: {order: start-first}}}\n"
        "  proxy:\n"
        "    image: y\n"
        "    ports: [{target: 80, published: 80, mode: host}]\n"
        "    deploy: {update_config: {order: start-first}}\n"
        "  worker: {image: z, deploy: {update_config: {order: start-first}}}\n"
    )
    runner = Recorder([(1, "", "secret not found: s_smtp_v1\n")])
    client = FakeClient()
    driver = StackDriver(client=client, runner=runner)
    with pytest.raises(DriverError) as err:
        driver.deploy(
            "s", str(tmp_path), ["compose.yml"], {}, secrets={"s_db_v1": "x"},
            version="v1.0.3", commit="abc", publish={"service": "app", "port": 80, "published": 8080},
        )  # fmt: skip
    assert err.value.secrets_created == ["s_db_v1"]  # the teardown needs them
    assert err.value.rc == 1 and "secret not found" in err.value.stderr
    overlay = yaml.safe_load((tmp_path / "compose.ccci-labels.yml").read_text())["services"]
    # both services with a host-mode port go stop-first; the others keep start-first
    assert overlay["app"]["deploy"]["update_config"] == {"order": "stop-first"}
    assert overlay["proxy"]["deploy"]["update_config"] == {"order": "stop-first"}
    assert "update_config" not in overlay["worker"]["deploy"]
    # the version deployed overwrites the recipe's label on app only
    assert overlay["app"]["deploy"]["labels"]["coop-cloud.s.version"] == "v1.0.3"
    assert "coop-cloud.s.version" not in overlay["worker"]["deploy"]["labels"]


class FileRecorder(Recorder):
    """A Recorder that also reads the file named by the last argument (abra's -f data)."""

    def __call__(self, cmd, cwd=None, env=None, **kwargs):
        with open(cmd[-1], encoding="utf-8") as handle:
            self.values.append((handle.read(), stat.S_IMODE(os.stat(cmd[-1]).st_mode)))
        return super().__call__(cmd, cwd=cwd, env=env, **kwargs)

    def __init__(self):
        super().__init__()
        self.values = []


def test_abra_inserts_secrets_from_a_private_file_that_does_not_stay(tmp_path):
    client = FakeClient(["t1_ccci_test_old_v1"])
    runner = FileRecorder()
    abra = AbraDriver(client=client, runner=runner, server="ci", abra_root=str(tmp_path))
    servers = tmp_path / "t1_ccci_test" / "servers" / "ci"
    servers.mkdir(parents=True)
    (servers / "t1.ccci.test.env").write_text("TYPE=dbkeep\n")
    created = abra.ensure_secrets("t1_ccci_test", {
        "t1_ccci_test_db_password_v1": "s3cret-value",
        "t1_ccci_test_old_v1": "kept",
        "shared_external_name": "by-sdk",
    })  # fmt: skip
    assert created == ["shared_external_name", "t1_ccci_test_db_password_v1"]
    (call,) = runner.calls
    assert runner.values == [("s3cret-value", 0o600)]
    assert call["cmd"][:-1] == ["abra", "app", "secret", "insert", "-f", "t1.ccci.test",
                                "db_password", "v1"]  # fmt: skip
    assert "s3cret-value" not in call["cmd"]
    assert call["env"]["ABRA_DIR"] == str(tmp_path / "t1_ccci_test")
    assert not os.path.exists(call["cmd"][-1])
    # a name abra does not build from the stack goes through the SDK, labelled
    assert [name for name, _, _ in client.secrets.created] == ["shared_external_name"]
    assert AbraDriver.secret_parts("t1_ccci_test", "t1_ccci_test_a_b_v2") == ("a_b", "v2")
    assert AbraDriver.secret_parts("t1_ccci_test", "t1_ccci_test_v2") is None
