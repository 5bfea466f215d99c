"""What a bad input or a broken file must leave unchanged: the world, listed before and after.

``World.take()`` lists, through the engine, every stack, service, container, volume,
secret, config and network whose name (or stack namespace) contains the test's unique
needle; every entry under the test's state directory with its type, mode, size, mtime and
content digest; and whether each sentinel path exists. Two takes compare equal exactly
when nothing the test could have touched changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NS = "com.docker.stack.namespace"


def engine(client: Any, needle: str) -> dict[str, list[str]]:
    """Names of the engine's objects that carry ``needle`` in their name or namespace."""

    def names(objects, attr=lambda o: o.name) -> list[str]:
        out = []
        for obj in objects:
            name = attr(obj) or ""
            labels = (
                (obj.attrs.get("Spec", {}) or {}).get("Labels") or obj.attrs.get("Labels") or {}
            )
            if needle in name or needle in (labels.get(NS) or ""):
                out.append(name)
        return sorted(out)

    stacks = subprocess.run(
        ["docker", "stack", "ls", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {
        "stacks": sorted(s for s in stacks if needle in s),
        "services": names(client.services.list()),
        "containers": sorted(
            c["Names"][0].lstrip("/")
            for c in client.api.containers(all=True)
            if needle in c["Names"][0] or needle in ((c.get("Labels") or {}).get(NS) or "")
        ),
        "volumes": names(client.volumes.list()),
        "secrets": names(client.secrets.list()),
        "configs": names(client.configs.list()),
        "networks": names(client.networks.list()),
    }


def tree(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: type, mode, size, mtime_ns and, for files, the sha256."""
    out: dict[str, tuple] = {}
    if not os.path.lexists(root):
        return {".": ("missing",)}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [".", *dirnames, *sorted(filenames)]:
            path = os.path.join(dirpath, name) if name != "." else dirpath
            if name == "." and dirpath != str(root):
                continue
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            out[rel] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_size, st.st_mtime_ns,
                        digest)  # fmt: skip
    return out


@dataclass
class World:
    """The part of the world one test watches."""

    client: Any
    needle: str
    roots: list[Path] = field(default_factory=list)
    sentinels: list[Path] = field(default_factory=list)

    def take(self) -> dict[str, Any]:
        return {
            "engine": engine(self.client, self.needle),
            "trees": {str(root): tree(root) for root in self.roots},
            "sentinels": {str(p): os.path.lexists(p) for p in self.sentinels},
        }


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Readable differences between two takes (empty when equal)."""
    out = []
    for kind, names in before["engine"].items():
        if after["engine"][kind] != names:
            out.append(f"engine {kind}: {names} -> {after['engine'][kind]}")
    for root, entries in before["trees"].items():
        now = after["trees"][root]
        for rel in sorted(set(entries) | set(now)):
            if entries.get(rel) != now.get(rel):
                out.append(f"{root}/{rel}: {entries.get(rel)} -> {now.get(rel)}")
    for path, existed in before["sentinels"].items():
        if after["sentinels"][path] != existed:
            out.append(f"{path}: exists {existed} -> {after['sentinels'][path]}")
    return out


def main(argv: list[str]) -> None:
    """``python world.py <needle> <root>... [-- <sentinel>...]``: print one take as JSON.

    For plays: a task runs this between a failing step and the way back, so the test
    can compare what the failing step left with what was there before it.
    """
    import json
    import sys

    here = Path(__file__).resolve().parents[1]
    sys.path[:0] = [str(here), str(here.parent / "collections")]
    import docker

    needle, rest = argv[0], argv[1:]
    roots, sentinels = rest, []
    if "--" in rest:
        cut = rest.index("--")
        roots, sentinels = rest[:cut], rest[cut + 1 :]
    world = World(docker.from_env(), needle, [Path(r) for r in roots], [Path(s) for s in sentinels])
    print(json.dumps(world.take()))


def normal(take: dict[str, Any]) -> dict[str, Any]:
    """A take as it reads back from JSON (tuples become lists), for comparing."""
    import json

    return json.loads(json.dumps(take))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
