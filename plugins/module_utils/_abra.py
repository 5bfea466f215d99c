# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The abra deploy driver. PRIVATE to the collection.

The operations of :class:`._driver.Driver` through ``abra`` command lines; what they
share with the stack driver (secrets, the labels overlay, the deploy result and the
convergence wait) is in :mod:`._driver`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping

from ansible_collections.coopcloud.ci.plugins.module_utils._driver import (
    DEFAULT_REMOVE_TIMEOUT,
    Driver,
    DriverError,
    Runner,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import read_stack


class AbraDriver(Driver):
    """The same operations through ``abra`` (https://docs.coopcloud.tech/abra/); its
    command lines, and the abra documentation each flag comes from, are in
    ``docs/abra-driver.md``. Flags always come before the positional arguments (abra's
    older CLI stops parsing flags at the first argument).

    Every app has one ``ABRA_DIR``, ``<abra_root>/<stack>``, found again from the app's
    stack name by every command (deploy, undeploy, remove: each task of a play builds a
    new driver): ``recipes/<recipe>`` links to the per-run checkout (a chaos deploy ships
    what is checked out there, and concurrent runs must not share one checkout) and
    ``servers/<server>/<domain>.env`` is the app env, which undeploy and remove need to
    find the app. :meth:`remove` deletes that directory with the app. ``abra_root``
    defaults to ``$CCCI_ABRA_ROOT``, else ``<tmp>/ccci-abra``. Secrets named as abra
    names them (``<stack>_<name>_<version>``) are inserted with ``abra app secret insert
    -f`` from a ``0600`` file in the app's ``ABRA_DIR``, removed at once, so no value is
    on a command line; others (a name the compose file gives) through the Docker SDK.
    """

    name = "abra"

    def __init__(
        self,
        client=None,
        runner: Runner | None = None,
        abra: str | None = None,
        server: str = "default",
        abra_root: str | None = None,
        interval: float = 1.0,
    ) -> None:
        super().__init__(client, runner, interval)
        self.abra = abra or os.environ.get("CCCI_ABRA") or "abra"
        self.server = server
        self.abra_root = (
            abra_root
            or os.environ.get("CCCI_ABRA_ROOT")
            or os.path.join(tempfile.gettempdir(), "ccci-abra")
        )

    @staticmethod
    def domain_of(stack: str, env: Mapping[str, str] | None = None) -> str:
        if env and env.get("DOMAIN"):
            return env["DOMAIN"]
        return stack.replace("_", ".")

    def abra_dir(self, stack: str) -> str:
        """The one ``ABRA_DIR`` of the app of ``stack``."""
        return os.path.join(self.abra_root, stack)

    def env_file(self, stack: str) -> str | None:
        """The app env file abra reads for ``stack``, or ``None`` when there is none."""
        servers = os.path.join(self.abra_dir(stack), "servers", self.server)
        try:
            names = sorted(n for n in os.listdir(servers) if n.endswith(".env"))
        except OSError:
            return None
        return os.path.join(servers, names[0]) if names else None

    def deploy_argv(self, domain: str) -> list[str]:
        return [self.abra, "app", "deploy", "-C", "-c", "-D", "-f", "-n", domain]

    def undeploy_argv(self, domain: str) -> list[str]:
        return [self.abra, "app", "undeploy", "-n", domain]

    def remove_argv(self, domain: str) -> list[str]:
        return [self.abra, "app", "remove", "-f", "-n", domain]

    def secret_insert_argv(self, domain: str, name: str, version: str, path: str) -> list[str]:
        """``-f``: the data argument is a file holding the value (abra app secret insert)."""
        return [self.abra, "app", "secret", "insert", "-f", domain, name, version, path]

    @staticmethod
    def secret_parts(stack: str, full: str) -> tuple[str, str] | None:
        """``(name, version)`` of a secret named as abra names it, else ``None``."""
        prefix = f"{stack}_"
        name, _, version = full[len(prefix) :].rpartition("_")
        if not full.startswith(prefix) or not name or not version:
            return None
        return name, version

    def ensure_secrets(self, stack, secrets):
        """Insert the missing ones through abra (see the class); values never logged."""
        if not secrets:
            return []
        existing = {s.name for s in self.client.secrets.list()}
        created = []
        for full in sorted(secrets):
            parts = self.secret_parts(stack, full)
            if full in existing or parts is None:
                if full not in existing:
                    created += super().ensure_secrets(stack, {full: secrets[full]})
                continue
            value = secrets[full]
            if value is None or value == "":
                raise DriverError(f"secret {full} of stack {stack} is missing and has no value")
            domain = self._domain(stack)
            fd, path = tempfile.mkstemp(prefix=".secret-", dir=self.abra_dir(stack))
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(str(value))
                self.run(
                    self.secret_insert_argv(domain, *parts, path), env=self._env(stack),
                    what=f"abra app secret insert of {full}",
                )  # fmt: skip
            finally:
                os.unlink(path)
            created.append(full)
        return created

    def new_argv(self, recipe: str, domain: str, version: str | None = None) -> list[str]:
        argv = [self.abra, "app", "new", "-n", "-s", self.server, "-D", domain, recipe]
        return [*argv, version] if version else argv

    @staticmethod
    def env_file_text(recipe: str, env: Mapping[str, str], version: str | None) -> str:
        lines = [f"TYPE={recipe}:{version}" if version else f"TYPE={recipe}"]
        for key in sorted(env):
            if key in ("TYPE", "RECIPE"):
                continue
            value = str(env[key]).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key}="{value}"')
        return "\n".join(lines) + "\n"

    def prepare_abra_dir(
        self, stack: str, workdir: str, env: Mapping[str, str], version: str | None
    ) -> str:
        """The app's ``ABRA_DIR``: ``recipes/<recipe>`` -> the checkout, plus the env file."""
        recipe = (env.get("TYPE") or env.get("RECIPE") or "").split(":", 1)[0]
        if not recipe:
            raise DriverError(f"the app env of stack {stack} names no recipe (TYPE=)")
        root = self.abra_dir(stack)
        os.makedirs(os.path.join(root, "recipes"), exist_ok=True)
        link = os.path.join(root, "recipes", recipe)
        if os.path.islink(link):
            os.unlink(link)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(workdir), link)
        servers = os.path.join(root, "servers", self.server)
        os.makedirs(servers, exist_ok=True)
        with open(
            os.path.join(servers, f"{self.domain_of(stack, env)}.env"), "w", encoding="utf-8"
        ) as handle:
            handle.write(self.env_file_text(recipe, env, version))
        return root

    def _env(self, stack: str) -> dict[str, str]:
        return {**os.environ, "ABRA_DIR": self.abra_dir(stack)}

    def _domain(self, stack: str) -> str:
        """The app's domain, from the name of its env file (abra's own key for the app)."""
        found = self.env_file(stack)
        if found is None:
            raise DriverError(
                f"abra cannot find the app of stack {stack}: there is no app env file in "
                f"{os.path.join(self.abra_dir(stack), 'servers', self.server)}; it is "
                "written by the abra driver's deploy"
            )
        return os.path.basename(found)[: -len(".env")]

    def launch(self, stack, workdir, files, overlay, env, version):
        domain = self.domain_of(stack, env)
        app_env = dict(env)
        if overlay:
            app_env["COMPOSE_FILE"] = ":".join([*files, overlay])
        self.prepare_abra_dir(stack, workdir, app_env, version)
        return self.deploy_argv(domain), self._env(stack), f"abra app deploy of {domain}"

    def undeploy(self, stack, timeout=DEFAULT_REMOVE_TIMEOUT):
        state = read_stack(self.client, stack)
        if not self.undeploy_needed(state):
            return {"changed": False, "removed": {}}
        domain = self._domain(stack)
        self.run(
            self.undeploy_argv(domain), env=self._env(stack), what=f"abra app undeploy of {domain}"
        )
        self.drop_if_discarding(stack)
        self.wait_gone(stack, timeout)
        return {"changed": True, "removed": {"services": [s.name for s in state.services]}}

    def remove(self, stack, timeout=DEFAULT_REMOVE_TIMEOUT):
        state = read_stack(self.client, stack)
        home = self.abra_dir(stack)
        if not self.remove_needed(state) and not os.path.exists(home):
            return {"changed": False, "removed": {}}
        with self.discarding():
            undeployed = self.undeploy(stack, timeout)
        if self.env_file(stack) is not None:
            domain = self._domain(stack)
            self.run(
                self.remove_argv(domain), env=self._env(stack), what=f"abra app remove of {domain}"
            )
        removed = self.remove_labelled(stack, timeout)
        if os.path.exists(home):
            shutil.rmtree(home, ignore_errors=True)
            removed["abra_dir"] = [home]
        return {"changed": True, "removed": {**undeployed["removed"], **removed}}
