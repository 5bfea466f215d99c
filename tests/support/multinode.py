"""The two-node swarm bed of scripts/multinode, for the tests that need a swarm of their own.

One bed per machine (its names are fixed): the tests that use it share the xdist group
``multinode``, so they run one after another on one worker. The plays talk to the
manager's engine (``DOCKER_HOST``) and know both nodes' engines from ``CCCI_NODE_ENGINES``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._archive import TarScanner
from support.ansible import ROOT
from support.fixtures import environ

BED = str(ROOT / "scripts" / "multinode")
#: The marks of a test on the bed: one worker at a time (the bed's names are fixed).
ON_THE_BED = [
    pytest.mark.swarm,
    pytest.mark.slow,
    pytest.mark.multinode,
    pytest.mark.xdist_group("multinode"),
]
RUN = "/run/ccci-multinode"
MANAGER, WORKER = "ccci-mn1", "ccci-mn2"
ADDRESS = {MANAGER: "10.231.0.11", WORKER: "10.231.0.12"}
#: The registry's fields that say what the known-good is (status history aside).
KNOWN_GOOD_KEYS = ("version", "commit", "snapshot_digest", "promoted_by", "seeded_at", "node")


def sock(node: str) -> str:
    """The engine URL of bed node ``mn1`` or ``mn2``."""
    return f"unix://{RUN}/{node}/docker.sock"


def bed(*args: str) -> None:
    """``scripts/multinode <args>``; its own words in the error when it fails."""
    done = subprocess.run([BED, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"scripts/multinode {' '.join(args)}: {done.stderr}"


@contextlib.contextmanager
def bed_up() -> Iterator[None]:
    """The bed up, and the environment pointed at it; down again afterwards."""
    started = time.monotonic()
    bed("up")
    print(f"bed up in {time.monotonic() - started:.1f} s")
    engines = json.dumps({MANAGER: sock("mn1"), WORKER: sock("mn2")})
    try:
        with environ(DOCKER_HOST=sock("mn1"), CCCI_NODE_ENGINES=engines,
                     CCCI_HELPER_IMAGE="ccci/busybox:latest"):  # fmt: skip
            yield
    finally:
        started = time.monotonic()
        bed("down")
        print(f"bed down in {time.monotonic() - started:.1f} s")


def tree_on(client, volume: str) -> str:
    """The tree digest of ``volume`` as that node's engine streams it (never the host's files)."""
    api = client.api
    cid = api.create_container(
        "ccci/busybox:latest",
        ["true"],
        host_config=api.create_host_config(binds={volume: {"bind": "/v", "mode": "ro"}}),
    )["Id"]
    try:
        stream, _ = api.get_archive(cid, "/v/.")
        scanner = TarScanner(volume, digests=True)
        for chunk in stream:
            scanner.feed(chunk)
        return scanner.finish()["tree_digest"]
    finally:
        api.remove_container(cid, force=True)


def record_of(env: dict, rid: str) -> dict:
    """The run record of ``rid`` in the bed test's state dir (``env["state_dir"]``)."""
    return json.loads((env["state_dir"] / "runs" / f"{rid}.json").read_text())
