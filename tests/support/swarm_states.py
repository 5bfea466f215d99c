"""Hand-made swarm states for the unit tests of the predicates over them (test_swarm,
test_health): one builder each for a task, a service and a stack, times counted in seconds
from ``T0``."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    ServiceState,
    StackState,
    TaskState,
)

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def task(
    tid: str | None = None,
    *,
    service: str = "s_app",
    slot: int = 1,
    state: str = "running",
    desired: str = "running",
    t: float = 2,
    error: str = "",
    image: str = "ccci/web:1.29",
    health: str | None = None,
    current: bool = True,
) -> TaskState:
    """A task created and last updated ``t`` seconds after T0 (its id made up if not given)."""
    tid = tid or f"{service}-{slot}-{state}-{t}"
    return TaskState(id=tid, service=service, slot=slot, state=state, desired_state=desired,
                     error=error, image=image, created_at=at(t), updated_at=at(t),
                     container_id=f"c{tid}", node_id="node1", current=current,
                     health=health)  # fmt: skip


def service(
    short: str = "app",
    tasks: Iterable[TaskState] = (),
    *,
    stack: str = "s",
    image: str = "ccci/web:1.29",
    desired: int = 1,
    labels: dict[str, str] | None = None,
    updated: float | None = None,
    update_state: str | None = None,
    update_started: datetime.datetime | None = None,
) -> ServiceState:
    """Service ``<stack>_<short>``; its running replicas counted from ``tasks``."""
    tasks = list(tasks)
    return ServiceState(name=f"{stack}_{short}", short_name=short, image=image,
                        replicas_desired=desired,
                        replicas_running=sum(1 for t in tasks if t.running),
                        labels=dict(labels or {}),
                        updated_at=None if updated is None else at(updated),
                        update_state=update_state, update_started_at=update_started,
                        tasks=tasks)  # fmt: skip


def stack(*services: ServiceState, name: str = "s", observed: float | None = None) -> StackState:
    return StackState(
        stack=name,
        services=list(services),
        observed_at=None if observed is None else at(observed),
    )
