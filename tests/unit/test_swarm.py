"""Pure predicates over hand-made stack states, the waiter, and the API-to-state mapping."""

from __future__ import annotations

import datetime
import functools

import pytest
from support import swarm_states as states
from support.swarm_states import at, task

from ansible_collections.coopcloud.ci.plugins.module_utils import _swarm as sw
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    Observation,
    StackState,
    TaskState,
    WaitFailed,
    WaitTimeout,
)

#: The stack of these states is s_ccci_test; its services s_ccci_test_<short>.
service = functools.partial(states.service, stack="s_ccci_test")
stack = functools.partial(states.stack, name="s_ccci_test")


# --- converged ---------------------------------------------------------------------------


def test_converged_multi_service_stack():
    state = stack(
        service("app", [task(service="s_ccci_test_app")]),
        service(
            "db",
            [task(service="s_ccci_test_db", image="ccci/busybox:latest")],
            image="ccci/busybox:latest",
        ),
    )
    ok, reason = sw.converged(state, since=at(0))
    assert ok, reason
    assert reason == (
        "stack s_ccci_test converged: app 1/1 ccci/web:1.29, db 1/1 ccci/busybox:latest"
    )


def test_rejected_task_is_not_converged_and_fails_fast_with_its_error():
    rejected = task(
        service="s_ccci_test_app",
        state="rejected",
        desired="ready",
        image="ccci/web:9.99-doesnotexist",
        error="No such image: ccci/web:9.99-doesnotexist",
    )
    state = stack(service("app", [rejected], image="ccci/web:9.99-doesnotexist"))
    ok, reason = sw.converged(state, since=at(0))
    assert not ok
    assert "No such image: ccci/web:9.99-doesnotexist" in reason
    failure = sw.deploy_failure(state, since=at(0))
    assert failure is not None
    assert "cannot start" in failure
    assert "No such image: ccci/web:9.99-doesnotexist" in failure
    assert sw.failed_tasks(state, at(0)) == [rejected]


def test_rejections_before_since_belong_to_an_earlier_deploy():
    old = task(
        service="s_ccci_test_app",
        state="rejected",
        desired="shutdown",
        t=-30,
        error="No such image: x",
    )
    state = stack(service("app", [old, task(service="s_ccci_test_app", t=5)]))
    assert sw.deploy_failure(state, since=at(0)) is None
    assert sw.converged(state, since=at(0))[0]
    # without `since` the old rejection counts
    assert not sw.converged(state)[0]
    assert sw.failed_tasks(state) == [old]


def test_failures_of_a_previous_spec_are_history():
    # a broken deploy, then a good one: the rejected tasks ran the broken spec
    old = [
        task(service="s_ccci_test_app", state="rejected", desired="shutdown", t=-30 + i,
             image="ccci/web:9.99", error="No such image: ccci/web:9.99", current=False)
        for i in range(4)
    ]  # fmt: skip
    state = stack(service("app", [*old, task(service="s_ccci_test_app", t=5)]))
    assert sw.converged(state) == (True, "stack s_ccci_test converged: app 1/1 ccci/web:1.29")
    assert sw.deploy_failure(state) is None
    assert len(sw.failed_tasks(state)) == 4  # still reported as history


def test_restarting_task_tolerated_once_then_keeps_failing_is_fatal():
    first = task(
        service="s_ccci_test_app",
        state="failed",
        desired="shutdown",
        t=1,
        error="task: non-zero exit (1)",
    )
    restarted = task(service="s_ccci_test_app", state="running", t=8)
    state = stack(service("app", [first, restarted]))
    assert sw.converged(state, since=at(0)) == (
        True,
        "stack s_ccci_test converged: app 1/1 ccci/web:1.29",
    )
    assert sw.deploy_failure(state, since=at(0)) is None
    assert sw.failed_tasks(state, at(0)) == [first]

    # the latest task of the slot failed and nothing replaced it yet: not converged
    crashing = [
        task(
            service="s_ccci_test_app",
            state="failed",
            desired="shutdown",
            t=1,
            error="task: non-zero exit (1)",
        ),
        task(
            service="s_ccci_test_app",
            state="failed",
            desired="running",
            t=5,
            error="task: non-zero exit (2)",
        ),
    ]
    state = stack(service("app", crashing))
    ok, reason = sw.converged(state, since=at(0))
    assert not ok and "non-zero exit (2)" in reason
    assert sw.deploy_failure(state, since=at(0)) is None  # two failures: may still recover

    crashing.append(
        task(
            service="s_ccci_test_app",
            state="failed",
            desired="running",
            t=9,
            error="task: non-zero exit (3)",
        )
    )
    failure = sw.deploy_failure(stack(service("app", crashing)), since=at(0))
    assert failure is not None
    assert "keeps failing (3 failed tasks)" in failure
    assert "non-zero exit (3)" in failure


def test_replicas_short_and_pending_reason():
    pending = TaskState(
        id="p1",
        service="s_ccci_test_app",
        slot=2,
        state="pending",
        desired_state="running",
        error="no suitable node (host-mode port already in use on 1 node)",
        image="ccci/web:1.29",
        created_at=at(3),
    )
    state = stack(service("app", [task(service="s_ccci_test_app"), pending], desired=2))
    ok, reason = sw.converged(state)
    assert not ok
    assert "1/2 running" in reason
    assert "host-mode port already in use" in reason


def test_stale_task_of_previous_spec_is_not_converged():
    old = task(service="s_ccci_test_app", image="ccci/web:1.28", t=-50)
    state = stack(service("app", [old], image="ccci/web:1.29"))
    ok, reason = sw.converged(state)
    assert not ok
    assert "previous spec (ccci/web:1.28, want ccci/web:1.29)" in reason
    # same image but an older container spec (e.g. only the env changed)
    state = stack(service("app", [task(service="s_ccci_test_app", current=False)]))
    assert not sw.converged(state)[0]


def test_update_states():
    running = [task(service="s_ccci_test_app")]
    assert not sw.converged(stack(service("app", running, update_state="updating")))[0]
    paused = stack(service("app", running, update_state="paused", update_started=at(2)))
    assert not sw.converged(paused, since=at(0))[0]
    assert "did not take (paused" in sw.deploy_failure(paused, since=at(0))
    # a pause from before this deploy is history
    old_pause = stack(service("app", running, update_state="paused", update_started=at(-5)))
    assert sw.deploy_failure(old_pause, since=at(0)) is None
    assert sw.converged(old_pause, since=at(0))[0]
    done = stack(service("app", running, update_state="completed"))
    assert sw.converged(done)[0]


def test_an_update_whose_new_tasks_all_run_is_converged_inside_its_monitor_window():
    started = at(1)
    old = task(service="s_ccci_test_app", image="ccci/web:1.28", current=False, t=0,
               state="shutdown", desired="shutdown")  # fmt: skip
    new = task(service="s_ccci_test_app", t=2)
    svc = functools.partial(service, "app", update_state="updating", update_started=started)
    assert sw.converged(stack(svc([old, new])))[0]
    # not yet: the new task is still starting (its health check has not passed)
    assert not sw.converged(
        stack(svc([old, task(service="s_ccci_test_app", t=2, state="starting")]))
    )[0]
    # not yet: the running task was there before the update began (not replaced)
    assert not sw.converged(stack(svc([task(service="s_ccci_test_app", t=0)])))[0]
    # not yet: a task of the previous spec still runs (start-first)
    running_old = task("o", service="s_ccci_test_app", image="ccci/web:1.28", current=False, t=0)
    assert not sw.converged(stack(svc([running_old, new], desired=1)))[0]
    # a rollback in progress, or an update without a start time, is never done
    assert not sw.converged(stack(service("app", [new], update_state="rollback_started",
                                          update_started=started)))[0]  # fmt: skip
    assert not sw.converged(stack(service("app", [new], update_state="updating")))[0]
    # the new task dies inside the window: not converged, and fatal once it keeps failing
    # or the swarm pauses the update
    dead = task(service="s_ccci_test_app", t=3, state="failed", desired="shutdown",
                error="task: non-zero exit (1)")  # fmt: skip
    assert not sw.converged(stack(svc([old, dead])), since=at(0))[0]
    paused = stack(service("app", [old, dead], update_state="paused", update_started=started))
    assert "did not take (paused" in sw.deploy_failure(paused, since=at(0))


def test_empty_stack_is_not_converged_but_gone():
    state = stack()
    assert sw.converged(state) == (False, "stack s_ccci_test has no services")
    assert sw.is_gone(state) == (True, "stack s_ccci_test is gone")
    left = StackState(stack="s", containers=["abc"], networks=["s_default"])
    assert sw.is_gone(left) == (False, "stack s still has 1 containers, networks s_default")


# --- versions and commits ----------------------------------------------------------------


def test_deployed_version_new_form_prefers_app():
    state = stack(
        service("db", [], labels={"coop-cloud.s_ccci_test.version": "9.9.9+1"}),
        service("app", [], labels={"coop-cloud.s_ccci_test.version": "1.1.0+1.29"}),
    )
    assert sw.deployed_version(state) == "1.1.0+1.29"


def test_deployed_version_new_form_on_another_service_and_empty_app_label():
    state = stack(
        service("app", [], labels={"coop-cloud.s_ccci_test.version": ""}),
        service("web", [], labels={"coop-cloud.s_ccci_test.version": "2.0.1+1.0.6-social-amd64"}),
    )
    assert sw.deployed_version(state) == "2.0.1+1.0.6-social-amd64"


def test_deployed_version_old_per_service_form_drops_digest():
    state = stack(
        service("app", [], labels={"coop-cloud.s_ccci_test.app.version": "5.0.1+2.3-8fd2e5fd"}),
    )
    assert sw.deployed_version(state) == "5.0.1+2.3"
    # an app version that merely has a suffix keeps it
    state = stack(
        service("app", [], labels={"coop-cloud.s_ccci_test.app.version": "v2.4.8-social"})
    )
    assert sw.deployed_version(state) == "v2.4.8-social"


def test_deployed_version_falls_back_to_the_driver_label_and_none():
    assert (
        sw.deployed_version(stack(service("app", [], labels={sw.VERSION_LABEL: "1.0.0+1.28"})))
        == "1.0.0+1.28"
    )
    assert sw.deployed_version(stack(service("app", []))) is None
    # another stack's label is not ours
    other = stack(service("app", [], labels={"coop-cloud.other.version": "1.0.0+1"}))
    assert sw.deployed_version(other) is None


def test_deployed_commit_only_when_every_service_agrees():
    c = "fa17446f2e24aa86e32a1d5771f9318b8cc80c40"
    both = stack(
        service("app", [], labels={sw.COMMIT_LABEL: c}),
        service("db", [], labels={sw.COMMIT_LABEL: c}),
    )
    assert sw.deployed_commit(both) == c
    mixed = stack(
        service("app", [], labels={sw.COMMIT_LABEL: c}),
        service("db", [], labels={sw.COMMIT_LABEL: "5d6085f"}),
    )
    assert sw.deployed_commit(mixed) is None
    partial = stack(service("app", [], labels={sw.COMMIT_LABEL: c}), service("db", []))
    assert sw.deployed_commit(partial) is None
    assert sw.deployed_commit(stack()) is None


# --- the waiter ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_wait_until_returns_attempts_elapsed_and_last():
    clock = FakeClock()
    seen = iter(
        [Observation(False, "0/1", 0), Observation(False, "0/1", 1), Observation(True, "1/1", 2)]
    )
    result = sw.wait_until(
        lambda: next(seen), timeout=10, interval=2, clock=clock, sleep=clock.sleep
    )
    assert (result.ok, result.attempts, result.elapsed, result.last) == (True, 3, 4.0, 2)
    assert clock.slept == [2, 2]


def test_wait_until_timeout_states_last_condition():
    clock = FakeClock()
    count = iter(range(100))

    def probe():
        return Observation(False, f"app 0/1 running (poll {next(count)})", "state")

    with pytest.raises(WaitTimeout) as err:
        sw.wait_until(
            probe, timeout=5, interval=2, what="stack x to converge", clock=clock, sleep=clock.sleep
        )
    assert str(err.value) == (
        "timed out after 5s waiting for stack x to converge; last seen: app 0/1 running (poll 3)"
    )
    assert err.value.result.attempts == 4
    assert clock.slept == [2, 2, 1]  # never sleeps past the deadline
    assert err.value.state == "state"
    clock = FakeClock()
    quiet = sw.wait_until(
        lambda: Observation(False, "no", 7),
        timeout=1,
        interval=1,
        raise_on_timeout=False,
        clock=clock,
        sleep=clock.sleep,
    )
    assert (quiet.ok, quiet.last, quiet.reason) == (False, 7, "no")


def test_wait_until_fatal_stops_at_once():
    clock = FakeClock()
    with pytest.raises(WaitFailed, match="No such image"):
        sw.wait_until(
            lambda: Observation(False, "No such image: x", None, fatal=True),
            timeout=300,
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.slept == []


# --- from the engine's JSON ----------------------------------------------------------------


SERVICE = {
    "ID": "svc1",
    "UpdatedAt": "2026-11-26T23:37:58.460233409Z",
    "Spec": {
        "Name": "t1_ccci_test_app",
        "Labels": {"com.docker.stack.namespace": "t1_ccci_test", sw.COMMIT_LABEL: "abc1234"},
        "TaskTemplate": {"ContainerSpec": {"Image": "ccci/web:1.29", "Env": ["A=1"]}},
        "Mode": {"Replicated": {"Replicas": 1}},
    },
    "UpdateStatus": {
        "State": "updating",
        "StartedAt": "2026-11-26T23:38:09.435929167Z",
        "Message": "update in progress",
    },
}


def api_task(tid, image, state, desired, ts, err=None, env=("A=1",)):
    status = {
        "Timestamp": ts,
        "State": state,
        "Message": "x",
        "ContainerStatus": {"ContainerID": "c" + tid, "ExitCode": 0},
    }
    if err:
        status["Err"] = err
    return {
        "ID": tid,
        "Slot": 1,
        "NodeID": "node1",
        "DesiredState": desired,
        "CreatedAt": ts,
        "Status": status,
        "Spec": {"ContainerSpec": {"Image": image, "Env": list(env)}},
    }


def test_service_from_api():
    tasks = [
        api_task(
            "new",
            "ccci/web:1.29",
            "rejected",
            "ready",
            "2026-11-26T23:38:21.1Z",
            err="No such image: ccci/web:1.29",
        ),
        api_task(
            "old",
            "ccci/web:1.28",
            "running",
            "shutdown",
            "2026-11-26T23:38:01.211115893Z",
            env=("A=0",),
        ),
    ]
    svc = sw.service_from_api(SERVICE, "t1_ccci_test", tasks)
    assert (svc.name, svc.short_name, svc.image) == ("t1_ccci_test_app", "app", "ccci/web:1.29")
    assert (svc.replicas_desired, svc.replicas_running) == (1, 0)
    assert svc.update_state == "updating"
    assert svc.update_started_at == datetime.datetime(
        2026, 11, 26, 23, 38, 9, 435929, tzinfo=datetime.UTC
    )
    assert [t.id for t in svc.tasks] == ["old", "new"]
    old, new = svc.tasks
    assert (old.current, new.current) == (False, True)
    assert new.error == "No such image: ccci/web:1.29"
    assert new.container_id == "cnew" and new.node_id == "node1"


def test_parse_time():
    assert sw.parse_time("0001-01-01T00:00:00Z") is None
    assert sw.parse_time(None) is None
    assert sw.parse_time("2026-11-26T23:38:01Z") == datetime.datetime(
        2026, 11, 26, 23, 38, 1, tzinfo=datetime.UTC
    )


def test_an_update_in_progress_quotes_the_task_that_cannot_start():
    # start-first with a host-mode port on one node: the old task runs, the new one waits
    old = task(service="s_ccci_test_app", image="ccci/web:1.28", current=False, t=1)
    new = task(
        service="s_ccci_test_app", state="pending", image="ccci/web:1.29", t=5,
        error="no suitable node (host-mode port already in use on 1 node)",
    )  # fmt: skip
    svc = service("app", [old, new], image="ccci/web:1.29", update_state="updating")
    svc.update_message = "update in progress"
    ok, reason = sw.converged(stack(svc))
    assert not ok
    assert reason.startswith("service s_ccci_test_app: update updating (update in progress); task")
    assert "host-mode port already in use on 1 node" in reason


def test_old_per_service_version_labels_count_on_app_only():
    db = service(
        "db", [task(service="s_ccci_test_db")], labels={"coop-cloud.s_ccci_test.db.version": "8.0"}
    )
    assert sw.deployed_version(stack(db)) is None  # the db image's tag, not the recipe's
    app = service(
        "app", [task(service="s_ccci_test_app")],
        labels={"coop-cloud.s_ccci_test.app.version": "1.2.0+5.8-6c8b33e3"},
    )  # fmt: skip
    assert sw.deployed_version(stack(db, app)) == "1.2.0+5.8"


class EventStream:
    """The engine's event stream as docker-py gives it: a blocking iterator of decoded
    events that ``close()`` ends (the reader thread then leaves)."""

    def __init__(self) -> None:
        import queue

        self.queue: queue.Queue = queue.Queue()
        self.closed = False

    def __iter__(self):
        while (event := self.queue.get()) is not None:
            yield event

    def close(self) -> None:
        self.closed = True
        self.queue.put(None)


class EventsClient:
    def __init__(self, stream: EventStream | None) -> None:
        self.stream = stream
        self.asked: list[dict] = []

    @property
    def api(self):
        return self

    def events(self, filters=None, decode=False):
        if self.stream is None:
            raise RuntimeError("this engine streams no events")
        self.asked.append({"filters": filters, "decode": decode})
        return self.stream


def timed_sleep(events: sw.StackEvents, seconds: float) -> float:
    import time

    started = time.monotonic()
    events.sleep(seconds)
    return time.monotonic() - started


def test_stack_events_wake_a_wait_on_the_stacks_own_changes_only():
    import threading

    stream = EventStream()
    client = EventsClient(stream)
    with sw.StackEvents(client, "app_x") as events:
        assert client.asked == [
            {"filters": {"type": ["container", "service", "network"]}, "decode": True}
        ]
        # another stack's container, a service of a stack whose name only starts alike,
        # and the health check's execs of our own: none of them cuts the sleep short
        stream.queue.put(
            {"Action": "start", "Actor": {"Attributes": {sw.NAMESPACE_LABEL: "other"}}}
        )
        stream.queue.put({"Action": "update", "Actor": {"Attributes": {"name": "app_xy"}}})
        stream.queue.put(
            {
                "Action": "exec_start: sh -c true",
                "Actor": {"Attributes": {sw.NAMESPACE_LABEL: "app_x"}},
            }
        )
        assert timed_sleep(events, 0.4) >= 0.35
        # a health status of one of its containers does, well before the interval ends
        threading.Timer(
            0.1,
            stream.queue.put,
            [
                {
                    "Action": "health_status: healthy",
                    "Actor": {"Attributes": {sw.NAMESPACE_LABEL: "app_x"}},
                }
            ],
        ).start()
        assert timed_sleep(events, 5.0) < 2.0
        # then the next probes come quickly (the manager's view lags the engine's), and
        # after those the interval applies again
        follow_ups = [timed_sleep(events, 5.0) for _ in sw.StackEvents.FOLLOW_UPS]
        assert all(f < 1.0 for f in follow_ups), follow_ups
        assert timed_sleep(events, 0.8) >= 0.75
        # so does a service or network named for the stack
        stream.queue.put({"Action": "remove", "Actor": {"Attributes": {"name": "app_x_default"}}})
        assert timed_sleep(events, 5.0) < 2.0
    assert stream.closed


def test_stack_events_without_a_stream_are_plain_sleeps():
    events = sw.StackEvents(EventsClient(None), "app_x")
    assert timed_sleep(events, 0.2) >= 0.15
    events.close()
