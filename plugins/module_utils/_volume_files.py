# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small files at the root of an app's Docker volume: the upgrade stage's marker.
PRIVATE to the collection: no compatibility promises.

:class:`LocalVolumeFiles` reaches a volume through its mountpoint on this machine;
:class:`._remote.RemoteAppSnapshot` has the same three methods for a volume on another
swarm node, through that node's engine. Both take the same plain file names
(:func:`file_name`): no path, nothing to quote.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._archive import SnapshotError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import matching, stack_name
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import NAMESPACE_LABEL

#: a plain file name at a volume's root: no path, nothing to quote in ``sh``
FILE_NAME = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._-]+\Z")


def file_name(name: str) -> str:
    return matching(
        name, FILE_NAME, "file name", "use a plain name of letters, digits, '.', '_', '-'",
        SnapshotError,
    )  # fmt: skip


class LocalVolumeFiles:
    """Read, write and remove a file at the root of a volume of the app at ``domain``,
    on this machine: the engine ``client`` names the volume's mountpoint.

    Only a volume of the app's own stack (its namespace label) is touched, and only while
    its data is there to see: an overlay volume (a canonical's, :mod:`._overlay`) is
    mounted at its mountpoint only while a container uses it. A file is written whole
    (a temporary file renamed over it, fsync'd, mode 0644, owner root) and never through
    a symlink.
    """

    def __init__(self, client: Any, domain: str) -> None:
        self.client = client
        self.stack = stack_name(domain)

    def root(self, volume: str) -> str:
        import docker.errors

        try:
            info = self.client.api.inspect_volume(volume)
        except docker.errors.NotFound:
            raise SnapshotError(f"volume {volume} does not exist on this machine") from None
        labels = info.get("Labels") or {}
        if labels.get(NAMESPACE_LABEL) != self.stack:
            raise SnapshotError(f"volume {volume} is not a volume of stack {self.stack}")
        path = info.get("Mountpoint") or ""
        if not os.path.isdir(path):
            raise SnapshotError(
                f"volume {volume}'s mountpoint {path!r} is not on this machine: name the "
                "node that holds it (node)"
            )
        if (info.get("Options") or {}).get("type") == "overlay" and not os.path.ismount(path):
            raise SnapshotError(
                f"overlay volume {volume} is not mounted (no container of {self.stack} uses "
                "it): its data is in its lower and upper dirs, not at its mountpoint"
            )
        return path

    def read_file(self, volume: str, name: str) -> bytes | None:
        """The file's bytes, or None when it is not there."""
        path = os.path.join(self.root(volume), file_name(name))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def write_file(self, volume: str, name: str, data: bytes) -> None:
        root = self.root(volume)
        final = os.path.join(root, file_name(name))
        temp = os.path.join(root, f".{file_name(name)}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                os.fchmod(handle.fileno(), 0o644)
                os.fchown(handle.fileno(), 0, 0)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def remove_file(self, volume: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root(volume), file_name(name)))
