# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recipe git repositories. PRIVATE to the collection: no compatibility promises.

A recipe is a git checkout under the recipes directory (``~/.abra/recipes/<recipe>``)
that many runs share. Nothing here moves that checkout's ``HEAD`` or touches its work
tree: a run resolves its ref to a full commit, then checks that commit out into a work
directory of its own (``git clone --shared`` + detached checkout), so concurrent runs of
one recipe cannot race (a shared checkout ships whatever ``HEAD`` is at that moment).

Git is always run without a shell, with every user-supplied ref validated first
(:func:`_names.validate_ref`) and placed after ``--end-of-options``, so no text a user
types can reach git as an option. Fetches of one repository are serialized by an
``flock`` on a file inside its ``.git`` directory; checkouts hold the same lock shared,
so a clone never sees a half-done fetch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    FULL_COMMIT_RE,
    is_commit,
    matching,
    validate_fetch_ref,
    validate_recipe,
    validate_ref,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._version import (
    Version,
    between,
    sort_versions,
)

LOCK_NAME = "ccci-recipe.lock"
GIT_TIMEOUT = 120
FETCH_TIMEOUT = 600
LOCK_TIMEOUT = 900
# user:password@ in a remote URL, never printed
_USERINFO_RE = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


class RecipeError(CcciError, RuntimeError):
    """A recipe repository or ref is unusable. The message is one sentence for the user;
    ``rc``, ``stdout`` and ``stderr`` carry git's evidence when git failed."""

    def __init__(self, message: str, rc: int | None = None, stdout: str = "", stderr: str = ""):
        super().__init__(message, rc=rc, stdout=stdout, stderr=stderr)

    @classmethod
    def of(cls, proc: subprocess.CompletedProcess, message: str) -> RecipeError:
        """``message`` with git's exit status and stderr, carrying its evidence."""
        return cls(
            f"{message} (rc={proc.returncode}): {proc.stderr.strip()}",
            rc=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )


@dataclass(frozen=True)
class Resolved:
    """A ref resolved to a commit: ``ref`` as asked (None: latest version), ``commit``
    (40 hex), ``version`` (the newest version tag pointing at that commit, or None)."""

    ref: str | None
    commit: str
    version: str | None


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/true",
            "LC_ALL": "C",
            "LANG": "C",
        }
    )
    return env


def _run_git(args: list[str], cwd: str, timeout: float = GIT_TIMEOUT, check: bool = True):
    cmd = ["git", *args]
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=_git_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise RecipeError("git is not installed on this host (install git)") from exc
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr or ""
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        raise RecipeError(
            f"git {args[0]} in {cwd} did not finish within {timeout:.0f}s", stderr=stderr
        ) from exc
    if check and proc.returncode != 0:
        stderr = proc.stderr.strip()
        raise RecipeError(
            f"git {args[0]} failed in {cwd} (rc={proc.returncode}): {stderr or proc.stdout.strip()}",
            rc=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )
    return proc


def _discard(workdir: str, created: bool) -> None:
    """Undo a failed checkout: remove ``workdir`` if we made it, else empty it again."""
    if created:
        shutil.rmtree(workdir, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(workdir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


# Where a missing checkout comes from, said with the error.
CHECKOUT_HINT = (
    "fetch it first (abra recipe fetch {recipe}, or git clone the recipe's repository "
    "into {recipes_dir}/{recipe}); see docs/guide/first-recipe.md"
)


class RecipeRepo:
    """The shared checkout ``<recipes_dir>/<recipe>``; read-only except for :meth:`fetch`."""

    def __init__(self, recipes_dir: str, recipe: str):
        self.recipe = validate_recipe(recipe)
        self.recipes_dir = os.path.abspath(os.path.expanduser(recipes_dir))
        self.path = os.path.join(self.recipes_dir, recipe)
        if not os.path.isdir(self.path):
            hint = CHECKOUT_HINT.format(recipe=recipe, recipes_dir=self.recipes_dir)
            raise RecipeError(f"recipe {recipe!r} has no checkout at {self.path}: {hint}")
        proc = _run_git(
            ["rev-parse", "--show-toplevel", "--absolute-git-dir"], self.path, check=False
        )
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 or len(lines) != 2:
            raise RecipeError(
                f"recipe {recipe!r} has no checkout at {self.path}: it is not a git repository "
                f"({proc.stderr.strip() or 'no work tree'})",
                rc=proc.returncode,
                stderr=proc.stderr,
            )
        toplevel, self.git_dir = lines
        self.fetched: list[str] = []  # what fetch() brought: named in a "not found" error
        if os.path.realpath(toplevel) != os.path.realpath(self.path):
            raise RecipeError(
                f"recipe {recipe!r} has no checkout at {self.path}: it is not a git repository "
                f"of its own (it lies inside {toplevel})"
            )

    def __repr__(self) -> str:
        return f"RecipeRepo({self.path!r})"

    # --- plumbing ---------------------------------------------------------------------

    def _git(self, *args: str, timeout: float = GIT_TIMEOUT, check: bool = True):
        return _run_git(list(args), self.path, timeout=timeout, check=check)

    @contextlib.contextmanager
    def _locked(self, exclusive: bool, timeout: float = LOCK_TIMEOUT):
        """An ``flock`` on ``<git dir>/ccci-recipe.lock``: exclusive for fetch, shared for
        clone."""
        lock_path = os.path.join(self.git_dir, LOCK_NAME)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() > deadline:
                        raise RecipeError(
                            f"recipe {self.recipe!r}: gave up after {timeout:.0f}s waiting for "
                            f"the lock {lock_path} (another run is fetching or cloning it)"
                        ) from exc
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _rev_parse(self, rev: str) -> str | None:
        proc = self._git("rev-parse", "--verify", "-q", "--end-of-options", rev, check=False)
        out = proc.stdout.strip()
        if proc.returncode == 0 and FULL_COMMIT_RE.match(out):
            return out
        if proc.returncode not in (0, 1):
            raise RecipeError.of(proc, f"git rev-parse failed in {self.path}")
        return None

    # --- remote -----------------------------------------------------------------------

    def has_origin(self) -> bool:
        return "origin" in self._git("remote").stdout.split()

    def origin_url(self) -> str:
        """``origin``'s URL with any user name and password taken out (safe to print)."""
        url = self._git("remote", "get-url", "origin", check=False).stdout.strip()
        return _USERINFO_RE.sub(r"\1", url)

    def fetch(self, timeout: float = FETCH_TIMEOUT, extra_ref: str | None = None) -> bool:
        """``git fetch --tags --prune --force origin``; False when there is no ``origin``.

        ``extra_ref`` (a full ref such as ``refs/pull/7/head``, a pull request's head that
        lives outside the branches, e.g. a fork's) is fetched too, into
        ``refs/ccci/<ref without refs/>``, so :meth:`resolve` finds its commit. Serialized
        per repository by an exclusive ``flock`` so concurrent runs do not race.
        """
        extra = validate_fetch_ref(extra_ref) if extra_ref is not None else None
        if not self.has_origin():
            return False
        self.fetched = ["branches and tags"]
        with self._locked(exclusive=True):
            proc = self._git(
                "fetch", "--tags", "--prune", "--force", "origin", timeout=timeout, check=False
            )
            if proc.returncode == 0 and extra is not None:
                self.fetched.append(extra)
                local = "refs/ccci/" + extra.removeprefix("refs/")
                proc = self._git(
                    "fetch", "--no-tags", "--force", "origin", "--end-of-options",
                    f"+{extra}:{local}", timeout=timeout, check=False,
                )  # fmt: skip
        if proc.returncode != 0:
            what = f" (asked for {extra})" if extra is not None and extra in self.fetched else ""
            raise RecipeError.of(
                proc,
                f"could not fetch recipe {self.recipe!r} from origin {self.origin_url()}{what}",
            )
        return True

    def _fetched_note(self) -> str:
        """What the last :meth:`fetch` brought, and from where (for a "not found")."""
        if not self.fetched:
            return "not fetched: the checkout was used as it is"
        return f"fetched {' and '.join(self.fetched)} from origin {self.origin_url()}"

    # --- versions ---------------------------------------------------------------------

    def tags(self) -> list[str]:
        return self._git("tag", "--list").stdout.split()

    def version_tags(self) -> list[str]:
        """The version tags (``1.0.0+1.28``, ``v2.4.8``...), oldest first."""
        return [v.tag for v in sort_versions(self.tags())]

    def latest_version(self) -> str | None:
        tags = self.version_tags()
        return tags[-1] if tags else None

    def commit_of(self, version: str) -> str:
        """The commit the version tag ``version`` points at (annotated tags peeled)."""
        validate_ref(version)
        commit = self._rev_parse(f"refs/tags/{version}^{{commit}}")
        if commit is None:
            raise RecipeError(f"version {version!r} not found in recipe {self.recipe!r}")
        return commit

    def versions_at(self, commit: str) -> list[str]:
        """Version tags pointing at ``commit``, oldest first."""
        matching(commit, FULL_COMMIT_RE, "commit", "use a full 40-hex commit id", RecipeError)
        tags = self._git("tag", "--points-at", commit).stdout.split()
        return [v.tag for v in sort_versions(tags)]

    def version_of(self, commit: str) -> str | None:
        """The newest version tag pointing at ``commit``, or None."""
        tags = self.versions_at(commit)
        return tags[-1] if tags else None

    def versions_between(self, current: str, candidate: str) -> list[str]:
        """Version tags after ``current`` up to and including ``candidate``, oldest first."""
        return [
            v.tag for v in between(self.tags(), Version.parse(current), Version.parse(candidate))
        ]

    # --- refs -------------------------------------------------------------------------

    def resolve(self, ref: str | None) -> Resolved:
        """Resolve ``ref`` to a full commit; ``None`` means the latest version tag.

        A ref is tried as a tag, then as ``origin``'s branch (fresh after :meth:`fetch`),
        then as a local branch, then as anything else git resolves (a unique commit
        prefix of 7-40 hex, ``origin/<branch>``...). Annotated tags peel to their commit.
        """
        if ref is None:
            latest = self.latest_version()
            if latest is None:
                raise RecipeError(
                    f"recipe {self.recipe!r} has no version tags: give a ref (commit, tag or "
                    "branch) to test"
                )
            return Resolved(ref=None, commit=self.commit_of(latest), version=latest)
        validate_ref(ref)
        candidates = [f"refs/tags/{ref}", f"refs/remotes/origin/{ref}", f"refs/heads/{ref}", ref]
        if is_commit(ref) and len(ref) == 40:
            candidates = [ref]
        for rev in candidates:
            commit = self._rev_parse(f"{rev}^{{commit}}")
            if commit:
                return Resolved(ref=ref, commit=commit, version=self.version_of(commit))
        if is_commit(ref):
            proc = self._git("rev-parse", "--verify", "--end-of-options", ref, check=False)
            if "ambiguous" in proc.stderr:
                raise RecipeError(
                    f"ref {ref!r} is ambiguous in recipe {self.recipe!r}: give more hex digits",
                    rc=proc.returncode,
                    stderr=proc.stderr,
                )
        raise RecipeError(
            f"ref {ref!r} not found in recipe {self.recipe!r} ({self._fetched_note()})"
        )

    # --- per-run checkout -------------------------------------------------------------

    def checkout(self, commit: str, workdir: str) -> str:
        """Check ``commit`` out into ``workdir``, a private clone of this repository.

        ``git clone --shared --no-checkout`` (objects borrowed from the shared repo, no
        copy) then a detached checkout. The shared checkout is never modified. Refuses a
        ``workdir`` that exists and is not empty. Returns the absolute ``workdir``.
        """
        matching(commit, FULL_COMMIT_RE, f"commit to check out of recipe {self.recipe!r}",
                 "the checkout needs a full 40-hex commit (resolve the ref first)",
                 RecipeError)  # fmt: skip
        workdir = os.path.abspath(workdir)
        created = not os.path.lexists(workdir)
        if not created:
            if not os.path.isdir(workdir) or os.path.islink(workdir):
                raise RecipeError(f"work directory {workdir} exists and is not a directory")
            if os.listdir(workdir):
                raise RecipeError(
                    f"work directory {workdir} exists and is not empty: give a fresh one"
                )
        if self._rev_parse(f"{commit}^{{commit}}") != commit:
            raise RecipeError(
                f"commit {commit} not found in recipe {self.recipe!r} (fetch the recipe first?)"
            )
        parent = os.path.dirname(workdir)
        os.makedirs(parent, exist_ok=True)
        try:
            with self._locked(exclusive=False):
                _run_git(
                    ["clone", "-q", "--shared", "--no-checkout", "--", self.path, workdir],
                    parent,
                )
            _run_git(
                ["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit, "--"],
                workdir,
            )
            head = _run_git(["rev-parse", "HEAD"], workdir).stdout.strip()
            if head != commit:
                raise RecipeError(
                    f"checkout of recipe {self.recipe!r} at {commit} ended at {head} in {workdir}"
                )
        except RecipeError as exc:
            _discard(workdir, created)
            raise RecipeError(
                f"could not check out commit {commit} of recipe {self.recipe!r} into "
                f"{workdir}: {exc}",
                rc=exc.rc,
                stdout=exc.stdout,
                stderr=exc.stderr,
            ) from exc
        return workdir

    # --- release notes ----------------------------------------------------------------

    def default_branch(self) -> str | None:
        """The default branch as a full ref: ``origin/HEAD``'s target, else ``main`` or
        ``master``, else whatever ``HEAD`` names."""
        proc = self._git("symbolic-ref", "-q", "refs/remotes/origin/HEAD", check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        for ref in ("refs/heads/main", "refs/heads/master"):
            if self._rev_parse(f"{ref}^{{commit}}"):
                return ref
        proc = self._git("symbolic-ref", "-q", "HEAD", check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        return None

    def _read_blob(self, commit: str, path: str) -> str | None:
        proc = self._git("cat-file", "blob", f"{commit}:{path}", check=False)
        if proc.returncode != 0:
            return None
        return proc.stdout

    def release_notes(self, version: str) -> str | None:
        """The release notes of ``version``: ``releaseNotes/<version>.md``, else the older
        ``release/<version>``, read from the tag's tree and then from the default branch's
        tree (notes are often added after the tag). None when there are none."""
        validate_ref(version)
        trees = []
        tagged = self._rev_parse(f"refs/tags/{version}^{{commit}}")
        if tagged:
            trees.append(tagged)
        branch = self.default_branch()
        if branch:
            head = self._rev_parse(f"{branch}^{{commit}}")
            if head and head not in trees:
                trees.append(head)
        for tree in trees:
            for path in (f"releaseNotes/{version}.md", f"release/{version}"):
                text = self._read_blob(tree, path)
                if text is not None:
                    return text
        return None
