# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The glue every module shares. PRIVATE to the collection: no compatibility promises.

One home each for:

- :class:`CcciError`, the root of every error the collection raises on purpose. Its
  message is one sentence for the user; the evidence travels with it (``rc``,
  ``stdout``, ``stderr`` of a command, ``status`` and ``body`` of an HTTP answer, and
  any other facts a module should return on failure).
- :func:`run_module`, the one path from a module's work to ``exit_json`` or
  ``fail_json``: it times the work into ``elapsed`` when asked, keeps ``changed`` a
  bool, and turns any project error (and the OS or Docker errors a module may meet)
  into ``fail_json`` with its evidence, never a bare traceback.
- the shared argument specs (``*_spec()``), each paired with a documentation fragment
  of the same name in ``plugins/doc_fragments/`` (the ``state_dir`` one in
  ``attributes.STATE_DIR``, the others in ``common``).
- :func:`docker_client`, the one Docker SDK client factory, and :func:`require`, which
  fails a module the Ansible way (``missing_required_lib``) when an SDK is missing.
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._engine import (
    fault_sentence,
    unreachable,
)

#: The warm state root when none is given (SPEC §3): the one place this default is
#: written in code. Modules' ``state_dir`` default and ``bin/ccci`` take it from here;
#: the layout under it is ``_state.RecipePaths``.
DEFAULT_STATE_DIR = "/var/lib/ci-warm"

#: Evidence keys an error may carry, in the order they are returned.
EVIDENCE_KEYS = ("cmd", "rc", "stdout", "stderr", "status", "body")


class CcciError(Exception):
    """The root of the collection's errors: one sentence plus its evidence.

    ``rc``/``stdout``/``stderr`` are a command's (``stdout`` and ``stderr`` are returned
    whenever ``rc`` is), ``status``/``body`` an HTTP answer's; ``facts`` holds any other
    key the failing module should return (e.g. the paths it touched). A module may lead
    the sentence with what it was doing (``run_module(prefix=...)``) unless ``standalone``:
    a bad value's sentence names the value and stands alone.
    """

    standalone = False

    def __init__(
        self,
        message: str = "",
        *,
        cmd: list[str] | None = None,
        rc: int | None = None,
        stdout: str = "",
        stderr: str = "",
        status: int | None = None,
        body: str = "",
        **facts: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.cmd = cmd
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.status = status
        self.body = body
        self.facts = facts

    def evidence(self) -> dict[str, Any]:
        """The facts for ``fail_json``: only the keys that carry something."""
        out: dict[str, Any] = {}
        if self.cmd is not None:
            out["cmd"] = self.cmd
        if self.rc is not None:
            out.update(rc=self.rc, stdout=self.stdout or "", stderr=self.stderr or "")
        else:
            for key in ("stdout", "stderr"):
                if getattr(self, key):
                    out[key] = getattr(self, key)
        if self.status is not None:
            out["status"] = self.status
        if self.body:
            out["body"] = self.body
        out.update(self.facts)
        return out


# --- the one module path ----------------------------------------------------------------


def failure(exc: BaseException, prefix: str = "") -> dict[str, Any] | None:
    """``fail_json`` arguments for an error a module may meet, or ``None`` for a bug.

    Project errors keep their sentence and evidence; OS errors name the file; Docker SDK
    and httpx errors say which backend failed.
    """
    lead = f"{prefix}: " if prefix else ""
    if isinstance(exc, CcciError):
        out = {"msg": f"{'' if exc.standalone else lead}{exc}", **exc.evidence()}
        if unreachable(exc.stderr or "") or unreachable(exc.__cause__ or ""):
            out["engine_fault"] = True  # the stages stop the run on it (see _engine)
        return out
    if unreachable(exc):  # before OSError: requests' errors are OSErrors too
        return {"msg": f"{lead}{fault_sentence(exc)}", "engine_fault": True}
    module = type(exc).__module__
    backend = module.startswith(("docker", "requests", "urllib3", "httpx"))
    if isinstance(exc, OSError) and not backend:
        where = f" ({exc.filename})" if exc.filename else ""
        return {"msg": f"{lead}{exc.strerror or exc}{where}", "errno": exc.errno}
    if module.startswith("docker") or module.startswith("requests"):
        out: dict[str, Any] = {"msg": f"{lead}the Docker engine: {exc}"}
        response = getattr(exc, "response", None)
        if response is not None and getattr(response, "status_code", None):
            out["status"] = response.status_code
        return out
    if module.startswith("httpx"):
        return {"msg": f"{lead}{type(exc).__name__}: {exc}"}
    return None


def run_module(
    module: Any,
    work: Callable[[], dict[str, Any]],
    *,
    prefix: str = "",
    elapsed: bool = False,
    diff_when_asked: bool = False,
    on_failure: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Run ``work()`` and exit the module with its result, or fail with one sentence.

    ``work`` returns the result dict (``changed``, ``diff``, ...); check mode is its own
    business (it computes the change first and skips only the side effect). With
    ``elapsed`` the result carries the work's wall time in seconds; with
    ``diff_when_asked`` its ``diff`` is returned only in diff mode (``--diff``). ``on_failure`` adds
    the facts a failed run still returns (what was done before the error). An error that
    is neither the project's nor the OS's nor a backend's is a bug: it fails with its
    traceback in ``exception`` rather than escaping as a bare traceback.
    """
    started = time.monotonic()
    try:
        result = work()
    except Exception as exc:
        args = failure(exc, prefix)
        if args is None:
            args = {
                "msg": f"{prefix + ': ' if prefix else ''}internal error: "
                f"{type(exc).__name__}: {exc}",
                "exception": traceback.format_exc(),
            }
        extra = on_failure() if on_failure else {}
        module.fail_json(**{"changed": False, **extra, **args})
        return
    result = dict(result)
    result["changed"] = bool(result.get("changed", False))
    if diff_when_asked and not module._diff:
        result.pop("diff", None)
    if elapsed:
        result["elapsed"] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


def pick(params: dict[str, Any], *names: str) -> dict[str, Any]:
    """The named module parameters, as keyword arguments for a plain class."""
    return {name: params[name] for name in names}


# --- shared argument specs (each paired with a doc fragment) ----------------------------


def plain_specs(kind: str, *names: str) -> dict[str, Any]:
    """Options of one type with no default and no other setting, e.g. free-text fields."""
    return {name: {"type": kind} for name in names}


def state_spec(choices: list[str], default: str) -> dict[str, Any]:
    """``state``: what the task should leave behind (each module documents its choices)."""
    return {"state": {"type": "str", "default": default, "choices": choices}}


def recipe_spec(required: bool = True) -> dict[str, Any]:
    """``recipe``: fragment ``coopcloud.ci.common.RECIPE`` (required) or ``RECIPE_OPTIONAL``."""
    return {"recipe": {"type": "str", "required": required}}


def run_id_spec(required: bool = False) -> dict[str, Any]:
    """``run_id``: fragment ``coopcloud.ci.common.RUN_ID``."""
    return {"run_id": {"type": "str", "required": required}}


def wait_timeout_spec(default: int = 300) -> dict[str, Any]:
    """``wait_timeout``: fragment ``coopcloud.ci.common.WAIT_TIMEOUT`` (default 300)."""
    return {"wait_timeout": {"type": "int", "default": default}}


def driver_spec() -> dict[str, Any]:
    """``driver``: fragment ``coopcloud.ci.common.DRIVER``."""
    return {"driver": {"type": "str", "default": "stack", "choices": ["stack", "abra"]}}


def state_dir_spec() -> dict[str, Any]:
    """``state_dir``: fragment ``coopcloud.ci.attributes.STATE_DIR``."""
    return {"state_dir": {"type": "path", "default": DEFAULT_STATE_DIR}}


# --- third-party SDKs -------------------------------------------------------------------

#: The pip name of each SDK a module may need, by import name.
_REQUIREMENTS = {"docker": "docker", "httpx": "httpx"}


def require(module: Any, name: str) -> Any:
    """Import the SDK ``name`` or fail the module with Ansible's ``missing_required_lib``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(
            msg=missing_required_lib(_REQUIREMENTS.get(name, name)),
            exception=traceback.format_exc(),
        )
        raise  # fail_json exits; this only satisfies the type checker


def docker_client(module: Any | None = None) -> Any:
    """The one Docker SDK client: the engine of the environment (``DOCKER_HOST`` etc.).

    Given ``module``, a missing SDK fails it with ``missing_required_lib``.
    """
    docker = require(module, "docker") if module is not None else importlib.import_module("docker")
    return docker.from_env()
