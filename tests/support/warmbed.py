"""A warm test bed for the reliability battery: canonicals seeded the production way, plays
started as Drone starts them (one ``ansible-playbook`` process group each), and the proofs
that a canonical is at rest at its known-good.

Used by tests/reliability/test_crashes.py, test_concurrency.py and test_secrets.py. Each
test module makes its own :class:`Bed` (its own state dir, domain suffix and catalog), so
its canonicals are nobody else's.

The bed's catalog is a copy of the collection's example entries with shorter health
timeouts and, for the crash and concurrency modules, the stages cut to those the warm
layer needs (``install`` for the seeding cold run, ``upgrade`` and ``serving`` for quick
runs): the battery tests the warm layer, not the example recipes' custom tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
    volume_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    SnapshotStore,
)
from support import volumes
from support.ansible import ROOT
from support.fixtures import init_state, lane_vars, remove_stack_everything

HTML = "custom-html"
NOTES = "notes"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = str(BIN / "ansible-playbook")
#: What a quick run, a crash or a restore never moves in a registry.
#: Beside a volume's _data: Docker's own record of a volume's driver options (overlay).
KEPT = ("_data", "opts.json")
KNOWN_GOOD_KEYS = ("version", "commit", "snapshot_digest", "promoted_by", "seeded_at")


def run_id() -> str:
    return os.urandom(3).hex()


def make_catalog(dest: Path, stages: list[str] | None, health_timeout: int = 40) -> Path:
    """The example catalog entries of custom-html and notes under ``dest``."""
    for recipe in (HTML, NOTES):
        src = ROOT / "catalog" / recipe
        (dest / recipe).mkdir(parents=True, exist_ok=True)
        entry = yaml.safe_load((src / "recipe.yml").read_text())
        if stages is not None:
            entry["stages"] = list(stages)
        entry["health"]["timeout"] = health_timeout
        entry["health"]["interval"] = 1
        (dest / recipe / "recipe.yml").write_text(yaml.safe_dump(entry, sort_keys=False))
        if (src / "tests").is_dir():
            tests = dest / recipe / "tests"
            tests.mkdir(exist_ok=True)
            for path in (src / "tests").iterdir():
                if path.is_file():
                    (tests / path.name).write_bytes(path.read_bytes())
    return dest


def play_env(**more: str) -> dict[str, str]:
    """The environment of a play: ours without ANSIBLE_*/CCCI_* settings, plus ``more``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CCCI_"))}
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=str(BIN) + os.pathsep + os.environ.get("PATH", ""),
    )
    env.update(more)
    return env


def processes_with(tag: str, exclude: tuple[str, ...] = ()) -> list[int]:
    """Live (not zombie) processes whose environment holds ``tag`` (``NAME=value``), but
    for those whose command name is in ``exclude``."""
    wanted = tag.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        state = raw.rsplit(b")", 1)[1].split()[0]
        name = raw[raw.find(b"(") + 1 : raw.rfind(b")")].decode(errors="replace")
        if wanted in env and state != b"Z" and name not in exclude:
            found.append(int(entry))
    return sorted(found)


def _start_of(pid: int) -> str | None:
    """The start time of a live (not zombie) process; None once it is a zombie or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in (b"Z", b"X") else fields[19].decode()


@dataclass
class Play:
    """One ``ansible-playbook`` in a session (process group) of its own."""

    name: str
    proc: subprocess.Popen
    log: Path
    pause_dir: Path | None = None
    point: str | None = None
    started: float = field(default_factory=time.monotonic)

    def marker(self) -> Path:
        assert self.pause_dir is not None and self.point is not None
        return self.pause_dir / f"{self.point}.reached"

    def wait_point(self, timeout: float = 300) -> int:
        """Wait until the play pauses at its crash point; the pid of the paused process."""
        deadline = time.monotonic() + timeout
        marker = self.marker()
        while not marker.exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} ended (rc={self.proc.returncode}) without reaching crash point "
                    f"{self.point}:\n{self.output()[-6000:]}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(
                    f"{self.name} did not reach {self.point} in {timeout:g} s:\n"
                    f"{self.output()[-6000:]}"
                )
            time.sleep(0.1)
        return int(marker.read_text().strip())

    def processes(self) -> list[int]:
        """Live processes of this play: those carrying its pause dir in their environment.

        Ansible's workers call ``setsid()``, so they and the modules they run are not in
        ``ansible-playbook``'s process group; the environment they inherit finds them."""
        if self.pause_dir is None:
            return [self.proc.pid] if self.proc.poll() is None else []
        return processes_with(f"CCCI_PAUSE_DIR={self.pause_dir}")

    def kill(self) -> None:
        """SIGKILL the whole play: ansible-playbook's process group and every other process
        of the play (the workers in sessions of their own, their modules, docker CLIs).
        All are stopped first, so none forks or acts between the look and the kill."""
        stopped: set[int] = set()
        started: dict[int, str | None] = {}
        for _ in range(20):
            new = set(self.processes()) - stopped
            if not new:
                break
            for pid in new:
                started[pid] = _start_of(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            stopped |= new
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(60)
        # A dying process drops its memory (so its environment reads empty and processes()
        # no longer sees it) before its files: its flocks (the work lock) go only when it
        # is a zombie or reaped. Wait for that, not for the environment to vanish.
        for _ in range(100):
            left = [pid for pid in stopped if started[pid] and started[pid] == _start_of(pid)]
            if not left and not self.processes():
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: processes left after the kill: {left}")

    def wait(self, timeout: float = 900) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} ran over {timeout:g} s:\n{self.output()[-6000:]}"
            ) from None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Bed:
    """A state dir, a domain suffix and a catalog of one test module."""

    tmp: Path
    recipes_dir: Path
    suffix: str
    catalog: Path
    state_dir: Path
    cold_stacks: list[str] = field(default_factory=list)
    deploy_timeout: int = 120
    #: ccci_canonical_overlay of its plays: False seeds canonicals on plain volumes (the
    #: restore mechanism, e.g. for crash points of the restore path).
    overlay: bool = True

    @classmethod
    def make(cls, tmp: Path, recipes_dir: Path, unique: str, stages: list[str] | None) -> Bed:
        state = init_state(tmp / "state")
        return cls(
            tmp=tmp,
            recipes_dir=recipes_dir,
            suffix=f"{unique}.ccci.test",
            catalog=make_catalog(tmp / "catalog", stages),
            state_dir=state,
        )

    # -- plays ------------------------------------------------------------------------------

    def extravars(self, recipe: str, ref: str | None, rid: str, **more: Any) -> dict[str, Any]:
        more = {
            "ccci_catalog_dir": str(self.catalog),
            "ccci_deploy_timeout": self.deploy_timeout,
            "ccci_lock_poll": 0.5,
            "ccci_canonical_overlay": self.overlay,
            **more,
        }
        return lane_vars(self.recipes_dir, self.state_dir, self.suffix, recipe, ref, rid, **more)

    def start(
        self,
        book: str,
        extravars: dict[str, Any],
        *,
        point: str | None = None,
        env: dict[str, str] | None = None,
        tag: str = "",
    ) -> Play:
        """``ansible-playbook playbooks/<book> -e <json>`` in a new session, output to a log."""
        rid = extravars.get("ccci_run_id") or run_id()
        name = f"{book} {extravars.get('recipe', '')} {rid}{tag}"
        log = self.tmp / f"play-{book}-{rid}{tag}.log"
        more: dict[str, str] = dict(env or {})
        pause_dir = None
        if point:
            pause_dir = self.tmp / f"pause-{rid}{tag}"
            pause_dir.mkdir(parents=True, exist_ok=True)
            more.update(
                CCCI_PAUSE_AT=point, CCCI_PAUSE_DIR=str(pause_dir), CCCI_PAUSE_TIMEOUT="600"
            )
        if book == "cold.yml":
            self.cold_stacks.append(stack_name(cold_domain(extravars["recipe"], rid, self.suffix)))
        with log.open("w") as out:
            proc = subprocess.Popen(
                [ANSIBLE_PLAYBOOK, "-i", str(ROOT / "inventory" / "local.yml"),
                 f"playbooks/{book}", "-e", json.dumps(extravars)],
                cwd=ROOT,
                env=play_env(**more),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return Play(name, proc, log, pause_dir, point)

    def run(self, book: str, extravars: dict[str, Any], timeout: float = 900, **kw) -> Play:
        play = self.start(book, extravars, **kw)
        play.wait(timeout)
        return play

    def seed(self, recipe: str, tag: str) -> dict[str, Any]:
        """A green cold run at the latest tag seeds the canonical (WC5)."""
        play = self.run("cold.yml", self.extravars(recipe, tag, run_id()))
        assert play.proc.returncode == 0, play.output()[-8000:]
        registry = self.registry(recipe)
        assert registry["version"] == tag and registry["status"] == "idle", registry
        return registry

    # -- reading ------------------------------------------------------------------------------

    def record(self, rid: str) -> dict[str, Any]:
        return json.loads((self.state_dir / "runs" / f"{rid}.json").read_text())

    def registry(self, recipe: str) -> dict[str, Any]:
        return json.loads((self.state_dir / recipe / "canonical.json").read_text())

    def manifest_bytes(self, recipe: str) -> bytes:
        return (self.state_dir / recipe / "snapshot" / "manifest.json").read_bytes()

    def store(self, recipe: str) -> SnapshotStore:
        return SnapshotStore(str(self.state_dir), recipe)

    def stack(self, recipe: str) -> str:
        return stack_name(canonical_domain(recipe, self.suffix))

    def volume_names(self, client, recipe: str) -> dict[str, str]:
        stack = self.stack(recipe)
        label = {"label": f"com.docker.stack.namespace={stack}"}
        vols = (client.api.volumes(filters=label) or {}).get("Volumes") or []
        prefix = stack + "_"
        return {v["Name"][len(prefix) :]: v["Name"] for v in vols}

    def mounts(self, client, recipe: str) -> dict[str, Path]:
        """Where a test writes into each volume (an overlay volume's upper dir)."""
        names = self.volume_names(client, recipe)
        return {short: volumes.write_dir(client, name) for short, name in names.items()}

    def services(self, client, recipe: str) -> list[str]:
        label = {"label": f"com.docker.stack.namespace={self.stack(recipe)}"}
        return sorted(s["Spec"]["Name"] for s in client.api.services(filters=label))

    def trees(self, client, recipe: str) -> dict[str, str]:
        names = self.volume_names(client, recipe)
        return {short: volumes.tree(client, name) for short, name in names.items()}

    def known_good(self, recipe: str) -> dict[str, str]:
        manifest = json.loads(self.manifest_bytes(recipe))
        return {short: v["tree_digest"] for short, v in manifest["volumes"].items()}

    def proof(self, client, recipe: str) -> dict[str, Any]:
        """Registry, manifest bytes, volume trees vs the manifest, services, lock file."""
        return {
            "registry": self.registry(recipe),
            "manifest": self.manifest_bytes(recipe),
            "trees": self.trees(client, recipe),
            "known_good": self.known_good(recipe),
            "services": self.services(client, recipe),
            "lock": (self.state_dir / recipe / "lock").exists(),
            # beside each volume's _data: nothing (no staging or replaced tree of a restore)
            "leftovers": {
                short: sorted(p.name for p in path.parent.iterdir() if p.name not in KEPT)
                for short, path in (
                    (short, Path(volumes.attrs(client, name)["Mountpoint"]))
                    for short, name in self.volume_names(client, recipe).items()
                )
            },
        }

    def volume_path(self, client, recipe: str, short: str) -> Path:
        return volumes.write_dir(client, volume_name(self.stack(recipe), short))

    # -- clean-up -----------------------------------------------------------------------------

    def remove_all(self, recipes: tuple[str, ...] = (HTML, NOTES)) -> None:
        for recipe in recipes:
            remove_stack_everything(self.stack(recipe))
        for stack in self.cold_stacks:
            remove_stack_everything(stack)


def dirty(bed: Bed, client, recipe: str) -> None:
    """What a dead quick run leaves: status quick, every volume changed."""
    Registry(str(bed.state_dir), recipe).set_status("quick", "dead00")
    for short, mount in bed.mounts(client, recipe).items():
        (mount / "left-by-a-dead-run").write_bytes(os.urandom(256))
        (mount / f"changed-{short}").write_text("half written\n")


def at_rest(proof: dict[str, Any]) -> list[str]:
    """What is wrong with a canonical that should be at rest at its known-good."""
    out = []
    if proof["registry"]["status"] != "idle":
        out.append(f"status {proof['registry']['status']}, not idle")
    if proof["services"]:
        out.append(f"still deployed: {proof['services']}")
    if proof["trees"] != proof["known_good"]:
        out.append(f"volume trees {proof['trees']} != known-good {proof['known_good']}")
    if proof["registry"]["snapshot_digest"] != _sha256(proof["manifest"]):
        out.append("registry snapshot_digest is not the manifest's digest")
    if proof["lock"]:
        out.append("the lock file is left")
    left = {short: names for short, names in proof["leftovers"].items() if names}
    if left:
        out.append(f"left beside the volumes' _data: {left}")
    return out


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def unmoved(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What moved of the known-good between two proofs."""
    out = [
        f"registry {key}: {before['registry'][key]!r} -> {after['registry'][key]!r}"
        for key in KNOWN_GOOD_KEYS
        if before["registry"][key] != after["registry"][key]
    ]
    if before["manifest"] != after["manifest"]:
        out.append("the snapshot manifest changed")
    return out
