# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk guard (SPEC WC8). PRIVATE to the collection: no compatibility promises.

Before a snapshot, a seed or a sweep, :class:`DiskGuard` compares the free space of the
Docker root (``docker info`` → ``DockerRootDir``) and of the state directory with
thresholds and with the bytes the snapshot will need (:func:`snapshot_need`). When a path
is short it prunes, in this order, re-measuring after each step and stopping as soon as
every path has room:

1. ``images``: dangling images older than a day (``dangling=true``, ``until=24h``);
2. ``containers``: stopped containers (``exited`` or ``dead``, never ``created``,
   ``paused`` or running) that belong to a **dead** cold run, or carry no stack
   namespace label at all and stopped more than a day ago. A stopped container of any
   other stack (a ``warm-*`` canonical, warm infrastructure) is kept: harmless to remove,
   but it is not ours to judge;
3. ``build-cache``: ``docker builder prune -f --filter until=24h`` (the CLI: the API
   call differs across engine versions);
4. ``cold-runs``: every object of the cold runs that are dead (:mod:`._coldruns`).

It never removes a volume that is not a dead cold run's, never a ``warm-*`` volume, never
one in use, and never runs ``docker volume prune``, ``docker system prune`` or anything
with ``--volumes``.

Pruning frees space only on the Docker root's file system: when every short path lies on
another file system (a separate state disk), nothing is pruned. When a path is still
short, the caller writes a ``disk-low`` alert and refuses with one sentence naming the
path, the free bytes and the bytes needed, before anything of its own is touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._coldruns import (
    DEFAULT_GRACE_HOURS,
    NAMESPACE_LABEL,
    WARM_PREFIX,
    ColdRun,
    ColdRunError,
    find_cold_runs,
    parse_cold_stack,
    parse_docker_time,
    remove_cold_run,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._overlay import dirs_of

STEPS = ("images", "containers", "build-cache", "cold-runs")
#: What an uncompressed POSIX tar adds per entry (header, pax header, padding) and per archive.
TAR_ENTRY_OVERHEAD = 2048
TAR_ARCHIVE_OVERHEAD = 10240
DEFAULT_MARGIN_BYTES = 1 << 20
DEFAULT_MARGIN_PERCENT = 5.0
DAY = datetime.timedelta(hours=24)

Runner = Callable[..., subprocess.CompletedProcess]


class DiskError(CcciError, RuntimeError):
    """The disk cannot be measured or pruned. The message names the path or object."""


def human(n: int | float | None) -> str:
    """``21.0 MiB`` (binary units), for messages."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtTpP]?)(i?)[bB]?\s*$")


def parse_size(text: str) -> int | None:
    """A size as Docker prints it (``1.2MB``, ``0B``, ``3.4GiB``) in bytes, else None."""
    match = _SIZE_RE.match(text or "")
    if not match:
        return None
    number, unit, binary = match.groups()
    power = "BKMGTP".index(unit.upper() or "B")
    return round(float(number) * (1024 if binary else 1000) ** power)


# ---------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class Space:
    """The file system holding ``path`` (measured at its nearest existing ancestor)."""

    path: str
    measured_at: str
    device: int
    total: int
    free: int

    @property
    def free_percent(self) -> float:
        return round(100.0 * self.free / self.total, 2) if self.total else 0.0


def _existing(path: str) -> str:
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    return probe


def free_space(path: str) -> Space:
    """Free bytes (for an unprivileged writer: ``f_bavail``) and total of ``path``'s file
    system. A path that does not exist yet is measured at its nearest existing parent."""
    where = _existing(path)
    try:
        vfs = os.statvfs(where)
        device = os.stat(where).st_dev
    except OSError as exc:
        raise DiskError(f"cannot measure free space of {path}: {exc.strerror or exc}") from exc
    return Space(path, where, device, vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize)


def docker_root(client) -> str:
    """The engine's ``DockerRootDir`` (``/var/lib/docker``)."""
    api = getattr(client, "api", client)
    try:
        root = (api.info() or {}).get("DockerRootDir")
    except Exception as exc:
        raise DiskError(f"cannot ask the Docker engine for its root directory: {exc}") from exc
    if not root:
        raise DiskError("the Docker engine did not say where its root directory is")
    return root


@dataclasses.dataclass
class TreeSize:
    """What a tar archive of a tree holds: regular-file bytes (each inode once), entries."""

    bytes: int = 0
    entries: int = 0
    hardlinks: int = 0
    symlinks: int = 0
    unreadable: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: TreeSize) -> None:
        self.bytes += other.bytes
        self.entries += other.entries
        self.hardlinks += other.hardlinks
        self.symlinks += other.symlinks
        self.unreadable.extend(other.unreadable)


def tree_size(root: str) -> TreeSize:
    """Apparent size of the regular files under ``root`` and the number of entries.

    Walks with ``os.scandir`` without following symbolic links (a link is one entry of
    no data). A file with several hard links is counted once. Files that vanish during
    the walk are skipped; directories that cannot be read are listed in ``unreadable``.
    """
    total = TreeSize()
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        except OSError:
            total.unreadable.append(folder)
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError:
                total.unreadable.append(entry.path)
                continue
            total.entries += 1
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                stack.append(entry.path)
            elif stat.S_ISLNK(mode):
                total.symlinks += 1
            elif stat.S_ISREG(mode):
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        total.hardlinks += 1
                        continue
                    seen.add(key)
                total.bytes += st.st_size
    return total


def snapshot_need(
    sizes: Iterable[TreeSize],
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
    margin_percent: float = DEFAULT_MARGIN_PERCENT,
) -> int:
    """Bytes a snapshot of these trees needs: data + tar overhead + a margin.

    The new snapshot is written beside the old one and swapped in by rename, so the old
    one frees nothing until the new one is complete: the need is the whole new size.
    """
    sizes = list(sizes)
    data = sum(s.bytes for s in sizes)
    overhead = sum(s.entries for s in sizes) * TAR_ENTRY_OVERHEAD
    overhead += len(sizes) * TAR_ARCHIVE_OVERHEAD
    margin = max(int(margin_bytes), int((data + overhead) * margin_percent / 100))
    return data + overhead + margin


def volumes_of(client, stack: str) -> list[dict[str, Any]]:
    """The volumes carrying ``stack``'s namespace label (exact), with their mount points."""
    api = getattr(client, "api", client)
    flt = {"label": f"{NAMESPACE_LABEL}={stack}"}
    raw = (api.volumes(filters=flt) or {}).get("Volumes") or []
    found = [v for v in raw if (v.get("Labels") or {}).get(NAMESPACE_LABEL) == stack]
    return sorted(found, key=lambda v: v["Name"])


def volumes_size(client, stack: str) -> dict[str, tuple[str, TreeSize]]:
    """``{volume: (mount point, TreeSize)}`` of ``stack``'s volumes, read at their local
    mount points (an overlay volume: its lower tree plus its upper dir, an upper bound of
    the data it shows); :class:`DiskError` when one is not reachable from here."""
    sizes: dict[str, tuple[str, TreeSize]] = {}
    for vol in volumes_of(client, stack):
        # an overlay-backed canonical's volume holds its data in its lower tree and upper
        # dir: its mount point is empty at rest
        dirs = dirs_of(vol.get("Options")) or {}
        layers = [dirs[k] for k in ("lowerdir", "upperdir") if dirs.get(k)]
        if layers and all(os.path.isdir(d) for d in layers):
            size = TreeSize()
            for layer in layers:
                size.add(tree_size(layer))
            sizes[vol["Name"]] = (vol.get("Mountpoint") or "", size)
            continue
        mount = vol.get("Mountpoint") or ""
        if not mount or not os.path.isdir(mount):
            raise DiskError(
                f"volume {vol['Name']} of stack {stack} has no local mount point here "
                f"({mount or 'none'}; driver {vol.get('Driver', '?')}): measure it on the node "
                "that holds it"
            )
        sizes[vol["Name"]] = (mount, tree_size(mount))
    return sizes


# ---------------------------------------------------------------------------- checking


@dataclasses.dataclass
class Threshold:
    """Keep at least ``min_free_bytes`` and ``min_free_percent`` % of the file system free."""

    min_free_bytes: int = 0
    min_free_percent: float = 0.0

    def bytes_for(self, total: int) -> int:
        return max(int(self.min_free_bytes), int(total * self.min_free_percent / 100))


@dataclasses.dataclass
class PathReport:
    name: str
    path: str
    measured_at: str
    device: int
    total: int
    free: int
    need: int
    threshold: int
    #: need + threshold (with need summed over the paths that share a file system)
    required: int
    ok: bool
    #: what this path itself needs (``need`` is the sum over its file system)
    own_need: int = 0

    @property
    def short_by(self) -> int:
        return max(0, self.required - self.free)

    def summary(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["short_by"] = self.short_by
        out.pop("device")
        return out

    def sentence(self) -> str:
        parts = f"{human(self.need)} needed"
        if self.threshold:
            parts += f" plus {human(self.threshold)} to keep free"
        return f"{self.path} ({self.name}) has {human(self.free)} free, {parts}"


@dataclasses.dataclass
class Report:
    ok: bool
    paths: list[PathReport]

    @property
    def reasons(self) -> list[str]:
        """One sentence per short file system, naming the path that needs the most there."""
        by_device: dict[int, PathReport] = {}
        for p in self.paths:
            if p.ok:
                continue
            best = by_device.get(p.device)
            if best is None or (p.own_need, p.threshold) > (best.own_need, best.threshold):
                by_device[p.device] = p
        return [p.sentence() for p in self.paths if by_device.get(p.device) is p]

    @property
    def short(self) -> list[PathReport]:
        return [p for p in self.paths if not p.ok]

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "paths": {p.name: p.summary() for p in self.paths},
            "reasons": self.reasons,
        }


class DiskGuard:
    """Thresholds per named path (``docker_root``, ``state_dir``) and the check."""

    def __init__(
        self,
        paths: Mapping[str, str],
        thresholds: Mapping[str, Threshold] | None = None,
        default: Threshold | None = None,
        measure: Callable[[str], Space] = free_space,
    ):
        self.paths = dict(paths)
        self.thresholds = dict(thresholds or {})
        self.default = default or Threshold()
        self.measure = measure

    def threshold(self, name: str) -> Threshold:
        return self.thresholds.get(name, self.default)

    def check(self, need_bytes: int | Mapping[str, int], paths: Sequence[str] | None = None):
        """Measure every path (or those named) and compare with need + threshold.

        ``need_bytes`` is the bytes to be written, on every path (an int) or per path
        name (a mapping; missing names need 0). Paths on one file system share it: their
        needs add up there, and each reports the sum.
        """
        names = list(paths) if paths is not None else list(self.paths)
        spaces = {name: self.measure(self.paths[name]) for name in names}
        needs = {
            name: int(
                need_bytes.get(name, 0) if isinstance(need_bytes, Mapping) else need_bytes or 0
            )
            for name in names
        }
        per_device: dict[int, int] = {}
        for name in names:
            per_device[spaces[name].device] = per_device.get(spaces[name].device, 0) + needs[name]
        reports = []
        for name in names:
            space = spaces[name]
            need = per_device[space.device]
            threshold = self.threshold(name).bytes_for(space.total)
            required = need + threshold
            reports.append(
                PathReport(
                    name=name,
                    path=space.path,
                    measured_at=space.measured_at,
                    device=space.device,
                    total=space.total,
                    free=space.free,
                    need=need,
                    threshold=threshold,
                    required=required,
                    ok=space.free >= required,
                    own_need=needs[name],
                )
            )
        return Report(all(r.ok for r in reports), reports)


# ---------------------------------------------------------------------------- pruning


@dataclasses.dataclass
class Pruned:
    """One thing pruned (or, in check mode, that would be)."""

    step: str
    kind: str
    name: str
    bytes: int | None
    detail: str = ""

    def summary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PruneResult:
    pruned: list[Pruned] = dataclasses.field(default_factory=list)
    steps: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None
    report: Report | None = None

    @property
    def reclaimed(self) -> int:
        return sum(p.bytes or 0 for p in self.pruned)


def _age_ok(moment: datetime.datetime | None, now: datetime.datetime, older: datetime.timedelta):
    return moment is not None and now - moment >= older


def dangling_images(api, now: datetime.datetime) -> list[Pruned]:
    found = []
    for img in api.images(filters={"dangling": True}) or []:
        created = parse_docker_time(img.get("Created"))
        if _age_ok(created, now, DAY):
            found.append(Pruned("images", "image", img.get("Id", ""), img.get("Size")))
    return found


def stopped_containers(
    api, now: datetime.datetime, dead_stacks: set[str]
) -> list[tuple[Pruned, str]]:
    """``(what, id)`` of the stopped containers step 2 may remove (rules in the module doc)."""
    found = []
    flt = {"status": ["exited", "dead"]}
    for raw in api.containers(all=True, filters=flt, size=True) or []:
        if raw.get("State") not in ("exited", "dead"):
            continue
        labels = raw.get("Labels") or {}
        stack = labels.get(NAMESPACE_LABEL)
        names = [n.lstrip("/") for n in raw.get("Names") or []]
        name = names[0] if names else raw.get("Id", "")[:12]
        if any(n.startswith(WARM_PREFIX) for n in names):
            continue
        if stack is not None:
            if stack not in dead_stacks or parse_cold_stack(stack) is None:
                continue
            detail = f"of dead cold run {stack}"
        else:
            try:
                state = (api.inspect_container(raw["Id"]) or {}).get("State") or {}
            except Exception:
                continue
            finished = parse_docker_time(state.get("FinishedAt"))
            if not _age_ok(finished, now, DAY):
                continue
            detail = "unlabelled, stopped for more than a day"
        found.append(
            (Pruned("containers", "container", name, raw.get("SizeRw"), detail), raw["Id"])
        )
    return found


def build_cache_estimate(api, now: datetime.datetime) -> int | None:
    try:
        cache = (api.df() or {}).get("BuildCache") or []
    except Exception:
        return None
    total = 0
    for item in cache:
        if item.get("InUse"):
            continue
        last = parse_docker_time(item.get("LastUsedAt") or item.get("CreatedAt"))
        if _age_ok(last, now, DAY):
            total += int(item.get("Size") or 0)
    return total


def cold_run_bytes(run: ColdRun) -> int | None:
    sizes = []
    for name in run.volumes:
        mount = run.mountpoints.get(name)
        if mount and os.path.isdir(mount):
            sizes.append(tree_size(mount).bytes)
    return sum(sizes) if sizes or not run.volumes else None


def prune(
    client,
    state_dir: str,
    enough: Callable[[], Report] | None = None,
    *,
    steps: Sequence[str] = STEPS,
    check: bool = False,
    grace_hours: float = DEFAULT_GRACE_HOURS,
    run_ids: Iterable[str] | None = None,
    need: int | None = None,
    now: datetime.datetime | None = None,
    docker: str = "docker",
    runner: Runner = subprocess.run,
    remove_timeout: float = 120.0,
) -> PruneResult:
    """Prune in the safe order of :data:`STEPS` (only those in ``steps``).

    ``enough`` re-measures; pruning stops as soon as its report is ok. In ``check`` mode
    nothing is removed: the candidates of each step are listed with the bytes Docker
    reports for them, and the listing stops once their sum reaches ``need`` (the bytes
    short). ``run_ids`` limits step 4 (and the cold-run containers of step 2) to those
    runs. Bytes are as Docker reports them (images, containers, build cache) or, for a
    cold run, the apparent size of its volumes measured before removal.
    """
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise DiskError(f"unknown prune steps {unknown}: use some of {', '.join(STEPS)}")
    api = getattr(client, "api", client)
    now = now or datetime.datetime.now(datetime.UTC)
    result = PruneResult()
    dead: list[ColdRun] | None = None

    def dead_runs() -> list[ColdRun]:
        nonlocal dead
        if dead is None:
            runs = find_cold_runs(
                client, state_dir, now=now, grace_hours=grace_hours, run_ids=run_ids
            )
            dead = [r for r in runs if not r.alive]
        return dead

    def done() -> bool:
        if check:
            return need is not None and result.reclaimed >= need
        if enough is None:
            return False
        result.report = enough()
        return result.report.ok

    room = False
    for step in STEPS:
        if step not in steps:
            continue
        if done():
            room = True
            break
        result.steps.append(step)
        try:
            if step == "images":
                _prune_images(api, now, check, result)
            elif step == "containers":
                stacks = {r.stack for r in dead_runs()}
                for what, ident in stopped_containers(api, now, stacks):
                    if not check:
                        api.remove_container(ident)
                    result.pruned.append(what)
            elif step == "build-cache":
                _prune_build_cache(api, now, check, result, docker, runner)
            else:
                for run in dead_runs():
                    size = cold_run_bytes(run)
                    if not check:
                        remove_cold_run(client, run, timeout=remove_timeout)
                    result.pruned.append(
                        Pruned("cold-runs", "cold-run", run.stack, size, run.reason)
                    )
                    if check and done():
                        break
        except (ColdRunError, DiskError) as exc:
            result.errors.append(f"{step}: {exc}")
        except Exception as exc:  # the engine refused: report, go on with the next step
            result.errors.append(f"{step}: {exc}")
    if not check and enough is not None and not room:
        result.report = enough()  # after the last step
    return result


def _prune_images(api, now, check: bool, result: PruneResult) -> None:
    if check:
        result.pruned.extend(dangling_images(api, now))
        return
    answer = api.prune_images(filters={"dangling": True, "until": "24h"}) or {}
    deleted = [d["Deleted"] for d in answer.get("ImagesDeleted") or [] if d.get("Deleted")]
    reclaimed = int(answer.get("SpaceReclaimed") or 0)
    if deleted or reclaimed:
        result.pruned.append(
            Pruned("images", "images", f"{len(deleted)} dangling images", reclaimed)
        )


def _prune_build_cache(api, now, check: bool, result: PruneResult, docker, runner) -> None:
    if check:
        estimate = build_cache_estimate(api, now)
        if estimate:
            result.pruned.append(Pruned("build-cache", "build-cache", "build cache", estimate))
        return
    cmd = [docker, "builder", "prune", "-f", "--filter", "until=24h"]
    proc = runner(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DiskError(
            f"`{' '.join(cmd)}` failed with rc {proc.returncode}: "
            f"{(proc.stderr or proc.stdout or '').strip()[-500:]}"
        )
    match = re.search(r"Total reclaimed space:\s*(\S+)", proc.stdout or "")
    reclaimed = parse_size(match.group(1)) if match else None
    if reclaimed:
        result.pruned.append(Pruned("build-cache", "build-cache", "build cache", reclaimed))


# ---------------------------------------------------------------------------- the guard


@dataclasses.dataclass
class GuardResult:
    ok: bool
    before: Report
    after: Report
    prune: PruneResult | None
    message: str | None = None
    alert: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.prune and self.prune.pruned)


def short_message(report: Report, what: str, prune: PruneResult | None, check: bool) -> str:
    """One sentence: which path, free, needed; what pruning did."""
    reasons = "; ".join(report.reasons)
    what = f" {what}" if what else ""
    if prune is None:
        tail = "pruning is off"
    elif prune.skipped:
        tail = prune.skipped
    elif check:
        tail = f"pruning would free about {human(prune.reclaimed)}"
    else:
        tail = f"pruning freed {human(prune.reclaimed)}"
    return f"not enough disk space{what}: {reasons} ({tail})"


def guard(
    client,
    guard_: DiskGuard,
    need: Mapping[str, int],
    state_dir: str,
    *,
    do_prune: bool = True,
    check: bool = False,
    what: str = "",
    prune_kwargs: Mapping[str, Any] | None = None,
    docker_root_name: str = "docker_root",
) -> GuardResult:
    """Check; when short, prune (only if a short path shares the Docker root's file
    system) and check again. The caller alerts and refuses when ``ok`` is False."""
    before = guard_.check(need)
    if before.ok:
        return GuardResult(True, before, before, None)
    result = None
    after = before
    if do_prune:
        root = next((p for p in before.paths if p.name == docker_root_name), None)
        root_dev = root.device if root else free_space(docker_root(client)).device
        elsewhere = [p for p in before.short if p.device != root_dev]
        if elsewhere:
            # Pruning frees only the Docker root's file system: it cannot make this run
            # possible, so nothing is pruned for it.
            result = PruneResult(
                skipped="nothing pruned: pruning Docker frees no space on "
                + ", ".join(p.path for p in elsewhere)
                + ", another file system than the Docker root"
            )
        else:
            shortfall = max(p.short_by for p in before.short)
            result = prune(
                client,
                state_dir,
                enough=lambda: guard_.check(need),
                check=check,
                need=shortfall,
                **dict(prune_kwargs or {}),
            )
            if check:
                # Predicted: the candidates' bytes cover the shortfall.
                return GuardResult(
                    result.reclaimed >= shortfall,
                    before,
                    before,
                    result,
                    None
                    if result.reclaimed >= shortfall
                    else short_message(before, what, result, check),
                )
            if result.report is not None:
                after = result.report
    ok = after.ok
    message = None if ok else short_message(after, what, result, check)
    return GuardResult(ok, before, after, result, message)
