"""A Gitea/Forgejo test double: a real HTTP server on loopback, checked against Gitea's API.

No forge can run on the machines that run the tests, so the comment bridge (and the lanes
that post commit statuses) are tested against this server. It is written from Gitea's
source and API document, not from our client:

- every request it receives and every answer it gives is validated with ``openapi-core``
  against Gitea's own OpenAPI 3 document, kept in ``tests/data/gitea/`` (origin, commit
  and license in the README there). A mismatch is recorded in :attr:`ForgeDouble.violations`
  and :meth:`ForgeDouble.check` raises ``AssertionError`` listing them: a test that uses the
  double calls ``check()`` at the end (the ``forge`` fixtures do), so a request the real
  forge would reject, or an answer the real forge would not give, fails the test;
- ``GET /repos/{owner}/{repo}/collaborators/{collaborator}/permission`` as Gitea's
  ``GetRepoPermissions`` (``routers/api/v1/repo/collaborators.go``): 403 unless the token's
  user is a repository admin (or asks about itself), 404 for an unknown user, else the
  user's level: ``owner``/``admin``/``write``/``read``/``none`` (a public repository gives
  ``read`` to everyone);
- webhooks as Gitea's ``services/webhook/deliver.go`` and ``notifier.go`` send a comment
  made on a pull request: ``X-Gitea-Event: issue_comment``, ``X-Gitea-Event-Type:
  pull_request_comment`` (``issue_comment`` on a plain issue), ``X-Gitea-Delivery`` (a
  UUID), ``X-Gitea-Signature`` = hex HMAC-SHA256 of the raw body with the hook's secret
  (and the ``X-Gogs-*``/``X-Hub-Signature-256`` copies; ``flavour="forgejo"`` sends
  ``X-Forgejo-*`` as Forgejo does), and an ``IssueCommentPayload`` body;
- the token is sent as ``Authorization: token <t>`` (or ``Bearer``); another answers 401.

API for tests::

    with ForgeDouble(token="t") as forge:
        forge.add_repo("coop", "recipe")                   # the token's user "ci-bot" admins it
        forge.set_permission("coop", "recipe", "alice", "write")
        pr = forge.add_pull("coop", "recipe", head_sha=..., head_ref="fix",
                            head_repo="mallory/recipe")   # a fork's branch
        d = forge.deliver_comment(url, "secret", "coop", "recipe", pr["number"],
                                  "!testme", commenter="alice")
        d = forge.prepare_comment("secret", ...)           # the same, not sent yet
        d.response.status_code; forge.redeliver(url, d)    # same delivery id, same body
        forge.comments("coop", "recipe", pr["number"])     # what was posted (list of dicts)
        forge.statuses("coop", "recipe", sha)               # commit statuses, newest first
        forge.exchanges                                     # every request and answer
        forge.check()                                       # raise on any API violation

``base_url`` is the forge's root (what a user configures); the API is ``api_url`` =
``base_url + "/api/v1"``. ``fail_next(n)``, ``down()``/``up()`` come from
:class:`support.loopback_http.LoopbackDouble`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from support.loopback_http import Exchange, LoopbackDouble

SPEC = Path(__file__).resolve().parent.parent / "data" / "gitea" / "v1_openapi3_json.tmpl"
BOT = "ci-bot"
LEVELS = ("none", "read", "write", "admin", "owner")


@cache
def gitea_openapi() -> OpenAPI:
    """Gitea's API document, with the template's two placeholders filled as a root install."""
    text = SPEC.read_text(encoding="utf-8")
    text = text.replace("{{.SwaggerAppSubUrl}}", "").replace("{{.SwaggerAppVer}}", "test")
    # The document is Gitea's own and valid; skipping its re-validation saves ~1 s a load.
    return OpenAPI.from_dict(json.loads(text), config=Config(spec_validator_cls=None))


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sign(secret: str, body: bytes) -> str:
    """What Gitea puts in ``X-Gitea-Signature``: hex HMAC-SHA256 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    """One webhook delivery made by :meth:`ForgeDouble.deliver_comment`."""

    delivery_id: str
    headers: dict[str, str]
    body: bytes
    response: httpx.Response | None = None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class ForgeDouble(LoopbackDouble):
    name = "forge double"

    def __init__(
        self, token: str = "forge-token", bot: str = BOT, validate: bool = True, **kw: Any
    ):
        super().__init__(**kw)
        self.validate = validate  # False only for benchmarks: validation costs ~10 ms an exchange
        self.token = token
        self.bot = bot
        self.violations: list[str] = []
        self._ids = 0
        self._users: dict[str, dict[str, Any]] = {}
        self._repos: dict[str, dict[str, Any]] = {}
        self._perm: dict[str, dict[str, str]] = {}
        self._issues: dict[str, dict[int, dict[str, Any]]] = {}
        self._comments: dict[str, dict[int, list[dict[str, Any]]]] = {}
        self._statuses: dict[str, list[dict[str, Any]]] = {}
        self._validate_lock = threading.Lock()
        self.user(bot)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v1"

    # -- state ----------------------------------------------------------------------
    def _next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def user(self, login: str) -> dict[str, Any]:
        with self.lock:
            if login not in self._users:
                uid = self._next_id()
                self._users[login] = {
                    "id": uid,
                    "login": login,
                    "login_name": "",
                    "full_name": "",
                    "email": f"{login}@example.org",
                    "avatar_url": f"{self.base_url}/avatars/{uid}",
                    "html_url": f"{self.base_url}/{login}",
                    "is_admin": False,
                    "username": login,
                }
            return dict(self._users[login])

    def add_repo(self, owner: str, name: str, private: bool = False, fork: bool = False):
        full = f"{owner}/{name}"
        with self.lock:
            if full not in self._repos:
                html = f"{self.base_url}/{full}"
                self._repos[full] = {
                    "id": self._next_id(),
                    "name": name,
                    "full_name": full,
                    "owner": self.user(owner),
                    "private": private,
                    "fork": fork,
                    "html_url": html,
                    "clone_url": f"{html}.git",
                    "ssh_url": f"git@127.0.0.1:{full}.git",
                    "default_branch": "main",
                    "empty": False,
                    "archived": False,
                }
                self._perm[full] = {owner: "owner"}
                if not fork:
                    self._perm[full][self.bot] = "admin"
                self._issues[full] = {}
                self._comments[full] = {}
            return dict(self._repos[full])

    def set_permission(self, owner: str, repo: str, login: str, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        self.user(login)
        with self.lock:
            self._perm[f"{owner}/{repo}"][login] = level

    def _new_issue(self, owner: str, repo: str, title: str, author: str) -> dict[str, Any]:
        full = f"{owner}/{repo}"
        base = self.add_repo(owner, repo)
        with self.lock:
            number = len(self._issues[full]) + 1
            issue = {
                "id": self._next_id(),
                "number": number,
                "title": title,
                "body": "",
                "user": self.user(author),
                "state": "open",
                "html_url": f"{base['html_url']}/issues/{number}",
                "url": f"{self.api_url}/repos/{full}/issues/{number}",
                "comments": 0,
                "created_at": _now(),
                "updated_at": _now(),
                "repository": {"id": base["id"], "name": repo, "owner": owner, "full_name": full},
                "pull_request": None,
            }
            self._issues[full][number] = issue
            self._comments[full][number] = []
        return issue

    def add_issue(self, owner: str, repo: str, title: str = "an issue", author: str = "alice"):
        return dict(self._new_issue(owner, repo, title, author))

    def add_pull(
        self,
        owner: str,
        repo: str,
        *,
        head_sha: str,
        head_ref: str = "feature",
        head_repo: str | None = None,
        author: str = "alice",
        title: str = "a change",
        state: str = "open",
    ) -> dict[str, Any]:
        """A pull request from ``head_repo``'s ``head_ref`` (default: the base repository)."""
        full = f"{owner}/{repo}"
        issue = self._new_issue(owner, repo, title, author)
        number = issue["number"]
        head_full = head_repo or full
        head = self.add_repo(*head_full.split("/", 1), fork=head_full != full)
        base = self._repos[full]
        html = f"{base['html_url']}/pulls/{number}"
        with self.lock:
            issue["html_url"] = html
            issue["state"] = state
            issue["pull_request"] = {"merged": False, "merged_at": None, "draft": False}
            issue["pull_request"]["html_url"] = html
            issue["pr"] = {
                "id": self._next_id(),
                "number": number,
                "title": title,
                "body": "",
                "state": state,
                "user": self.user(author),
                "html_url": html,
                "url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "mergeable": True,
                "merged": False,
                "draft": False,
                "comments": 0,
                "created_at": _now(),
                "updated_at": _now(),
                "head": {
                    "label": head_ref
                    if head_full == full
                    else f"{head_full.split('/')[0]}:{head_ref}",
                    "ref": head_ref,
                    "sha": head_sha,
                    "repo_id": head["id"],
                    "repo": dict(head),
                },
                "base": {
                    "label": base["default_branch"],
                    "ref": base["default_branch"],
                    "sha": "0" * 40,
                    "repo_id": base["id"],
                    "repo": dict(base),
                },
                "merge_base": "0" * 40,
            }
            return json.loads(json.dumps(issue["pr"]))

    def set_pull_state(self, owner: str, repo: str, number: int, state: str) -> None:
        with self.lock:
            issue = self._issues[f"{owner}/{repo}"][number]
            issue["state"] = issue["pr"]["state"] = state

    def comments(self, owner: str, repo: str, number: int) -> list[dict[str, Any]]:
        with self.lock:
            return json.loads(json.dumps(self._comments[f"{owner}/{repo}"][number]))

    def statuses(self, owner: str, repo: str, sha: str) -> list[dict[str, Any]]:
        with self.lock:
            return json.loads(json.dumps(self._statuses.get(f"{owner}/{repo}@{sha}", [])))[::-1]

    def _add_comment(self, full: str, number: int, body: str, login: str) -> dict[str, Any]:
        issue = self._issues[full][number]
        cid = self._next_id()
        comment = {
            "id": cid,
            "body": body,
            "user": self.user(login),
            "html_url": f"{issue['html_url']}#issuecomment-{cid}",
            "issue_url": issue["html_url"] if issue["pull_request"] is None else "",
            "pull_request_url": issue["html_url"] if issue["pull_request"] else "",
            "original_author": "",
            "original_author_id": 0,
            "assets": [],
            "created_at": _now(),
            "updated_at": _now(),
        }
        self._comments[full][number].append(comment)
        issue["comments"] += 1
        return comment

    # -- webhooks -------------------------------------------------------------------
    def deliver_comment(self, url: str, *args: Any, timeout: float = 30.0, **kw: Any) -> Delivery:
        """Post a comment (for ``created``) and deliver its webhook to ``url``.

        Arguments as :meth:`prepare_comment`.
        """
        delivery = self.prepare_comment(*args, **kw)
        return self.redeliver(url, delivery, timeout=timeout)

    def prepare_comment(
        self,
        secret: str | None,
        owner: str,
        repo: str,
        number: int,
        body: str,
        *,
        commenter: str = "alice",
        action: str = "created",
        flavour: str = "gitea",
        signature: str | None = None,
        delivery_id: str | None = None,
    ) -> Delivery:
        """Post a comment (for ``created``) and make its webhook delivery, not sent yet.

        ``secret=None`` sends no signature header; ``signature`` overrides the computed one.
        """
        full = f"{owner}/{repo}"
        with self.lock:
            issue = self._issues[full][number]
            if action == "created":
                comment = self._add_comment(full, number, body, commenter)
            else:
                comment = {"id": self._next_id(), "body": body, "user": self.user(commenter)}
            payload: dict[str, Any] = {
                "action": action,
                "issue": {k: v for k, v in issue.items() if k != "pr"},
                "comment": comment,
                "repository": dict(self._repos[full]),
                "sender": self.user(commenter),
                "is_pull": issue["pull_request"] is not None,
            }
            if issue["pull_request"] is not None:
                payload["pull_request"] = issue["pr"]
            if action == "edited":
                payload["changes"] = {"body": {"from": ""}}
        raw = json.dumps(payload).encode()
        event_type = "pull_request_comment" if payload["is_pull"] else "issue_comment"
        did = delivery_id or str(uuid.uuid4())
        sig = signature if signature is not None else (sign(secret, raw) if secret else "")
        prefixes = (
            ["X-Gitea", "X-Gogs"] if flavour == "gitea" else ["X-Forgejo", "X-Gitea", "X-Gogs"]
        )
        headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"}
        for prefix in prefixes:
            headers[f"{prefix}-Delivery"] = did
            headers[f"{prefix}-Event"] = "issue_comment"
            headers[f"{prefix}-Event-Type"] = event_type
            if secret is not None or signature is not None:
                headers[f"{prefix}-Signature"] = sig
        if secret is not None or signature is not None:
            headers["X-Hub-Signature-256"] = f"sha256={sig}"
        return Delivery(did, headers, raw)

    def redeliver(self, url: str, delivery: Delivery, timeout: float = 30.0) -> Delivery:
        """Send a delivery again, byte for byte (Gitea's "Test delivery"/retry does so)."""
        response = httpx.post(url, content=delivery.body, headers=delivery.headers, timeout=timeout)
        return Delivery(delivery.delivery_id, delivery.headers, delivery.body, response)

    # -- the API --------------------------------------------------------------------
    def _token_user(self, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and hmac.compare_digest(value, self.token):
            return self.bot
        return None

    def _error(self, status: int, message: str) -> tuple[int, Any]:
        return status, {"message": message, "url": f"{self.base_url}/api/swagger"}

    def handle(self, method, path, query, headers, body):
        if not path.startswith("/api/v1/"):
            return self._error(404, "not found")
        doer = self._token_user(headers)
        if doer is None:
            return self._error(401, "token is required")
        m = re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/(.+)", path)
        if not m:
            return self._error(404, "not found")
        owner, repo, rest = m.groups()
        full = f"{owner}/{repo}"
        with self.lock:
            if full not in self._repos:
                return self._error(404, "The target couldn't be found.")
            perm = self._perm[full]
            if m2 := re.fullmatch(r"collaborators/([^/]+)/permission", rest):
                who = m2.group(1)
                if method != "GET":
                    return self._error(405, "method not allowed")
                if LEVELS.index(perm.get(doer, "none")) < LEVELS.index("admin") and doer != who:
                    return self._error(403, "Only admins can query all permissions, ...")
                if who not in self._users:
                    return self._error(404, f"user does not exist [name: {who}]")
                public = "none" if self._repos[full]["private"] else "read"
                level = perm.get(who, public)
                shown = "admin" if level == "owner" else level
                return 200, {"permission": level, "role_name": shown, "user": self.user(who)}
            if m2 := re.fullmatch(r"pulls/(\d+)", rest):
                issue = self._issues[full].get(int(m2.group(1)))
                if method != "GET":
                    return self._error(405, "method not allowed")
                if issue is None or issue["pull_request"] is None:
                    return self._error(404, "pull request does not exist")
                return 200, issue["pr"]
            if m2 := re.fullmatch(r"issues/(\d+)/comments", rest):
                number = int(m2.group(1))
                if number not in self._issues[full]:
                    return self._error(404, "issue does not exist")
                if method == "GET":
                    return 200, self._comments[full][number]
                if method == "POST":
                    data = _json(body)
                    if not isinstance(data, dict) or not isinstance(data.get("body"), str):
                        return self._error(422, "body is required")
                    return 201, self._add_comment(full, number, data["body"], doer)
                return self._error(405, "method not allowed")
            if m2 := re.fullmatch(r"statuses/([^/]+)", rest):
                key = f"{full}@{m2.group(1)}"
                if method == "GET":
                    return 200, self.statuses(owner, repo, m2.group(1))
                if method == "POST":
                    if LEVELS.index(perm.get(doer, "none")) < LEVELS.index("write"):
                        return self._error(403, "write access required")
                    data = _json(body)
                    if not isinstance(data, dict) or data.get("state") not in (
                        "pending",
                        "success",
                        "error",
                        "failure",
                        "warning",
                        "skipped",
                    ):
                        return self._error(400, "invalid state")
                    status = {
                        "id": self._next_id(),
                        "status": data["state"],
                        "context": data.get("context", "default"),
                        "description": data.get("description", ""),
                        "target_url": data.get("target_url", ""),
                        "creator": self.user(doer),
                        "url": f"{self.api_url}/repos/{full}/statuses/{m2.group(1)}",
                        "created_at": _now(),
                        "updated_at": _now(),
                    }
                    self._statuses.setdefault(key, []).append(status)
                    return 201, status
                return self._error(405, "method not allowed")
        return self._error(404, "not found")

    # -- validation against Gitea's document -------------------------------------------
    def after(self, exchange: Exchange) -> None:
        if not self.validate or not exchange.path.startswith("/api/v1/"):
            return
        request = MockRequest(
            self.base_url,
            exchange.method.lower(),
            exchange.path,
            args=exchange.query,
            headers=exchange.headers,
            data=exchange.body or None,
            content_type=exchange.headers.get("content-type", "application/json").split(";")[0],
        )
        data = b"" if exchange.answer is None else json.dumps(exchange.answer).encode()
        response = MockResponse(data, status_code=exchange.status, content_type="application/json")
        api = gitea_openapi()
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        checks = [("request", lambda: api.validate_request(request))]
        if not exchange.forced:  # an answer forced by fail_next() is outside the contract
            checks.append(("answer", lambda: api.validate_response(request, response)))
        with self._validate_lock:
            for what, call in checks:
                try:
                    call()
                except Exception as exc:  # openapi-core's errors: all of them are findings
                    cause = f" ({exc.__cause__})" if exc.__cause__ else ""
                    self.violations.append(f"{where}: {what}: {exc}{cause}")

    def check(self) -> None:
        """Raise ``AssertionError`` naming every exchange that Gitea's document rejects."""
        with self.lock:
            problems = list(self.violations)
        assert not problems, "forge double: not as Gitea's API document says:\n" + "\n".join(
            problems
        )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None
