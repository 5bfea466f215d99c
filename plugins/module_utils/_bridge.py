# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comment bridge: a pull request comment on Gitea/Forgejo -> a Drone build and a reply.
PRIVATE to the collection: no compatibility promises.

``ccci bridge`` serves, on one address (``CCCI_BRIDGE_LISTEN``, ``127.0.0.1:8089``):

- ``POST /hook``: the forge's webhook for pull request comments. In order, and stopping at
  the first "no": the signature (``X-Forgejo-Signature`` or ``X-Gitea-Signature``, hex
  HMAC-SHA256 of the raw body with the shared secret; a bad or missing one answers 401 and
  nothing else happens); a comment newly *created* on an *open pull request*, not written
  by the bridge itself; the trigger rule of ``_trigger.py`` (a near miss gets a reply that
  says what is accepted); the commenter's permission on the repository according to the
  forge (write, admin or owner), or the allow-list (anyone else gets a short reply: a run
  deploys the pull request's code); the pull request's head (commit, branch, repository:
  forks included) from the forge; the Drone build (``POST /api/repos/{owner}/{name}/builds``,
  whose extra query parameters Drone turns into build parameters); a reply on the pull
  request naming the lane and linking the build.
- ``GET /healthz``: ``{"status": "ok"}``.

Exactly once. The progress of each comment (the forge's comment id, which every delivery
of it carries, redeliveries and the forge's "Replay" included) is kept in
``<state_dir>/comments/<repo>--<id>.json``, written atomically (fsync) before Drone is
asked, once the build is known, and when done. A delivery of a comment already handled
does nothing again; one whose build was created but whose reply failed only posts the
reply. Before Drone is asked a second time for the same
comment (a retry after a timeout, a restart), its recent builds are searched for the
parameter ``CCCI_COMMENT=<id>``, so a build whose answer was lost is found, not doubled.

The forge or Drone unreachable (a connection error, a timeout or a 5xx): up to
``CCCI_BRIDGE_ATTEMPTS`` tries with a doubling pause, one warning per failed try, then the
webhook is answered 503 and the progress kept for the next delivery.

One log line per delivery: ``delivery=<id> decision=<word> ...``. Tokens and the secret are
never logged: they travel in headers only, and only the names of missing settings are
ever printed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

try:
    import httpx
except ImportError:  # bin/ccci bridge needs it; importing this file must not
    httpx = None  # type: ignore[assignment]

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    DEFAULT_STATE_DIR,
    CcciError,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    read_json,
    stamp,
    write_json,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._trigger import (
    ACCEPTED,
    is_near_miss,
    parse_trigger,
)

LOG = logging.getLogger("ccci.bridge")
#: Every reply of the bridge carries it; a comment that does is never acted on.
MARKER = "<!-- ccci-bridge -->"
#: Forge permission levels (Gitea's ``AccessLevelName``) that may start a run.
WRITERS = frozenset({"write", "admin", "owner"})
MAX_BODY = 1 << 20
ENV_PREFIX = "CCCI_BRIDGE_"
REQUIRED = ("SECRET", "FORGE_URL", "FORGE_TOKEN", "DRONE_URL", "DRONE_TOKEN")
#: How many of Drone's newest builds are searched for a build whose answer was lost.
RECENT_BUILDS = 50
#: Deliveries of the same comment wait for each other; others mostly do not.
LOCK_STRIPES = 64


class ConfigError(CcciError, ValueError):
    """The bridge's settings are incomplete or malformed. The message names the setting."""


class Unreachable(CcciError, RuntimeError):
    """The forge or Drone did not answer usefully after every try."""

    def __init__(self, service: str, last: str):
        super().__init__(f"{service} unreachable: {last}")
        self.service = service


class Refused(CcciError, RuntimeError):
    """The forge or Drone answered with a 4xx: retrying will not help."""

    def __init__(self, service: str, what: str, response: httpx.Response):
        super().__init__(
            f"{service} refused {what}: HTTP {response.status_code}", status=response.status_code
        )


#: The bridge's own state (delivery ids, pending runs) when STATE_DIR is not set.
BRIDGE_STATE_DIR = DEFAULT_STATE_DIR + "/bridge"


@dataclass(frozen=True)
class BridgeConfig:
    secret: str = field(repr=False)
    forge_url: str
    forge_token: str = field(repr=False)
    drone_url: str
    drone_token: str = field(repr=False)
    state_dir: str = BRIDGE_STATE_DIR
    listen: str = "127.0.0.1:8089"
    allow: frozenset[str] = frozenset()
    bot_login: str = ""
    attempts: int = 3
    backoff: float = 0.5
    timeout: float = 10.0

    @classmethod
    def load(cls, env: Mapping[str, str], path: str | None = None) -> BridgeConfig:
        """Settings from ``path`` (``KEY=value`` lines, as systemd's ``EnvironmentFile``),
        then from the environment, which wins. Keys are ``CCCI_BRIDGE_<NAME>``."""
        values: dict[str, str] = {}
        if path:
            values.update(_read_env_file(path))
        values.update({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
        get = {k[len(ENV_PREFIX) :]: v.strip() for k, v in values.items()}
        missing = [ENV_PREFIX + k for k in REQUIRED if not get.get(k)]
        if missing:
            raise ConfigError(f"the bridge needs {', '.join(missing)} (file or environment)")
        try:
            attempts = int(get.get("ATTEMPTS") or 3)
            backoff = float(get.get("BACKOFF") or 0.5)
            timeout = float(get.get("TIMEOUT") or 10)
        except ValueError as exc:
            raise ConfigError(
                f"{ENV_PREFIX}ATTEMPTS/BACKOFF/TIMEOUT must be numbers: {exc}"
            ) from None
        if not 1 <= attempts <= 10 or backoff < 0 or timeout <= 0:
            raise ConfigError(f"{ENV_PREFIX}ATTEMPTS must be 1..10, BACKOFF >= 0, TIMEOUT > 0")
        listen = get.get("LISTEN") or "127.0.0.1:8089"
        _split_listen(listen)
        return cls(
            secret=get["SECRET"],
            forge_url=get["FORGE_URL"].rstrip("/"),
            forge_token=get["FORGE_TOKEN"],
            drone_url=get["DRONE_URL"].rstrip("/"),
            drone_token=get["DRONE_TOKEN"],
            state_dir=get.get("STATE_DIR") or BRIDGE_STATE_DIR,
            listen=listen,
            allow=frozenset(re.split(r"[\s,]+", get.get("ALLOW", ""))) - {""},
            bot_login=get.get("BOT_LOGIN", ""),
            attempts=attempts,
            backoff=backoff,
            timeout=timeout,
        )


def require_bridge_state_dir(path: str) -> None:
    """The bridge's state dir must have been made on purpose (the ci_host role makes it):
    a mistyped ``CCCI_BRIDGE_STATE_DIR`` is refused, and nothing is created."""
    if not os.path.isabs(path):
        raise ConfigError(f"{ENV_PREFIX}STATE_DIR {path!r} is relative: give an absolute path")
    if not os.path.isdir(path):
        raise ConfigError(
            f"{ENV_PREFIX}STATE_DIR {path} is not a directory: a mistyped path? Nothing was "
            f"created. The ci_host role makes it (ccci_bridge_state_dir); by hand: "
            f"install -d -m 0700 {path}"
        )


def _read_env_file(path: str) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"the bridge's settings file {path} cannot be read: {exc.strerror}"
        ) from None
    values = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key.strip()):
            raise ConfigError(f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':  # as the role writes it
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{ENV_PREFIX}LISTEN must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def signature_ok(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """True when the forge's signature header is the hex HMAC-SHA256 of ``body``."""
    given = headers.get("x-forgejo-signature") or headers.get("x-gitea-signature") or ""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return bool(given) and hmac.compare_digest(given.strip().lower(), expected)


@dataclass
class Outcome:
    """What one delivery came to: the HTTP answer and the log line's fields."""

    status: int
    decision: str
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


class Bridge:
    """Handles deliveries in threads; those of one comment one at a time."""

    def __init__(
        self,
        config: BridgeConfig,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ):
        self.config = config
        self._sleep = sleep
        self._forge = httpx.Client(
            base_url=f"{config.forge_url}/api/v1",
            headers={"Authorization": f"token {config.forge_token}", "Accept": "application/json"},
            timeout=config.timeout,
            transport=transport,
        )
        self._drone = httpx.Client(
            base_url=config.drone_url,
            headers={"Authorization": f"Bearer {config.drone_token}"},
            timeout=config.timeout,
            transport=transport,
        )
        require_bridge_state_dir(config.state_dir)
        self._comments_dir = Path(config.state_dir) / "comments"
        self._comments_dir.mkdir(exist_ok=True, mode=0o700)
        # One lock per comment, striped so the set stays bounded however long it runs.
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def close(self) -> None:
        self._forge.close()
        self._drone.close()

    # -- one delivery ------------------------------------------------------------------
    def handle(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Decide and act on one delivery; always returns, logs one line."""
        headers = {k.lower(): v for k, v in headers.items()}
        delivery = headers.get("x-forgejo-delivery") or headers.get("x-gitea-delivery") or "-"
        started = time.monotonic()
        try:
            outcome = self._handle(headers, body)
        except Unreachable as exc:
            outcome = Outcome(503, "failed", str(exc))
        except Refused as exc:
            outcome = Outcome(502, "failed", str(exc))
        except Exception as exc:  # a bug: answer 500, keep serving, say what it was
            LOG.exception("bridge: delivery %s: unexpected error", _clean(delivery))
            outcome = Outcome(500, "failed", f"unexpected {type(exc).__name__}")
        line = [f"delivery={_clean(delivery)}", f"decision={outcome.decision}"]
        line += [f"{k}={_clean(str(v))}" for k, v in outcome.fields.items()]
        if outcome.reason:
            line.append(f"reason={json.dumps(outcome.reason)}")
        line += [f"status={outcome.status}", f"ms={(time.monotonic() - started) * 1000:.0f}"]
        (LOG.warning if outcome.status >= 500 else LOG.info)("bridge: %s", " ".join(line))
        return outcome

    def _handle(self, headers: dict[str, str], body: bytes) -> Outcome:
        if not signature_ok(self.config.secret, body, headers):
            return Outcome(401, "rejected", "missing or bad signature")
        event = headers.get("x-forgejo-event") or headers.get("x-gitea-event") or ""
        if event != "issue_comment":
            return Outcome(200, "ignored", f"event {event or 'unnamed'} is not a comment")
        try:
            payload = json.loads(body)
            action = payload["action"]
            issue, comment, repo = payload["issue"], payload["comment"], payload["repository"]
            fields = {
                "repo": repo["full_name"],
                "pr": issue["number"],
                "comment": comment["id"],
                "user": comment["user"]["login"],
            }
        except (ValueError, KeyError, TypeError):
            return Outcome(400, "ignored", "not an issue_comment payload")
        text = comment.get("body") or ""
        if action != "created":
            return Outcome(200, "ignored", f"comment {action}", fields)
        if not issue.get("pull_request") and not payload.get("is_pull"):
            return Outcome(200, "ignored", "not a pull request", fields)
        if issue.get("state") != "open":
            return Outcome(200, "ignored", "pull request not open", fields)
        login = fields["user"]
        if MARKER in text or (self.config.bot_login and login == self.config.bot_login):
            return Outcome(200, "ignored", "the bridge's own comment", fields)
        trigger = parse_trigger(text)
        near = is_near_miss(text)
        if not trigger["run"] and not near:
            return Outcome(200, "ignored", "no command", fields)
        owner, name = repo["full_name"].split("/", 1)
        with self._lock_for(f"{repo['full_name']}#{comment['id']}"):
            return self._act(
                owner, name, issue["number"], comment["id"], login, text, trigger, fields
            )

    def _act(self, owner, name, number, comment_id, login, text, trigger, fields) -> Outcome:
        path = self._comments_dir / f"{owner}--{name}--{int(comment_id)}.json"
        record = read_json(str(path), default=None) or {
            "repo": f"{owner}/{name}",
            "pr": number,
            "comment": comment_id,
            "user": login,
        }
        if record.get("done"):
            return Outcome(200, "duplicate", f"already {record['decision']}", fields)

        def save(**changes: Any) -> None:
            record.update(changes, updated=stamp())
            write_json(str(path), record, mode=0o600)

        # Written to disk: before Drone is asked, once the build is known, and when done
        # (the reply is the last step, so "replied" and "done" are one write).
        if not trigger["run"]:
            first = text.strip().splitlines()[0][:60]
            reply = self._reply(owner, name, number, _near_miss_reply(login, first))
            save(decision="near-miss", done=True, reply_id=reply)
            return Outcome(200, "near-miss", "replied with what is accepted", fields)
        mode = trigger["mode"]
        fields["lane"] = mode
        build = record.get("build")
        if build is None:
            allowed = login in self.config.allow
            level = "allow-list" if allowed else self._permission(owner, name, login)
            if not allowed and level not in WRITERS:
                reply = self._reply(owner, name, number, _refusal_reply(login, level))
                save(decision="refused", done=True, reply_id=reply)
                return Outcome(200, "refused", f"{login} has {level} access", fields)
            head = self._head(owner, name, number)
            if head["state"] != "open":
                save(decision="ignored", done=True)
                return Outcome(200, "ignored", "pull request not open", fields)
            build = self._build(owner, name, number, comment_id, login, mode, head, record, save)
        fields["build"] = build["number"]
        reply = self._reply(owner, name, number, _build_reply(mode, build))
        save(decision="built", done=True, reply_id=reply)
        return Outcome(200, "built", "", fields)

    def _lock_for(self, key: str) -> threading.Lock:
        return self._locks[int(hashlib.sha256(key.encode()).hexdigest(), 16) % LOCK_STRIPES]

    # -- the forge -----------------------------------------------------------------------
    def _permission(self, owner: str, name: str, login: str) -> str:
        url = f"/repos/{_q(owner)}/{_q(name)}/collaborators/{_q(login)}/permission"
        response = self._call("forge", self._forge, "GET", url)
        if response.status_code == 404:
            return "none"
        if response.status_code != 200:
            raise Refused("forge", "the permission look-up", response)
        return str(response.json().get("permission") or "none")

    def _head(self, owner: str, name: str, number: int) -> dict[str, Any]:
        response = self._call(
            "forge", self._forge, "GET", f"/repos/{_q(owner)}/{_q(name)}/pulls/{number}"
        )
        if response.status_code != 200:
            raise Refused("forge", f"the look-up of pull request {number}", response)
        pull = response.json()
        head = pull.get("head") or {}
        head_repo = (head.get("repo") or {}).get("full_name") or f"{owner}/{name}"
        return {
            "sha": head.get("sha", ""),
            "ref": head.get("ref", ""),
            "repo": head_repo,
            "clone_url": (head.get("repo") or {}).get("clone_url", ""),
            "state": "open" if pull.get("state") == "open" and not pull.get("merged") else "closed",
        }

    def _reply(self, owner: str, name: str, number: int, body: str) -> int | None:
        """Post ``body`` on the pull request; the new comment's id."""
        url = f"/repos/{_q(owner)}/{_q(name)}/issues/{number}/comments"
        response = self._call(
            "forge", self._forge, "POST", url, json={"body": f"{body}\n\n{MARKER}"}
        )
        if response.status_code != 201:
            raise Refused("forge", "the reply", response)
        return response.json().get("id")

    # -- Drone ---------------------------------------------------------------------------
    def _build(self, owner, name, number, comment_id, login, mode, head, record, save):
        params = {
            "commit": head["sha"],
            # Gitea/Forgejo keep every pull request's head, a fork's too, in the base
            # repository under refs/pull/<n>/head: Drone clones that ref.
            "branch": f"refs/pull/{number}/head",
            "CCCI_MODE": mode,
            "CCCI_PR": str(number),
            "CCCI_HEAD_REF": head["ref"],
            "CCCI_HEAD_REPO": head["repo"],
            "CCCI_HEAD_SHA": head["sha"],
            "CCCI_COMMENT": str(comment_id),
            "CCCI_COMMENTER": login,
        }
        url = f"/api/repos/{_q(owner)}/{_q(name)}/builds"
        last = ""
        for attempt in range(1, self.config.attempts + 1):
            if record.get("build_asked"):  # a try whose answer never came: did it land?
                found = self._find_build(owner, name, comment_id)
                if found is not None:
                    save(build=found)
                    return found
            save(build_asked=True)
            try:
                response = self._drone.post(url, params=params)
            except httpx.ConnectError as exc:  # never reached Drone: nothing to look for
                save(build_asked=False)
                last = _describe(exc)
            except httpx.TransportError as exc:
                last = _describe(exc)
            else:
                if response.status_code == 200:
                    build = _build_summary(response.json(), self.config.drone_url, owner, name)
                    save(build=build)
                    return build
                if response.status_code < 500:
                    raise Refused("drone", "the build", response)
                last = f"HTTP {response.status_code}"
            self._pause("drone", attempt, last)
        raise Unreachable("drone", last)

    def _find_build(self, owner: str, name: str, comment_id: int) -> dict[str, Any] | None:
        url = f"/api/repos/{_q(owner)}/{_q(name)}/builds"
        response = self._call("drone", self._drone, "GET", url, params={"per_page": RECENT_BUILDS})
        if response.status_code != 200:
            raise Refused("drone", "the build list", response)
        for build in response.json() or []:
            if (build.get("params") or {}).get("CCCI_COMMENT") == str(comment_id):
                return _build_summary(build, self.config.drone_url, owner, name)
        return None

    # -- retries -------------------------------------------------------------------------
    def _call(self, service: str, client: httpx.Client, method: str, url: str, **kw: Any):
        """``client.request`` with bounded retries on connection errors, timeouts and 5xx."""
        last = ""
        for attempt in range(1, self.config.attempts + 1):
            try:
                response = client.request(method, url, **kw)
            except httpx.TransportError as exc:
                last = _describe(exc)
            else:
                if response.status_code < 500:
                    return response
                last = f"HTTP {response.status_code}"
            self._pause(service, attempt, last)
        raise Unreachable(service, last)

    def _pause(self, service: str, attempt: int, last: str) -> None:
        LOG.warning(
            "bridge: %s unreachable (try %d of %d): %s",
            service,
            attempt,
            self.config.attempts,
            last,
        )
        if attempt < self.config.attempts:
            self._sleep(self.config.backoff * 2 ** (attempt - 1))


def _q(part: Any) -> str:
    return quote(str(part), safe="")


def _clean(value: str) -> str:
    """A log field: no spaces or control characters (a delivery id comes from outside)."""
    return re.sub(r"[^\w.:/@#+-]", "_", value)[:100] or "-"


def _describe(exc: httpx.TransportError) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _build_summary(build: dict[str, Any], drone_url: str, owner: str, name: str) -> dict[str, Any]:
    number = int(build["number"])
    return {"number": number, "url": f"{drone_url}/{owner}/{name}/{number}"}


def _build_reply(mode: str, build: dict[str, Any]) -> str:
    if mode == "quick":
        lane = (
            "the **quick** lane: lower confidence (it reuses warm data and a shortened "
            "run) and it never gates merge; comment `!testme` for the authoritative cold run"
        )
    else:
        lane = "the **cold** lane: the authoritative run, the one that gates merge"
    return f"coopcloud.ci: started {lane}. Build #{build['number']}: {build['url']}"


def _near_miss_reply(login: str, first_line: str) -> str:
    shown = first_line.replace("`", "'")
    return (
        f"@{login}: `{shown}` is not a command coopcloud.ci knows, so nothing was started. "
        f"It accepts {ACCEPTED}."
    )


def _refusal_reply(login: str, level: str) -> str:
    return (
        f"@{login}: only people with write access to this repository (or on the CI's "
        f"allow-list) can start a run, because a run deploys this pull request's code; "
        f"your access is {level}. Nothing was started."
    )


# -- the web service ---------------------------------------------------------------------
def create_app(bridge: Bridge):
    """The ASGI application (Starlette): ``POST /hook`` and ``GET /healthz``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def hook(request: Request) -> JSONResponse:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse({"decision": "rejected", "reason": "body too large"}, 413)
        body = await request.body()
        outcome = await run_in_threadpool(bridge.handle, dict(request.headers), body)
        answer = {"decision": outcome.decision, "reason": outcome.reason}
        return JSONResponse(answer, outcome.status)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/hook", hook, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])]
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``ccci bridge [--config FILE] [--check]``: serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="ccci bridge", description=__doc__.split("\n", maxsplit=1)[0]
    )
    parser.add_argument("--config", help="a KEY=value file (CCCI_BRIDGE_* settings)")
    parser.add_argument("--check", action="store_true", help="check the settings and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    for chatty in ("httpx", "httpcore"):  # one line per delivery is ours to write
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        config = BridgeConfig.load(os.environ if env is None else env, args.config)
        host, port = _split_listen(config.listen)
        require_bridge_state_dir(config.state_dir)
        if args.check:
            print(f"ccci bridge: settings ok; would listen on {host}:{port}")
            return 0
        bridge = Bridge(config)
    except (ConfigError, OSError) as exc:
        print(f"ccci bridge: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    LOG.info("bridge: listening on %s:%d, state in %s", host, port, config.state_dir)
    try:
        uvicorn.run(create_app(bridge), host=host, port=port, log_level="warning", access_log=False)
    finally:
        bridge.close()
    return 0
