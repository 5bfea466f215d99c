"""health_gate's main(): real HTTP servers on loopback; the Docker engine is faked."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
from support.health_servers import ScriptedServer
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils import _health
from ansible_collections.coopcloud.ci.plugins.module_utils._catalog import HealthSpec
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    COMMIT_LABEL,
    ServiceState,
    StackState,
    TaskState,
)
from ansible_collections.coopcloud.ci.plugins.modules import health_gate

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
STACK = "html-5f3a2c_ci_example_org"


def run(args: dict, capsys, check: bool = False) -> tuple[int, dict]:
    return run_main(health_gate, args, capsys, check=check)


def a_stack(task_state: str, error: str = "", health: str | None = None) -> StackState:
    task = TaskState(
        id="9k1xq2tq7rj0mh3b3e0a1j2d4",
        service=f"{STACK}_app",
        slot=1,
        state=task_state,
        desired_state="running" if task_state == "running" else "shutdown",
        error=error,
        image="ccci/web:1.29",
        created_at=T0 + datetime.timedelta(seconds=1),
        updated_at=T0 + datetime.timedelta(seconds=1),
        container_id="c1",
        health=health,
    )
    svc = ServiceState(
        name=f"{STACK}_app",
        short_name="app",
        image="ccci/web:1.29",
        replicas_desired=1,
        replicas_running=1 if task.running else 0,
        labels={COMMIT_LABEL: "fa17446"},
        updated_at=T0,
        tasks=[task],
    )
    return StackState(stack=STACK, services=[svc])


@pytest.fixture
def engine(monkeypatch):
    """A fake engine: ``engine.states`` are answered in turn; the stack names asked."""
    fake = SimpleNamespace(states=[], asked=[])

    def read_stack(client, stack, *, health=False):
        fake.asked.append(stack)
        return fake.states[min(len(fake.asked) - 1, len(fake.states) - 1)]

    monkeypatch.setattr(_health, "read_stack", read_stack)
    monkeypatch.setattr(
        health_gate, "docker_client", lambda *_: SimpleNamespace(api=SimpleNamespace())
    )
    return fake


@pytest.mark.parametrize("check", [False, True])
def test_url_gate_waits_and_passes_in_both_modes(capsys, check):
    with ScriptedServer(lambda n: (503, "") if n < 2 else (200, "<p>1.29</p>")) as web:
        url = f"http://127.0.0.1:{web.port}/"
        rc, out = run({"url": url, "body": r"1\.29", "wait_sleep": 0.05}, capsys, check)
    assert rc == 0, out
    assert out["changed"] is False and out["healthy"] is True and out["fatal"] is False
    assert out["attempts"] == 3 and len(web.seen) == 3
    assert out["reason"] == f"GET {url} -> 200, body matches /1\\.29/"
    assert out["last"]["http"]["status"] == 200 and out["last"]["http"]["body"] == "<p>1.29</p>"
    assert "stack" not in out and "since" not in out and "tasks" not in out
    assert isinstance(out["elapsed"], float) and out["elapsed"] > 0


def test_unhealthy_url_fails_with_the_last_answer(capsys):
    with ScriptedServer(lambda n: (502, "Bad Gateway")) as web:
        url = f"http://127.0.0.1:{web.port}/health"
        rc, out = run({"url": url, "wait_timeout": 1, "wait_sleep": 0.2}, capsys)
    assert rc == 1 and out["failed"] is True and out["healthy"] is False
    assert out["msg"] == (f"{url} did not become healthy within 1 s: GET {url} -> 502 (want 200)")
    assert out["last"]["http"]["body"] == "Bad Gateway" and out["changed"] is False


def test_fail_on_unhealthy_false_returns_the_verdict(capsys):
    with ScriptedServer(lambda n: (200, "1.28")) as web:
        url = f"http://127.0.0.1:{web.port}/"
        args = {"url": url, "body": "1.29", "wait_timeout": 0, "fail_on_unhealthy": False}
        rc, out = run(args, capsys)
    assert rc == 0 and "failed" not in out
    assert out["healthy"] is False and out["attempts"] == 1
    assert out["reason"] == (
        f"{url} did not become healthy within 0 s: GET {url} -> 200 but the body did not "
        "match /1.29/ (body: '1.28')"
    )


def test_resolve_and_status_list(capsys):
    with ScriptedServer(lambda n: (302, "")) as web:
        url = f"http://notes.example.test:{web.port}/"
        args = {"url": url, "resolve": f"notes.example.test:{web.port}:127.0.0.1",
                "status": [200, 302]}  # fmt: skip
        rc, out = run(args, capsys)
    assert rc == 0 and out["healthy"], out
    assert web.seen[0].host == f"notes.example.test:{web.port}"


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ({}, "one of the following is required: url, base_url, stack, domain"),
        ({"stack": "a", "domain": "a.b"}, "parameters are mutually exclusive: stack|domain"),
        (
            {"url": "http://a.test/", "resolve": "b.test:80:127.0.0.1"},
            "resolve 'b.test:80:127.0.0.1' does not apply to url http://a.test/",
        ),
        ({"url": "http://a.test/", "body": "[1.29"}, "body '[1.29' is not a valid regular"),
        ({"stack": "s", "since": "last week"}, "since 'last week' is not an ISO 8601 time"),
        ({"domain": "Not A Domain"}, "domain"),
        ({"url": "http://a.test/", "wait_sleep": 0}, "wait_sleep more than 0"),
    ],
)
def test_bad_options_fail_with_one_sentence(capsys, args, msg, engine):
    rc, out = run({**args, "fail_on_unhealthy": False}, capsys)
    assert rc == 1 and out["failed"] is True
    assert msg in out["msg"]
    assert engine.asked == []  # nothing was probed


@pytest.mark.parametrize("check", [False, True])
def test_a_rejected_task_fails_fast_with_its_error_text(capsys, engine, check):
    engine.states = [a_stack("rejected", "No such image: ccci/web:9.99")]
    args = {"domain": "html-5f3a2c.ci.example.org", "wait_timeout": 120, "wait_sleep": 5}
    rc, out = run(args, capsys, check)
    assert rc == 1 and out["healthy"] is False and out["fatal"] is True
    assert engine.asked == [STACK] and out["attempts"] == 1
    assert out["msg"].startswith(f"stack {STACK} cannot become healthy (gave up after ")
    assert out["msg"].endswith("is rejected: No such image: ccci/web:9.99")
    assert out["tasks"][0]["error"] == "No such image: ccci/web:9.99"
    assert out["tasks"][0]["state"] == "rejected"
    assert out["stack"] == STACK and out["since"] == "2024-05-01T12:00:00Z"
    assert out["last"]["swarm"]["failed_tasks"][0]["id"] == "9k1xq2tq7rj0mh3b3e0a1j2d4"
    assert out["changed"] is False


def test_stack_and_commit_and_images(capsys, engine):
    engine.states = [a_stack("running", health="healthy")]
    args = {"stack": STACK, "commit": "fa17446", "images": {"app": "ccci/web:1.29"},
            "since": "2024-05-01T11:59:00Z"}  # fmt: skip
    rc, out = run(args, capsys)
    assert rc == 0 and out["healthy"] is True
    assert out["reason"] == f"stack {STACK} is healthy: app 1/1 (healthy)"
    svc = out["last"]["swarm"]["services"][0]
    assert svc["commit"] == "fa17446" and svc["tasks"][0]["health"] == "healthy"
    assert out["since"] == "2024-05-01T11:59:00Z" and "tasks" not in out
    rc, out = run({**args, "commit": "0ddba11", "wait_timeout": 0}, capsys)
    assert rc == 1
    assert out["msg"] == (
        f"stack {STACK} did not become healthy within 0 s: service {STACK}_app carries "
        "commit fa17446, want 0ddba11"
    )
    assert out["tasks"] == []


def test_no_docker_engine_is_one_sentence(capsys, monkeypatch):
    def nope(*_):
        raise ConnectionError("Error while fetching server API version")

    monkeypatch.setattr(health_gate, "docker_client", nope)
    rc, out = run({"stack": "s"}, capsys)
    assert rc == 1
    assert out["msg"] == (
        "cannot gate stack s: no Docker engine answers (Error while fetching server API version)"
    )


def test_a_catalog_health_mapping_stands_for_the_options(capsys):
    """health= takes a catalog entry's health whole: path, status, body, timeout, interval."""
    health = {"path": "/app-version", "status": [200, 204], "body": r"1\.29",
              "timeout": 1.0, "interval": 0.05}  # fmt: skip
    with ScriptedServer(lambda n: (204, "") if n < 1 else (200, "<p>1.28</p>")) as web:
        base = f"http://127.0.0.1:{web.port}/"
        rc, out = run({"base_url": base, "health": health}, capsys)
        url = f"http://127.0.0.1:{web.port}/app-version"
        # status and body from the mapping: 204 is healthy only with its body
        assert rc == 1 and out["msg"].startswith(f"{url} did not become healthy within 1 s")
        assert "did not match /1\\.29/" in out["msg"] and out["attempts"] > 2
        assert web.seen[0].path == "/app-version"
        # an explicit option wins over its key in the mapping
        rc, out = run(
            {"base_url": base, "health": health, "body": "1.28", "wait_sleep": 0.01}, capsys
        )
    assert rc == 0 and out["healthy"], out


def test_with_health_fills_only_what_is_not_given():
    params = {"url": None, "base_url": "http://h:1", "status": None, "body": None,
              "wait_timeout": 5, "wait_sleep": None, "health": {"path": "/x", "status": None,
              "body": None, "timeout": 99.0, "interval": None}}  # fmt: skip
    out = health_gate.with_health(params)
    assert out["url"] == "http://h:1/x" and out["status"] == [200] and out["body"] is None
    assert (out["wait_timeout"], out["wait_sleep"]) == (5, 2.0)
    assert (
        health_gate.with_health({**params, "health": None, "wait_timeout": None})["wait_timeout"]
        == 120
    )
    # no health mapping at all: the catalog entry's defaults, from their one home
    bare = health_gate.with_health({**params, "health": None, "wait_timeout": None})
    spec = HealthSpec()
    assert (
        bare["url"],
        bare["status"],
        bare["body"],
        bare["wait_timeout"],
        bare["wait_sleep"],
    ) == ("http://h:1" + spec.path, list(spec.status), spec.body, spec.timeout, spec.interval)
