# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A run's result on its pull request (Gitea/Forgejo API v1). PRIVATE to the collection:
no compatibility promises.

:class:`ForgeClient` posts the two things a lane leaves on a pull request: a commit status
(``POST /repos/{owner}/{repo}/statuses/{sha}``) and an issue comment (``POST
/repos/{owner}/{repo}/issues/{index}/comments``), authenticated by ``Authorization: token
<token>``. Every failure ends in one :class:`ForgeError` whose text says what was posted
where and what came back, and never holds the token.

:func:`report` turns a run record into those two posts: the status context names the
lane (``coopcloud-ci/cold`` is the one branch protection requires; ``coopcloud-ci/quick
(lower confidence)`` never gates), the state the verdict, the description one line of
stage results; the comment is a short table of the stages. A post that fails is returned
as an error for the caller to log: it never changes the run's verdict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

try:
    import httpx
except ImportError:  # the module says so through missing_required_lib
    httpx = None  # type: ignore[assignment]

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError, matching
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import scrub_text

#: The status context of each lane; only the cold one is a required check.
CONTEXTS = {"cold": "coopcloud-ci/cold", "quick": "coopcloud-ci/quick (lower confidence)"}
#: Commit status state per verdict (Gitea: pending, success, error, failure, warning).
STATES = {"PASS": "success", "FAIL": "failure", "ERROR": "error"}
DESCRIPTION_LIMIT = 140  # what GitHub keeps; Gitea shows about as much
_REPO_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")  # no ".."
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_BODY_LIMIT = 300


class ForgeError(CcciError):
    """One failed post to the forge: ``status`` (None when no answer came) and ``body``
    (shortened) are the evidence; ``str()`` is one sentence without the token."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message, status=status, body=body)


def validate_repo(repo: object) -> str:
    """``owner/name`` of the repository on the forge."""
    return matching(repo, _REPO_RE, "forge repo", "give owner/name")


def validate_url(url: object) -> str:
    """The forge's base URL, ``http(s)://host[/path]``, without credentials."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"forge url {url!r} is invalid: give http(s)://host[/path]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError(
            "forge url is invalid: no credentials, query or fragment (the token is its own option)"
        )
    return url


def validate_commit(commit: object) -> str:
    return matching(commit, _SHA_RE, "commit", "give the full 40-hex commit id")


def validate_pr(pr: object) -> int | None:
    """A pull request number (1 or more), or None for a run that is not a pull request's."""
    if pr is not None and (not isinstance(pr, int) or isinstance(pr, bool) or pr < 1):
        raise ValidationError(f"pull request number {pr} is invalid")
    return pr


class ForgeClient:
    """Posts to one repository of a Gitea/Forgejo forge. ``url`` is the forge's root
    (``https://git.coopcloud.tech``); ``/api/v1`` is added unless already there."""

    def __init__(
        self,
        url: str,
        token: str,
        repo: str,
        *,
        timeout: float = 10.0,
        validate_certs: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = validate_url(url).rstrip("/")
        self.api = base if base.endswith("/api/v1") else f"{base}/api/v1"
        self.repo = validate_repo(repo)
        if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token):
            raise ValidationError(
                "forge token is missing or holds white space: give the token, or set "
                "CCCI_FORGE_TOKEN in the environment (the Drone secret forge_token)"
            )
        self._http = httpx.Client(
            timeout=timeout,
            verify=validate_certs,
            transport=transport,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, payload: Mapping[str, Any], action: str) -> dict:
        url = f"{self.api}/repos/{self.repo}/{path}"
        try:
            response = self._http.post(url, json=dict(payload))
        except httpx.HTTPError as exc:
            raise ForgeError(f"could not {action} at {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code not in (200, 201):
            body = response.text[:_BODY_LIMIT]
            raise ForgeError(
                f"could not {action} at {url}: HTTP {response.status_code} {body}".rstrip(),
                status=response.status_code,
                body=body,
            )
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        return answer if isinstance(answer, dict) else {}

    def post_status(
        self,
        commit: str,
        state: str,
        context: str,
        description: str,
        target_url: str | None = None,
    ) -> dict:
        """``POST /repos/{owner}/{repo}/statuses/{sha}``; the forge's answer."""
        validate_commit(commit)
        if state not in ("pending", "success", "error", "failure", "warning"):
            raise ValidationError(f"commit status state {state!r} is invalid")
        payload = {"state": state, "context": context, "description": description}
        if target_url:
            payload["target_url"] = target_url
        return self._post(f"statuses/{commit}", payload, f"post the commit status {context!r}")

    def post_comment(self, index: int, body: str) -> dict:
        """``POST /repos/{owner}/{repo}/issues/{index}/comments``; the forge's answer."""
        if not isinstance(index, int) or isinstance(index, bool) or index < 1:
            raise ValidationError(f"pull request number {index!r} is invalid")
        return self._post(f"issues/{index}/comments", {"body": body}, f"comment on #{index}")


# --- what to post -------------------------------------------------------------------------


def _stage_results(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    stages = record.get("stages") or {}
    order = [s for s in record.get("stage_order") or [] if s in stages]
    order += sorted(s for s in stages if s not in order)
    return [(name, stages[name]) for name in order]


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pending_status(mode: str) -> tuple[str, str, str]:
    """(state, context, description) of a run that has just started."""
    lane = "quick run (lower confidence, does not gate merge)" if mode == "quick" else "cold run"
    return "pending", CONTEXTS[mode], f"{lane} started"


def final_status(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """(state, context, description) of a finished run record: the verdict and one line."""
    mode = record.get("mode") if record.get("mode") in CONTEXTS else "cold"
    verdict = record.get("verdict") or "ERROR"
    stages = ", ".join(f"{n} {r}" for n, r in _stage_results(record)) or "no stage ran"
    line = f"{verdict}: {stages}"
    if record.get("error"):
        line += f"; {record['error']}"
    if mode == "quick" and verdict == "PASS":
        line += "; comment !testme for the authoritative run"
    return STATES.get(verdict, "error"), CONTEXTS[mode], _short(scrub_text(line), DESCRIPTION_LIMIT)


def comment_body(record: Mapping[str, Any], target_url: str | None = None) -> str:
    """A short Markdown comment: lane, verdict, what was tested, one row per stage."""
    mode = record.get("mode") if record.get("mode") in CONTEXTS else "cold"
    confidence = (
        "lower confidence, never gates merge" if mode == "quick" else "authoritative, gates merge"
    )
    commit = str(record.get("commit") or "")[:12] or "?"
    version = f" ({record['version']})" if record.get("version") else ""
    lines = [
        f"**{CONTEXTS[mode]}: {record.get('verdict') or 'ERROR'}** ({confidence})",
        "",
        f"{record.get('recipe')} at `{commit}`{version}, run `{record.get('run_id')}`"
        + (f", [build log]({target_url})" if target_url else ""),
        "",
        "| stage | result |",
        "|---|---|",
    ]
    results = _stage_results(record) or [("(none)", "-")]
    lines += [f"| {name} | {result} |" for name, result in results]
    if record.get("error"):
        lines += ["", f"error: {_short(record['error'], 300)}"]
    return scrub_text("\n".join(lines)) + "\n"


def plan(
    mode: str,
    record: Mapping[str, Any] | None = None,
    pr: int | None = None,
    target_url: str | None = None,
) -> dict[str, Any]:
    """What to post: the status (pending without ``record``, else the verdict) and, for a
    finished record and a pull request number, the comment body (else None)."""
    if mode not in CONTEXTS:
        raise ValidationError(f"mode {mode!r} is invalid: use cold or quick")
    comment = None
    if record is None:
        state, context, description = pending_status(mode)
    else:
        record = dict(record, mode=record.get("mode") or mode)
        state, context, description = final_status(record)
        if pr is not None:
            comment = comment_body(record, target_url)
    return {
        "status": {"state": state, "context": context, "description": description},
        "comment": comment,
        "posted": [],
        "errors": [],
    }


def report(
    client: ForgeClient,
    *,
    mode: str,
    commit: str,
    record: Mapping[str, Any] | None = None,
    pr: int | None = None,
    target_url: str | None = None,
) -> dict[str, Any]:
    """Post what :func:`plan` says. Failed posts are collected in ``errors`` (one
    sentence each), never raised: the verdict stands whatever the forge does."""
    validate_commit(commit)
    result = plan(mode, record, pr, target_url)
    status = result["status"]
    try:
        client.post_status(
            commit, status["state"], status["context"], status["description"], target_url
        )
        result["posted"].append("status")
    except ForgeError as exc:
        result["errors"].append(str(exc))
    if result["comment"] is not None:
        try:
            client.post_comment(pr, result["comment"])
            result["posted"].append("comment")
        except ForgeError as exc:
            result["errors"].append(str(exc))
    return result
