# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The secrets key of an enrolled recipe. PRIVATE to the collection.

A canonical's data is seeded from a green cold app, and real recipes initialise their
database at first boot with a generated secret (``POSTGRES_PASSWORD_FILE``): the
canonical must run with the values that cold app ran with. Swarm secrets cannot be read
back, so instead of carrying values from one app to another, every app of an enrolled
recipe (its cold runs and its canonical) *derives* its generated secrets from one random
key kept at ``<state_dir>/<recipe>/secrets/key``: ``HMAC-SHA256(key, name, version,
length, charset)`` mapped onto the secret's charset by rejection sampling (no bias). The
same secret name and version give the same value in every app of the recipe, and a new
version (the recipe's way of rotating a secret) gives a new one.

The directory is ``0700`` and the key ``0600``: only the user the plays run as (root on
the CI host) can read it. No value is ever written anywhere; they exist only in the
deploying process and in the swarm's secret store. ``generate=false`` secrets are never
derived: they come from the operator's configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import stat
from collections.abc import Iterable

from ansible_collections.coopcloud.ci.plugins.module_utils._appenv import CHARSETS, SecretSpec
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    RecipePaths,
    StateError,
    fsync_dir,
)

KEY_BYTES = 32


def derive(key: bytes, spec: SecretSpec) -> str:
    """The value of ``spec`` under ``key``: ``spec.length`` characters of its charset."""
    alphabet = CHARSETS[spec.charset]
    limit = 256 - 256 % len(alphabet)  # bytes at or above it would bias the first characters
    out: list[str] = []
    counter = 0
    while len(out) < spec.length:
        label = f"{spec.name}\0{spec.version}\0{spec.length}\0{spec.charset}\0{counter}"
        for byte in hmac.new(key, label.encode(), hashlib.sha256).digest():
            if byte < limit and len(out) < spec.length:
                out.append(alphabet[byte % len(alphabet)])
        counter += 1
    return "".join(out)


class SecretKey:
    """The key of ``recipe`` under ``state_dir``. ``create=False`` (check mode) never
    writes: without a key, :meth:`values` is empty and the caller generates at random."""

    def __init__(self, state_dir: str, recipe: str, *, create: bool = True) -> None:
        self.directory = RecipePaths(state_dir, recipe).secrets
        self.path = os.path.join(self.directory, "key")
        self.create = create

    def exists(self) -> bool:
        return os.path.isfile(self.path)

    def _make_dir(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if stat.S_IMODE(os.stat(self.directory).st_mode) != 0o700:
            os.chmod(self.directory, 0o700)

    def _new(self) -> None:
        """Write a new key; when another run wrote one first, theirs is kept (link is atomic)."""
        self._make_dir()
        tmp = os.path.join(self.directory, f".key.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(self.directory)

    def load(self) -> bytes | None:
        """The key (made when missing and ``create``), else ``None``."""
        if not self.exists():
            if not self.create:
                return None
            self._new()
        try:
            info = os.stat(self.path)
            if stat.S_IMODE(info.st_mode) & 0o077:
                os.chmod(self.path, 0o600)
            with open(self.path, "rb") as handle:
                key = handle.read()
        except OSError as exc:
            raise StateError(
                f"the secrets key {self.path} cannot be read ({exc.strerror}): the plays must "
                "run as the user that owns the state dir"
            ) from exc
        if len(key) != KEY_BYTES:
            raise StateError(
                f"the secrets key {self.path} has {len(key)} bytes, not {KEY_BYTES}: it was "
                "truncated or replaced; remove the canonical (warm_canonical state=absent "
                "confirm=true) and let a green cold run seed it again"
            )
        return key

    def values(self, specs: Iterable[SecretSpec]) -> dict[str, str]:
        """``{short name: value}`` of every generated secret of ``specs`` (holds values:
        never log it); empty without a key in check mode."""
        key = self.load()
        if key is None:
            return {}
        return {spec.name: derive(key, spec) for spec in specs if spec.generate}

    def remove(self) -> bool:
        """Delete the key and its directory; ``True`` when there was something."""
        if not os.path.lexists(self.directory):
            return False
        shutil.rmtree(self.directory)
        return True
