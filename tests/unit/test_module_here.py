"""plugin_utils.module_here: a module run in a forked child, as a command's rc, stdout, stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.coopcloud.ci.plugins.plugin_utils import module_here

MODULES = {
    "here_ok": (
        "import os, sys\n"
        "print(sys.stdin.read() == '')\n"  # the child reads nothing from the worker
        "print(os.environ['CCCI_HERE_PROBE'])\n"
        "os.write(2, b'to stderr\\n')\n"
        "raise SystemExit(0)\n"
    ),
    "here_raises": "raise RuntimeError('the module broke')\n",
    "here_killed": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "here_exits_3": "import sys\nsys.exit(3)\n",
}


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modules")
    for name, source in MODULES.items():
        (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    yield
    sys.path.remove(str(folder))


def run(name: str, environment: dict | None = None):
    return module_here._fork_module(name, b'{"ANSIBLE_MODULE_ARGS": {}}', environment or {})


def test_output_exit_and_environment_are_the_childs(modules):
    assert "CCCI_HERE_PROBE" not in os.environ
    rc, stdout, stderr = run("here_ok", {"CCCI_HERE_PROBE": 42})
    assert (rc, stdout, stderr) == (0, "True\n42\n", "to stderr\n")
    assert "CCCI_HERE_PROBE" not in os.environ  # set in the child only


def test_an_exception_is_a_failed_result_like_the_wrappers(modules):
    rc, stdout, _ = run("here_raises")
    assert rc == 1
    result = json.loads(stdout)
    assert result["failed"] is True
    assert "the module broke" in json.dumps(result)


def test_a_killed_module_and_an_exit_status_are_told(modules):
    assert run("here_killed")[0] == -9
    assert run("here_exits_3")[0] == 3


def test_a_module_that_cannot_be_found_fails_in_the_child(modules):
    rc, stdout, _ = run("no_such_module_here")
    assert rc == 1
    assert "no_such_module_here" in stdout


@pytest.mark.parametrize(
    ("value", "on"),
    [(True, True), (False, False), ("false", False), ("no", False), ("True", True), (1, True)],
)
def test_the_switch_reads_booleans_and_their_strings(value, on):
    assert module_here.switch_on(value) is on


@pytest.mark.parametrize("value", ["maybe", "flase", 2, ""])
def test_the_switch_refuses_anything_else_with_one_message(value):
    from ansible.errors import AnsibleActionFail

    with pytest.raises(AnsibleActionFail) as err:
        module_here.switch_on(value)
    assert str(err.value).startswith("ccci_modules_here must be true or false")
    assert repr(value) in str(err.value)


def test_preload_imports_what_a_module_imports_and_not_the_module(tmp_path):
    """In a fresh interpreter, as the controller is before it forks its first worker."""
    code = (
        "import json, sys\n"
        "from ansible_collections.coopcloud.ci.plugins.plugin_utils import module_here\n"
        "mod = 'ansible_collections.coopcloud.ci.plugins.modules.volume_marker'\n"
        "dep = 'ansible_collections.coopcloud.ci.plugins.module_utils._volume_files'\n"
        "before = dep in sys.modules\n"
        "module_here.preload(mod)\n"
        "module_here.preload('ansible_collections.other.ns.plugins.modules.x')\n"
        "module_here.preload('ansible_collections.coopcloud.ci.plugins.modules.no_such')\n"
        "print(json.dumps([before, dep in sys.modules, mod in sys.modules,\n"
        "  any(m.startswith('ansible_collections.other') for m in sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert json.loads(out.stdout) == [False, True, False, False]
