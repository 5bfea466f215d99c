"""The collection's modules run here, in a fork of Ansible's worker, as the stock path runs them.

One play, run twice through ansible-runner at -vvv: as the CI host runs it (local
connection, the controller's interpreter: modules run here) and with
``ccci_modules_here: false`` (the stock AnsiballZ path, a second Python per task). It
covers what could differ between the two: the task's ``environment:``, check mode, a
change and its idempotent repeat, a warning, a failure with its evidence, a ``no_log``
secret. Each path gives the same results, and the secret appears in neither output nor
artifacts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.ansible import dump, run_play

from ansible_collections.coopcloud.ci.plugins.module_utils._state import init_state_dir

ROOT = Path(__file__).resolve().parents[2]
SECRET = "hunter2-in-the-worker"  # a test value that must never be printed
#: Keys whose values differ between two runs of the same task (times, the play's process).
VOLATILE = {"elapsed", "waited", "since", "pid", "start"}


def _play(state_dir: Path, recipes_dir: Path, catalog_dir: Path) -> list:
    state = {"state_dir": str(state_dir)}
    lock = {**state, "recipe": "custom-html", "run_id": "a1b2c3", "timeout": 5}
    return [
        {
            "name": "modules here and there",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "status, the catalog from the environment",
                    "coopcloud.ci.warm_status": state,
                    "environment": {"CCCI_CATALOG_DIR": str(ROOT / "catalog")},
                },
                {
                    "name": "the catalog, with a broken entry",
                    "coopcloud.ci.catalog_entry": {"catalog_dir": str(catalog_dir)},
                },
                {
                    "name": "take the lock in check mode",
                    "coopcloud.ci.warm_lock": lock,
                    "check_mode": True,
                },
                {"name": "take the lock", "coopcloud.ci.warm_lock": lock},
                {"name": "take the lock again", "coopcloud.ci.warm_lock": lock},
                {
                    "name": "give the lock back",
                    "coopcloud.ci.warm_lock": {**lock, "state": "released"},
                },
                {
                    "name": "a ref of a recipe that is not there",
                    "coopcloud.ci.recipe_ref": {
                        "recipe": "nowhere",
                        "recipes_dir": str(recipes_dir),
                        "fetch": False,
                    },
                    "ignore_errors": True,
                },
                {
                    "name": "a realm on a Keycloak that does not answer",
                    "coopcloud.ci.keycloak_realm": {
                        "keycloak_url": "http://127.0.0.1:9",
                        "admin_password": SECRET,
                        "recipe": "custom-html",
                        "run_id": "a1b2c3",
                        "retries": 0,
                        "timeout": 2,
                    },
                    "ignore_errors": True,
                },
            ],
        }
    ]


def _comparable(value):
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The play's result on each path, each with a fresh state dir of its own."""
    results = {}
    # "false" as `-e ccci_modules_here=false` gives it: a string, not a bool
    for path, here in (("here", True), ("stock", "false")):
        base = tmp_path_factory.mktemp(path)
        init_state_dir(str(base / "state"))
        (base / "recipes").mkdir()
        (base / "catalog" / "Not A Recipe").mkdir(parents=True)
        play = _play(base / "state", base / "recipes", base / "catalog")
        results[path] = (run_play(play, {"ccci_modules_here": here}, flags="-vvv"), base)
    return results


def test_modules_run_here_only_when_they_can(both):
    here, stock = both["here"][0], both["stock"][0]
    assert here.rc == 0, dump(here)
    assert stock.rc == 0, dump(stock)
    # The stock path starts a Python per module task; here, none is started.
    assert stock.stdout.count("EXEC /bin/sh -c") >= 7, stock.stdout[-3000:]
    assert "EXEC /bin/sh -c" not in here.stdout, here.stdout[-3000:]


def test_each_path_gives_the_same_results(both):
    for path in ("here", "stock"):
        result, _ = both[path]
        status = result.task("status, the catalog from the environment")
        assert Path(status["status"]["catalog_dir"]).resolve() == (ROOT / "catalog").resolve()
        assert result.task("take the lock in check mode")["changed"] is True
        assert result.task("take the lock")["changed"] is True  # check mode wrote nothing
        assert result.task("take the lock again")["changed"] is False
        assert result.task("give the lock back")["changed"] is True
        catalog = result.task("the catalog, with a broken entry")
        assert catalog["recipes"] == [] and "not a recipe name" in str(catalog["errors"]), catalog
        warned = [
            line
            for line in result.stdout.splitlines()
            if line.startswith("[WARNING]: ") and "Not A Recipe: the folder name" in line
        ]
        assert len(warned) == 1, result.stdout[-3000:]
        events = {task["task"]: task["event"] for task in result.tasks}
        missing = result.task("a ref of a recipe that is not there")
        assert events["a ref of a recipe that is not there"] == "runner_on_failed"
        assert "recipe 'nowhere' has no checkout" in missing["msg"], missing
        realm = result.task("a realm on a Keycloak that does not answer")
        assert events["a realm on a Keycloak that does not answer"] == "runner_on_failed"
        assert "Keycloak at http://127.0.0.1:9 is unreachable" in realm["msg"], realm
    names = [t["task"] for t in both["here"][0].tasks]
    assert names == [t["task"] for t in both["stock"][0].tasks]
    for name in names:
        here = _comparable(both["here"][0].task(name))
        stock = _comparable(both["stock"][0].task(name))
        if name.startswith("status"):  # the state dir and the moment differ by design
            here, stock = here["changed"], stock["changed"]
        else:
            here, stock = (str(here).replace(str(both["here"][1]), "<base>"),
                           str(stock).replace(str(both["stock"][1]), "<base>"))  # fmt: skip
        assert here == stock, f"{name}:\n here  {here}\n stock {stock}"


def test_a_no_log_secret_is_never_shown(both):
    for result, _ in both.values():
        assert SECRET not in result.stdout
        assert SECRET not in str(result.tasks)
