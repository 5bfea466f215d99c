# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data-warm canonical of a recipe (SPEC WC2, WC5). PRIVATE to the collection: no
compatibility promises.

A canonical is one app per enrolled recipe at the stable domain ``warm-<recipe>.<suffix>``,
undeployed while idle with its volumes kept, whose known-good data is the recipe's one
snapshot (``<state_dir>/<recipe>/snapshot/``, :mod:`._snapshot`) and whose known-good
version, commit and life-cycle status are in its registry (``canonical.json``,
:mod:`._registry`). This module puts the three together; it never archives, restores,
deploys or records by itself:

* snapshots: :class:`._snapshot.SnapshotStore` and :class:`._snapshot.AppSnapshot`
  (verification before any write, volumes mapped by short name onto the canonical's
  ``<stack>_<short>``, missing volumes created with the stack's namespace label);
* the app: a :class:`._driver.Driver` (deploy at the known-good commit, undeploy keeping
  volumes and secrets, remove by namespace label);
* the registry: :class:`._registry.Registry` (statuses, transitions, history).

The operations (one per ``warm_canonical`` state) first *plan* - read everything and
decide what would change - and only then act, so check mode runs the same code up to
the first side effect. Every status change is written before the step it announces, so a
crash leaves the registry saying what was under way (``quick``, ``restoring``,
``seeding``) and the next ``idle`` or ``seeded`` call finishes the job:

* ``restoring`` -> the known-good snapshot is restored again (a restore is idempotent);
* ``seeding`` -> the seeding is completed from the slot's manifest, which holds the
  version and commit of the data: the manifest is the source of truth, and the run that
  started the seeding stays ``promoted_by``.

Callers (the plays) hold the recipe's lock (:mod:`._lock`); nothing here locks.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils import _faults
from ansible_collections.coopcloud.ci.plugins.module_utils._app import apply_deploy, plan_deploy
from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import (
    DEFAULT_DEPLOY_TIMEOUT,
    Driver,
    get_driver,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    new_run_id,
    stack_name,
    validate_recipe,
    validate_run_id,
    validate_state_dir,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._overlay import (
    OVERLAY,
    Overlay,
    decide,
    mechanism,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import RecipeRepo
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import (
    Registry,
    describe_status,
    status_change,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._remote import (
    NodeError,
    RemoteAppSnapshot,
    node_by_hostname,
    node_client,
    pinned_node,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._secretkey import SecretKey
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    AppSnapshot,
    SnapshotError,
    SnapshotStore,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import StateError
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    deployed_commit,
    deployed_version,
)

PURPOSES = ("deployed", "quick")
#: Statuses that mean "not at rest, and the data may not be the known-good".
UNSETTLED = frozenset({"restoring", "seeding"})

# Crash points (tests/reliability/test_crashes.py kills the whole play at each).
P_STATUS_SET = _faults.register(
    "canonical.status-set", "deployed: status quick/deployed written, nothing deployed yet"
)
P_UNDEPLOYED = _faults.register(
    "canonical.undeployed", "idle: the app undeployed (volumes kept), nothing restored yet"
)
P_RESTORING = _faults.register(
    "canonical.restoring", "idle: undeployed and status restoring written, nothing restored yet"
)
P_RESTORED = _faults.register(
    "canonical.restored", "idle: the known-good restored, status not yet idle"
)
P_SEEDING = _faults.register(
    "canonical.seeding", "seeded: status seeding written, the app not yet undeployed"
)
P_SEED_SECRETS = _faults.register(
    "canonical.seed-secrets",
    "seeded: undeployed and the canonical's old secrets removed, the slot not yet restored",
)
P_SEED_RESTORED = _faults.register(
    "canonical.seed-restored", "seeded: the slot restored into the volumes, registry not yet seeded"
)


class CanonicalError(CcciError, RuntimeError):
    """A canonical operation cannot go on. The message is one sentence for the user."""


def placement(node: str | None) -> list[str]:
    """The placement constraints that pin a canonical to the node holding its volumes."""
    return [f"node.id == {node}"] if node else []


def summary(registry: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a diff shows of a registry."""
    if not registry:
        return {}
    return {
        key: registry.get(key)
        for key in ("status", "version", "commit", "snapshot_digest", "promoted_by", "node")
    }


class Canonical:
    """The canonical of ``recipe`` under ``state_dir``.

    ``domain_suffix`` names its domain (``warm-<recipe>.<suffix>``) until a registry
    exists; after that the registry's domain is the canonical's, and a suffix naming
    another domain is refused (``strict``) rather than silently ignored. ``driver`` is a
    :class:`._driver.Driver` (its engine client is used for the volumes too).
    """

    def __init__(
        self,
        state_dir: str,
        recipe: str,
        *,
        domain_suffix: str | None = None,
        driver: Driver | None = None,
        wait_timeout: float = DEFAULT_DEPLOY_TIMEOUT,
        overlay: bool = True,
    ) -> None:
        self.recipe = validate_recipe(recipe)
        self.state_dir = validate_state_dir(state_dir)
        self.suffix = domain_suffix or None
        self.registry = Registry(self.state_dir, self.recipe)
        self.store = SnapshotStore(self.state_dir, self.recipe)
        self.driver = driver or get_driver("stack")
        self.wait_timeout = wait_timeout
        #: Whether a seeding may back the volumes with overlay (ccci_canonical_overlay).
        self.want_overlay = overlay
        self.overlay = Overlay(self.state_dir, self.recipe)
        #: What an operation did so far (for a failure's evidence).
        self.actions: list[str] = []
        #: The pinned node's hostname and engine client, when it is not the node the
        #: engine client talks to (the remote data path, :mod:`._remote`).
        self.remote: tuple[str, Any] | None = None

    # -- reading ---------------------------------------------------------------------------

    def no_canonical(self) -> CanonicalError:
        return CanonicalError(
            f"recipe {self.recipe} has no canonical (no {self.registry.path}): a green cold "
            "run of its latest version seeds it"
        )

    def require(self) -> dict[str, Any]:
        registry = self.registry.load()
        if registry is None:
            raise self.no_canonical()
        return registry

    def domain(self, registry: Mapping[str, Any] | None, *, strict: bool = True) -> str | None:
        """The canonical's domain: the registry's, else ``warm-<recipe>.<suffix>``."""
        asked = canonical_domain(self.recipe, self.suffix) if self.suffix else None
        if registry:
            if strict and asked and asked != registry["domain"]:
                raise CanonicalError(
                    f"the canonical of {self.recipe} lives at {registry['domain']} (its registry "
                    f"{self.registry.path}), not {asked}: give the domain suffix it was seeded "
                    "with, or remove it (state=absent, confirm=true) and let a green cold run "
                    "seed it again"
                )
            return registry["domain"]
        return asked

    def require_domain(self, registry: Mapping[str, Any] | None) -> str:
        domain = self.domain(registry)
        if domain is None:
            raise CanonicalError(
                f"domain_suffix is required: recipe {self.recipe} has no canonical registry yet, "
                f"so its domain warm-{self.recipe}.<domain_suffix> cannot be known"
            )
        return domain

    def secret_key(self, create: bool = True) -> SecretKey:
        return SecretKey(self.state_dir, self.recipe, create=create)

    def app(self, domain: str) -> AppSnapshot:
        if self.remote is not None:  # the data path through that node's engine
            host, engine = self.remote
            return RemoteAppSnapshot(self.driver.client, engine, self.store, domain, host)
        return AppSnapshot(self.driver.client, self.store, domain)

    def local_node(self) -> str | None:
        """The swarm node id of the engine this runs against."""
        info = self.driver.client.info() or {}
        return (info.get("Swarm") or {}).get("NodeID") or None

    def check_node(self, registry: Mapping[str, Any] | None, host: str | None = None) -> str | None:
        """The node the canonical is (to be) pinned to: the registry's, else node ``host``
        (where a first seed's data was taken), else this engine's. A pinned node that is
        gone, down or drained is refused (its data lives there only); one that is not this
        engine's is reached through its own engine (:mod:`._remote`)."""
        here = self.local_node()
        node = (registry or {}).get("node")
        if here and not node and host:
            try:
                node = node_by_hostname(self.driver.client, host, self.recipe)
            except NodeError as exc:
                raise CanonicalError(exc.message) from None
        if node and here:
            try:
                host = pinned_node(self.driver.client, node, self.recipe)["hostname"]
                if node != here:
                    self.remote = (host, node_client(host, self.recipe))
            except NodeError as exc:
                raise CanonicalError(exc.message) from None
        return node or here

    def snapshot(self, verify: bool = False) -> dict[str, Any]:
        """The slot: present, manifest digest, version, commit (and ``verified``)."""
        out: dict[str, Any] = {"present": self.store.exists(), "path": self.store.path}
        if not out["present"]:
            return {**out, "manifest_digest": None, "version": None, "commit": None}
        try:
            manifest = self.store.manifest()
        except SnapshotError as exc:
            return {**out, "manifest_digest": None, "version": None, "commit": None,
                    "error": str(exc)}  # fmt: skip
        out.update(
            manifest_digest=self.store.manifest_digest(),
            version=manifest.get("version"),
            commit=manifest.get("commit"),
            taken_at=manifest.get("taken_at"),
            source=manifest.get("source"),
            volumes=sorted(manifest["volumes"]),
        )
        if verify:
            try:
                self.store.verify()
                out["verified"] = True
            except SnapshotError as exc:
                out.update(verified=False, error=str(exc))
        return out

    def check_consistent(self, registry: Mapping[str, Any]) -> dict[str, Any]:
        """The slot's manifest, when it is the registry's known-good; else one sentence."""
        if not self.store.exists():
            raise CanonicalError(
                f"the known-good snapshot of the canonical of {self.recipe} is missing "
                f"({self.store.manifest_path} does not exist): a green cold run of its latest "
                "version re-seeds it"
            )
        manifest = self.store.manifest()
        digest = self.store.manifest_digest()
        if digest != registry["snapshot_digest"]:
            raise CanonicalError(
                f"the snapshot in {self.store.path} (manifest digest {digest[:12]}, version "
                f"{manifest.get('version')}, taken at {manifest.get('taken_at')}) is not the "
                f"known-good recorded in {self.registry.path} (digest "
                f"{str(registry['snapshot_digest'])[:12]}, version {registry['version']}): a "
                "promotion was interrupted after its snapshot, or the slot was replaced or "
                "edited by hand; run warm_canonical state=seeded to install the slot's "
                "snapshot, or let a green cold run of the latest version re-seed"
            )
        return manifest

    def volume_states(
        self, app: AppSnapshot, manifest: Mapping[str, Any], overlay_digest: str | None = None
    ) -> dict[str, str]:
        """Per snapshot volume: ``equal``, ``differs`` or ``missing`` in the canonical.

        With ``overlay_digest`` (an overlay-backed canonical, whose known-good trees must be
        those of that manifest digest) no data is read: ``differs`` means the run left
        writes in the upper dir, the volume is not this canonical's overlay volume, or the
        trees are not the known-good's.
        """
        found = app.volumes()
        if overlay_digest is not None:
            stale = not self.overlay.matches(overlay_digest, manifest["volumes"])
            return {
                short: "missing" if short not in found
                else "differs" if stale or found[short].options != self.overlay.options(short)
                or self.overlay.written(short) is not None
                else "equal"
                for short in sorted(manifest["volumes"])
            }  # fmt: skip
        out = {}
        for short, entry in sorted(manifest["volumes"].items()):
            info = found.get(short)
            if info is None:
                out[short] = "missing"
            else:
                mount = app.local_mountpoint(info)
                out[short] = "equal" if app.equal(mount, entry) else "differs"
        return out

    def info(self, verify: bool = False) -> dict[str, Any]:
        """Everything about the canonical; never fails because there is none."""
        registry = self.registry.load()
        domain = self.domain(registry, strict=False)
        stack = stack_name(domain) if domain else None
        state = self.driver.state(stack) if stack else None
        slot = self.snapshot(verify)
        node = (registry or {}).get("node")
        return {
            "exists": registry is not None,
            "registry": registry,
            "status": registry["status"] if registry else None,
            "described": describe_status(registry),
            "at_rest": bool(registry and registry["status"] == "idle"),
            "deployed": bool(state and state.services),
            "snapshot": slot,
            "consistent": bool(
                registry
                and slot["manifest_digest"]
                and registry["snapshot_digest"] == slot["manifest_digest"]
            ),
            "domain": domain,
            "stack": stack,
            "node": node,
            "placement": placement(node),
            "services": [s.summary() for s in state.services] if state else [],
            "volumes": [v.summary() for v in state.volumes] if state else [],
            "put_back": self.put_back_of(registry),
        }

    def put_back_of(self, registry: Mapping[str, Any] | None) -> dict[str, Any]:
        """How the known-good is put back after a run: ``{mechanism, reason}``."""
        found = dict((registry or {}).get("put_back") or {})
        if not found:
            found = {"mechanism": mechanism(registry), "reason": None}
            if registry:
                found["reason"] = "seeded before overlay-backed volumes existed"
        return found

    # -- restoring the known-good ------------------------------------------------------------

    def _restore(self, app: AppSnapshot, states: Mapping[str, str]) -> dict[str, Any]:
        """Restore every volume that is not ``equal``. The store verifies every archive
        before it writes anything, and only then creates the volumes that are missing, so
        a corrupt or hostile snapshot leaves no new empty volume behind."""
        todo = [short for short, st in states.items() if st != "equal"]
        if not todo:
            return {"restored": [], "created_volumes": []}
        plan = app.plan_restore(todo, force=True)
        created: list[str] = []

        def create(short: str) -> str:
            mount = app.create_volume(short)
            created.append(f"{app.stack}_{short}")
            self.actions.append(f"created volume {app.stack}_{short}")
            return mount

        app.restore({short: plan["mounts"][short] for short in todo}, create=create)
        self.actions.append(f"restored {', '.join(sorted(todo))} from the known-good snapshot")
        return {"restored": sorted(todo), "created_volumes": created}

    def _put_back(
        self, app: AppSnapshot, manifest: Mapping[str, Any], digest: str, states: Mapping[str, str],
        overlay: bool,
    ) -> dict[str, Any]:  # fmt: skip
        """Make the undeployed canonical's volumes the known-good of ``manifest``: discard
        what runs wrote (overlay; the trees rebuilt from the slot when they are not that
        known-good's), or restore what differs from the snapshot."""
        how = {"mechanism": OVERLAY if overlay else "restore"}
        if not overlay:
            states = dict(states)
            for short, info in app.volumes().items():
                if short in states and info.options.get("type") == OVERLAY:
                    self.driver.client.api.remove_volume(info.name)  # undeployed: ours
                    states[short] = "missing"
            out = self._restore(app, states)
            if self.overlay.remove():
                self.actions.append("removed the known-good trees of overlay volumes")
            return {**out, "put_back": {**how, "volumes": out["restored"]}}
        shorts = sorted(manifest["volumes"])
        out: dict[str, Any] = {"restored": [], "created_volumes": [], "rebuilt": []}
        self.actions.extend(self.overlay.recover())  # what a crashed build or swap left
        if not self.overlay.matches(digest, shorts):
            self.overlay.build(self.store, manifest, digest)
            out["rebuilt"] = shorts
            self.actions.append(f"extracted the known-good trees of {', '.join(shorts)}")
        todo = [s for s, st in states.items() if st != "equal"] if not out["rebuilt"] else shorts
        discarded = self.overlay.discard(todo) if todo else {}
        if todo:
            self.actions.append(f"discarded the writes in {', '.join(todo)}")
        out["created_volumes"] = self.overlay.ensure_volumes(
            self.driver.client, app.stack, app.volumes(), shorts
        )
        out["restored"] = sorted(discarded)  # put back, by discarding what runs wrote
        out["put_back"] = {**how, "volumes": out["restored"],
                           "bytes_discarded": sum(discarded.values())}  # fmt: skip
        return out

    def _undeploy(self, stack: str, *, discard: bool = False) -> None:
        """``discard``: the known-good is put back right after and what the app wrote is
        thrown away, so it needs no clean stop (``_driver.Driver.discarding``)."""
        with self.driver.discarding() if discard else contextlib.nullcontext():
            self.driver.undeploy(stack, self.wait_timeout)
        self.actions.append(f"undeployed {stack}")

    def _set_status(self, status: str, run_id: str) -> None:
        if self.registry.set_status(status, run_id):
            self.actions.append(f"status {status}")

    # -- the states ------------------------------------------------------------------------

    def deployed(
        self,
        run_id: str,
        *,
        purpose: str = "deployed",
        recipes_dir: str = "~/.abra/recipes",
        fetch: bool = True,
        env: Mapping[str, str] | None = None,
        publish: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        check: bool = False,
    ) -> dict[str, Any]:
        """Reattach the canonical at its known-good commit, volumes retained; status ->
        ``purpose``. ``secrets`` (short name -> value) supplies the recipe's
        ``generate=false`` secrets, e.g. an SSO run's OIDC client secret."""
        validate_run_id(run_id)
        if purpose not in PURPOSES:
            raise CanonicalError(f"purpose {purpose!r} is invalid: use deployed or quick")
        registry = self.require()
        domain = self.require_domain(registry)
        stack = stack_name(domain)
        if registry["status"] in UNSETTLED:
            raise CanonicalError(
                f"the canonical of {self.recipe} is not at rest: it is "
                f"{describe_status(registry)}; run warm_canonical state=idle first (it "
                "restores the known-good data)"
            )
        self.check_consistent(registry)
        self.check_node(registry)  # a node gone or drained: stop before any change
        status_changes = status_change(registry, purpose, run_id)
        commit, version = registry["commit"], registry["version"]
        constraints = placement(registry.get("node"))
        repo = RecipeRepo(recipes_dir, self.recipe)
        if fetch:
            repo.fetch()
        tmp = tempfile.mkdtemp(prefix=f"ccci-warm-{self.recipe}-")
        try:
            checkout = repo.checkout(commit, os.path.join(tmp, "checkout"))
            # generated secrets derived from the recipe's key: the values the green cold
            # app whose data this is ran with (_secretkey); generate=false from `secrets`
            plan = plan_deploy(
                self.driver, checkout, domain, commit, env,
                secrets=secrets, publish=publish, constraints=constraints,
                secret_key=self.secret_key(create=not check),
            )  # fmt: skip
            state, settled, same = plan.state, plan.publish, plan.same
            result: dict[str, Any] = {
                "changed": status_changes or not same,
                "deploy": not same,
                "domain": domain,
                "stack": stack,
                "node": registry.get("node"),
                "placement": constraints,
                "published_port": settled["published"] if settled else None,
                "secrets_created": [],
            }
            if check:
                after = dict(registry, status=purpose)
                result.update(
                    services=[s.summary() for s in state.services],
                    volumes=[v.summary() for v in state.volumes],
                    version=version,
                    commit=commit,
                    registry=after,
                    diff={"before": summary(registry), "after": summary(after)},
                )
                if not same:
                    result["secrets_created"] = plan.secrets_to_create
                return result
            # the status first: a crash while deploying leaves it saying what ran
            self._set_status(purpose, run_id)
            _faults.checkpoint(P_STATUS_SET)
            if not same and mechanism(registry) == OVERLAY and not state.services:
                shorts = sorted(self.store.manifest()["volumes"])
                made = self.overlay.ensure_volumes(
                    self.driver.client, stack, {v.short_name: v for v in state.volumes}, shorts
                )
                self.actions.extend(f"created overlay volume {name}" for name in made)
            if not same:
                out = apply_deploy(self.driver, plan, version, self.wait_timeout)
                self.actions.append(f"deployed {stack} at {version}")
                result.update(secrets_created=out["secrets_created"], elapsed=out["elapsed"])
            state = self.driver.state(stack)
            after = self.registry.load()
            result.update(
                services=[s.summary() for s in state.services],
                volumes=[v.summary() for v in state.volumes],
                version=deployed_version(state) or version,
                commit=deployed_commit(state),
                registry=after,
                diff={"before": summary(registry), "after": summary(after)},
            )
            return result
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def idle(
        self, run_id: str, *, restore: bool = True, verify: bool = False, check: bool = False
    ) -> dict[str, Any]:
        """Undeploy (volumes kept); with ``restore`` make the volumes the known-good again.

        With ``verify`` (the nightly sweep) the known-good trees of an overlay-backed
        canonical are read whole against the manifest; one that differs is extracted again
        from its verified archive and named in ``reextracted``.

        A canonical left ``quick`` or ``restoring`` is always restored (its data is not the
        known-good); one left ``seeding`` has its seeding completed from the manifest.
        """
        validate_run_id(run_id)
        registry = self.require()
        if registry["status"] == "seeding":
            result = self.seeded(run_id, check=check, promoted_by=registry.get("status_by"))
            result["completed_seeding"] = True
            return result
        domain = self.require_domain(registry)
        stack = stack_name(domain)
        must_restore = restore or registry["status"] in ("quick", "restoring")
        manifest = None
        if must_restore:
            manifest = self.check_consistent(registry)
            self.check_node(registry)
        state = self.driver.state(stack)
        undeploy = self.driver.undeploy_needed(state)
        app = self.app(domain)
        overlay = mechanism(registry) == OVERLAY
        digest = registry["snapshot_digest"] if overlay else None
        # While services run, the data cannot be compared: a restore is predicted.
        states = (
            self.volume_states(app, manifest, digest)
            if manifest is not None and not state.services
            else {short: "unknown" for short in (manifest or {}).get("volumes", {})}
        )
        restoring = must_restore and (
            registry["status"] != "idle" or any(st != "equal" for st in states.values())
        )
        final_change = registry["status"] != "idle"
        result: dict[str, Any] = {
            "changed": undeploy or restoring or final_change,
            "domain": domain,
            "stack": stack,
            "undeployed": undeploy,
            "restore": must_restore,
            "volume_states": states,
            "restored": [],
            "created_volumes": [],
            "completed_seeding": False,
            "put_back": self.put_back_of(registry),
            "reextracted": [],
        }
        if check:
            after = dict(registry, status="idle")
            predicted = [s for s, st in states.items() if st != "equal"] if restoring else []
            result.update(
                restored=predicted,
                registry=after,
                diff={"before": summary(registry), "after": summary(after)},
            )
            return result
        if restoring and registry["status"] == "idle":
            # idle data that differs: say so before touching it
            self._set_status("restoring", run_id)
        if undeploy:
            self._undeploy(stack, discard=must_restore)
            _faults.checkpoint(P_UNDEPLOYED)
        if must_restore:
            if registry["status"] != "idle":
                self._set_status("restoring", run_id)
            _faults.checkpoint(P_RESTORING)
            if state.services:  # compared only now that nothing writes to them
                states = self.volume_states(app, manifest, digest)
                result["volume_states"] = states
            if verify and overlay and self.overlay.matches(digest, manifest["volumes"]):
                # the trees first: a re-extracted tree's volume is then put back afresh
                trees = self.overlay.verify(manifest)
                bad = sorted(short for short, st in trees.items() if st != "equal")
                if bad:
                    self.overlay.reextract(self.store, manifest, bad)
                    self.actions.append(f"extracted the known-good trees of {', '.join(bad)} again")
                    states = {s: "differs" if s in bad else st for s, st in states.items()}
                result["reextracted"] = bad
            done = self._put_back(app, manifest, registry["snapshot_digest"], states, overlay)
            result.update(done, put_back={**result["put_back"], **done["put_back"]})
            _faults.checkpoint(P_RESTORED)
        self._set_status("idle", run_id)
        after = self.registry.load()
        result.update(registry=after, diff={"before": summary(registry), "after": summary(after)})
        return result

    def seeded(
        self, run_id: str, *, check: bool = False, promoted_by: str | None = None
    ) -> dict[str, Any]:
        """Install the slot's current snapshot as the canonical's known-good.

        Undeploys the canonical if it runs, status ``seeding``, restores the snapshot into
        its volumes (created when missing), then records version and commit from the
        manifest, ``promoted_by`` (default ``run_id``) and the manifest digest; ``idle``.
        """
        validate_run_id(run_id)
        promoted_by = validate_run_id(promoted_by or run_id)
        registry = self.registry.load()
        domain = self.require_domain(registry)
        stack = stack_name(domain)
        if not self.store.exists():
            raise CanonicalError(
                f"there is no snapshot to seed the canonical of {self.recipe} from: "
                f"{self.store.manifest_path} does not exist; take one of the green cold app "
                "first (volume_snapshot state=present)"
            )
        manifest = self.store.manifest()
        digest = self.store.manifest_digest()
        version, commit = manifest.get("version"), manifest.get("commit")
        if not version or not commit:
            raise CanonicalError(
                f"the snapshot manifest {self.store.manifest_path} records no "
                f"{'version' if not version else 'commit'}: a known-good needs both; take the "
                "snapshot with version and commit"
            )
        node = self.check_node(registry, manifest.get("node"))
        state = self.driver.state(stack)
        undeploy = self.driver.undeploy_needed(state)
        app = self.app(domain)
        drivers = {v.short_name: v.driver for v in state.volumes}
        put_back = decide(self.driver.client, self.state_dir, node, drivers, self.want_overlay)
        overlay = put_back["mechanism"] == OVERLAY
        states = (
            self.volume_states(app, manifest, digest if overlay else None)
            if not state.services
            else {short: "unknown" for short in manifest["volumes"]}
        )
        same = bool(
            registry
            and registry["snapshot_digest"] == digest
            and registry["status"] == "idle"
            and registry.get("node") == node
            and self.put_back_of(registry)["mechanism"] == put_back["mechanism"]
            and not undeploy
            and all(st == "equal" for st in states.values())
        )
        after_preview = {
            **(registry or {}),
            "status": "idle",
            "version": version,
            "commit": commit,
            "snapshot_digest": digest,
            "promoted_by": (registry or {}).get("promoted_by") if same else promoted_by,
            "node": node,
        }
        result: dict[str, Any] = {
            "changed": not same,
            "domain": domain,
            "stack": stack,
            "node": node,
            "placement": placement(node),
            "undeployed": undeploy,
            "volume_states": states,
            "restored": [],
            "created_volumes": [],
            "removed_secrets": [],
            "manifest_digest": digest,
            "version": version,
            "commit": commit,
            "put_back": put_back,
        }
        if same or check:
            if check and not same:
                result["restored"] = [s for s, st in states.items() if st != "equal"]
            after = registry if same else after_preview
            result.update(
                registry=after, diff={"before": summary(registry), "after": summary(after)}
            )
            return result
        if registry is not None:
            self._set_status("seeding", promoted_by if registry["status"] == "seeding" else run_id)
            _faults.checkpoint(P_SEEDING)
        if undeploy:
            self._undeploy(stack)
        # The secrets go with the data: those of the old known-good are removed, and the
        # next deploy makes them again from the recipe's key, as the cold app did. A crash
        # from here on leaves the status seeding, and the next idle or seeded redoes it.
        result["removed_secrets"] = self.driver.remove_secrets(stack)
        if result["removed_secrets"]:
            self.actions.append(f"removed the secrets of {stack}")
        _faults.checkpoint(P_SEED_SECRETS)
        if state.services:  # compared only now that nothing writes to them
            states = self.volume_states(app, manifest, digest if overlay else None)
            result["volume_states"] = states
        done = self._put_back(app, manifest, digest, states, overlay)
        result.update(done, put_back={**put_back, **done["put_back"]})
        _faults.checkpoint(P_SEED_RESTORED)
        after = self.registry.seed(
            domain, version, commit, promoted_by=promoted_by, snapshot_digest=digest, node=node,
            put_back=put_back,
        )  # fmt: skip
        self.actions.append(f"seeded {version} ({commit[:12]}), promoted by {promoted_by}")
        result.update(registry=after, diff={"before": summary(registry), "after": summary(after)})
        return result

    def absent(self, *, confirm: bool = False, check: bool = False) -> dict[str, Any]:
        """Remove the canonical's app, volumes and secrets (by namespace label), its
        snapshot and its registry - only with ``confirm``."""
        if confirm is not True:
            raise CanonicalError(
                f"refusing to remove the canonical of {self.recipe} (its app, volumes, secrets, "
                "known-good snapshot and registry) without confirm=true"
            )
        try:
            registry = self.registry.load()
        except StateError:
            registry = None  # an unreadable registry is removed all the same
        domain = self.domain(registry, strict=False)
        stack = stack_name(domain) if domain else None
        state = self.driver.state(stack) if stack else None
        app_left = bool(state is not None and self.driver.remove_needed(state))
        snapshot_left = self.store.exists() or any(
            os.path.lexists(p) for p in (self.overlay.root, self.overlay.scratch)
        )
        registry_left = self.registry.exists()
        key_left = os.path.lexists(self.secret_key().directory)
        result: dict[str, Any] = {
            "changed": app_left or snapshot_left or registry_left or key_left,
            "domain": domain,
            "stack": stack,
            "removed": {},
            "registry": None,
            "diff": {"before": summary(registry), "after": {}},
        }
        if check:
            result["removed"] = {
                "app": app_left,
                "snapshot": snapshot_left,
                "registry": registry_left,
                "secrets_key": key_left,
            }
            return result
        removed: dict[str, Any] = {}
        if app_left:
            removed.update(self.driver.remove(stack, self.wait_timeout)["removed"])
            self.actions.append(f"removed {stack} with its volumes and secrets")
        if os.path.isdir(self.store.base):
            removed["snapshot"] = self.store.remove()
            if removed["snapshot"]:
                self.actions.append(f"removed {self.store.path}")
        if self.overlay.remove():  # the snapshot's extracted trees go with it
            removed["snapshot"] = True
            self.actions.append("removed the known-good trees and overlay scratch dirs")
        removed["secrets_key"] = self.secret_key().remove()
        if removed["secrets_key"]:
            self.actions.append(f"removed the secrets key of {self.recipe}")
        removed["registry"] = self.registry.remove(confirm=True)
        result["removed"] = removed
        return result


def default_run_id(run_id: str | None) -> str:
    """The given run id, validated, or a new random one (an operator's ad-hoc call)."""
    return validate_run_id(run_id) if run_id else new_run_id()
