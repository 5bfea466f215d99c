"""The health gate's predicates over hand-made states and answers, and the gate itself
with a fake clock, a fake engine and real HTTP(S) servers on loopback (no docker)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from support import swarm_states as states
from support.health_servers import ScriptedServer, make_tls
from support.swarm_states import T0, at, task

from ansible_collections.coopcloud.ci.plugins.module_utils import _health
from ansible_collections.coopcloud.ci.plugins.module_utils._health import (
    ContainerHealth,
    HealthCheckError,
    HttpCheck,
    Resolve,
    SwarmCheck,
    deploy_time,
    gate,
    http_ok,
    probe_http,
    swarm_ok,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    COMMIT_LABEL,
    ServiceState,
    StackState,
    TaskState,
    deploy_failure,
)

COMMIT = "fa17446f2e24aa86e32a1d5771f9318b8cc80c40"


def service(
    short: str = "app",
    tasks: tuple[TaskState, ...] = (),
    *,
    commit: str | None = COMMIT,
    updated: float = 0,
    update_state: str | None = None,
    **more,
) -> ServiceState:
    """A service of stack ``s`` labelled with ``commit``, last updated at ``updated``."""
    labels = {COMMIT_LABEL: commit} if commit else {}
    started = at(updated) if update_state else None
    return states.service(short, tasks, labels=labels, updated=updated,
                          update_state=update_state, update_started=started, **more)  # fmt: skip


def stack(*services: ServiceState) -> StackState:
    return states.stack(*services, observed=10)


def check(**kw) -> SwarmCheck:
    return SwarmCheck(stack="s", since=kw.pop("since", at(0)), **kw)


HEALTHY = stack(
    service("app", (task("a1", health="healthy"),)),
    service("db", (task("d1", service="s_db", image="ccci/busybox:latest"),),
            image="ccci/busybox:latest"),
)  # fmt: skip


# --- http_ok ------------------------------------------------------------------------------


def test_http_ok_wants_a_listed_status():
    c = HttpCheck("http://app.example.test/")
    assert http_ok(200, "", c) == (True, "GET http://app.example.test/ -> 200")
    assert http_ok(502, "Bad Gateway", c) == (
        False,
        "GET http://app.example.test/ -> 502 (want 200)",
    )
    c2 = HttpCheck("http://app.example.test/", status=[200, 302])
    assert http_ok(302, "", c2)[0] is True
    assert http_ok(301, "", c2) == (
        False,
        "GET http://app.example.test/ -> 301 (want one of 200, 302)",
    )


def test_http_ok_searches_the_body_with_the_regex():
    c = HttpCheck("http://x.test/app-version", body=r"^1\.29$")
    # re.search without MULTILINE: ^ and $ at the ends (a trailing newline is fine for $)
    assert http_ok(200, "1.29\n", c) == (
        True,
        r"GET http://x.test/app-version -> 200, body matches /^1\.29$/",
    )
    ok, reason = http_ok(200, "1.28\n", c)
    assert not ok
    assert reason == (
        r"GET http://x.test/app-version -> 200 but the body did not match /^1\.29$/ (body: '1.28')"
    )
    # near misses: a longer version, a dot that is not escaped matches anything
    assert http_ok(200, "1.290", c)[0] is False
    assert http_ok(200, "1x29", HttpCheck("http://x.test/", body="1.29"))[0] is True
    assert http_ok(200, "1x29", HttpCheck("http://x.test/", body=r"1\.29"))[0] is False
    # the status is checked before the body
    assert http_ok(503, "1.29", c)[1].endswith("-> 503 (want 200)")


def test_http_ok_body_excerpt_is_short_and_on_one_line():
    c = HttpCheck("http://x.test/", body="<h1>")
    ok, reason = http_ok(200, "<html>\n  <p>" + "x" * 500, c)
    assert not ok and "did not match /<h1>/" in reason
    assert "\n" not in reason and len(reason) < 200


def test_http_check_refuses_bad_options():
    with pytest.raises(HealthCheckError, match="not a valid regular expression"):
        HttpCheck("http://x.test/", body="(")
    with pytest.raises(HealthCheckError, match="must be an http:// or https:// URL"):
        HttpCheck("ftp://x.test/")
    with pytest.raises(HealthCheckError, match="must be an http"):
        HttpCheck("x.test/health")
    with pytest.raises(HealthCheckError, match="not of the form host:port:address"):
        HttpCheck("http://x.test/", resolve="x.test:127.0.0.1")
    with pytest.raises(
        HealthCheckError, match=r"does not apply to url .* names x\.test:8080, the URL x\.test:80"
    ):
        HttpCheck("http://x.test/", resolve="x.test:8080:127.0.0.1")
    with pytest.raises(HealthCheckError, match=r"names other\.test:443"):
        HttpCheck("https://x.test/", resolve="other.test:443:127.0.0.1")
    with pytest.raises(HealthCheckError, match="request_timeout"):
        HttpCheck("http://x.test/", request_timeout=0)


def test_resolve_parses_curl_form_with_default_ports_and_ipv6():
    assert Resolve.parse("App.Example.org:443:10.0.0.5") == Resolve(
        "app.example.org", 443, "10.0.0.5"
    )
    assert Resolve.parse("a.test:80:[::1]").netloc == "[::1]:80"
    assert HttpCheck("https://a.test/", resolve="a.test:443:127.0.0.1").target == (
        "https://a.test/ (via 127.0.0.1:443)"
    )
    assert HttpCheck("http://A.test:8080/", resolve="a.test:8080:127.0.0.1").target.endswith(
        "(via 127.0.0.1:8080)"
    )
    with pytest.raises(HealthCheckError, match="port outside"):
        Resolve.parse("a.test:0:127.0.0.1")


# --- since --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:00:00Z",
        "2024-05-01T12:00:00+00:00",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00",
        "2024-05-01 12:00:00",
        "2024-05-01T12:00:00.000000000Z",
        T0,
    ],
)
def test_since_is_parsed_to_aware_utc(text):
    assert SwarmCheck(stack="s", since=text).since == T0


def test_since_garbage_and_bad_failures_are_refused():
    with pytest.raises(HealthCheckError, match="is not an ISO 8601 time"):
        SwarmCheck(stack="s", since="yesterday")
    with pytest.raises(HealthCheckError, match="max_task_failures"):
        SwarmCheck(stack="s", max_task_failures=-1)
    assert SwarmCheck(stack="s").since is None


def test_deploy_time_is_the_start_of_the_last_deploy():
    old = service("old", (task("o1", service="s_old"),), updated=-3600)
    a = service("a", (task("a1", service="s_a"),), updated=0.2)
    b = service("b", (task("b1", service="s_b"),), updated=1.5)
    assert deploy_time(stack(old, a, b)) == at(0.2)
    assert deploy_time(stack(old)) == at(-3600)
    assert deploy_time(stack()) is None


# --- swarm_ok -----------------------------------------------------------------------------


def test_a_converged_healthy_stack_is_ok():
    ok, reason, fatal = swarm_ok(HEALTHY, check(commit=COMMIT, images={"app": "ccci/web:1.29"}))
    assert (ok, fatal) == (True, False)
    assert reason == "stack s is healthy: app 1/1 (healthy), db 1/1"


def test_no_services_is_not_ok_but_not_fatal():
    assert swarm_ok(stack(), check()) == (False, "stack s has no services", False)


def test_a_rejected_task_is_fatal_with_its_own_error_text():
    state = stack(
        service(
            "app",
            (
                task("r1", state="rejected", desired="shutdown", t=1,
                     error="No such image: ccci/web:9.99", image="ccci/web:9.99"),
                task("r2", state="pending", desired="running", t=6, image="ccci/web:9.99"),
            ),
            image="ccci/web:9.99",
        )
    )  # fmt: skip
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (False, True)
    assert reason == (
        "service s_app cannot start: task r1 of s_app is rejected: No such image: ccci/web:9.99"
    )


def test_a_failed_task_since_the_deploy_is_fatal_by_default_even_if_replaced():
    state = stack(
        service(
            "app",
            (
                task("f1", state="failed", desired="shutdown", t=1,
                     error="task: non-zero exit (1)"),
                task("f2", t=7, health="healthy"),
            ),
        )
    )  # fmt: skip
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (False, True)
    assert reason == (
        "1 task of stack s failed since the deploy (max_task_failures=0): "
        "task f1 of s_app is failed: task: non-zero exit (1)"
    )
    # converged alone would accept it: the replacement runs
    ok, reason, fatal = swarm_ok(state, check(max_task_failures=1))
    assert (ok, fatal) == (True, False), reason
    # a second failure is one too many
    state.services[0].tasks.insert(
        1, task("f3", state="failed", desired="shutdown", t=4, error="task: non-zero exit (2)")
    )
    ok, reason, fatal = swarm_ok(state, check(max_task_failures=1))
    assert (ok, fatal) == (False, True)
    assert reason == (
        "2 tasks of stack s failed since the deploy (max_task_failures=1): "
        "task f3 of s_app is failed: task: non-zero exit (2)"
    )


def test_failures_are_counted_across_services():
    state = stack(
        service("app", (task("f1", state="failed", desired="shutdown", t=1, error="boom"),
                        task("a2", t=3))),
        service("db", (task("f2", service="s_db", state="failed", desired="shutdown", t=2,
                             error="bang"), task("d2", service="s_db", t=4))),
    )  # fmt: skip
    ok, reason, fatal = swarm_ok(state, check(max_task_failures=1))
    assert (ok, fatal) == (False, True)
    assert reason.startswith("2 tasks of stack s failed since the deploy (max_task_failures=1)")
    assert reason.endswith("task f2 of s_db is failed: bang")


BUSY = (
    "starting container failed: unable to remount dir as readonly: mount tmpfs:/var/lib/docker/"
    "containers/30c9/mounts/secrets, flags: 0x21, data: uid=0,gid=0: device or resource busy"
)


def test_the_engines_own_fault_starting_a_container_is_retried_not_blamed_on_the_app():
    faults = [task(f"e{i}", state="failed", desired="shutdown", t=i, error=BUSY)
              for i in (1, 2)]  # fmt: skip
    state = stack(service("app", (*faults, task("a3", t=5))))
    assert faults[0].engine_fault
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (True, False), reason
    assert deploy_failure(state, max_failures=1) is None
    # A third is the engine failing for good: it counts, and its words are quoted.
    state.services[0].tasks.insert(
        2, task("e3", state="failed", desired="shutdown", t=3, error=BUSY)
    )
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (False, True)
    assert reason.endswith(f"task e3 of s_app is failed: {BUSY}")


def test_a_recipe_fault_starting_a_container_is_the_apps_at_once():
    missing = (
        'starting container failed: failed to create task for container: OCI runtime create '
        'failed: exec: "serve": executable file not found in $PATH: unknown'
    )  # fmt: skip
    bad = task("x1", state="failed", desired="shutdown", t=1, error=missing)
    assert not bad.engine_fault
    # an app that exits is never the engine's, whatever it printed
    exited = task("x2", state="failed", desired="shutdown", t=1,
                  error="task: non-zero exit (1): device or resource busy")  # fmt: skip
    assert not exited.engine_fault
    ok, reason, fatal = swarm_ok(stack(service("app", (bad, task("a2", t=3)))), check())
    assert (ok, fatal) == (False, True)
    assert reason.endswith(f"task x1 of s_app is failed: {missing}")


def test_a_failure_before_the_deploy_is_history():
    state = stack(
        service(
            "app",
            (
                task("f0", state="failed", desired="shutdown", t=-30, error="old failure"),
                task("a1", t=2),
            ),
        )
    )
    assert swarm_ok(state, check())[0] is True
    # without since (the whole history counts) it is fatal
    assert swarm_ok(state, SwarmCheck(stack="s"))[2] is True


def test_a_failure_of_the_previous_spec_is_history():
    state = stack(
        service(
            "app",
            (
                task("f0", state="failed", desired="shutdown", t=1, error="old spec",
                     image="ccci/web:9.99", current=False),
                task("a1", t=2),
            ),
        )
    )  # fmt: skip
    assert swarm_ok(state, check()) == (True, "stack s is healthy: app 1/1", False)
    state.services[0].tasks[0].current = True
    assert swarm_ok(state, check())[2] is True


def test_not_converged_keeps_waiting_with_the_reason():
    state = stack(service("app", (task("p1", state="pending", t=1),)))
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (False, False)
    assert reason == "service s_app: 0/1 running; task p1 of s_app is pending: pending"


def test_a_stale_task_of_the_previous_spec_keeps_waiting():
    state = stack(
        service("app", (task("o1", image="ccci/web:1.28", current=False),), image="ccci/web:1.29")
    )
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (False, False)
    assert "still runs a previous spec (ccci/web:1.28, want ccci/web:1.29)" in reason


def test_an_update_in_progress_or_broken():
    # a1 is older than the update: the update has not replaced it yet
    state = stack(service("app", (task("a1", t=-1),), update_state="updating", updated=0))
    assert swarm_ok(state, check(since=at(-2)))[::2] == (False, False)
    state = stack(service("app", (task("a1"),), update_state="rollback_completed", updated=1))
    ok, reason, fatal = swarm_ok(state, check())
    assert (ok, fatal) == (False, True) and "did not take (rollback_completed" in reason


def test_an_upgrade_whose_new_task_dies_in_the_monitor_window_is_caught():
    # the update's new task runs: healthy without waiting out swarm's monitor window
    new = task("n1", t=2, health="healthy")
    state = stack(service("app", (new,), update_state="updating", updated=1))
    assert swarm_ok(state, check())[::2] == (True, False)
    # it dies 2 s later: its failure and the update the swarm paused are fatal
    dead = task("n1", t=2, state="failed", desired="shutdown", error="task: non-zero exit (1)")
    paused = service("app", (dead,), update_state="paused", updated=1)
    ok, reason, fatal = swarm_ok(stack(paused), check())
    assert (ok, fatal) == (False, True)
    assert "did not take (paused" in reason and "non-zero exit (1)" in reason
    # before the swarm paused it: the dead task's slot waits for its replacement
    again = task("n2", t=5, state="starting")
    ok, reason, fatal = swarm_ok(
        stack(service("app", (dead, again), update_state="updating", updated=1)),
        check(max_task_failures=0),
    )
    assert (ok, fatal) == (False, True) and "max_task_failures=0" in reason


def test_the_commit_label_must_be_the_deployed_one_on_every_service():
    state = stack(
        service("app", (task("a1"),)),
        service("db", (task("d1", service="s_db", image="x"),), image="x", commit="0" * 40),
    )
    ok, reason, fatal = swarm_ok(state, check(commit=COMMIT))
    assert (ok, fatal) == (False, False)
    assert reason == f"service s_db carries commit {'0' * 40}, want {COMMIT}"
    unlabelled = stack(service("app", (task("a1"),), commit=None))
    assert swarm_ok(unlabelled, check(commit=COMMIT))[1] == (
        f"service s_app carries commit (none), want {COMMIT}"
    )
    assert swarm_ok(unlabelled, check())[0] is True  # no commit asked, none checked


def test_images_per_service():
    ok, reason, _ = swarm_ok(HEALTHY, check(images={"app": "ccci/web:1.30"}))
    assert not ok and reason == "service s_app runs ccci/web:1.29, want ccci/web:1.30"
    ok, reason, _ = swarm_ok(HEALTHY, check(images={"web": "ccci/web:1.29"}))
    assert not ok and reason == "stack s has no service web (it has app, db)"
    pinned = stack(service("app", (task("a1", image="ccci/web:1.29@sha256:ab"),),
                           image="ccci/web:1.29@sha256:ab"))  # fmt: skip
    assert swarm_ok(pinned, check(images={"app": "ccci/web:1.29"}))[0] is True
    assert swarm_ok(pinned, check(images={"app": "ccci/web:1.29@sha256:ab"}))[0] is True
    assert swarm_ok(pinned, check(images={"app": "ccci/web:1.29@sha256:cd"}))[0] is False


def test_container_health_starting_and_unhealthy_keep_waiting():
    for status in ("starting", "unhealthy"):
        state = stack(service("app", (task("a1", health=status),)))
        ok, reason, fatal = swarm_ok(state, check())
        assert (ok, fatal) == (False, False)
        assert reason == f"service s_app: container of task a1 is {status}"
        assert swarm_ok(state, check(require_healthy=False))[0] is True
    # no health check at all passes
    assert swarm_ok(stack(service("app", (task("a1"),))), check())[0] is True


def test_a_starting_task_names_its_health_check_output():
    state = stack(service("app", (task("a1", state="starting"),)))
    detail = {"a1": ContainerHealth("unhealthy", 7, "wget: server returned error: HTTP/1.1 404\n")}
    ok, reason, fatal = swarm_ok(state, check(), detail)
    assert (ok, fatal) == (False, False)
    assert reason == (
        "service s_app: task a1 is starting, container health: unhealthy, failing streak 7; "
        "last check said: wget: server returned error: HTTP/1.1 404"
    )
    # without health details it is the plain convergence reason
    assert swarm_ok(state, check())[1] == (
        "service s_app: 0/1 running; task a1 of s_app is starting: starting"
    )


def test_health_details_override_the_task_field():
    state = stack(service("app", (task("a1", health="starting"),)))
    ok, reason, _ = swarm_ok(state, check(), {"a1": ContainerHealth("healthy")})
    assert ok and reason == "stack s is healthy: app 1/1 (healthy)"


# --- the gate with a fake engine and a fake clock -------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fake_engine(monkeypatch, states: list[StackState], health: dict | None = None):
    """read_stack answers the states in turn (the last one forever); containers' health."""
    calls = []

    def read_stack(client, name, *, health=False):
        calls.append(name)
        return states[min(len(calls) - 1, len(states) - 1)]

    monkeypatch.setattr(_health, "read_stack", read_stack)

    def inspect_container(cid):
        h = (health or {}).get(cid)
        if h is None:
            raise RuntimeError("no such container")
        return {"State": {"Health": h}}

    return SimpleNamespace(api=SimpleNamespace(inspect_container=inspect_container)), calls


def test_gate_timeout_states_the_last_observed_condition(monkeypatch):
    clock = FakeClock()
    pending = stack(service("app", (task("p1", state="pending", t=1),)))
    starting = stack(service("app", (task("a1", state="starting", t=1),)))
    inspected = {"ca1": {"Status": "starting", "FailingStreak": 2, "Log": [{"Output": "nope\n"}]}}
    client, calls = fake_engine(monkeypatch, [pending, pending, starting], inspected)
    res = gate([check()], timeout=10, interval=2, docker_client=client, clock=clock,
               sleep=clock.sleep)  # fmt: skip
    assert res.healthy is False and res.fatal is False
    assert res.attempts == 6 and len(calls) == 6
    assert clock.sleeps == [2, 2, 2, 2, 2]
    assert res.elapsed == 10
    assert res.reason == (
        "stack s did not become healthy within 10 s: service s_app: task a1 is starting, "
        "container health: starting, failing streak 2; last check said: nope"
    )
    assert res.last["swarm"]["ok"] is False
    assert res.last["swarm"]["services"][0]["tasks"][0]["health"] == "starting"
    assert res.tasks == []


def test_gate_ends_on_the_first_attempt_when_a_task_is_rejected(monkeypatch):
    clock = FakeClock()
    rejected = stack(
        service("app", (task("r1", state="rejected", desired="shutdown", t=1,
                             error="No such image: ccci/web:9.99", image="ccci/web:9.99"),),
                image="ccci/web:9.99")
    )  # fmt: skip
    client, calls = fake_engine(monkeypatch, [rejected])
    with ScriptedServer(lambda n: (200, "ok")) as web:
        http = HttpCheck(f"http://127.0.0.1:{web.port}/")
        res = gate([http, check()], timeout=120, interval=2, docker_client=client,
                   clock=clock, sleep=clock.sleep)  # fmt: skip
    assert res.healthy is False and res.fatal is True
    assert res.attempts == 1 and len(calls) == 1 and clock.sleeps == []
    assert res.reason.startswith(f"stack s (http://127.0.0.1:{web.port}/) cannot become healthy")
    assert res.reason.endswith("is rejected: No such image: ccci/web:9.99")
    assert [t["error"] for t in res.tasks] == ["No such image: ccci/web:9.99"]
    assert res.last["http"]["skipped"] == "the stack is not healthy yet"
    assert web.seen == []  # HTTP is pointless before the stack is healthy


def test_gate_resolves_since_once_from_the_deploy(monkeypatch):
    clock = FakeClock()
    # the failure happened before this deploy of the services: history
    state = stack(
        service("app", (task("f0", state="failed", desired="shutdown", t=-50, error="old"),
                        task("a1", t=3)), updated=1),
    )  # fmt: skip
    client, _ = fake_engine(monkeypatch, [state])
    c = SwarmCheck(stack="s")
    res = gate([c], timeout=5, interval=1, docker_client=client, clock=clock, sleep=clock.sleep)
    assert res.healthy and res.attempts == 1
    assert res.since == at(1) and c.since == at(1)
    assert res.as_dict()["since"] == "2024-05-01T12:00:01Z"


def test_gate_engine_errors_keep_waiting_and_are_reported(monkeypatch):
    clock = FakeClock()

    def broken(client, name, *, health=False):
        raise ConnectionError("Error while fetching server API version")

    monkeypatch.setattr(_health, "read_stack", broken)
    res = gate([check()], timeout=4, interval=2, docker_client=object(), clock=clock,
               sleep=clock.sleep)  # fmt: skip
    assert not res.healthy and not res.fatal and res.attempts == 3
    assert res.reason == (
        "stack s did not become healthy within 4 s: cannot read stack s from the Docker "
        "engine: Error while fetching server API version"
    )


def test_gate_needs_checks_and_a_client():
    with pytest.raises(HealthCheckError, match="at least one check"):
        gate([], 1)
    with pytest.raises(HealthCheckError, match="needs a Docker client"):
        gate([check()], 1)


# --- real HTTP on loopback ----------------------------------------------------------------


def test_gate_waits_for_503_to_turn_into_200_then_passes():
    def answer(n):
        return (503, "booting") if n < 3 else (200, "<h1>custom-html 1.29</h1>")

    with ScriptedServer(answer) as web:
        c = HttpCheck(f"http://127.0.0.1:{web.port}/", body=r"<h1>.*1\.29</h1>")
        res = gate([c], timeout=20, interval=0.05)
    assert res.healthy and res.attempts == 4 and len(web.seen) == 4
    assert res.reason == (
        f"GET http://127.0.0.1:{web.port}/ -> 200, body matches /<h1>.*1\\.29</h1>/"
    )
    assert res.last["http"]["status"] == 200
    assert res.last["http"]["body"] == "<h1>custom-html 1.29</h1>"
    assert 0.1 <= res.elapsed < 10


def test_gate_over_http_times_out_with_the_last_answer():
    with ScriptedServer(lambda n: (502, "Bad Gateway")) as web:
        c = HttpCheck(f"http://127.0.0.1:{web.port}/health")
        res = gate([c], timeout=0.3, interval=0.1)
    assert not res.healthy and res.attempts >= 2
    assert res.reason == (
        f"http://127.0.0.1:{web.port}/health did not become healthy within 0.3 s: "
        f"GET http://127.0.0.1:{web.port}/health -> 502 (want 200)"
    )
    assert res.last["http"]["status"] == 502 and res.last["http"]["body"] == "Bad Gateway"


def test_probe_reports_connection_refused_with_the_address():
    from support.fixtures import free_port

    port = free_port()
    obs = probe_http(HttpCheck(f"http://127.0.0.1:{port}/"))
    assert not obs.ok
    assert obs.reason == f"GET http://127.0.0.1:{port}/ -> connection refused to 127.0.0.1:{port}"
    assert obs.value["status"] is None


def test_resolve_connects_to_the_address_with_the_host_name():
    with ScriptedServer(lambda n: (200, "1.29\n")) as web:
        url = f"http://app.example.test:{web.port}/app-version"
        c = HttpCheck(url, resolve=f"app.example.test:{web.port}:127.0.0.1", body=r"1\.29")
        obs = probe_http(c)
    assert obs.ok, obs.reason
    assert obs.reason == (f"GET {url} (via 127.0.0.1:{web.port}) -> 200, body matches /1\\.29/")
    assert [(s.path, s.host) for s in web.seen] == [
        ("/app-version", f"app.example.test:{web.port}")
    ]


def test_host_header_overrides_only_the_header():
    with ScriptedServer(lambda n: (200, "")) as web:
        obs = probe_http(HttpCheck(f"http://127.0.0.1:{web.port}/", host_header="notes.test"))
    assert obs.ok and web.seen[0].host == "notes.test"


def test_a_timeout_is_named():
    import socket

    with socket.socket() as quiet:  # accepts (backlog) but never answers
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(1)
        port = quiet.getsockname()[1]
        obs = probe_http(HttpCheck(f"http://127.0.0.1:{port}/", request_timeout=0.2))
    assert not obs.ok
    assert obs.reason == (
        f"GET http://127.0.0.1:{port}/ -> no answer from 127.0.0.1:{port} within 0.2 s "
        "(read timeout)"
    )


def test_https_resolve_sends_sni_and_verifies_the_host_name(tmp_path):
    tls, ca = make_tls(tmp_path / "good", ["app.example.test"])
    with ScriptedServer(lambda n: (200, "secure 1.29"), tls=tls) as web:
        url = f"https://app.example.test:{web.port}/"
        resolve = f"app.example.test:{web.port}:127.0.0.1"
        obs = probe_http(HttpCheck(url, resolve=resolve, ca_path=str(ca), body="1.29"))
        assert obs.ok, obs.reason
        assert web.seen[0].sni == "app.example.test"
        assert web.seen[0].host == f"app.example.test:{web.port}"
        # the system CAs do not know the test CA
        obs = probe_http(HttpCheck(url, resolve=resolve))
        assert not obs.ok
        assert f"-> TLS with 127.0.0.1:{web.port} failed" in obs.reason
        assert "certificate verify failed" in obs.reason
        # ... unless verification is off; SNI is still the host name
        obs = probe_http(HttpCheck(url, resolve=resolve, validate_certs=False))
        assert obs.ok and web.seen[-1].sni == "app.example.test"
        # through the address alone, the certificate does not match it
        obs = probe_http(HttpCheck(f"https://127.0.0.1:{web.port}/", ca_path=str(ca)))
        assert not obs.ok and "certificate verify failed" in obs.reason


def test_https_certificate_for_another_name_is_refused(tmp_path):
    tls, ca = make_tls(tmp_path / "other", ["other.example.test"])
    with ScriptedServer(lambda n: (200, "ok"), tls=tls) as web:
        url = f"https://app.example.test:{web.port}/"
        resolve = f"app.example.test:{web.port}:127.0.0.1"
        obs = probe_http(HttpCheck(url, resolve=resolve, ca_path=str(ca)))
    assert not obs.ok
    assert "Hostname mismatch" in obs.reason or "doesn't match" in obs.reason, obs.reason
    assert web.seen == []


def test_swarm_and_http_must_pass_in_the_same_round(monkeypatch):
    starting = stack(service("app", (task("a1", health="starting"),)))
    healthy = stack(service("app", (task("a1", health="healthy"),)))
    client, calls = fake_engine(monkeypatch, [starting, starting, healthy])

    def answer(n):
        return (503, "not yet") if n == 0 else (200, "1.29")

    with ScriptedServer(answer) as web:
        c = HttpCheck(f"http://127.0.0.1:{web.port}/", body="1.29")
        res = gate([c, check()], timeout=20, interval=0.02, docker_client=client)
    # rounds 1-2: stack starting, no HTTP; round 3: stack healthy, 503; round 4: both ok
    assert res.healthy and res.attempts == 4 and len(calls) == 4
    assert len(web.seen) == 2
    assert res.reason == (
        f"stack s is healthy: app 1/1 (healthy); GET http://127.0.0.1:{web.port}/ -> 200, "
        "body matches /1.29/"
    )
    assert set(res.last) == {"swarm", "http"}
    assert res.last["swarm"]["ok"] and res.last["http"]["ok"]
