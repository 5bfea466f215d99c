"""pytest fixtures shared by unit and integration tests (loaded from tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _lock, _state
from support import recipes

ROOT = Path(__file__).resolve().parents[2]
#: The stages a green cold run of a recipe without a CI overlay records (custom tests on).
GREEN_COLD_STAGES = {
    "install": "pass",
    "upgrade": "pass",
    "serving": "pass",
    "overlay": "skip",
    "custom": "pass",
}


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def lock_owner(**fields) -> dict:
    """An app lock's owner record naming this process (``fields`` override), as a run
    holding the lock writes it."""
    me = os.getpid()
    record = {
        "run_id": "0000aa",
        "pid": me,
        "start": _lock.process_start(me),
        "boot_id": _lock.boot_id(),
        "host": _lock.host_name(),
        "since": "2026-01-01T00:00:00Z",
    }
    record.update(fields)
    return record


@pytest.fixture
def sleeper():
    """A live process that is not this one (killed after the test)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def unique() -> str:
    """Six random hex digits: the run id / name prefix of one test."""
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def docker_client():
    """The real engine, in swarm mode. `make host` sets both up; this fails loudly if not."""
    import docker

    try:
        client = docker.from_env()
        info = client.info()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run `make host` first")
    if info.get("Swarm", {}).get("LocalNodeState") != "active":
        pytest.fail("the Docker engine is not in swarm mode; run `make host` first")
    return client


@pytest.fixture(scope="session")
def examples_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipes")


@pytest.fixture(scope="session")
def examples(examples_root) -> dict[str, dict]:
    """The example recipes as real git repositories (see support/recipes.py)."""
    return recipes.make_examples(examples_root)


def init_state(path: Path) -> Path:
    """A state dir made on purpose (created with its marker, as ``bin/ccci init-state``
    makes it): every play and bin/ccci refuse one without. The one helper every test
    that needs a state dir goes through; an existing folder is adopted."""
    _state.init_state_dir(str(path), by="tests")
    return Path(path)


@contextlib.contextmanager
def environ(**values: str):
    """``os.environ`` with ``values`` set, and as it was again afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def lane_vars(
    recipes_dir, state_dir, suffix: str, recipe: str, ref: str | None, run_id: str, **more
) -> dict:
    """The extra vars of one lane play on this machine: the recipes and state dirs given,
    apps reached on their published ports, no fetch of the recipe's origin. ``ref`` is
    left out when None (the play's default: the recipe's latest tag)."""
    out = {
        "recipe": recipe,
        "ccci_recipes_dir": str(recipes_dir),
        "ccci_state_dir": str(state_dir),
        "ccci_domain_suffix": suffix,
        "ccci_access": "published",
        "ccci_fetch": False,
        "ccci_run_id": run_id,
        **more,
    }
    if ref is not None:
        out["ref"] = ref
    return out


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return init_state(tmp_path / "state")


def remove_stack_everything(stack: str) -> None:
    """Test clean-up: the stack, then its volumes and secrets, by namespace label only."""
    subprocess.run(["docker", "stack", "rm", stack], capture_output=True, check=False)
    label = f"label=com.docker.stack.namespace={stack}"
    for _ in range(60):
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
        ).stdout.split()
        if not left:
            break
        subprocess.run(["sleep", "0.5"], check=False)
    for kind in ("volume", "secret", "config", "network"):
        names = subprocess.run(
            ["docker", kind, "ls", "-q", "--filter", label], capture_output=True, text=True
        ).stdout.split()
        if names:
            subprocess.run(["docker", kind, "rm", *names], capture_output=True, check=False)


@pytest.fixture
def cleanup_stacks():
    """Register stack names; everything in their namespace is removed after the test."""
    stacks: list[str] = []
    yield stacks
    for stack in stacks:
        remove_stack_everything(stack)
