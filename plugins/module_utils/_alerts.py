# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alert files and their relay (SPEC ALR, §3). PRIVATE to the collection: no compatibility promises.

An alert is one JSON file ``<state_dir>/alerts/<stamp>-<kind>-<target>-<rand>.json``,
written atomically. The relay delivers every unseen alert, oldest first, and moves each
one to ``alerts/seen/`` (a rename) only after every configured URL took it.

Deduplication: an alert whose kind, target and attempted version equal those of an
alert that is still unseen is not written again (the open condition is already waiting
for an operator). Optionally (``quiet_for``) one relayed less than that many seconds ago
also suppresses it. Once relayed, a condition that persists alerts again on the next
run that meets it: a reminder per relay cycle, never a pile of files.

A corrupt alert file (not JSON, not an object, no kind/target) is reported by name and
left exactly where it is: it is never deleted, and the relay fails until an operator
moves or repairs it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import matching
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    StateError,
    fsync_dir,
    read_json,
    write_json,
)

#: The kinds the collection raises itself; any other kind matching KIND_RE is accepted.
KINDS = (
    "rollback",
    "held-major",
    "held-manual-migration",
    "quick-rollback",
    "disk-low",
    "unit-failed",
    "sweep-red",
    "known-good-tree-differed",
    "known-good-unverified",
)
KIND_RE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
TARGET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CORE_KEYS = ("kind", "target", "attempted", "last_good", "recovered", "notes", "at")


class AlertError(CcciError, RuntimeError):
    """An alert cannot be written, read, archived or delivered. The message says which."""


@dataclass
class Alert:
    """One alert file; ``data`` is None and ``error`` says why when the file is corrupt."""

    path: str
    data: dict[str, Any] | None
    error: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def corrupt(self) -> bool:
        return self.error is not None

    @property
    def key(self) -> tuple | None:
        if self.data is None:
            return None
        return (self.data.get("kind"), self.data.get("target"), self.data.get("attempted"))

    def summary(self) -> dict[str, Any]:
        if self.data is None:
            return {"file": self.name, "corrupt": True, "error": self.error}
        return {
            "file": self.name,
            "kind": self.data.get("kind"),
            "target": self.data.get("target"),
            "attempted": self.data.get("attempted"),
            "at": self.data.get("at"),
        }


def _stamp(now: datetime.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S.%fZ")


def _parse_at(value: Any) -> float | None:
    try:
        return (
            datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=datetime.UTC)
            .timestamp()
        )
    except (TypeError, ValueError):
        return None


def validate_kind(kind: object) -> str:
    return matching(kind, KIND_RE, "alert kind",
                    "use 2-40 characters of a-z, 0-9 and '-', starting with a letter (the "
                    f"collection raises {', '.join(KINDS)})", AlertError)  # fmt: skip


def validate_target(target: object) -> str:
    return matching(target, TARGET_RE, "alert target",
                    "use 1-63 characters of letters, digits, '.', '_' and '-', starting with a "
                    "letter or digit", AlertError)  # fmt: skip


class AlertStore:
    """The alert files of one state directory."""

    def __init__(self, state_dir: str):
        self.state_dir = state_dir
        self.alerts_dir = os.path.join(state_dir, "alerts")
        self.seen_dir = os.path.join(self.alerts_dir, "seen")

    # -- reading --------------------------------------------------------------------

    @staticmethod
    def load(path: str) -> Alert:
        """The alert at ``path``; a corrupt file gives an Alert with ``error`` set."""
        try:
            data = read_json(path)
        except StateError as exc:
            return Alert(path, None, f"alert file {path} is corrupt: {exc}")
        if not isinstance(data, dict):
            return Alert(path, None, f"alert file {path} is corrupt: not a JSON object")
        missing = [k for k in ("kind", "target") if not isinstance(data.get(k), str)]
        if missing:
            return Alert(
                path, None, f"alert file {path} is corrupt: no {' or '.join(missing)} string"
            )
        return Alert(path, data)

    def _list(self, directory: str) -> list[Alert]:
        paths = sorted(glob.glob(os.path.join(glob.escape(directory), "*.json")))
        return [self.load(p) for p in paths if os.path.isfile(p)]

    def list_unseen(self) -> list[Alert]:
        """Every alert waiting in ``alerts/``, oldest first (corrupt ones included)."""
        return self._list(self.alerts_dir)

    def list_seen(self) -> list[Alert]:
        """Every relayed alert in ``alerts/seen/``, oldest first."""
        return self._list(self.seen_dir)

    def count_seen(self) -> int:
        return len(glob.glob(os.path.join(glob.escape(self.seen_dir), "*.json")))

    # -- writing --------------------------------------------------------------------

    @staticmethod
    def build(
        kind: str,
        target: str,
        attempted: str | None = None,
        last_good: str | None = None,
        recovered: bool | None = None,
        notes: Any = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The alert record (validated), as it will be written."""
        clash = sorted(set(extra) & set(CORE_KEYS))
        if clash:
            raise AlertError(f"extra alert fields {clash} clash with the fixed fields")
        record = {
            "kind": validate_kind(kind),
            "target": validate_target(target),
            "attempted": attempted,
            "last_good": last_good,
            "recovered": recovered,
            "notes": notes,
            "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **extra,
        }
        try:
            json.dumps(record)
        except (TypeError, ValueError) as exc:
            raise AlertError(f"alert {kind} for {target} is not JSON-serialisable: {exc}") from exc
        return record

    def find_open(
        self, kind: str, target: str, attempted: str | None = None, quiet_for: float = 0
    ) -> Alert | None:
        """The alert that makes a new one with this kind/target/attempted redundant.

        That is an unseen alert with the same key, or (with ``quiet_for`` > 0) one
        relayed whose ``at`` is less than ``quiet_for`` seconds old.
        """
        key = (kind, target, attempted)
        for alert in self.list_unseen():
            if alert.key == key:
                return alert
        if quiet_for > 0:
            now = time.time()
            for alert in reversed(self.list_seen()):
                at = _parse_at((alert.data or {}).get("at"))
                if alert.key == key and at is not None and now - at < quiet_for:
                    return alert
        return None

    def write(self, *fields: Any, quiet_for: float = 0, **extra: Any) -> str:
        """Write the alert :meth:`build` makes of ``fields`` and ``extra`` atomically and
        return its path.

        When :meth:`find_open` finds the same condition, nothing is written and the
        existing alert's path is returned (compare with :meth:`find_open` beforehand to
        know which happened).
        """
        record = self.build(*fields, **extra)
        kind, target = record["kind"], record["target"]
        existing = self.find_open(kind, target, record["attempted"], quiet_for)
        if existing is not None:
            return existing.path
        now = datetime.datetime.now(datetime.UTC)
        name = f"{_stamp(now)}-{kind}-{target}-{secrets.token_hex(3)}.json"
        path = os.path.join(self.alerts_dir, name)
        try:
            write_json(path, record)
        except OSError as exc:
            raise AlertError(f"cannot write alert {path}: {exc.strerror or exc}") from exc
        return path

    def archive(self, alert: Alert | str) -> str:
        """Move an unseen alert to ``alerts/seen/`` by rename; returns the new path."""
        path = alert.path if isinstance(alert, Alert) else alert
        if os.path.dirname(os.path.abspath(path)) != os.path.abspath(self.alerts_dir):
            raise AlertError(f"{path} is not an unseen alert of {self.alerts_dir}")
        dest = os.path.join(self.seen_dir, os.path.basename(path))
        os.makedirs(self.seen_dir, exist_ok=True)
        if os.path.exists(dest):
            raise AlertError(f"cannot archive {path}: {dest} already exists; nothing was moved")
        try:
            os.rename(path, dest)
        except OSError as exc:
            raise AlertError(f"cannot archive {path} to {dest}: {exc.strerror or exc}") from exc
        fsync_dir(self.seen_dir)
        fsync_dir(self.alerts_dir)
        return dest

    def mark_delivered(self, alert: Alert, url_id: str) -> None:
        """Record (atomically, in the alert) that the URL ``url_id`` took it."""
        assert alert.data is not None
        done = list(alert.data.get("relayed_to") or [])
        if url_id not in done:
            done.append(url_id)
        alert.data["relayed_to"] = done
        try:
            write_json(alert.path, alert.data)
        except OSError as exc:
            raise AlertError(
                f"alert {alert.path} was delivered but recording that failed "
                f"({exc.strerror or exc}); the next relay may deliver it again"
            ) from exc

    @contextlib.contextmanager
    def relay_lock(self, timeout: float = 60.0):
        """One relay at a time per state dir (two relays would double-deliver)."""
        os.makedirs(self.alerts_dir, exist_ok=True)
        path = os.path.join(self.alerts_dir, ".relay.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise AlertError(
                            f"another alert relay holds {path} for more than {timeout:.0f}s; "
                            "try again when it has finished"
                        ) from None
                    time.sleep(0.2)
            yield
        finally:
            os.close(fd)


#: What systemd tells an OnFailure= unit about the unit that failed (systemd >= 251).
MONITOR_VARS = (
    "MONITOR_SERVICE_RESULT",
    "MONITOR_EXIT_CODE",
    "MONITOR_EXIT_STATUS",
    "MONITOR_INVOCATION_ID",
)


def raise_unit_failed(store: AlertStore, unit: str, env: dict[str, str]) -> str:
    """Write (once while unseen) the ``unit-failed`` alert for the systemd unit ``unit``,
    with what systemd passed its OnFailure= handler in ``env``; return the alert's path."""
    name = unit if "." in unit else f"{unit}.service"
    seen = {k.removeprefix("MONITOR_").lower(): env[k] for k in MONITOR_VARS if env.get(k)}
    how = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in seen.items() if k != "invocation_id")
    notes = (
        f"systemd unit {name} failed ({how or 'no result given'}); its output: "
        f"journalctl -u {name}"
        + (f" _SYSTEMD_INVOCATION_ID={seen['invocation_id']}" if "invocation_id" in seen else "")
        + f"; clear it with: systemctl reset-failed {name}"
    )
    return store.write(
        "unit-failed",
        validate_target(name.removesuffix(".service")[:63]),
        recovered=False,
        notes=notes,
        unit=name,
        host=os.uname().nodename,
        **seen,
    )


# -- messages ---------------------------------------------------------------------------


def render(alert: Alert) -> tuple[str, str]:
    """A readable title and text body; the body ends with the alert's JSON."""
    data = alert.data or {}
    kind, target = data.get("kind"), data.get("target")
    attempted, last_good = data.get("attempted"), data.get("last_good")
    recovered = data.get("recovered")
    title = f"coopcloud.ci {kind}: {target}"
    if attempted:
        title += f" {attempted}"
    if recovered is False:
        title += " (NOT RECOVERED)"
    lines = [
        f"kind:      {kind}",
        f"target:    {target}",
        f"attempted: {attempted if attempted is not None else '-'}",
        f"last good: {last_good if last_good is not None else '-'}",
        "recovered: " + {True: "yes", False: "NO", None: "-"}[recovered]
        if recovered in (True, False, None)
        else f"recovered: {recovered}",
        f"at:        {data.get('at')}",
    ]
    extra = {
        k: v for k, v in data.items() if k not in CORE_KEYS and k != "relayed_to" and v is not None
    }
    for key in sorted(extra):
        value = extra[key]
        lines.append(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")
    notes = data.get("notes")
    if notes:
        lines.append("")
        lines.append("notes:")
        if isinstance(notes, dict):
            for key, value in notes.items():
                lines.append(f"--- {key} ---")
                lines.append(value if isinstance(value, str) else json.dumps(value, indent=2))
        elif isinstance(notes, str):
            lines.append(notes)
        else:
            lines.append(json.dumps(notes, indent=2))
    lines += ["", f"file: {alert.name}", "", "alert JSON:"]
    record = {k: v for k, v in data.items() if k != "relayed_to"}
    lines.append(json.dumps(record, indent=2, sort_keys=True))
    return title, "\n".join(lines)


# -- delivery ---------------------------------------------------------------------------


def _apprise():
    """The apprise package, imported quietly (only the relay needs it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

    return apprise


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,19})://")


def url_id(url: str) -> str:
    """A stable, non-reversible id of a URL (recorded in alerts instead of the URL)."""
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def describe_url(url: str) -> str:
    """``scheme://host[:port]`` of an apprise URL without user, password, path or query.

    For services whose URLs put a token where a host would be, apprise's own privacy
    form is used (tokens shortened to their first and last characters).
    """
    match = _SCHEME_RE.match(url or "")
    if not match:
        return "a URL without a scheme"
    scheme = match.group(1).lower()
    host = None
    try:
        plugin = _apprise().Apprise.instantiate(url, suppress_exceptions=True)
        if plugin:
            private = plugin.url(privacy=True)
            rest = private.split("://", 1)[1] if "://" in private else ""
            netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
            host = netloc.rsplit("@", 1)[-1]
    except Exception:
        host = None
    if host is None:
        rest = url[match.end() :]
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        host = netloc.rsplit("@", 1)[-1] if "@" in netloc else "?"
    return f"{scheme}://{host}"


def _secret_parts(url: str, shown: str) -> list[str]:
    """Pieces of ``url`` that may be secret: everything but scheme, shown host and port."""
    rest = url.split("://", 1)[-1]
    public = set(re.split(r"[:/]", shown.split("://", 1)[-1]))
    parts = [p for p in re.split(r"[/:@?&=#,]", rest) if len(p) >= 3 and p not in public]
    return sorted(set(parts), key=len, reverse=True)


def redact(text: str, url: str, shown: str) -> str:
    for part in _secret_parts(url, shown):
        text = text.replace(part, "***")
    return text


class DeliveryError(AlertError):
    pass


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:
            return
        if record.levelno >= logging.WARNING or msg.startswith(
            ("Response Details", "Socket Exception")
        ):
            self.lines.append(" ".join(msg.split())[:500])


def level_of(alert: Alert) -> str:
    """``failure`` when the target did not recover, else ``warning`` (apprise notify types)."""
    return "failure" if (alert.data or {}).get("recovered") is False else "warning"


def apprise_send(url: str, title: str, body: str, level: str = "warning") -> None:
    """Deliver one message to one apprise URL; raise DeliveryError saying what went wrong.

    The error text names the URL only as :func:`describe_url` does and has every other
    piece of the URL masked out of apprise's own messages.
    """
    apprise = _apprise()
    shown = describe_url(url)
    notifier = apprise.Apprise()
    if not notifier.add(url):
        raise DeliveryError(
            f"{shown}: apprise does not understand this URL (check its scheme and form)"
        )
    logger = logging.getLogger("apprise")
    capture = _Capture()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # never let apprise print (a module's stdout is its JSON)
    try:
        ok = notifier.notify(
            body=body,
            title=title,
            body_format=apprise.NotifyFormat.TEXT,
            notify_type=apprise.NotifyType(level),
        )
    except Exception as exc:  # apprise or a service plugin broke: say so, never a traceback
        said = redact(f"{type(exc).__name__}: {exc}", url, shown)
        raise DeliveryError(f"{shown}: delivery failed inside apprise: {said}") from exc
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    if not ok:
        said = "; ".join(capture.lines) or "no detail given"
        raise DeliveryError(f"{shown}: delivery failed: {redact(said, url, shown)}")


@dataclass
class RelayReport:
    delivered: list[str] = field(default_factory=list)  # alert file names
    archived: list[str] = field(default_factory=list)  # paths under alerts/seen/
    failed: list[dict[str, str]] = field(default_factory=list)  # file, url, error
    corrupt: list[dict[str, str]] = field(default_factory=list)  # file, error
    partial: list[str] = field(default_factory=list)  # taken by some URLs, not all yet

    @property
    def ok(self) -> bool:
        return not self.failed and not self.corrupt

    def message(self) -> str:
        parts = []
        if self.failed:
            first = self.failed[0]
            n = len({f["file"] for f in self.failed})
            parts.append(
                f"{n} alert(s) could not be delivered; they stay unseen and the next relay "
                f"retries them. First failure: alert {first['file']} to {first['error']}"
            )
        if self.corrupt:
            names = ", ".join(c["error"] for c in self.corrupt)
            parts.append(
                f"{len(self.corrupt)} alert file(s) cannot be read and were left in place "
                f"(repair them or move them out of the alerts folder): {names}"
            )
        return "; ".join(parts)


def relay(
    store: AlertStore,
    urls: Iterable[str],
    send: Callable[[str, str, str, str], None] = apprise_send,
) -> RelayReport:
    """Deliver every unseen alert to every URL, oldest first; archive each fully delivered.

    A URL that already took an alert (recorded in the alert as ``relayed_to``) is not
    sent it again. A URL that failed in this run is not tried again for the later
    alerts (they stay unseen, the error names the first failure).
    """
    urls = list(urls)
    report = RelayReport()
    broken: dict[str, str] = {}
    with store.relay_lock():
        for alert in store.list_unseen():
            if alert.corrupt:
                report.corrupt.append({"file": alert.name, "error": alert.error or ""})
                continue
            title, body = render(alert)
            level = level_of(alert)
            complete, took = True, False
            for url in urls:
                uid = url_id(url)
                if uid in (alert.data or {}).get("relayed_to", []):
                    continue
                shown = describe_url(url)
                if uid in broken:
                    complete = False
                    report.failed.append(
                        {
                            "file": alert.name,
                            "url": shown,
                            "error": f"not tried: failed earlier in this run ({broken[uid]})",
                        }
                    )
                    continue
                try:
                    send(url, title, body, level)
                except DeliveryError as exc:
                    complete = False
                    broken[uid] = str(exc)
                    report.failed.append({"file": alert.name, "url": shown, "error": str(exc)})
                    continue
                store.mark_delivered(alert, uid)
                took = True
            if took and not complete:
                report.partial.append(alert.name)
            if complete:
                report.delivered.append(alert.name)
                report.archived.append(store.archive(alert))
    return report
