# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deploy one app of a recipe at a commit, idempotently. PRIVATE to the collection.

The one home of "put this recipe's app on the swarm at that commit, unless it already
runs exactly that": :func:`plan_deploy` reads everything (app env, compose secrets, the
stack now, the published port) and decides whether a deploy is needed; :func:`apply_deploy`
runs it through a :class:`._driver.Driver`. :class:`RecipeApp` (the ``recipe_app``
module) and :class:`._canonical.Canonical` (``warm_canonical state=deployed``) both use
them, so the idempotence rule (same commit, same env digest, converged) lives here once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._appenv import (
    AppEnv,
    build_app_env,
    load_compose,
    version_label,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import (
    DEFAULT_DEPLOY_TIMEOUT,
    ENV_LABEL,
    Driver,
    DriverError,
    check_publish,
    compose_services,
    env_digest,
    free_host_port,
    get_driver,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import stack_name
from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import (
    RecipeError,
    RecipeRepo,
    Resolved,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._secretkey import SecretKey
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    StackState,
    converged,
    deployed_commit,
    deployed_version,
)


def with_overlays(compose_files: Sequence[str], overlays: Sequence[str]) -> list[str]:
    """``compose_files`` then each of ``overlays`` not already among them, in order."""
    files = list(compose_files)
    for rel in overlays:
        if os.path.normpath(rel) not in files:
            files.append(os.path.normpath(rel))
    return files


def app_state(state: StackState) -> str:
    if state.services:
        return "deployed"
    if state.volumes or state.secrets:
        return "undeployed"
    return "absent"


def facts(state: StackState) -> dict[str, Any]:
    return {"state": app_state(state), "version": deployed_version(state),
            "commit": deployed_commit(state)}  # fmt: skip


def settle_publish(
    driver: Driver,
    stack: str,
    checkout: str,
    compose_files: Sequence[str],
    asked: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """``publish`` ({service, port, published}) with its host port settled: given, else
    the one the service publishes now (an upgrade keeps its URL), else a free one."""
    if not asked:
        return None
    services, _ = compose_services(checkout, compose_files)
    publish = {"service": asked["service"], "port": asked["port"], "published": 1}
    check_publish(publish, services, stack)
    published = asked.get("published") or driver.published_port(
        stack, asked["service"], asked["port"]
    )
    publish["published"] = published or free_host_port()
    check_publish(publish, services, stack)
    return publish


@dataclass
class DeployPlan:
    """What :func:`plan_deploy` read and decided. ``secrets`` holds values: never log it."""

    stack: str
    checkout: str
    commit: str
    app: AppEnv
    secrets: dict[str, str]
    state: StackState
    publish: dict[str, Any] | None
    constraints: list[str]
    digest: str
    same: bool

    @property
    def secrets_to_create(self) -> list[str]:
        return sorted(self.secrets)


def plan_deploy(
    driver: Driver,
    checkout: str,
    domain: str,
    commit: str,
    env: Mapping[str, str] | None = None,
    *,
    overlays: Sequence[str] = (),
    secrets: Mapping[str, str] | None = None,
    publish: Mapping[str, Any] | None = None,
    constraints: Sequence[str] = (),
    secret_key: SecretKey | None = None,
) -> DeployPlan:
    """Read the app env (with ``overlays`` appended to its compose files), the secrets to
    create, the stack now and the published port; ``same`` when the stack already runs
    ``commit`` with the same env digest and has converged (then no deploy is needed).
    With ``secret_key`` the generated secrets are derived from the recipe's key, so its
    cold apps and its canonical get the same values; ``secrets`` still win."""
    stack = stack_name(domain)
    app = build_app_env(checkout, domain, dict(env or {}))
    if overlays:
        files = with_overlays(app.compose_files, overlays)
        app = build_app_env(checkout, domain, {**(env or {}), "COMPOSE_FILE": ":".join(files)})
    existing = {s.name for s in driver.client.secrets.list()}
    provided = dict(secrets or {})
    if secret_key is not None:  # generated ones derived from the recipe's key (_secretkey)
        provided = {**secret_key.values(app.secrets), **provided}
    values = app.secret_values(provided, existing)
    state = driver.state(stack)
    settled = settle_publish(driver, stack, checkout, app.compose_files, publish)
    digest = env_digest(app.env, app.compose_files, settled, list(constraints))
    same = (
        deployed_commit(state) == commit
        and all(s.labels.get(ENV_LABEL) == digest for s in state.services)
        and converged(state)[0]
    )
    return DeployPlan(
        stack=stack, checkout=checkout, commit=commit, app=app, secrets=values, state=state,
        publish=settled, constraints=list(constraints), digest=digest, same=same,
    )  # fmt: skip


def apply_deploy(
    driver: Driver,
    plan: DeployPlan,
    version: str | None,
    timeout: float = DEFAULT_DEPLOY_TIMEOUT,
) -> dict[str, Any]:
    """Deploy ``plan`` (labelled with its commit, ``version`` and env digest) and wait.
    The driver's :class:`._driver.DriverError` carries ``secrets_created``."""
    return driver.deploy(
        plan.stack, plan.checkout, plan.app.compose_files, plan.app.env, plan.secrets,
        version=version, commit=plan.commit, timeout=timeout,
        labels={ENV_LABEL: plan.digest}, publish=plan.publish,
        **({"constraints": plan.constraints} if plan.constraints else {}),
    )  # fmt: skip


def compose_version(plan: DeployPlan) -> str | None:
    """The version label the recipe's compose files carry, interpolated with the app env."""
    label = version_label(load_compose(plan.checkout, plan.app.compose_files), plan.stack,
                          env=plan.app.env)  # fmt: skip
    return label.version if label else None


class RecipeApp:
    """``recipe_app``: one app at a version or ref, undeployed or removed. Computes changed
    and the diff first; only the side effect is skipped in check mode. ``params`` are the
    module's; the result is ready for ``exit_json``."""

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        check_mode: bool = False,
        diff: bool = False,
        driver: Driver | None = None,
    ) -> None:
        self.params = params
        self.check_mode = check_mode
        self.diff = diff
        self.stack = stack_name(params["domain"])
        self.driver = driver or get_driver(params["driver"])
        self.result: dict[str, Any] = {"changed": False, "stack": self.stack}
        self._tmp: str | None = None

    # -- outcome -------------------------------------------------------------------------

    def finish(self, before: dict, after: dict, state: StackState | None) -> None:
        if state is not None:
            self.result.update(
                services=[s.summary() for s in state.services],
                volumes=[v.summary() for v in state.volumes],
            )
        self.result.update(state=after["state"], version=after["version"],
                           commit=after["commit"])  # fmt: skip
        if self.diff:
            self.result["diff"] = {"before": before, "after": after}

    # -- states --------------------------------------------------------------------------

    def resolve(self) -> Resolved:
        repo = RecipeRepo(self.params["recipes_dir"], self.params["recipe"])
        if self.params["fetch"]:
            repo.fetch()
        version = self.params["version"]
        if version is None:
            return repo.resolve(self.params["ref"])
        tags = repo.version_tags()
        if version not in tags:
            raise RecipeError(
                f"version {version!r} is not a version tag of recipe "
                f"{self.params['recipe']!r}; its versions are: {', '.join(tags) or 'none'}"
            )
        return Resolved(ref=version, commit=repo.commit_of(version), version=version)

    def checkout(self, commit: str) -> str:
        repo = RecipeRepo(self.params["recipes_dir"], self.params["recipe"])
        work_dir = self.params["work_dir"]
        if work_dir is None or self.check_mode:  # check mode leaves work_dir alone
            self._tmp = tempfile.mkdtemp(prefix=f"ccci-{self.params['recipe']}-")
            work_dir = f"{self._tmp}/checkout"
        return repo.checkout(commit, work_dir)

    def secret_key(self) -> SecretKey | None:
        state_dir = self.params.get("secrets_state_dir")
        if not state_dir:
            return None
        return SecretKey(state_dir, self.params["recipe"], create=not self.check_mode)

    def deployed(self) -> None:
        resolved = self.resolve()
        self.result["resolved"] = {"ref": resolved.ref, "commit": resolved.commit,
                                   "version": resolved.version}  # fmt: skip
        checkout = self.checkout(resolved.commit)
        plan = plan_deploy(
            self.driver, checkout, self.params["domain"], resolved.commit, self.params["env"],
            overlays=self.params["overlays"], secrets=self.params["secrets"],
            publish=self.params["publish"], constraints=self.params["constraints"] or (),
            secret_key=self.secret_key(),
        )  # fmt: skip
        if plan.publish:
            self.result["published_port"] = plan.publish["published"]
        # The version an app runs is the tag deployed (abra overwrites the recipe's label
        # with it); the recipe's own label only names a version deployed from a ref.
        version = resolved.version or compose_version(plan)
        before = facts(plan.state)
        after = {"state": "deployed", "version": version, "commit": resolved.commit}
        self.result["secrets_created"] = []
        if plan.same:
            self.finish(before, after, plan.state)
            return
        self.result["changed"] = True
        if self.check_mode:
            self.result["secrets_created"] = plan.secrets_to_create
            self.finish(before, after, None)
            self.result.update(services=[s.summary() for s in plan.state.services],
                               volumes=[v.summary() for v in plan.state.volumes])  # fmt: skip
            return
        try:
            out = apply_deploy(self.driver, plan, version, self.params["wait_timeout"])
        except DriverError as exc:
            # the teardown needs to know which secrets this failed deploy created
            self.result["secrets_created"] = list(getattr(exc, "secrets_created", []))
            raise
        self.result.update(
            secrets_created=out["secrets_created"], cmd=out["cmd"], rc=out["rc"],
            stdout=out["stdout"], stderr=out["stderr"], elapsed=out["elapsed"],
        )  # fmt: skip
        state = self.driver.state(self.stack)
        self.finish(before, facts(state), state)

    def taken_off(self, remove: bool) -> None:
        state = self.driver.state(self.stack)
        before = facts(state)
        needed = self.driver.remove_needed(state) if remove else self.driver.undeploy_needed(state)
        predicted = (
            "absent" if remove else ("undeployed" if before["state"] != "absent" else "absent")
        )
        after = {"state": predicted, "version": None, "commit": None}
        self.result["removed"] = {}
        if not needed:
            self.finish(before, after, state)
            return
        self.result["changed"] = True
        if self.check_mode:
            self.finish(before, after, None)
            kept = [] if remove else [v.summary() for v in state.volumes]
            self.result.update(services=[], volumes=kept)
            return
        timeout = self.params["wait_timeout"]
        out = (
            self.driver.remove(self.stack, timeout)
            if remove
            else self.driver.undeploy(self.stack, timeout)
        )
        self.result["removed"] = out["removed"]
        state = self.driver.state(self.stack)
        self.finish(before, facts(state), state)

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            what = self.params["state"]
            if what == "deployed":
                self.deployed()
            else:
                self.taken_off(remove=what == "absent")
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)
        self.result["elapsed"] = round(time.monotonic() - started, 3)
        return self.result
