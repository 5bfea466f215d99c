# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action behind every module of the collection: run it here without a second Python.

A module task normally costs a new Python process: Ansible packs the module into an
AnsiballZ zip, starts the interpreter, unpacks, and imports ``ansible.module_utils.basic``
and the module's libraries again (about 0.45 s per task on a CI host, most of a quick
run's own overhead; issue 14). When the host is this machine, that second Python is the
one already running: so for a task whose connection is ``local``, without ``become`` or
``async``, whose ``ansible_python_interpreter`` is the controller's own
(``{{ ansible_playbook_python }}``, as ``inventory/local.yml`` sets it), this plugin forks
the worker process Ansible already started for the task and runs the module in the
child, exactly as the AnsiballZ wrapper runs it (same arguments, same serialization
profile, same result parsing), with ``ansible.module_utils.basic``, the modules'
libraries and each module's own imports (its module_utils, :func:`preload`) already
imported here, in the controller, before the workers fork.

The child is a process of its own, as the module's Python was: its environment (the
task's ``environment:``), its globals, its warnings and its exit do not touch the worker.
Any other task (another host, ``delegate_to``, ``become``, ``async``, another
interpreter, or ``ccci_modules_here: false`` on the host) goes the stock way, through
``_execute_module``.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import selectors
import signal
import sys
from contextlib import suppress

# Imported here, in the controller process, so the workers it forks find them loaded.
import ansible.module_utils.basic  # noqa: F401  pylint: disable=unused-import
from ansible.errors import AnsibleActionFail
from ansible.module_utils import _internal
from ansible.module_utils._internal import _traceback
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible.vars.clean import remove_internal_keys

try:
    # The function the AnsiballZ wrapper itself calls to run a module; private to
    # ansible-core (pinned to 2.19 by meta/runtime.yml). Without it, the stock path.
    from ansible.module_utils._internal._ansiballz._loader import run_module
except ImportError:  # pragma: no cover - another ansible-core
    run_module = None

for _library in ("docker", "httpx"):
    # The modules' own libraries, which they import on first use (0.1 s each).
    with suppress(ImportError):
        __import__(_library)

#: The collection's modules declare no metadata, so Ansible serializes their arguments
#: and results with the ``legacy`` profile.
PROFILE = "legacy"

#: Host variable that turns running modules here off (the stock AnsiballZ path).
SWITCH = "ccci_modules_here"


class ModuleHere(ActionBase):
    """The action of each module of the collection (``plugins/action/<module>.py``)."""

    _supports_check_mode = True
    _supports_async = True

    def __init_subclass__(cls, **kwargs):
        # Ansible loads a task's action class in the controller before it forks the
        # worker: each per-module action preloads its module's imports there, once.
        super().__init_subclass__(**kwargs)
        preload(cls.__module__.replace(".plugins.action.", ".plugins.modules.", 1))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        wrap_async = self._task.async_val and not self._connection.has_native_async
        if wrap_async or not self._can_run_here(task_vars):
            result = merge_hash(
                result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async)
            )
            if not wrap_async:
                self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        return merge_hash(result, self._run_here(task_vars))

    def _can_run_here(self, task_vars):
        if run_module is None or self._task.delegate_to or self._play_context.become:
            return False
        if self._connection.transport != "local":
            return False
        if not switch_on(self._templar.template(task_vars.get(SWITCH, True))):
            return False
        interpreter = self._templar.template(task_vars.get("ansible_python_interpreter") or "")
        return bool(interpreter) and os.path.abspath(interpreter) == sys.executable

    def _run_here(self, task_vars):
        """Run the task's module in a fork of this worker; its result, parsed as Ansible does."""
        context = self._shared_loader_obj.module_loader.find_plugin_with_context(
            self._task.action, collection_list=self._task.collections
        )
        module_args = self._task.args.copy()
        self._update_module_args(context.resolved_fqcn, module_args, task_vars)
        environment = {}
        self._compute_environment_string(environment)
        encoder = get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
        params = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}, cls=encoder).encode()
        namespace, name = context.resolved_fqcn.rsplit(".", 1)
        rc, stdout, stderr = _fork_module(
            f"ansible_collections.{namespace}.plugins.modules.{name}", params, environment
        )
        data = self._parse_returned_data({"rc": rc, "stdout": stdout, "stderr": stderr}, PROFILE)
        data.pop("_ansible_suppress_tmpdir_delete", None)
        remove_internal_keys(data)
        for stream in ("stdout", "stderr"):
            if stream in data and f"{stream}_lines" not in data:
                data[f"{stream}_lines"] = (data.get(stream) or "").splitlines()
        return data


def preload(module_fqn: str) -> None:
    """Import what module ``module_fqn`` imports (its module_utils: 20-110 ms a task).

    The module itself is imported and dropped again: the child runs it afresh as
    ``__main__`` (``runpy``), finding its imports loaded. Only the collection's own
    modules, whose imports do no work beyond definitions. A module that cannot be
    imported here is left alone: it fails in its child, with its own error, as before.
    """
    if not module_fqn.startswith("ansible_collections.coopcloud.ci.plugins.modules."):
        return
    if module_fqn in sys.modules:
        return
    with suppress(Exception):  # the task that runs it reports it
        importlib.import_module(module_fqn)
    sys.modules.pop(module_fqn, None)


def switch_on(value) -> bool:
    """``ccci_modules_here`` as a boolean; anything else fails the task with one message.

    ``-e ccci_modules_here=false`` arrives as the string "false", so strings that Ansible
    reads as booleans count; a value that is neither (a typo) is refused, not guessed.
    """
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise AnsibleActionFail(
            f"{SWITCH} must be true or false (it chooses how the collection's modules run), "
            f"not {value!r}"
        ) from None


def _as_a_target():
    """Make this (child) process what a module's own Python is: not the controller.

    Importing the controller flags the shared module_utils as running in the controller:
    a module's warnings would go to the controller's display instead of its result, and
    its tracebacks would follow the controller's settings instead of the task's.
    """
    _internal.is_controller = False
    _traceback._is_traceback_enabled = _traceback._is_module_traceback_enabled


def _fork_module(module_fqn, params, environment):
    """Run one module in a child process; its ``(rc, stdout, stderr)`` as a command's."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: becomes the module's process, and never returns
        code = 1
        try:
            os.close(out_read)
            os.close(err_read)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
            sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
            sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8")
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.environ.update({key: str(value) for key, value in environment.items()})
            _as_a_target()
            try:
                run_module(
                    json_params=params,
                    profile=PROFILE,
                    module_fqn=module_fqn,
                    modlib_path="",
                    extensions={},
                )
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        except BaseException as error:  # the child must end here, whatever happened
            with suppress(BaseException):
                os.write(2, f"coopcloud.ci: the module could not run here: {error!r}\n".encode())
        finally:
            with suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(out_write)
    os.close(err_write)
    chunks = {out_read: [], err_read: []}
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _events in selector.select():
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
                    os.close(key.fd)
    status = os.waitpid(pid, 0)[1]
    return (
        os.waitstatus_to_exitcode(status),
        b"".join(chunks[out_read]).decode("utf-8", "replace"),
        b"".join(chunks[err_read]).decode("utf-8", "replace"),
    )
