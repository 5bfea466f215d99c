"""LocalVolumeFiles: the upgrade marker in a volume on this machine, through its mountpoint."""

from __future__ import annotations

import os

import docker.errors
import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._archive import SnapshotError
from ansible_collections.coopcloud.ci.plugins.module_utils._volume_files import LocalVolumeFiles

DOMAIN = "warm-custom-html.ci.example.org"
STACK = "warm-custom-html_ci_example_org"


class Engine:
    """The part of the Docker SDK client LocalVolumeFiles reads: ``api.inspect_volume``."""

    def __init__(self, volumes: dict[str, dict]) -> None:
        self.volumes = volumes

    @property
    def api(self):
        return self

    def inspect_volume(self, name: str) -> dict:
        if name not in self.volumes:
            raise docker.errors.NotFound(f"get {name}: no such volume")
        return self.volumes[name]


@pytest.fixture
def volume(tmp_path):
    root = tmp_path / "_data"
    root.mkdir()
    info = {"Name": f"{STACK}_content", "Mountpoint": str(root),
            "Labels": {"com.docker.stack.namespace": STACK}, "Options": None}  # fmt: skip
    return root, LocalVolumeFiles(Engine({info["Name"]: info}), DOMAIN), info


def test_write_read_and_remove_a_marker(volume):
    root, files, info = volume
    name = info["Name"]
    assert files.read_file(name, ".ccci-marker-abc") is None
    files.write_file(name, ".ccci-marker-abc", b"Zq3xTfP0")
    path = root / ".ccci-marker-abc"
    assert path.read_bytes() == b"Zq3xTfP0"
    assert (path.stat().st_mode & 0o777, path.stat().st_uid) == (0o644, 0)
    assert files.read_file(name, ".ccci-marker-abc") == b"Zq3xTfP0"
    files.write_file(name, ".ccci-marker-abc", b"second")  # replaced whole
    assert sorted(os.listdir(root)) == [".ccci-marker-abc"]  # no temporary file left
    files.remove_file(name, ".ccci-marker-abc")
    files.remove_file(name, ".ccci-marker-abc")  # already gone: nothing to do
    assert os.listdir(root) == []


def test_never_through_a_symlink(volume, tmp_path):
    root, files, info = volume
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (root / "m").symlink_to(outside)
    with pytest.raises(OSError):
        files.read_file(info["Name"], "m")
    files.write_file(info["Name"], "m", b"new")  # replaces the link, not its target
    assert outside.read_bytes() == b"keep"
    assert (root / "m").read_bytes() == b"new" and not (root / "m").is_symlink()
    (root / "m").unlink()
    (root / "m").symlink_to(outside)
    files.remove_file(info["Name"], "m")
    assert outside.read_bytes() == b"keep"


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "a b", "$(id)"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(volume, name):
    root, files, info = volume
    with pytest.raises(SnapshotError, match="file name"):
        files.write_file(info["Name"], name, b"x")
    assert os.listdir(root) == []


def test_only_a_mounted_volume_of_the_apps_own_stack(volume, tmp_path):
    root, files, info = volume
    other = {**info, "Name": "other_content", "Labels": {"com.docker.stack.namespace": "other"}}
    gone = {**info, "Name": f"{STACK}_gone", "Mountpoint": str(tmp_path / "nowhere")}
    overlay = {**info, "Name": f"{STACK}_ov", "Options": {"type": "overlay"}}
    files.client.volumes.update({v["Name"]: v for v in (other, gone, overlay)})
    for name, says in [("other_content", "not a volume of stack " + STACK),
                       (f"{STACK}_gone", "is not on this machine"),
                       (f"{STACK}_ov", "is not mounted"),
                       ("missing", "does not exist on this machine")]:  # fmt: skip
        with pytest.raises(SnapshotError, match=says):
            files.write_file(name, "m", b"x")
    assert os.listdir(root) == []
