"""The collection as a user gets it: the built tarball, installed with ansible-galaxy,
used from a folder with no ansible.cfg; and the documented production install.

No swarm needed: the plays run here stop before anything is deployed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.ansible import ROOT
from support.fixtures import init_state

BIN = Path(sys.executable).parent


# One worker builds and installs the collection once for the module's tests.
pytestmark = pytest.mark.xdist_group("test_packaging")


def clean_env(**more: str) -> dict[str, str]:
    """The environment of a user with no project config: no ANSIBLE_* of the test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CCCI_"))}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **more)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("packaging")
    out = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", tmp, ROOT],
        capture_output=True, text=True, env=clean_env(), cwd=tmp, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    (tarball,) = tmp.glob("coopcloud-ci-*.tar.gz")
    collections = tmp / "collections"
    out = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "-p", collections, tarball],
        capture_output=True, text=True, env=clean_env(), cwd=tmp, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    work = tmp / "work"  # a folder with no ansible.cfg
    work.mkdir()
    return {"tarball": tarball, "collections": collections, "work": work, "tmp": tmp}


def run(installed: dict, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        cwd=installed["work"],
        env=clean_env(ANSIBLE_COLLECTIONS_PATH=str(installed["collections"]), **env),
        timeout=300,
        check=False,
    )


def test_the_tarball_holds_the_collection_only(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
    tops = {name.split("/")[0] for name in names}
    for unwanted in ("Makefile", "bench", "scripts", "tests", "extensions", "pyproject.toml",
                     "requirements-test.txt", ".ansible-lint", "collections", ".git"):  # fmt: skip
        assert unwanted not in tops, sorted(tops)
    assert not [n for n in names if n.startswith("changelogs/fragments")]
    for wanted in ("LICENSE", "README.md", "requirements.txt", "constraints.txt", "bindep.txt",
                   "meta/runtime.yml", "meta/execution-environment.yml",
                   "changelogs/changelog.yaml", "plugins/callback/ci_log.py",
                   "playbooks/status.yml", "bin/ccci", "catalog/README.md"):  # fmt: skip
        assert wanted in names, wanted


def test_the_installed_collection_reads_without_ansible_cfg(installed, tmp_path):
    # every module and the callback, documented
    out = run(installed, "ansible-doc", "-l", "coopcloud.ci")
    assert out.returncode == 0, out.stderr
    for module in ("coopcloud.ci.warm_canonical", "coopcloud.ci.run_record"):
        assert module in out.stdout
    out = run(installed, "ansible-doc", "-t", "callback", "coopcloud.ci.ci_log")
    assert out.returncode == 0 and "progress_interval" in out.stdout, out.stderr

    # status.yml with the default callback: the table one row per line, no escaped string
    state = init_state(tmp_path / "state")
    out = run(installed, "ansible-playbook", "coopcloud.ci.status", "-e", f"ccci_state_dir={state}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "\\n" not in out.stdout
    rows = [line.strip().strip('",') for line in out.stdout.splitlines()]
    assert any(row.startswith("custom-html  ") for row in rows), out.stdout
    assert any(row.startswith("recipe  ") and "last run" in row for row in rows), out.stdout

    # a start error with the CI callback: said once, then the record, the verdict last
    out = run(installed, "ansible-playbook", "coopcloud.ci.cold",
              "-e", "recipe=no-such-recipe", "-e", f"ccci_state_dir={state}",
              "-e", f"ccci_recipes_dir={tmp_path / 'recipes'}",
              "-e", "ccci_domain_suffix=ccci.test", "-e", "ccci_fetch=false",
              ANSIBLE_STDOUT_CALLBACK="coopcloud.ci.ci_log")  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert out.stdout.count("has no checkout") == 1, out.stdout
    assert "docs/guide/first-recipe.md" in out.stdout
    assert lines[-1].startswith("COLD VERDICT: ERROR - no-such-recipe"), out.stdout
    assert lines[-2].startswith(f"record: {state}/runs/")
    assert len(lines) <= 6, out.stdout


@pytest.mark.slow
def test_the_production_install_prints_no_warning(tmp_path):
    """docs/guide/install.md: pip install -c constraints.txt -r requirements.txt in a fresh
    venv; then an ansible command says nothing on stderr (an unpinned transitive package,
    such as a newer cryptography, would print a deprecation warning on every command)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check",
         "-c", ROOT / "constraints.txt", "-r", ROOT / "requirements.txt"],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    for argv in (
        ["ansible", "--version"],
        ["ansible-doc", "-t", "module", "-l", "ansible.builtin"],
    ):
        out = subprocess.run(
            [venv / "bin" / argv[0], *argv[1:]], capture_output=True, text=True, cwd=tmp_path,
            env=clean_env(ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections")), check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stderr == "", out.stderr
