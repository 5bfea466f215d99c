"""Recipe repositories on real git: refs, versions, fetch, per-run checkouts, notes."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
from support.recipes import commit, git, init_repo

from ansible_collections.coopcloud.ci.plugins.module_utils import _recipe
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError
from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import (
    RecipeError,
    RecipeRepo,
    Resolved,
)


@pytest.fixture
def recipes_dir(examples) -> Path:
    """The folder holding the example recipes (made by the ``examples`` fixture)."""
    return Path(examples["custom-html"]["path"]).parent


# --- a repo with an origin --------------------------------------------------------------


@pytest.fixture
def upstream(tmp_path):
    """``upstream`` (a work repo), ``origin.git`` (its bare clone) and ``recipes/app``
    (a clone of the bare one, as abra keeps it), with annotated, lightweight and old tags.
    """
    work = init_repo(tmp_path / "upstream")
    c1 = commit(
        work,
        "first",
        {
            "compose.yml": "services: {}\n",
            "release/v2.4.8": "Old-style notes for v2.4.8.\n",
        },
    )
    git(work, "tag", "v2.4.8")  # lightweight, old style
    c2 = commit(
        work,
        "second",
        {"releaseNotes/1.0.0+1.28.md": "Notes for 1.0.0.\n"},
        tag="1.0.0+1.28",  # annotated
    )
    git(work, "tag", "1.0.1+1.28")  # a second (lightweight) version tag on the same commit
    git(work, "tag", "not-a-version")
    c3 = commit(
        work, "third", {"compose.yml": "services: {app: {}}\n"}, tag="2.0.1+1.0.6-social-amd64"
    )
    bare = tmp_path / "origin.git"
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, capture_output=True
    )
    recipes_dir = tmp_path / "recipes"
    recipes_dir.mkdir()
    subprocess.run(
        ["git", "clone", "-q", str(bare), str(recipes_dir / "app")],
        check=True,
        capture_output=True,
    )
    return {"work": work, "bare": bare, "recipes_dir": recipes_dir, "c1": c1, "c2": c2, "c3": c3}


def _state(path: Path) -> tuple[str, str, str]:
    """HEAD, symbolic HEAD and work-tree status of a checkout."""
    head = git(path, "rev-parse", "HEAD")
    sym = subprocess.run(
        ["git", "-C", str(path), "symbolic-ref", "-q", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    status = git(path, "status", "--porcelain", "--untracked-files=all", "--ignored")
    return head, sym, status


# --- construction -----------------------------------------------------------------------


def test_open_example_and_refuse_non_checkouts(examples, recipes_dir, tmp_path):
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    assert repo.path == examples["custom-html"]["path"]
    with pytest.raises(RecipeError, match=r"recipe 'nope' has no checkout at .*nope"):
        RecipeRepo(str(recipes_dir), "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RecipeError, match="recipe 'plain' has no checkout"):
        RecipeRepo(str(tmp_path), "plain")
    # a folder inside another repository is not a checkout of its own
    (Path(examples["notes"]["path"]) / "sub").mkdir()
    try:
        with pytest.raises(RecipeError, match="not a git repository of its own"):
            RecipeRepo(examples["notes"]["path"], "sub")
    finally:
        (Path(examples["notes"]["path"]) / "sub").rmdir()
    with pytest.raises(ValidationError):
        RecipeRepo(str(recipes_dir), "../notes")


# --- versions and resolve ---------------------------------------------------------------


def test_versions_of_example(examples, recipes_dir):
    html = examples["custom-html"]
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    assert repo.version_tags() == ["1.0.0+1.28", "1.1.0+1.29"]
    assert repo.latest_version() == "1.1.0+1.29"
    assert repo.commit_of("1.0.0+1.28") == html["tags"]["1.0.0+1.28"]
    assert repo.versions_between("1.0.0+1.28", "1.1.0+1.29") == ["1.1.0+1.29"]
    with pytest.raises(RecipeError, match=r"version '9\.9\.9' not found in recipe 'custom-html'"):
        repo.commit_of("9.9.9")


def test_resolve_latest_tag_branch_and_commit(examples, recipes_dir):
    html = examples["custom-html"]
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    latest = repo.resolve(None)
    assert latest == Resolved(ref=None, commit=html["tags"]["1.1.0+1.29"], version="1.1.0+1.29")
    # annotated tag peels to the commit, not the tag object
    tag_object = git(Path(html["path"]), "rev-parse", "refs/tags/1.0.0+1.28")
    assert tag_object != html["tags"]["1.0.0+1.28"]
    assert repo.resolve("1.0.0+1.28") == Resolved(
        "1.0.0+1.28", html["tags"]["1.0.0+1.28"], "1.0.0+1.28"
    )
    assert repo.resolve("broken") == Resolved("broken", html["broken_ref"], None)
    assert repo.resolve("main").commit == html["tags"]["1.1.0+1.29"]
    assert repo.resolve("main").version == "1.1.0+1.29"
    short = html["tags"]["1.0.0+1.28"][:7]
    assert repo.resolve(short) == Resolved(short, html["tags"]["1.0.0+1.28"], "1.0.0+1.28")
    full = html["broken_ref"]
    assert repo.resolve(full).commit == full


def test_resolve_tags_of_every_kind(upstream):
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    assert repo.version_tags() == ["1.0.0+1.28", "1.0.1+1.28", "2.0.1+1.0.6-social-amd64", "v2.4.8"]
    assert repo.latest_version() == "v2.4.8"
    assert repo.resolve("v2.4.8") == Resolved("v2.4.8", upstream["c1"], "v2.4.8")
    # two version tags on one commit: the newest is its version, whichever was asked
    assert repo.resolve("1.0.0+1.28") == Resolved("1.0.0+1.28", upstream["c2"], "1.0.1+1.28")
    assert repo.resolve("not-a-version") == Resolved("not-a-version", upstream["c2"], "1.0.1+1.28")
    assert repo.resolve("2.0.1+1.0.6-social-amd64").commit == upstream["c3"]
    assert repo.versions_at(upstream["c2"]) == ["1.0.0+1.28", "1.0.1+1.28"]


@pytest.mark.parametrize(
    "ref", ["--upload-pack=x", "-x", ";rm -rf /", "a..b", "HEAD@{1}", "main~1", "x^", "a b", ""]
)
def test_hostile_refs_refused_before_git_runs(recipes_dir, monkeypatch, ref):
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    calls = []
    real = _recipe._run_git

    def spy(args, cwd, **kwargs):
        calls.append(args)
        return real(args, cwd, **kwargs)

    monkeypatch.setattr(_recipe, "_run_git", spy)
    with pytest.raises(ValidationError):
        repo.resolve(ref)
    with pytest.raises(ValidationError):
        repo.release_notes(ref)
    assert calls == []


def test_unknown_refs(recipes_dir):
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    for ref in ("no-such-branch", "9.9.9+9", "deadbee", "0" * 40):
        with pytest.raises(
            RecipeError, match=re.escape(f"ref '{ref}' not found in recipe 'custom-html'")
        ):
            repo.resolve(ref)


def test_resolve_without_versions(tmp_path):
    repo_dir = init_repo(tmp_path / "recipes" / "bare-bones")
    head = commit(repo_dir, "only", {"compose.yml": "services: {}\n"})
    git(repo_dir, "tag", "latest")
    repo = RecipeRepo(str(tmp_path / "recipes"), "bare-bones")
    assert repo.version_tags() == []
    assert repo.latest_version() is None
    with pytest.raises(RecipeError, match="has no version tags"):
        repo.resolve(None)
    assert repo.resolve("latest") == Resolved("latest", head, None)


# --- fetch ------------------------------------------------------------------------------


def test_fetch_brings_new_tags_and_origin_only_branches(upstream):
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    work = upstream["work"]
    git(work, "checkout", "-q", "-b", "feature")
    feature = commit(work, "feature work", {"feature.txt": "x\n"})
    git(work, "checkout", "-q", "main")
    newer = commit(
        work, "fourth", {"releaseNotes/3.0.0+2.md": "Manual migration needed.\n"}, tag="3.0.0+2"
    )
    git(work, "push", "-q", str(upstream["bare"]), "main", "feature", "--tags")
    git(upstream["bare"], "tag", "-d", "not-a-version")

    with pytest.raises(RecipeError, match="ref 'feature' not found"):
        repo.resolve("feature")
    assert repo.latest_version() == "v2.4.8"
    before = _state(Path(repo.path))

    assert repo.fetch() is True
    assert "3.0.0+2" in repo.version_tags()
    assert "not-a-version" in repo.tags()  # fetch never deletes a local tag
    assert repo.resolve("feature") == Resolved("feature", feature, None)  # only on origin
    assert repo.resolve("origin/feature").commit == feature
    # origin's main is fresher than the local branch, which fetch does not move
    assert repo.resolve("main").commit == newer
    assert git(Path(repo.path), "rev-parse", "refs/heads/main") == upstream["c3"]
    assert _state(Path(repo.path)) == before
    assert repo.release_notes("3.0.0+2") == "Manual migration needed.\n"


def test_fetch_force_moves_a_retagged_version(upstream):
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    work = upstream["work"]
    fixed = commit(work, "fix", {"fix.txt": "1\n"})
    git(work, "tag", "-f", "v2.4.8", fixed)
    git(work, "push", "-q", "--force", str(upstream["bare"]), "refs/tags/v2.4.8")
    assert repo.commit_of("v2.4.8") == upstream["c1"]
    repo.fetch()
    assert repo.commit_of("v2.4.8") == fixed


def test_fetch_without_origin_and_with_a_dead_origin(recipes_dir, upstream, tmp_path):
    assert RecipeRepo(str(recipes_dir), "notes").fetch() is False
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    git(Path(repo.path), "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    with pytest.raises(RecipeError, match="could not fetch recipe 'app' from origin") as info:
        repo.fetch()
    assert info.value.rc not in (None, 0)
    assert "gone.git" in info.value.stderr


def test_fetch_of_a_pull_request_head_from_a_fork(upstream, tmp_path):
    """A fork's commit lives on origin only under refs/pull/<n>/head: resolving it fails
    (naming what was fetched from where) until that ref is fetched too."""
    fork = tmp_path / "fork"
    subprocess.run(["git", "clone", "-q", str(upstream["work"]), str(fork)], check=True)
    head = commit(fork, "fork's change", {"fork.txt": "from a fork\n"})
    git(fork, "push", "-q", str(upstream["bare"]), f"{head}:refs/pull/1/head")
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    git(Path(repo.path), "remote", "set-url", "origin", f"file://ci:s3cret@{upstream['bare']}")

    repo.fetch()
    with pytest.raises(RecipeError) as info:
        repo.resolve(head)
    assert str(info.value) == (
        f"ref {head!r} not found in recipe 'app' (fetched branches and tags from origin "
        f"file://{upstream['bare']})"
    )  # the password in the URL is never printed

    assert repo.fetch(extra_ref="refs/pull/1/head") is True
    assert repo.resolve(head) == Resolved(head, head, None)
    assert git(Path(repo.path), "rev-parse", "refs/ccci/pull/1/head") == head
    repo.fetch()  # a later plain fetch (--prune) keeps the fetched head
    assert repo.resolve(head[:12]).commit == head

    with pytest.raises(
        RecipeError, match=r"from origin file://.*origin.git \(asked for refs/pull/9/head\)"
    ):
        repo.fetch(extra_ref="refs/pull/9/head")
    for hostile in (
        "--upload-pack=touch /tmp/x",
        "refs/pull/1/head:refs/heads/main",
        "pull/1/head",
        "refs/*",
    ):
        with pytest.raises(ValidationError):
            repo.fetch(extra_ref=hostile)


@contextlib.contextmanager
def behind_a_fetch(repo: RecipeRepo, action):
    """Hold ``repo``'s lock as fetch() does while ``action`` starts in a thread; yields the
    event set when the action has ended. On leaving: the lock is given back, and the
    action must then end without an error."""
    fd = os.open(os.path.join(repo.git_dir, _recipe.LOCK_NAME), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what fetch() holds
    finished = threading.Event()
    errors = []

    def run():
        try:
            action()
        except Exception as exc:
            errors.append(exc)
        finished.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield finished
    finally:
        os.close(fd)
    assert finished.wait(30)
    thread.join()
    assert errors == []


def test_fetch_is_serialized_by_a_lock(upstream):
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    with behind_a_fetch(repo, repo.fetch) as finished:
        assert not finished.wait(1.0), "fetch ran while another holder had the lock"


def test_checkout_waits_for_a_running_fetch(upstream, tmp_path):
    """A clone holds the lock shared: it never reads a repository mid-fetch."""
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    clone = tmp_path / "waiting"
    with behind_a_fetch(repo, lambda: repo.checkout(upstream["c2"], str(clone))) as finished:
        assert not finished.wait(0.5), "checkout cloned while a fetch held the lock"
        assert not clone.exists()
    assert git(clone, "rev-parse", "HEAD") == upstream["c2"]


def test_concurrent_fetches_all_succeed(upstream):
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    commit(upstream["work"], "more", {"more.txt": "1\n"}, tag="3.1.0+2")
    git(upstream["work"], "push", "-q", str(upstream["bare"]), "main", "--tags")
    results, errors = [], []

    def run():
        try:
            results.append(RecipeRepo(str(upstream["recipes_dir"]), "app").fetch())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and results == [True] * 4
    assert repo.latest_version() == "3.1.0+2"


# --- per-run checkout -------------------------------------------------------------------


def test_checkout_is_private_and_exact(examples, recipes_dir, tmp_path):
    html = examples["custom-html"]
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    before = _state(Path(html["path"]))
    old = repo.resolve("1.0.0+1.28").commit
    workdir = repo.checkout(old, str(tmp_path / "run" / "checkout"))
    assert workdir == str(tmp_path / "run" / "checkout")
    assert git(Path(workdir), "rev-parse", "HEAD") == old
    assert "ccci/web:1.28" in (Path(workdir) / "compose.yml").read_text()
    assert (Path(workdir) / "releaseNotes" / "1.0.0+1.28.md").exists()
    assert not (Path(workdir) / "releaseNotes" / "1.1.0+1.29.md").exists()
    assert git(Path(workdir), "status", "--porcelain") == ""
    assert _state(Path(html["path"])) == before


def test_two_concurrent_checkouts_do_not_race(examples, recipes_dir, tmp_path):
    html = examples["custom-html"]
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    before = _state(Path(html["path"]))
    wanted = {
        "good": (html["tags"]["1.0.0+1.28"], "ccci/web:1.28"),
        "bad": (html["broken_ref"], "ccci/web:9.99-doesnotexist"),
    }
    barrier = threading.Barrier(len(wanted))
    done, errors = {}, []

    def run(name, sha):
        try:
            barrier.wait(10)
            done[name] = repo.checkout(sha, str(tmp_path / name))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, c)) for n, (c, _) in wanted.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for name, (sha, image) in wanted.items():
        assert git(Path(done[name]), "rev-parse", "HEAD") == sha
        assert image in (Path(done[name]) / "compose.yml").read_text()
    assert _state(Path(html["path"])) == before


def test_checkout_refusals(recipes_dir, tmp_path):
    repo = RecipeRepo(str(recipes_dir), "custom-html")
    sha = repo.resolve(None).commit
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("mine\n")
    with pytest.raises(RecipeError, match="exists and is not empty"):
        repo.checkout(sha, str(busy))
    assert (busy / "file").read_text() == "mine\n"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RecipeError, match="is not a directory"):
        repo.checkout(sha, str(tmp_path / "afile"))
    for bad in ("main", sha[:7], "--upload-pack=x", None):
        with pytest.raises(RecipeError, match="needs a full 40-hex commit"):
            repo.checkout(bad, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert repo.checkout(sha, str(empty)) == str(empty)
    with pytest.raises(RecipeError, match=f"commit {'0' * 40} not found in recipe 'custom-html'"):
        repo.checkout("0" * 40, str(tmp_path / "missing-commit"))
    assert not (tmp_path / "missing-commit").exists()


def test_checkout_of_an_origin_only_commit(upstream, tmp_path):
    work = upstream["work"]
    git(work, "checkout", "-q", "-b", "pr-42")
    head = commit(work, "pr", {"compose.yml": "services: {pr: {}}\n"})
    git(work, "push", "-q", str(upstream["bare"]), "pr-42")
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    repo.fetch()
    resolved = repo.resolve("pr-42")
    assert resolved.commit == head
    workdir = repo.checkout(resolved.commit, str(tmp_path / "pr"))
    assert (Path(workdir) / "compose.yml").read_text() == "services: {pr: {}}\n"


# --- release notes ----------------------------------------------------------------------


def test_release_notes_example(examples, recipes_dir):
    repo = RecipeRepo(str(recipes_dir), "notes")
    assert repo.release_notes("1.1.0+2.1") == "Web 2.1; the db cache is now tunable.\n"
    assert repo.release_notes("1.0.0+2.0") == "First release.\n"
    assert repo.release_notes("9.9.9+9") is None


def test_release_notes_old_layout_and_added_after_the_tag(upstream):
    repo = RecipeRepo(str(upstream["recipes_dir"]), "app")
    assert repo.release_notes("v2.4.8") == "Old-style notes for v2.4.8.\n"
    assert repo.release_notes("1.0.0+1.28") == "Notes for 1.0.0.\n"
    assert repo.release_notes("2.0.1+1.0.6-social-amd64") is None
    # notes written on the default branch after the release was tagged
    work = upstream["work"]
    commit(
        work,
        "late notes",
        {"releaseNotes/2.0.1+1.0.6-social-amd64.md": "Written after tagging.\n"},
    )
    git(work, "push", "-q", str(upstream["bare"]), "main")
    repo.fetch()
    assert repo.release_notes("2.0.1+1.0.6-social-amd64") == "Written after tagging.\n"
    # releaseNotes/<v>.md wins over release/<v> in the same tree
    commit(work, "both", {"releaseNotes/v2.4.8.md": "New layout.\n"})
    git(work, "tag", "-f", "v2.4.8")
    git(work, "push", "-q", "--force", str(upstream["bare"]), "main", "refs/tags/v2.4.8")
    repo.fetch()
    assert repo.release_notes("v2.4.8") == "New layout.\n"


def test_release_notes_fall_back_to_default_branch_without_origin(tmp_path):
    repo_dir = init_repo(tmp_path / "recipes" / "local")
    commit(repo_dir, "one", {"compose.yml": "services: {}\n"}, tag="1.0.0+1")
    commit(repo_dir, "notes", {"release/1.0.0+1": "Old layout, later.\n"})
    git(repo_dir, "checkout", "-q", "-b", "elsewhere", "1.0.0+1")  # shared HEAD elsewhere
    repo = RecipeRepo(str(tmp_path / "recipes"), "local")
    assert repo.default_branch() == "refs/heads/main"
    assert repo.release_notes("1.0.0+1") == "Old layout, later.\n"


def test_examples_are_untouched_by_reads(examples, recipes_dir):
    """Everything above only reads the shared examples: their HEAD stays on main."""
    for name in ("custom-html", "notes"):
        head, sym, status = _state(Path(examples[name]["path"]))
        assert sym == "refs/heads/main"
        assert status == ""
        assert head == examples[name]["tags"][examples[name]["latest"]]
