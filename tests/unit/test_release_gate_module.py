"""release_gate's main() over real git recipe repositories (no docker)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.modules import run_main
from support.recipes import commit, git, init_repo

from ansible_collections.coopcloud.ci.plugins.modules import release_gate

MIGRATION = "# 1.2.0+1.30\n\nA manual migration of the database is required: run migrate.sh.\n"


@pytest.fixture
def recipes(tmp_path) -> dict:
    """An upstream recipe and its checkout under a recipes dir (origin = upstream)."""
    up = init_repo(tmp_path / "upstream" / "gatey")
    commit(up, "first", {"compose.yml": "version: '3.8'\n"}, tag="1.0.0+1.28")
    commit(
        up,
        "fixes",
        {"releaseNotes/1.1.0+1.29.md": "Bug fixes. No breaking changes.\n"},
        tag="1.1.0+1.29",
    )
    # the older release/<version> form
    commit(up, "db", {"release/1.2.0+1.30": MIGRATION}, tag="1.2.0+1.30")
    commit(up, "major", {"compose.yml": "version: '3.8' # 2\n"}, tag="2.0.0+1.30")
    commit(up, "not a version", {"x": "1"}, tag="latest")
    recipes_dir = tmp_path / "recipes"
    recipes_dir.mkdir()
    subprocess.run(
        ["git", "clone", "-q", str(up), str(recipes_dir / "gatey")], check=True, capture_output=True
    )
    return {"upstream": up, "dir": recipes_dir}


def run(args: dict, capsys) -> tuple[int, dict]:
    return run_main(release_gate, args, capsys)


def base(recipes, **kw) -> dict:
    return {"recipe": "gatey", "recipes_dir": str(recipes["dir"]), "fetch": False, **kw}


def test_default_candidate_is_latest_and_a_major_holds(recipes, capsys):
    rc, out = run(base(recipes, current="1.2.0+1.30"), capsys)
    assert rc == 0 and out["changed"] is False
    assert out["candidate"] == "2.0.0+1.30" and out["verdict"] == "held-major"
    assert "recipe major 1 -> 2" in out["reasons"][0]
    assert out["alert"]["kind"] == "held-major"
    assert out["alert"]["target"] == "gatey"
    assert (out["alert"]["attempted"], out["alert"]["last_good"]) == ("2.0.0+1.30", "1.2.0+1.30")
    assert "recipe major 1 -> 2" in out["alert"]["notes"]
    assert out["fetched"] is False


def test_minor_upgrade_with_harmless_notes_proceeds(recipes, capsys):
    rc, out = run(base(recipes, current="1.0.0+1.28", candidate="1.1.0+1.29"), capsys)
    assert rc == 0 and out["verdict"] == "proceed"
    assert out["reasons"] == [] and out["notes"] == {} and "alert" not in out
    assert out["versions_checked"] == ["1.1.0+1.29"]


def test_manual_migration_in_old_release_form_holds_with_notes(recipes, capsys):
    args = base(recipes, current="1.0.0+1.28", candidate="1.2.0+1.30", target="kc")
    rc, out = run(args, capsys)
    assert rc == 0 and out["verdict"] == "held-manual-migration"
    assert out["versions_checked"] == ["1.1.0+1.29", "1.2.0+1.30"]
    assert out["notes"] == {"1.2.0+1.30": MIGRATION}
    assert out["matched_phrases"] == {"1.2.0+1.30": ["manual migration"]}
    assert out["alert"]["target"] == "kc"
    assert "run migrate.sh" in out["alert"]["notes"]
    assert out["notes_text"].startswith("## 1.2.0+1.30")


def test_accept_lets_the_held_version_through(recipes, capsys):
    args = base(recipes, current="1.1.0+1.29", candidate="1.2.0+1.30", accept="1.2.0+1.30")
    rc, out = run(args, capsys)
    assert rc == 0 and out["verdict"] == "proceed" and out["accepted"] is True
    assert "alert" not in out and out["notes"]


def test_check_mode_gives_the_same_answer(recipes, capsys):
    args = base(recipes, current="1.1.0+1.29", candidate="1.2.0+1.30")
    _, real = run(args, capsys)
    rc, checked = run({**args, "_ansible_check_mode": True}, capsys)
    assert rc == 0 and checked["changed"] is False
    assert {k: checked[k] for k in real if k != "invocation"} == {
        k: real[k] for k in real if k != "invocation"
    }


def test_fetch_sees_a_new_upstream_tag_and_notes_added_after_the_tag(recipes, capsys):
    up = recipes["upstream"]
    commit(up, "2.1", {"compose.yml": "version: '3.8' # 2.1\n"}, tag="2.1.0+1.31")
    # notes for 2.1.0 land on main after the tag was cut
    commit(up, "notes", {"releaseNotes/2.1.0+1.31.md": "Before upgrading, back up the db.\n"})
    rc, out = run(base(recipes, current="2.0.0+1.30"), capsys)
    assert rc == 0 and out["candidate"] == "2.0.0+1.30" and out["verdict"] == "noop"
    rc, out = run(base(recipes, current="2.0.0+1.30", fetch=True), capsys)
    assert rc == 0 and out["fetched"] is True
    assert out["candidate"] == "2.1.0+1.31"
    assert out["verdict"] == "held-manual-migration"
    assert out["matched_phrases"] == {"2.1.0+1.31": ["before upgrading"]}
    # the shared checkout's HEAD did not move
    assert git(recipes["dir"] / "gatey", "log", "-1", "--format=%s") == "not a version"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"recipe": "Bad/Name"}, "recipe name 'Bad/Name' is invalid"),
        ({"recipe": "missing"}, "recipe 'missing' has no checkout at"),
        ({"current": "latest"}, "current version 'latest' is not a recipe version"),
        ({"candidate": "main"}, "candidate version 'main' is not a recipe version"),
    ],
)
def test_bad_input_fails_with_one_clear_sentence(recipes, capsys, args, says):
    rc, out = run({**base(recipes, current="1.0.0+1.28"), **args}, capsys)
    assert rc == 1 and out["failed"] is True and out["changed"] is False
    assert says in out["msg"]


def test_recipe_without_version_tags_fails_clearly(tmp_path, capsys):
    repo = init_repo(tmp_path / "r" / "notags")
    commit(repo, "only", {"compose.yml": "x\n"}, tag="latest")
    rc, out = run(
        {
            "recipe": "notags",
            "recipes_dir": str(tmp_path / "r"),
            "current": "1.0.0",
            "fetch": False,
        },
        capsys,
    )
    assert rc == 1 and "has no version tags: give a candidate version" in out["msg"]


def test_fetch_failure_carries_gits_evidence(recipes, capsys):
    git(recipes["dir"] / "gatey", "remote", "set-url", "origin", str(Path("/nonexistent/up")))
    rc, out = run(base(recipes, current="1.0.0+1.28", fetch=True), capsys)
    assert rc == 1 and "could not fetch recipe 'gatey'" in out["msg"]
    assert out["rc"] != 0 and "nonexistent" in out["stderr"]


LG = {"version": "1.1.0+1.29", "commit": "a" * 40, "attempt": None, "failed": None}
RUNS = {"state": "deployed", "version": "1.1.0+1.29", "commit": "a" * 40}


def test_reconcile_asks_the_gate_and_returns_the_plan(recipes, capsys):
    observed = {"running": RUNS, "healthy": True, "last_good": LG}
    rc, out = run(base(recipes, candidate="1.2.0+1.30", reconcile=observed), capsys)
    assert rc == 0, out
    assert (out["current"], out["verdict"]) == ("1.1.0+1.29", "held-manual-migration")
    assert out["reconcile"]["plan"] == "hold" and out["alert"]["kind"] == "held-manual-migration"
    rc, out = run(
        base(recipes, candidate="1.2.0+1.30", accept="1.2.0+1.30", reconcile=observed), capsys
    )
    assert out["verdict"] == "proceed" and out["reconcile"]["plan"] == "upgrade"
    assert out["reconcile"]["deploy"] == {"version": "1.2.0+1.30", "ref": "1.2.0+1.30"}


def test_reconcile_without_a_version_to_move_from_skips_the_gate(recipes, capsys):
    gone = {"state": "undeployed", "version": None, "commit": None}
    rc, out = run(base(recipes, reconcile={"running": gone, "last_good": None}), capsys)
    assert rc == 0, out
    assert out["verdict"] is None and out["versions_checked"] == [] and "alert" not in out
    assert out["reconcile"]["plan"] == "install"
    assert out["reconcile"]["deploy"]["version"] == "2.0.0+1.30"


def test_current_or_reconcile_is_required_not_both(recipes, capsys):
    rc, out = run(base(recipes), capsys)
    assert rc == 1 and "current" in out["msg"] and "reconcile" in out["msg"]
    observed = {"running": RUNS, "healthy": True, "last_good": LG}
    rc, out = run(base(recipes, current="1.1.0+1.29", reconcile=observed), capsys)
    assert rc == 1 and "mutually exclusive" in out["msg"]
