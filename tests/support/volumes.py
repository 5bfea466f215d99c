"""Reading and writing a volume's data from a test, whether it is a plain ``local`` volume
or an overlay-backed canonical's (plugins/module_utils/_overlay.py).

An undeployed overlay volume's ``Mountpoint`` (``_data``) is empty: its data is the lower
tree plus what runs wrote into the upper dir. A test that plays "a run wrote this" writes
into the upper dir (a new file there shadows the lower's, as a copy-up would), and reads
the merged view.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._archive import tree_digest
from ansible_collections.coopcloud.ci.plugins.module_utils._overlay import dirs_of, merged_view


def attrs(client: Any, name: str) -> dict[str, Any]:
    return client.api.inspect_volume(name)


def is_overlay(client: Any, name: str) -> bool:
    return dirs_of(attrs(client, name).get("Options")) is not None


def write_dir(client: Any, name: str) -> Path:
    """Where a test writes "what a run wrote": ``_data``, or an overlay volume's upper dir
    (its ``_data`` while a container has it mounted)."""
    info = attrs(client, name)
    dirs = dirs_of(info.get("Options"))
    if dirs is None or os.path.ismount(info["Mountpoint"]):
        return Path(info["Mountpoint"])
    return Path(dirs["upperdir"])


def read_dir(client: Any, name: str) -> Path:
    """Where the volume's data can be read now: ``_data`` (plain, or mounted), else the
    lower tree of an overlay volume whose upper dir is empty (at rest)."""
    info = attrs(client, name)
    dirs = dirs_of(info.get("Options"))
    if dirs is None or os.path.ismount(info["Mountpoint"]):
        return Path(info["Mountpoint"])
    upper = Path(dirs["upperdir"])
    assert not upper.exists() or not any(upper.iterdir()), (
        f"{name}: undeployed overlay volume with writes in {upper}: read it with tree()"
    )
    return Path(dirs["lowerdir"])


def tree(client: Any, name: str) -> str:
    """The tree digest of the volume's data (an overlay volume's merged view)."""
    info = attrs(client, name)
    if dirs_of(info.get("Options")) is None or os.path.ismount(info["Mountpoint"]):
        return tree_digest(info["Mountpoint"])
    with merged_view(info["Options"]) as where:
        return tree_digest(where)
