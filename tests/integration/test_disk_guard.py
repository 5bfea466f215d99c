"""The disk guard and the cold-run finder on the real swarm.

Every object is named with the test's random suffix and removed afterwards; assertions
only look at those objects (other helpers run tests on this swarm at the same time).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from support.ansible import run_module
from support.fixtures import init_state

from ansible_collections.coopcloud.ci.plugins.module_utils import _coldruns as cr
from ansible_collections.coopcloud.ci.plugins.module_utils import _disk as dk
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import RunRecord

pytestmark = pytest.mark.swarm

NS = "com.docker.stack.namespace"
MiB = 1 << 20


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def _volume(client, name: str, stack: str | None) -> Path:
    vol = client.volumes.create(name, labels={NS: stack} if stack else {})
    return Path(vol.attrs["Mountpoint"])


def _exists(kind: str, name: str) -> bool:
    return _docker(kind, "inspect", name, check=False).returncode == 0


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            st = path.stat()
            out[rel] = (
                f"{hashlib.sha256(path.read_bytes()).hexdigest()} {st.st_mode:o} {st.st_mtime_ns}"
            )
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def made():
    """Names of what a test creates, removed (by exact name) afterwards."""
    things: dict[str, list[str]] = {"service": [], "volume": [], "secret": [], "network": []}
    yield things
    for name in things["service"]:
        _docker("service", "rm", name, check=False)
    for _ in range(60):
        if not any(
            _docker(
                "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={n}"
            ).stdout.strip()
            for n in things["service"]
        ):
            break
        time.sleep(0.5)
    for kind in ("secret", "network", "volume"):
        for name in things[kind]:
            _docker(kind, "rm", name, check=False)


def _cold_run(client, made, stack: str, with_service: bool) -> dict[str, str]:
    """A cold run's objects as `docker stack deploy` labels them."""
    names = {
        "volume": f"{stack}_content",
        "secret": f"{stack}_pw_v1",
        "network": f"{stack}_default",
        "service": f"{stack}_app",
    }
    made["volume"].append(names["volume"])
    mount = _volume(client, names["volume"], stack)
    (mount / "index.html").write_bytes(os.urandom(64 * 1024))
    made["secret"].append(names["secret"])
    subprocess.run(
        ["docker", "secret", "create", "--label", f"{NS}={stack}", names["secret"], "-"],
        input="s3cret",
        text=True,
        capture_output=True,
        check=True,
    )
    made["network"].append(names["network"])
    _docker(
        "network", "create", "--driver", "overlay", "--label", f"{NS}={stack}", names["network"]
    )
    if with_service:
        made["service"].append(names["service"])
        _docker(
            "service", "create", "--detach", "--no-resolve-image", "--quiet",
            "--name", names["service"],
            "--label", f"{NS}={stack}",
            "--container-label", f"{NS}={stack}",
            "--network", names["network"],
            "--secret", names["secret"],
            "--mount", f"type=volume,source={names['volume']},target=/data",
            "ccci/busybox:latest", "sleep", "3600",
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = _docker(
                "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={names['service']}"
            ).stdout.strip()
            if running:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"service {names['service']} did not start")
    return names


def test_prune_removes_the_dead_cold_run_and_keeps_the_live_one_and_warm_data(
    docker_client, state_dir, unique, made
):
    suffix = f"ci_{unique}"
    dead_id, live_id = unique, f"{int(unique, 16) ^ 0xFFFFFF:06x}"
    dead_stack, live_stack = f"dgte-{dead_id}_{suffix}", f"dgte-{live_id}_{suffix}"
    warm_stack = f"warm-dg{unique}_{suffix}"

    warm = f"{warm_stack}_content"
    made["volume"].append(warm)
    (_volume(docker_client, warm, warm_stack) / "marker").write_text("warm data")
    # a volume named like a warm one but labelled for the dead cold run: still never removed
    disguised = f"warm-dg{unique}_{suffix}_stray"
    made["volume"].append(disguised)
    _volume(docker_client, disguised, dead_stack)
    # named like a cold run, without any label / labelled for another stack
    unlabelled, foreign = f"dgte-{unique[::-1]}_{suffix}_content", f"dgte-0{unique[1:]}_x_data"
    made["volume"] += [unlabelled, foreign]
    _volume(docker_client, unlabelled, None)
    _volume(docker_client, foreign, f"other{unique}_x")

    dead = _cold_run(docker_client, made, dead_stack, with_service=True)
    live = _cold_run(docker_client, made, live_stack, with_service=False)
    finished = RunRecord.start(str(state_dir), dead_id, "cold", "dgtest", "1.0.0", pid=1)
    finished.stage("install", "fail", "broken")
    finished.finish()
    RunRecord.start(str(state_dir), live_id, "cold", "dgtest", "1.0.0", pid=os.getpid())

    runs = {
        r.stack: r
        for r in cr.find_cold_runs(
            docker_client, str(state_dir), grace_hours=0, run_ids={dead_id, live_id}
        )
    }
    assert set(runs) == {dead_stack, live_stack}
    assert not runs[dead_stack].alive and runs[dead_stack].record["verdict"] == "FAIL"
    assert runs[live_stack].alive and "runs" in runs[live_stack].reason
    assert runs[dead_stack].services == [dead["service"]]
    assert sorted(runs[dead_stack].volumes) == sorted([dead["volume"], disguised])
    assert runs[dead_stack].secrets == [dead["secret"]]
    assert runs[dead_stack].networks == [dead["network"]]

    result = dk.prune(
        docker_client,
        str(state_dir),
        steps=["cold-runs"],
        grace_hours=0,
        run_ids={dead_id, live_id},
    )
    assert result.errors == []
    assert [(p.step, p.name) for p in result.pruned] == [("cold-runs", dead_stack)]
    assert result.pruned[0].bytes == 64 * 1024
    for kind in ("service", "volume", "secret", "network"):
        assert not _exists(kind, dead[kind]), f"{kind} {dead[kind]} of the dead run is still there"
        assert kind == "service" or _exists(kind, live[kind]), f"{kind} of the live run is gone"
    assert _docker("volume", "inspect", warm, "--format", "{{.Mountpoint}}").stdout
    marker = Path(docker_client.volumes.get(warm).attrs["Mountpoint"]) / "marker"
    assert marker.read_text() == "warm data"
    for name in (disguised, unlabelled, foreign):
        assert _exists("volume", name), f"{name} must be kept"
    # nothing of the dead run is left under its label
    label = f"label={NS}={dead_stack}"
    for kind in ("service", "secret", "network", "config"):
        assert _docker(kind, "ls", "-q", "--filter", label).stdout.strip() == ""
    assert _docker("ps", "-aq", "--filter", label).stdout.strip() == ""
    assert _docker("volume", "ls", "-q", "--filter", label).stdout.split() == [disguised]


def test_check_mode_lists_the_dead_run_and_touches_nothing(docker_client, state_dir, unique, made):
    suffix = f"ci_{unique}"
    dead_id, live_id = unique, f"{int(unique, 16) ^ 0xFFFFFF:06x}"
    dead_stack, live_stack = f"dgte-{dead_id}_{suffix}", f"dgte-{live_id}_{suffix}"
    warm = f"warm-dg{unique}_{suffix}_content"
    made["volume"].append(warm)
    _volume(docker_client, warm, f"warm-dg{unique}_{suffix}")
    dead = _cold_run(docker_client, made, dead_stack, with_service=False)
    _cold_run(docker_client, made, live_stack, with_service=False)
    RunRecord.start(str(state_dir), live_id, "cold", "dgtest", "1.0.0", pid=os.getpid())
    before = sorted(p.name for p in state_dir.rglob("*"))

    out = run_module(
        "coopcloud.ci.disk_guard",
        {
            "state_dir": str(state_dir),
            "need_bytes": 1 << 60,  # far more than any disk
            "prune_steps": ["cold-runs"],
            "dead_after_hours": 0,
        },
        check=True,
    )
    res = out.last
    assert out.rc != 0 and out.tasks[-1]["event"] == "runner_on_failed" and not res["ok"]
    assert res["msg"].startswith(f"not enough disk space: {state_dir} (state_dir) has ")
    assert "pruning would free about" in res["msg"]
    listed = [p["name"] for p in res["pruned"]]
    assert dead_stack in listed and live_stack not in listed
    assert not any(name.startswith("warm-") for name in listed)
    assert res["alert"] is None
    assert sorted(p.name for p in state_dir.rglob("*")) == before  # no alert written
    for kind in ("volume", "secret", "network"):
        assert _exists(kind, dead[kind])
    assert _exists("volume", warm)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_snapshot_that_does_not_fit_is_refused_before_anything_is_touched(
    docker_client, tmp_path, unique, made
):
    recipe = f"dg{unique}"
    domain = f"warm-{recipe}.ci.test"
    stack = f"warm-{recipe}_ci_test"
    volume = f"{stack}_content"
    made["volume"].append(volume)
    data = _volume(docker_client, volume, stack)
    payload = os.urandom(20 * MiB)
    (data / "big.bin").write_bytes(payload)
    os.link(data / "big.bin", data / "big-again.bin")  # counted once
    (data / "small.txt").write_text("hello\n")
    os.symlink("/usr", data / "usr-link")  # never followed

    with _tmpfs(tmp_path / "state", "8m") as state:
        init_state(state)  # a state dir made on purpose, on its own small file system
        # the known-good snapshot already there
        snap = state / recipe / "snapshot"
        snap.mkdir(parents=True)
        (snap / "content.tar").write_bytes(os.urandom(2 * MiB))
        (snap / "manifest.json").write_text('{"volumes": {"content": {}}}\n')
        snapshot_before = _tree_digest(snap)
        volume_before = _tree_digest(data)

        # no floor of its own: only the room a snapshot of the app's volumes needs counts
        guard = {"state_dir": str(state), "for_volumes_of": domain, "min_free_bytes": 0,
                 "min_free_percent": 0}  # fmt: skip
        out = run_module("coopcloud.ci.disk_guard", {**guard, "target": recipe})
        res = out.last
        assert out.rc != 0 and out.tasks[-1]["event"] == "runner_on_failed" and not res["ok"]
        need = res["need"]
        assert 20 * MiB < need < 22 * MiB
        assert res["volumes"][volume]["bytes"] == 20 * MiB + 6
        free = res["free"]["state_dir"]
        assert free < 6 * MiB
        # one clear sentence: the path, its free bytes, the bytes needed
        assert res["msg"].startswith(
            f"not enough disk space for a snapshot of {domain}: {state} (state_dir) has "
            f"{dk.human(free)} free, {dk.human(need)} needed (nothing pruned: pruning Docker "
            f"frees no space on {state}, another file system than the Docker root); "
            "disk-low alert "
        )
        assert res["pruned"] == [] and not res["changed"]
        # the alert, and nothing else, was written
        alerts = sorted((state / "alerts").iterdir())
        assert [a.name for a in alerts] == [Path(res["alert"]).name]
        assert res["msg"].endswith(res["alert"])
        alert = json.loads(alerts[0].read_text())
        assert (alert["kind"], alert["target"], alert["need"]) == ("disk-low", recipe, need)
        assert str(state) in alert["notes"]
        written = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
        assert written == sorted(
            [
                ".ccci-state",
                recipe,
                f"{recipe}/snapshot",
                f"{recipe}/snapshot/content.tar",
                f"{recipe}/snapshot/manifest.json",
                "alerts",
                f"alerts/{alerts[0].name}",
            ]
        )
        assert _tree_digest(snap) == snapshot_before
        # the warm volume is untouched
        assert _tree_digest(data) == volume_before
        assert (data / "big.bin").read_bytes() == payload

        # a snapshot that fits passes and writes nothing
        (data / "big-again.bin").unlink()
        (data / "big.bin").write_bytes(os.urandom(1 * MiB))
        out = run_module("coopcloud.ci.disk_guard", guard)
        res = out.last
        assert out.rc == 0 and out.tasks[-1]["event"] == "runner_on_ok"
        assert res["ok"] and not res["changed"]
        assert res["alert"] is None
        assert sorted(str(p.relative_to(state)) for p in state.rglob("*")) == written
        assert _tree_digest(snap) == snapshot_before
    assert _exists("volume", volume)
