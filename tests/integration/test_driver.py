"""The stack driver on the real swarm: remove matches only the namespace label."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker.errors
import pytest
from support.fixtures import free_port

from ansible_collections.coopcloud.ci.plugins.module_utils._driver import StackDriver
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import NAMESPACE_LABEL

pytestmark = [pytest.mark.swarm, pytest.mark.slow]


def checkout(examples, recipe: str, tag: str, dest: Path) -> Path:
    subprocess.run(["git", "clone", "-q", examples[recipe]["path"], str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", tag], check=True)
    return dest


def test_remove_deletes_only_what_carries_the_namespace_label(
    examples, unique, cleanup_stacks, docker_client, tmp_path
):
    stack = f"t{unique}_ccci_test"
    prefixed = f"{stack}x"  # another stack whose name starts with ours
    cleanup_stacks.extend([stack, prefixed])
    work = checkout(examples, "custom-html", "1.0.0+1.28", tmp_path / "c")
    env = {
        "DOMAIN": f"t{unique}.ccci.test",
        "STACK_NAME": stack,
        "ENTRYPOINT_VERSION": "v1",
        "CI_HTTP_PORT": str(free_port()),
    }
    unlabelled_volume = docker_client.volumes.create(f"{stack}_x")
    other_volume = docker_client.volumes.create(
        f"{prefixed}_content", labels={NAMESPACE_LABEL: prefixed}
    )
    unlabelled_secret = docker_client.secrets.create(name=f"{stack}_manual_v1", data=b"keep")
    other_secret = docker_client.secrets.create(
        name=f"{prefixed}_pw_v1", data=b"keep", labels={NAMESPACE_LABEL: prefixed}
    )
    try:
        driver = StackDriver(client=docker_client)
        out = driver.deploy(
            stack,
            str(work),
            ["compose.yml", "compose.ci.yml"],
            env,
            secrets={f"{stack}_pw_v1": "generated"},
            version="1.0.0+1.28",
            commit=examples["custom-html"]["tags"]["1.0.0+1.28"],
            timeout=120,
        )
        assert out["secrets_created"] == [f"{stack}_pw_v1"]
        status = driver.status(stack)
        assert (
            status["converged"]
            and status["commit"] == examples["custom-html"]["tags"]["1.0.0+1.28"]
        )
        assert [v["short_name"] for v in driver.volumes(stack)] == ["content"]

        removed = driver.remove(stack, timeout=120)
        assert removed["changed"] is True
        assert removed["removed"]["volumes"] == [f"{stack}_content"]
        assert removed["removed"]["secrets"] == [f"{stack}_pw_v1"]
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(f"{stack}_content")
        # survivors: no label, or another stack's label behind a shared name prefix
        assert docker_client.volumes.get(unlabelled_volume.name).name == f"{stack}_x"
        assert docker_client.volumes.get(other_volume.name).name == f"{prefixed}_content"
        assert docker_client.secrets.get(unlabelled_secret.id).name == f"{stack}_manual_v1"
        assert docker_client.secrets.get(other_secret.id).name == f"{prefixed}_pw_v1"
        # nothing left of the stack itself; a second remove changes nothing
        state = driver.state(stack)
        assert (state.services, state.volumes, state.secrets, state.networks) == ([], [], [], [])
        assert driver.remove(stack, timeout=30) == {
            "changed": False,
            "removed": {"volumes": [], "secrets": []},
        }
    finally:
        unlabelled_volume.remove(force=True)
        unlabelled_secret.remove()
