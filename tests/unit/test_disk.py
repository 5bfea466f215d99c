"""Disk guard: sizes, thresholds, the size walk, the prune order and the module's main()."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
from support.fake_docker import FakeAPI, FakeClient
from support.fixtures import init_state
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils import _disk as d
from ansible_collections.coopcloud.ci.plugins.modules import disk_guard

NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
MiB = 1 << 20


# --- units -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0B", 0),
        ("512B", 512),
        ("1.5kB", 1500),
        ("1.2MB", 1_200_000),
        ("3GB", 3_000_000_000),
        ("2MiB", 2 * MiB),
        ("1.5 GiB", 1536 * MiB),
        ("7", 7),
    ],
)
def test_parse_size(text, value):
    assert d.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.2XB", "-3MB"])
def test_parse_size_refuses(text):
    assert d.parse_size(text) is None


def test_human():
    assert d.human(0) == "0 B"
    assert d.human(1023) == "1023 B"
    assert d.human(21 * MiB) == "21.0 MiB"
    assert d.human(3 << 40) == "3.0 TiB"
    assert d.human(None) == "unknown"


# --- thresholds --------------------------------------------------------------------------


def test_threshold_is_the_larger_of_bytes_and_percent():
    assert d.Threshold(100, 0).bytes_for(10_000) == 100
    assert d.Threshold(100, 5).bytes_for(10_000) == 500
    assert d.Threshold(900, 5).bytes_for(10_000) == 900
    assert d.Threshold().bytes_for(10_000) == 0


def _measure(spaces):
    def measure(path):
        device, total, free = spaces[path]
        return d.Space(path, path, device, total, free)

    return measure


def test_check_ok_and_short_per_path():
    dg = d.DiskGuard(
        {"docker_root": "/var/lib/docker", "state_dir": "/srv/state"},
        {"docker_root": d.Threshold(min_free_percent=10)},
        d.Threshold(min_free_bytes=1000),
        measure=_measure(
            {"/var/lib/docker": (1, 100_000, 20_000), "/srv/state": (2, 50_000, 5_000)}
        ),
    )
    report = dg.check({"state_dir": 4_000})
    assert report.ok
    root, state = report.paths
    assert (root.need, root.threshold, root.required, root.ok) == (0, 10_000, 10_000, True)
    assert (state.need, state.threshold, state.required, state.ok) == (4_000, 1000, 5_000, True)
    report = dg.check({"state_dir": 4_001})
    assert not report.ok
    assert [p.name for p in report.short] == ["state_dir"]
    assert report.short[0].short_by == 1
    (reason,) = report.reasons
    assert (
        reason == "/srv/state (state_dir) has 4.9 KiB free, 3.9 KiB needed plus 1000 B to keep free"
    )
    json.dumps(report.summary())


def test_paths_on_one_file_system_add_their_needs():
    dg = d.DiskGuard(
        {"a": "/x", "b": "/y"},
        measure=_measure({"/x": (7, 10_000, 6_000), "/y": (7, 10_000, 6_000)}),
    )
    assert dg.check({"a": 3_000, "b": 3_000}).ok
    report = dg.check({"a": 3_000, "b": 3_001})
    assert not report.ok
    assert {p.need for p in report.paths} == {6_001}
    assert dg.check(3_000).ok  # an int means: on every path (here one file system: 6000)
    assert (
        not d.DiskGuard(
            {"a": "/x", "b": "/y"},
            measure=_measure({"/x": (7, 10_000, 5_999), "/y": (7, 10_000, 5_999)}),
        )
        .check(3_000)
        .ok
    )


def test_free_space_of_a_path_not_yet_made_is_its_parents(tmp_path):
    space = d.free_space(str(tmp_path / "a" / "b"))
    assert space.measured_at == str(tmp_path)
    vfs = os.statvfs(tmp_path)
    assert space.total == vfs.f_blocks * vfs.f_frsize
    assert space.device == os.stat(tmp_path).st_dev
    assert 0 < space.free <= space.total


def test_docker_root():
    assert d.docker_root(FakeClient(FakeAPI(NOW, root="/srv/docker"))) == "/srv/docker"

    class Broken:
        def info(self):
            raise ConnectionError("connection refused")

    with pytest.raises(d.DiskError, match="connection refused"):
        d.docker_root(Broken())


# --- the size walk -----------------------------------------------------------------------


def test_tree_size_counts_hardlinks_once_and_never_follows_symlinks(tmp_path):
    tree = tmp_path / "vol"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a").write_bytes(b"x" * 1000)
    (tree / "sub" / "b").write_bytes(b"y" * 234)
    (tree / "sub" / "deeper" / "c").write_bytes(b"")
    os.link(tree / "a", tree / "sub" / "a-again")
    os.link(tree / "a", tree / "a-thrice")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"z" * 100_000)
    os.symlink(outside / "big", tree / "link-to-big")
    os.symlink(outside, tree / "link-to-dir")
    os.symlink("/nonexistent", tree / "dangling")
    os.mkfifo(tree / "fifo")
    size = d.tree_size(str(tree))
    assert size.bytes == 1234
    # a, a-again, a-thrice, sub, deeper, b, c, three links, fifo
    assert size.entries == 11
    assert size.hardlinks == 2
    assert size.symlinks == 3
    assert size.unreadable == []
    # du agrees on the data (apparent sizes, hard links once, links not followed)
    du = subprocess.run(
        ["du", "-sb", "--apparent-size", str(tree)], capture_output=True, text=True, check=True
    )
    dirs_and_links = sum(
        os.lstat(p).st_size
        for p in (
            tree,
            tree / "sub",
            tree / "sub" / "deeper",
            tree / "link-to-big",
            tree / "link-to-dir",
            tree / "dangling",
        )
    )
    assert int(du.stdout.split()[0]) == size.bytes + dirs_and_links


def test_tree_size_of_nothing(tmp_path):
    assert d.tree_size(str(tmp_path / "missing")).bytes == 0
    assert d.tree_size(str(tmp_path)).entries == 0


def test_snapshot_need_adds_tar_overhead_and_margin():
    one = d.TreeSize(bytes=100 * MiB, entries=10)
    two = d.TreeSize(bytes=0, entries=0)
    base = 100 * MiB + 10 * d.TAR_ENTRY_OVERHEAD + 2 * d.TAR_ARCHIVE_OVERHEAD
    assert d.snapshot_need([one, two], margin_bytes=0, margin_percent=0) == base
    assert d.snapshot_need([one, two], margin_bytes=MiB, margin_percent=10) == base + base // 10
    assert d.snapshot_need([two], margin_bytes=MiB, margin_percent=10) == (
        d.TAR_ARCHIVE_OVERHEAD + MiB
    )
    assert d.snapshot_need([]) == d.DEFAULT_MARGIN_BYTES


def test_snapshot_need_covers_a_real_tar_of_the_tree(tmp_path):
    tree = tmp_path / "vol"
    tree.mkdir()
    for i in range(150):
        (tree / f"f{i:03d}-{'n' * (i % 120)}").write_bytes(os.urandom(i * 37))
    (tree / "big").write_bytes(os.urandom(3 * MiB + 1))
    tar = subprocess.run(
        [
            "tar",
            "--create",
            "--file=-",
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "--sort=name",
            "--numeric-owner",
            "-C",
            str(tree),
            ".",
        ],
        capture_output=True,
        check=True,
    )
    need = d.snapshot_need([d.tree_size(str(tree))], margin_bytes=0, margin_percent=0)
    assert len(tar.stdout) <= need < len(tar.stdout) * 1.2


# --- pruning -----------------------------------------------------------------------------


def _engine(tmp_path) -> FakeAPI:
    api = FakeAPI(NOW)
    api.add_image("sha256:old-dangling", dangling=True, hours=48, size=5000)
    api.add_image("sha256:new-dangling", dangling=True, hours=2, size=7000)
    api.add_image("sha256:tagged", dangling=False, hours=480, size=9000)
    # containers
    api.add_container("warm-custom-html_x_app.1.a", "warm-custom-html_x", state="exited", hours=90)
    api.add_container("infra_keycloak.1.a", "infra_keycloak", state="exited", hours=90)
    api.add_container("cust-a1b2c3_ci_app.1.a", "cust-a1b2c3_ci", state="exited", hours=90, size=11)
    api.add_container("cust-b1b2c3_ci_app.1.a", "cust-b1b2c3_ci", state="exited", hours=1)
    api.add_container("old-helper", None, state="exited", hours=90, finished_hours=30, size=22)
    api.add_container("dead-helper", None, state="dead", hours=90, finished_hours=30, size=33)
    api.add_container("new-helper", None, state="exited", hours=90, finished_hours=2)
    api.add_container("created", None, state="created", hours=90)
    api.add_container("running", None, state="running", hours=90)
    # volumes: the warm one, a dead cold run's (old), a live cold run's (recent)
    data = tmp_path / "dead-volume"
    data.mkdir()
    (data / "f").write_bytes(b"q" * 4321)
    api.add_volume("warm-custom-html_x_content", "warm-custom-html_x", hours=900)
    api.add_volume("cust-a1b2c3_ci_content", "cust-a1b2c3_ci", hours=90, mountpoint=str(data))
    api.add_volume("cust-b1b2c3_ci_content", "cust-b1b2c3_ci", hours=1)
    api.build_cache = [
        {"ID": "c1", "InUse": False, "Size": 800, "LastUsedAt": "2026-02-20T00:00:00Z"},
        {"ID": "c2", "InUse": True, "Size": 900, "LastUsedAt": "2026-02-20T00:00:00Z"},
        {"ID": "c3", "InUse": False, "Size": 700, "LastUsedAt": "2026-03-01T11:00:00Z"},
    ]
    api.prune_answer = {
        "ImagesDeleted": [{"Untagged": "x"}, {"Deleted": "sha256:old-dangling"}],
        "SpaceReclaimed": 5000,
    }
    return api


class Runner:
    def __init__(self, stdout="Total reclaimed space: 1.5MB\n", rc=0):
        self.cmds = []
        self.stdout = stdout
        self.rc = rc

    def __call__(self, cmd, **kw):
        self.cmds.append(cmd)
        return subprocess.CompletedProcess(cmd, self.rc, self.stdout, "boom" if self.rc else "")


def test_prune_runs_every_step_in_the_safe_order_when_never_enough(tmp_path):
    api = _engine(tmp_path)
    runner = Runner()
    result = d.prune(
        FakeClient(api),
        str(tmp_path / "state"),
        lambda: d.Report(False, []),
        now=NOW,
        runner=runner,
    )
    assert result.steps == list(d.STEPS)
    assert result.errors == []
    steps = [p.step for p in result.pruned]
    assert steps == sorted(steps, key=d.STEPS.index)
    # (1) images: the engine's own prune, with both filters
    assert ("prune_images", repr([("dangling", True), ("until", "24h")])) in api.calls
    assert result.pruned[0].summary() == {
        "step": "images",
        "kind": "images",
        "name": "1 dangling images",
        "bytes": 5000,
        "detail": "",
    }
    # (2) containers: the dead cold run's and the old unlabelled stopped ones only
    names = [p.name for p in result.pruned if p.step == "containers"]
    assert names == ["cust-a1b2c3_ci_app.1.a", "old-helper", "dead-helper"]
    assert [p.bytes for p in result.pruned if p.step == "containers"] == [11, 22, 33]
    # (3) build cache through the CLI, bytes as docker printed them
    assert runner.cmds == [["docker", "builder", "prune", "-f", "--filter", "until=24h"]]
    assert [p.bytes for p in result.pruned if p.step == "build-cache"] == [1_500_000]
    # (4) the dead cold run, its volume measured before removal
    (cold,) = [p for p in result.pruned if p.step == "cold-runs"]
    assert (cold.name, cold.bytes) == ("cust-a1b2c3_ci", 4321)
    assert api.volume_names() == ["cust-b1b2c3_ci_content", "warm-custom-html_x_content"]
    assert result.reclaimed == 5000 + 66 + 1_500_000 + 4321


def test_prune_stops_as_soon_as_there_is_room(tmp_path):
    api = _engine(tmp_path)
    looks = []

    def enough():
        looks.append(1)
        return d.Report(len(looks) > 1, [])  # short before step 1, fine after it

    runner = Runner()
    result = d.prune(FakeClient(api), str(tmp_path), enough, now=NOW, runner=runner)
    assert result.steps == ["images"]
    assert runner.cmds == []
    assert "cust-a1b2c3_ci_content" in api.volume_names()
    assert result.report.ok


def test_prune_steps_can_be_limited(tmp_path):
    api = _engine(tmp_path)
    result = d.prune(FakeClient(api), str(tmp_path), steps=["cold-runs"], now=NOW, runner=Runner())
    assert result.steps == ["cold-runs"]
    assert [k for k, _ in api.calls if k == "prune_images"] == []
    with pytest.raises(d.DiskError, match="unknown prune steps"):
        d.prune(FakeClient(api), str(tmp_path), steps=["volumes"])


def test_prune_in_check_mode_lists_and_removes_nothing(tmp_path):
    api = _engine(tmp_path)
    runner = Runner()
    result = d.prune(
        FakeClient(api), str(tmp_path), check=True, need=10**12, now=NOW, runner=runner
    )
    assert api.calls == [] and runner.cmds == []
    assert [(p.step, p.name, p.bytes) for p in result.pruned] == [
        ("images", "sha256:old-dangling", 5000),
        ("containers", "cust-a1b2c3_ci_app.1.a", 11),
        ("containers", "old-helper", 22),
        ("containers", "dead-helper", 33),
        ("build-cache", "build cache", 800),
        ("cold-runs", "cust-a1b2c3_ci", 4321),
    ]
    # with a small need, the listing stops once the bytes cover it
    small = d.prune(FakeClient(api), str(tmp_path), check=True, need=5000, now=NOW)
    assert [p.step for p in small.pruned] == ["images"]


def test_a_failing_step_is_reported_and_the_others_still_run(tmp_path):
    api = _engine(tmp_path)
    result = d.prune(FakeClient(api), str(tmp_path), now=NOW, runner=Runner(rc=1, stdout=""))
    assert len(result.errors) == 1
    assert result.errors[0].startswith("build-cache: `docker builder prune -f --filter until=24h`")
    assert "rc 1" in result.errors[0] and "boom" in result.errors[0]
    assert "cold-runs" in result.steps
    assert "cust-a1b2c3_ci_content" not in api.volume_names()


# --- the guard ---------------------------------------------------------------------------


def _guard(spaces, paths=None):
    return d.DiskGuard(
        paths or {"docker_root": "/var/lib/docker", "state_dir": "/srv/state"},
        measure=_measure(spaces),
    )


def test_guard_does_nothing_when_there_is_room(tmp_path):
    api = _engine(tmp_path)
    dg = _guard({"/var/lib/docker": (1, 10**6, 10**5), "/srv/state": (2, 10**6, 10**5)})
    out = d.guard(FakeClient(api), dg, {"state_dir": 10**4}, str(tmp_path))
    assert out.ok and out.prune is None and not out.changed and api.calls == []


def test_guard_never_prunes_for_a_path_on_another_file_system(tmp_path):
    api = _engine(tmp_path)
    dg = _guard({"/var/lib/docker": (1, 10**6, 10**5), "/srv/state": (2, 10**6, 10**3)})
    out = d.guard(FakeClient(api), dg, {"state_dir": 10**4}, str(tmp_path), what="for a test")
    assert not out.ok
    assert api.calls == []
    assert out.prune.pruned == [] and "another file system" in out.prune.skipped
    assert out.message == (
        "not enough disk space for a test: /srv/state (state_dir) has 1000 B free, "
        "9.8 KiB needed (nothing pruned: pruning Docker frees no space on /srv/state, "
        "another file system than the Docker root)"
    )


def test_guard_prunes_on_the_docker_root_and_checks_again(tmp_path):
    api = _engine(tmp_path)
    free = {"n": 1000}

    def measure(path):
        return d.Space(path, path, 1, 10**6, free["n"])

    def remove_volume(name, force=False, _orig=api.remove_volume):
        _orig(name)
        free["n"] += 10**5  # the dead cold run's volume was big

    api.remove_volume = remove_volume
    dg = d.DiskGuard({"docker_root": "/var/lib/docker", "state_dir": "/srv"}, measure=measure)
    out = d.guard(
        FakeClient(api),
        dg,
        {"state_dir": 50_000},
        str(tmp_path),
        prune_kwargs={"runner": Runner(stdout="Total reclaimed space: 0B\n"), "now": NOW},
    )
    assert out.ok and out.changed
    assert out.prune.steps == list(d.STEPS)
    assert not out.before.ok and out.after.ok
    assert api.volume_names() == ["cust-b1b2c3_ci_content", "warm-custom-html_x_content"]


def test_guard_in_check_mode_predicts_from_the_candidates(tmp_path):
    api = _engine(tmp_path)
    spaces = {"/var/lib/docker": (1, 10**6, 1000), "/srv/state": (1, 10**6, 1000)}
    dg = _guard(spaces)
    out = d.guard(FakeClient(api), dg, {"state_dir": 5000}, str(tmp_path), check=True)
    assert out.ok and api.calls == []  # the old dangling image (5000 B) would do
    out = d.guard(FakeClient(api), dg, {"state_dir": 10**7}, str(tmp_path), check=True)
    assert not out.ok and api.calls == []
    assert "pruning would free about" in out.message


# --- the module's main() -----------------------------------------------------------------


def _run_main(monkeypatch, capsys, api, args, check=False):
    monkeypatch.setattr(disk_guard, "docker_client", lambda *_: FakeClient(api))
    return run_main(disk_guard, args, capsys, check=check)


def test_main_ok(monkeypatch, capsys, tmp_path):
    api = FakeAPI(NOW, root=str(tmp_path))
    code, out = _run_main(
        monkeypatch,
        capsys,
        api,
        {
            "state_dir": str(init_state(tmp_path / "state")),
            "need_bytes": 1000,
            "min_free_bytes": 0,
            "min_free_percent": 0,
        },
    )
    assert code == 0 and out["ok"] and not out["changed"]
    assert out["need"] == 1000 and out["docker_root"] == str(tmp_path)
    assert set(out["free"]) == {"docker_root", "state_dir"}
    assert out["pruned"] == [] and out["alert"] is None
    assert os.listdir(tmp_path / "state") == [".ccci-state"]  # nothing written


def test_main_short_without_prune_alerts_and_fails(monkeypatch, capsys, tmp_path):
    api = FakeAPI(NOW, root=str(tmp_path))
    state = init_state(tmp_path / "state")
    args = {"state_dir": str(state), "need_bytes": 1 << 60, "prune": False, "target": "custom-html"}
    code, out = _run_main(monkeypatch, capsys, api, args, check=True)
    assert code == 1 and out["alert"] is None and os.listdir(state) == [".ccci-state"]
    assert "(pruning is off)" in out["msg"]
    code, out = _run_main(monkeypatch, capsys, api, args)
    assert code == 1 and not out["ok"]
    assert out["msg"].startswith(f"not enough disk space: {state} (state_dir) has ")
    assert "1048576.0 TiB needed plus " in out["msg"]
    assert out["alert"] and out["msg"].endswith(f"; disk-low alert {out['alert']}")
    alert = json.loads(Path(out["alert"]).read_text())
    assert (alert["kind"], alert["target"]) == ("disk-low", "custom-html")
    assert alert["need"] == 1 << 60 and alert["notes"].startswith("not enough disk space")
    assert sorted(os.listdir(state)) == [".ccci-state", "alerts"]


def test_main_measures_the_volumes_of_an_app(monkeypatch, capsys, tmp_path):
    api = FakeAPI(NOW, root=str(tmp_path))
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "data").write_bytes(b"d" * 3000)
    api.add_volume("warm-x_ci_test_data", "warm-x_ci_test", mountpoint=str(vol))
    api.add_volume("warm-x_ci_test_other", "another_stack", mountpoint=str(vol))
    code, out = _run_main(
        monkeypatch,
        capsys,
        api,
        {
            "state_dir": str(init_state(tmp_path / "s")),
            "for_volumes_of": "warm-x.ci.test",
            "margin_bytes": 0,
            "margin_percent": 0,
            "min_free_bytes": 0,
            "min_free_percent": 0,
        },
    )
    assert code == 0, out
    assert out["volumes"] == {
        "warm-x_ci_test_data": {"bytes": 3000, "entries": 1, "mountpoint": str(vol)}
    }
    assert out["need"] == 3000 + d.TAR_ENTRY_OVERHEAD + d.TAR_ARCHIVE_OVERHEAD


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"state_dir": "relative"}, "relative"),
        ({"state_dir": "/"}, "'/' is refused"),
        ({"need_bytes": -1}, "need_bytes must be 0 or more"),
        ({"target": "bad target!"}, "alert target"),
        ({"for_volumes_of": "Not A Domain"}, "domain"),
    ],
)
def test_main_refuses_bad_arguments_in_one_sentence(monkeypatch, capsys, tmp_path, args, message):
    api = FakeAPI(NOW, root=str(tmp_path))
    state = str(init_state(tmp_path / "state"))
    code, out = _run_main(monkeypatch, capsys, api, {"state_dir": state, **args})
    assert code == 1 and message in out["msg"]
    assert api.calls == []
