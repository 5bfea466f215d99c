"""A Drone server test double: a real HTTP server on loopback, the two build endpoints.

Written from Drone's source (github.com/drone/drone, commit 2d34f8e0, Apache-2.0), not from
our client:

- ``POST /api/repos/{owner}/{name}/builds`` is ``handler/api/repos/builds/create.go``
  (``HandleCreate``): ``commit`` and ``branch`` come from the request (``r.FormValue``);
  an empty branch means the repository's default branch; the ref is
  ``refs/heads/<branch>``; the event is ``custom``; **every other query parameter except
  ``access_token`` becomes a build parameter** (``hook.Params[key] = value[0]``, the first
  value of each), so ``?CCCI_MODE=quick`` reaches the pipeline as ``${CCCI_MODE}``. The
  answer is the new build as JSON with status 200 (``render.JSON(w, result, 200)``), a
  ``core.Build`` (``core/build.go``): ``id``, ``number``, ``status`` ``pending``,
  ``event``, ``after`` (the commit), ``ref``, ``source``, ``target``, ``params``, ...;
  an unknown repository or commit answers 404 ``{"message": ...}`` (``render.NotFound``).
  The route needs write access (``acl.CheckWriteAccess`` in ``handler/api/api.go``): a
  missing or wrong token answers 401 ``{"message": "Unauthorized"}``.
- ``GET /api/repos/{owner}/{name}/builds`` is ``handler/api/repos/builds/list.go``: the
  repository's builds, newest first, ``per_page`` of them (1..100, else 25), ``page`` from 1.
- ``GET /api/repos/{owner}/{name}/builds/{number}`` is ``handler/api/repos/builds/find.go``:
  the build (with ``stages``) or 404.

Tokens: ``Authorization: Bearer <t>`` or ``?access_token=<t>``, as Drone accepts them.

API for tests::

    with DroneDouble(token="d") as drone:
        drone.add_repo("coop", "recipe")
        drone.builds                       # list of dicts, in creation order, with "params"
        drone.set_status(number, "success")
        drone.fail_next(2); drone.down(); drone.up(); drone.exchanges
        drone.lose_next_answers(1)         # the build is made, the answer is a 502

``known_commits`` (optional set of shas): when given, a build for another commit answers 404
as Drone does when the forge does not know the commit.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from typing import Any

from support.loopback_http import LoopbackDouble


class DroneDouble(LoopbackDouble):
    name = "drone double"

    def __init__(self, token: str = "drone-token", **kw: Any):
        super().__init__(**kw)
        self.token = token
        self.builds: list[dict[str, Any]] = []
        self.known_commits: set[str] | None = None
        self._lose = 0
        self._repos: dict[str, dict[str, Any]] = {}

    def add_repo(self, owner: str, name: str, branch: str = "main") -> None:
        with self.lock:
            self._repos[f"{owner}/{name}"] = {"id": len(self._repos) + 1, "branch": branch}

    def lose_next_answers(self, n: int) -> None:
        """The next ``n`` builds are created, but the answer is a 500 (a proxy timing out)."""
        with self.lock:
            self._lose += n

    def builds_for(self, owner: str, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for b in self.builds if b["_repo"] == f"{owner}/{name}"]

    def set_status(self, number: int, status: str, owner: str | None = None) -> None:
        with self.lock:
            for build in self.builds:
                if build["number"] == number and owner in (None, build["_repo"].split("/")[0]):
                    build["status"] = status

    def build_url(self, owner: str, name: str, number: int) -> str:
        return f"{self.base_url}/{owner}/{name}/{number}"

    def _authorized(self, headers: dict[str, str], query: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else query.get("access_token", "")
        return bool(given) and hmac.compare_digest(given, self.token)

    def handle(self, method, path, query, headers, body):
        m = re.fullmatch(r"/api/repos/([^/]+)/([^/]+)/builds(?:/(\d+))?/?", path)
        if not m:
            return 404, {"message": "Not Found"}
        if not self._authorized(headers, query):
            return 401, {"message": "Unauthorized"}
        owner, name, number = m.groups()
        full = f"{owner}/{name}"
        with self.lock:
            repo = self._repos.get(full)
            if repo is None:
                return 404, {"message": "Not Found"}
            if number is not None and method == "GET":
                for build in self.builds:
                    if build["_repo"] == full and build["number"] == int(number):
                        return 200, _public(build)
                return 404, {"message": "Not Found"}
            if number is None and method == "POST":
                status, answer = self._create(full, repo, query)
                if status == 200 and self._lose:
                    self._lose -= 1
                    return 502, {"message": "Bad Gateway"}
                return status, answer
            if number is None and method == "GET":
                limit = (
                    int(query.get("per_page") or 0) if query.get("per_page", "").isdigit() else 0
                )
                limit = limit if 1 <= limit <= 100 else 25
                page = int(query["page"]) if query.get("page", "").isdigit() else 1
                mine = [_public(b) for b in reversed(self.builds) if b["_repo"] == full]
                return 200, mine[(max(page, 1) - 1) * limit :][:limit]
        return 405, {"message": "Method Not Allowed"}

    def _create(self, full: str, repo: dict[str, Any], query: dict[str, str]):
        sha = query.get("commit", "")
        branch = query.get("branch", "") or repo["branch"]
        if not sha or (self.known_commits is not None and sha not in self.known_commits):
            return 404, {"message": "Not Found"}
        params = {k: v for k, v in query.items() if k not in ("access_token", "commit", "branch")}
        now = int(time.time())
        number = len([b for b in self.builds if b["_repo"] == full]) + 1
        build = {
            "_repo": full,
            "id": len(self.builds) + 1,
            "repo_id": repo["id"],
            "trigger": "ci-bot",
            "number": number,
            "status": "pending",
            "event": "custom",
            "action": "",
            "link": "",
            "timestamp": now,
            "message": "",
            "before": sha,
            "after": sha,
            "ref": branch if branch.startswith("refs/") else f"refs/heads/{branch}",
            "source_repo": "",
            "source": branch,
            "target": branch,
            "author_login": "",
            "author_name": "",
            "author_email": "",
            "author_avatar": "",
            "sender": "ci-bot",
            "params": params,
            "started": 0,
            "finished": 0,
            "created": now,
            "updated": now,
            "version": 1,
        }
        self.builds.append(build)
        return 200, _public(build)


def _public(build: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in build.items() if not k.startswith("_")}))
