# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status page: the status document as one static HTML file. PRIVATE to the collection:
no compatibility promises.

:func:`render_html` turns the document :func:`._status.gather` returns into one
self-contained page: canonicals (known-good version, commit, age, status, lock holder),
the last runs per recipe as a small timeline, the unseen alerts, the disk use and the
last sweep. Everything is inline (CSS in a ``<style>``, bars in CSS); the page loads
nothing, runs no script (its Content-Security-Policy forbids both) and needs no server.

Every value is escaped (jinja2 autoescape), whatever the document holds. The output is
deterministic: the same document and ``now`` give the same bytes. Ages ("3 h ago") are
counted to ``now``, by default the document's own ``generated_at``.

:func:`view` builds what the template shows (plain data; tests read it directly).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

import jinja2

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._disk import human
from ansible_collections.coopcloud.ci.plugins.module_utils._state import parse_time

#: Longest notes text shown on an alert row (the whole text is in the alert file).
NOTES_MAX = 2000
#: Free space (percent) below which a disk bar is amber / red.
DISK_WARN_PERCENT = 20.0
DISK_CRIT_PERCENT = 10.0
#: Smallest width (percent) of a run's duration bar, so a short run stays visible.
BAR_MIN_PERCENT = 4.0

_STATUS_CLASS = {
    "idle": "ok",
    "deployed": "info",
    "quick": "warn",
    "restoring": "warn",
    "seeding": "info",
}
_ISO_RE = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?")
_VERDICT_CLASS = {"PASS": "pass", "FAIL": "fail", "ERROR": "error"}


class StatusPageError(CcciError, ValueError):
    """The input is not a status document (the message says what it is instead)."""


# ------------------------------------------------------------------------------ time


def short_time(value: Any) -> str:
    """``2026-11-27T03:12:00Z`` -> ``2026-11-27 03:12``; anything else as text, ``-`` for none."""
    moment = parse_time(value)
    if moment is None:
        return "-" if value in (None, "") else str(value)
    return moment.strftime("%Y-%m-%d %H:%M")


def human_duration(seconds: Any) -> str:
    """``45 s``, ``1 min 11 s``, ``2 h 05 min``, ``3 d 4 h``; ``-`` when unknown."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def age(value: Any, now: datetime.datetime | None) -> str:
    """How long before ``now`` the moment ``value`` was: ``3 h 02 min ago``, ``just now``.

    ``?`` when either time is unknown; ``in the future`` when the clocks disagree.
    """
    moment = parse_time(value)
    if moment is None or now is None:
        return "?"
    seconds = (now - moment).total_seconds()
    if seconds < -60:
        return "in the future"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return human_duration(seconds) + " ago"


# ------------------------------------------------------------------------------ view


def _text(value: Any) -> str:
    """A cell: ``-`` for nothing, JSON for structures, the text otherwise."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _notes(value: Any) -> str:
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
    return text if len(text) <= NOTES_MAX else text[: NOTES_MAX - 14] + " … (truncated)"


def _notes_summary(notes: str) -> str:
    """The first non-blank line of the notes, at most 80 characters."""
    first = next((line.strip() for line in notes.splitlines() if line.strip()), "notes")
    return first if len(first) <= 80 else first[:79] + "…"


def _lock_view(lock: Mapping[str, Any] | None, now: datetime.datetime | None) -> dict | None:
    if not lock:
        return None
    return {
        "run_id": _text(lock.get("run_id")),
        "pid": _text(lock.get("pid")),
        "host": _text(lock.get("host")),
        "play": _text(lock.get("play")),
        "since": short_time(lock.get("since")),
        "since_age": age(lock.get("since"), now),
        "stale": bool(lock.get("stale")),
        "corrupt": bool(lock.get("corrupt")),
    }


def _run_view(run: Mapping[str, Any], now: datetime.datetime | None) -> dict[str, Any]:
    verdict = run.get("verdict")
    if verdict:
        css = _VERDICT_CLASS.get(str(verdict), "unknown")
        shown = str(verdict)
    elif run.get("status") == "running":
        css, shown = "running", "running"
    else:
        css, shown = "unknown", _text(run.get("status"))
    seconds = run.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        start, end = parse_time(run.get("started_at")), parse_time(run.get("finished_at"))
        seconds = max(0, int((end - start).total_seconds())) if start and end else None
    mode = _text(run.get("mode"))
    commit = run.get("commit")
    quick = mode == "quick"
    return {
        "run_id": _text(run.get("run_id")),
        "mode": mode,
        "quick": quick,
        "confidence": "lower confidence" if quick else "authoritative",
        "verdict": shown,
        "verdict_class": css,
        "ref": _text(run.get("version") or run.get("ref")),
        "commit_short": commit[:12] if isinstance(commit, str) and commit else "-",
        "started": short_time(run.get("started_at")),
        "started_age": age(run.get("started_at"), now),
        "seconds": seconds,
        "duration": (
            human_duration(seconds) + _moments(run)
            if seconds is not None
            else f"running, started {age(run.get('started_at'), now)}"
            if css == "running"
            else "-"
        ),
        "bar_percent": 0.0,
    }


def _moments(run: Mapping[str, Any]) -> str:
    """`` (verdict 31 s, at rest 48 s)`` when the run's record has both figures, and they
    say more than the total (a quick run reports its verdict before it cleans up)."""
    verdict, rest = run.get("verdict_seconds"), run.get("rest_seconds")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (verdict, rest)):
        return ""
    if verdict == rest == run.get("seconds"):
        return ""
    return f" (verdict {human_duration(verdict)}, at rest {human_duration(rest)})"


def _disk_view(name: str, part: Mapping[str, Any] | None) -> dict[str, Any]:
    part = part or {}
    label = {"docker_root": "Docker root", "state_dir": "state dir"}.get(name, name)
    out: dict[str, Any] = {"name": name, "label": label, "path": _text(part.get("path"))}
    free, total = part.get("free"), part.get("total")
    if part.get("error") or not isinstance(free, int | float) or not isinstance(total, int | float):
        out["error"] = _text(part.get("error") or "not measured")
        return out
    total = max(total, 0)
    used = max(0, total - free)
    free_percent = round(100.0 * free / total, 1) if total else 0.0
    level = "ok"
    if free_percent < DISK_CRIT_PERCENT:
        level = "crit"
    elif free_percent < DISK_WARN_PERCENT:
        level = "warn"
    out.update(
        {
            "error": None,
            "free": free,
            "total": total,
            "used_percent": round(100.0 - free_percent, 1) if total else 0.0,
            "free_percent": free_percent,
            "free_human": human(free),
            "used_human": human(used),
            "total_human": human(total),
            "level": level,
        }
    )
    return out


def view(doc: Mapping[str, Any], now: Any = None) -> dict[str, Any]:
    """What the page shows, computed from the status document (plain data).

    ``now`` (ISO-8601 text or a datetime) is the moment ages are counted to; default the
    document's ``generated_at``.
    """
    if not isinstance(doc, Mapping) or not isinstance(doc.get("recipes"), list):
        raise StatusPageError(
            "the status page needs the status document of coopcloud.ci.warm_status "
            f"(a mapping with a 'recipes' list), got {type(doc).__name__}"
        )
    now_dt = parse_time(now) if now is not None else parse_time(doc.get("generated_at"))
    if now is not None and now_dt is None:
        raise StatusPageError(f"now {now!r} is not an ISO-8601 time such as 2026-01-31T12:00:00Z")

    canonicals = []
    timeline = []
    for row in doc["recipes"]:
        if not isinstance(row, Mapping):
            continue
        snap = row.get("snapshot") or {}
        has = bool(row.get("canonical"))
        status = row.get("status") if has else None
        canonicals.append(
            {
                "recipe": _text(row.get("recipe")),
                "enrolled": {True: "enrolled", False: "not enrolled"}.get(row.get("enrolled"), ""),
                "canonical": has,
                "domain": _text(row.get("domain")),
                "node": row.get("node"),
                "version": _text(row.get("version")),
                "commit": _text(row.get("commit")),
                "commit_short": _text(row.get("commit_short")),
                "status": _text(status) if has else "no canonical",
                "status_class": _STATUS_CLASS.get(str(status), "other") if has else "none",
                "status_detail": _ISO_RE.sub(
                    lambda m: short_time(m.group(0)), _text(row.get("status_detail"))
                ),
                "seeded": short_time(row.get("seeded_at")),
                "seeded_age": age(row.get("seeded_at"), now_dt) if row.get("seeded_at") else "",
                "first_seeded": short_time(row.get("first_seeded_at")),
                "promoted_by": _text(row.get("promoted_by")),
                "snapshot_exists": bool(snap.get("exists")),
                "snapshot_size": human(snap.get("bytes")) if snap.get("bytes") is not None else "-",
                "snapshot_mismatch": snap.get("matches_registry") is False,
                "snapshot_taken": short_time(snap.get("taken_at")),
                "lock": _lock_view(row.get("lock"), now_dt),
                "errors": [_text(e) for e in row.get("errors") or []],
            }
        )
        runs = [_run_view(r, now_dt) for r in row.get("last_runs") or [] if isinstance(r, Mapping)]
        runs.reverse()  # the document lists newest first; a timeline reads left to right
        timeline.append(
            {
                "recipe": _text(row.get("recipe")),
                "runs": runs,
                "shown": len(runs),
                "total": row.get("runs_total") if isinstance(row.get("runs_total"), int) else None,
            }
        )
    longest = max(
        (r["seconds"] for lane in timeline for r in lane["runs"] if r["seconds"]), default=0
    )
    for lane in timeline:
        for run in lane["runs"]:
            if longest and run["seconds"]:
                run["bar_percent"] = round(
                    max(BAR_MIN_PERCENT, 100.0 * run["seconds"] / longest), 1
                )
            else:
                run["bar_percent"] = BAR_MIN_PERCENT

    alerts_doc = doc.get("alerts") or {}
    alert_rows = []
    for a in alerts_doc.get("latest") or []:
        if not isinstance(a, Mapping):
            continue
        if a.get("corrupt"):
            alert_rows.append(
                {"corrupt": True, "file": _text(a.get("file")), "error": _text(a.get("error"))}
            )
            continue
        recovered = a.get("recovered")
        notes = _notes(a.get("notes"))
        alert_rows.append(
            {
                "corrupt": False,
                "file": _text(a.get("file")),
                "kind": _text(a.get("kind")),
                "target": _text(a.get("target")),
                "attempted": _text(a.get("attempted")),
                "last_good": _text(a.get("last_good")),
                "recovered": {True: "yes", False: "no"}.get(recovered, "-"),
                "recovered_class": {True: "ok", False: "crit"}.get(recovered, "none"),
                "notes": notes,
                "notes_summary": _notes_summary(notes),
                "at": short_time(a.get("at")),
                "at_age": age(a.get("at"), now_dt),
            }
        )
    unseen = alerts_doc.get("unseen")
    alerts = {
        "unseen": unseen if isinstance(unseen, int) else None,
        "seen": alerts_doc.get("seen") if isinstance(alerts_doc.get("seen"), int) else None,
        "kinds": [(_text(k), _text(n)) for k, n in sorted((alerts_doc.get("kinds") or {}).items())],
        "error": _text(alerts_doc["error"]) if alerts_doc.get("error") else None,
        "rows": alert_rows,
        "more": (unseen - len(alert_rows)) if isinstance(unseen, int) else 0,
        "path": _text(alerts_doc.get("path")),
    }

    disk_doc = doc.get("disk") or {}
    disk = [_disk_view(name, disk_doc.get(name)) for name in ("docker_root", "state_dir")]

    sweep_doc = doc.get("last_sweep")
    sweep = None
    if isinstance(sweep_doc, Mapping):
        sweep = {
            "error": _text(sweep_doc["error"]) if sweep_doc.get("error") else None,
            "result": _text(sweep_doc.get("result")),
            "result_class": {"ok": "pass", "failed": "fail"}.get(
                str(sweep_doc.get("result")), "unknown"
            ),
            "started": short_time(sweep_doc.get("started_at")),
            "started_age": age(sweep_doc.get("started_at"), now_dt),
            "finished": short_time(sweep_doc.get("finished_at")),
            "recipes": [
                {
                    "recipe": _text(r.get("recipe")),
                    "run_id": _text(r.get("run_id")),
                    "verdict": _text(r.get("verdict")),
                    "verdict_class": _VERDICT_CLASS.get(str(r.get("verdict")), "unknown"),
                    "duration": human_duration(r.get("seconds")),
                }
                for r in sweep_doc.get("recipes") or []
                if isinstance(r, Mapping)
            ],
        }

    locks = [
        {"recipe": _text(lk.get("recipe")), **(_lock_view(lk, now_dt) or {})}
        for lk in doc.get("locks") or []
        if isinstance(lk, Mapping)
    ]
    held = sum(1 for lk in locks if not lk.get("stale"))
    worst_disk = min((d["free_percent"] for d in disk if not d.get("error")), default=None)
    return {
        "generated": short_time(doc.get("generated_at")),
        "generated_at": _text(doc.get("generated_at")),
        "now": now_dt.strftime("%Y-%m-%dT%H:%M:%SZ") if now_dt else "-",
        "host": _text(doc.get("host")),
        "state_dir": _text(doc.get("state_dir")),
        "catalog_dir": _text(doc.get("catalog_dir")),
        "canonicals": canonicals,
        "timeline": timeline,
        "alerts": alerts,
        "disk": disk,
        "sweep": sweep,
        "locks": locks,
        "errors": [_text(e) for e in doc.get("errors") or []],
        "summary": {
            "recipes": len(canonicals),
            "seeded": sum(1 for c in canonicals if c["canonical"]),
            "alerts": alerts["unseen"],
            "locks": held,
            "disk_free_percent": worst_disk,
            "disk_level": (
                "crit"
                if worst_disk is not None and worst_disk < DISK_CRIT_PERCENT
                else "warn"
                if worst_disk is not None and worst_disk < DISK_WARN_PERCENT
                else "ok"
            ),
            "problems": len(doc.get("errors") or []),
        },
    }


# ------------------------------------------------------------------------------ render

_ENV = jinja2.Environment(
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render_html(doc: Mapping[str, Any], now: Any = None) -> str:
    """The status page for ``doc`` (one HTML file, everything escaped and inline)."""
    return _ENV.from_string(TEMPLATE).render(v=view(doc, now))


def _pct(value: float) -> str:
    """A percentage for CSS, fixed to one decimal (deterministic, locale-free)."""
    return f"{float(value):.1f}%"


_ENV.filters["pct"] = _pct

TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="coopcloud.ci status.yml">
<title>coopcloud.ci status: {{ v.host }} at {{ v.generated }} UTC</title>
<style>
:root { --ok:#1a7f37; --ok-bg:#dafbe1; --fail:#cf222e; --fail-bg:#ffebe9;
  --warn:#9a6700; --warn-bg:#fff8c5; --info:#0969da; --info-bg:#ddf4ff;
  --muted:#57606a; --line:#d0d7de; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "DejaVu Sans", sans-serif; color: #1f2328; background: #fff; }
header { background: #24292f; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; }
header p { margin: 2px 0 0; color: #d0d7de; font-size: 13px; }
main { padding: 8px 28px 28px; max-width: 1400px; }
h2 { font-size: 16px; margin: 22px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); }
h2 small { font-weight: normal; color: var(--muted); font-size: 13px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
.summary { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0 4px; padding: 0;
  list-style: none; }
.summary li { border: 1px solid var(--line); border-radius: 6px; padding: 6px 14px;
  background: var(--bg); min-width: 120px; }
.summary b { display: block; font-size: 20px; }
.summary .warn { background: var(--warn-bg); border-color: #d4a72c; }
.summary .crit { background: var(--fail-bg); border-color: #ff8182; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px;
  border-bottom: 1px solid var(--line); }
th { background: var(--bg); font-weight: 600; font-size: 12.5px; white-space: nowrap; }
.sub { display: block; color: var(--muted); font-size: 12px; }
td.recipe .mono { white-space: nowrap; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; border: 1px solid transparent; white-space: nowrap; }
.b-ok, .b-pass { color: var(--ok); background: var(--ok-bg); border-color: #4ac26b; }
.b-fail, .b-crit { color: var(--fail); background: var(--fail-bg); border-color: #ff8182; }
.b-warn, .b-error { color: var(--warn); background: var(--warn-bg); border-color: #d4a72c; }
.b-info, .b-running { color: var(--info); background: var(--info-bg); border-color: #54aeff; }
.b-other, .b-none, .b-unknown { color: var(--muted); background: var(--bg); border-color: var(--line); }
.problem { color: var(--fail); }
.lane { display: flex; gap: 16px; padding: 10px 0; border-bottom: 1px solid var(--line); }
.lane h3 { margin: 0; width: 170px; flex: none; font-size: 14px; word-break: break-all; }
.lane h3 small { display: block; font-weight: normal; color: var(--muted); font-size: 12px; }
ol.timeline { display: flex; flex-wrap: wrap; gap: 8px; margin: 0; padding: 0;
  list-style: none; flex: 1; }
ol.timeline li { width: 128px; border: 1px solid var(--line); border-radius: 6px;
  padding: 5px 7px; font-size: 12px; background: #fff; }
ol.timeline li.v-pass { border-top: 4px solid var(--ok); }
ol.timeline li.v-fail { border-top: 4px solid var(--fail); }
ol.timeline li.v-error { border-top: 4px solid #d4a72c; }
ol.timeline li.v-running { border-top: 4px solid var(--info); }
ol.timeline li.v-unknown { border-top: 4px solid var(--muted); }
ol.timeline li.quick { background: repeating-linear-gradient(135deg, #fff 0 6px, #f3f4f6 6px 12px); }
.run-head { display: flex; justify-content: space-between; gap: 4px; }
.mode { text-transform: uppercase; font-size: 10.5px; letter-spacing: .04em; color: var(--muted);
  font-weight: 600; }
.confidence { display: block; font-size: 11px; color: var(--warn); font-style: italic; }
.confidence.authoritative { color: var(--muted); font-style: normal; }
.dur { height: 6px; background: var(--bg); border-radius: 3px; margin: 4px 0 2px;
  overflow: hidden; }
.dur span { display: block; height: 100%; border-radius: 3px; background: var(--muted); }
.v-pass .dur span { background: var(--ok); }
.v-fail .dur span { background: var(--fail); }
.v-error .dur span { background: #d4a72c; }
.v-running .dur span { background: var(--info); }
.arrow { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.disk { display: grid; grid-template-columns: 170px 1fr 260px; gap: 6px 16px;
  align-items: center; margin: 6px 0; }
.bar { height: 16px; background: var(--ok-bg); border: 1px solid var(--line);
  border-radius: 4px; overflow: hidden; }
.bar span { display: block; height: 100%; background: #8c959f; }
.bar.warn { background: var(--warn-bg); } .bar.warn span { background: #bf8700; }
.bar.crit { background: var(--fail-bg); } .bar.crit span { background: var(--fail); }
details summary { cursor: pointer; color: var(--info); }
pre.notes { white-space: pre-wrap; word-break: break-word; margin: 4px 0 0; max-width: 520px;
  font-size: 12px; background: var(--bg); padding: 6px; border-radius: 4px; }
footer { color: var(--muted); font-size: 12px; margin-top: 28px; border-top: 1px solid var(--line);
  padding-top: 8px; }
</style>
</head>
<body>
<header>
<h1>coopcloud.ci status</h1>
<p>host <b id="host">{{ v.host }}</b> · state dir <code>{{ v.state_dir }}</code> ·
generated <time id="generated-at" datetime="{{ v.generated_at }}">{{ v.generated }} UTC</time></p>
</header>
<main>
<ul class="summary" id="summary">
<li><b>{{ v.summary.seeded }} / {{ v.summary.recipes }}</b>canonicals seeded</li>
<li class="{{ 'warn' if v.summary.alerts else '' }}"><b>{{ v.summary.alerts if v.summary.alerts is not none else '?' }}</b>unseen alerts</li>
<li><b>{{ v.summary.locks }}</b>locks held</li>
<li class="{{ v.summary.disk_level if v.summary.disk_level != 'ok' else '' }}"><b>{{ '%.1f' % v.summary.disk_free_percent if v.summary.disk_free_percent is not none else '?' }} %</b>lowest free disk</li>
{% if v.summary.problems %}
<li class="crit"><b>{{ v.summary.problems }}</b>problems reading state</li>
{% endif %}
</ul>

<section id="canonicals">
<h2>Canonicals <small>known-good data per recipe</small></h2>
{% if v.canonicals %}
<table>
<thead><tr><th>recipe</th><th>known-good</th><th>commit</th><th>age</th><th>status</th><th>lock</th><th>snapshot</th></tr></thead>
<tbody>
{% for c in v.canonicals %}
<tr class="canonical" data-recipe="{{ c.recipe }}">
<td class="recipe"><b>{{ c.recipe }}</b>{% if c.enrolled %}<span class="sub">{{ c.enrolled }}</span>{% endif %}{% if c.canonical %}<span class="sub mono">{{ c.domain }}</span>{% endif %}</td>
<td class="version mono">{{ c.version }}</td>
<td class="commit mono" title="{{ c.commit }}">{{ c.commit_short }}</td>
<td class="age">{% if c.canonical %}<b>{{ c.seeded_age }}</b><span class="sub">seeded {{ c.seeded }} by run <span class="mono">{{ c.promoted_by }}</span></span>{% else %}-{% endif %}</td>
<td class="status"><span class="badge b-{{ c.status_class }}">{{ c.status }}</span>{% if c.canonical and c.status_detail != c.status %}<span class="sub">{{ c.status_detail }}</span>{% endif %}{% if c.node %}<span class="sub">node {{ c.node }}</span>{% endif %}</td>
<td class="lock">{% if c.lock %}{% if c.lock.corrupt %}<span class="badge b-crit">unreadable</span>{% else %}run <span class="mono">{{ c.lock.run_id }}</span> pid {{ c.lock.pid }}{% endif %}{% if c.lock.stale %} <span class="badge b-warn">stale</span>{% endif %}<span class="sub">{{ c.lock.play }} on {{ c.lock.host }} since {{ c.lock.since }} ({{ c.lock.since_age }})</span>{% else %}<span class="muted">free</span>{% endif %}</td>
<td class="snapshot">{% if c.snapshot_exists %}{{ c.snapshot_size }}{% if c.snapshot_mismatch %} <span class="badge b-crit">not the registry's!</span>{% endif %}<span class="sub">taken {{ c.snapshot_taken }}</span>{% else %}<span class="muted">none</span>{% endif %}</td>
</tr>
{% for e in c.errors %}
<tr class="row-error"><td></td><td colspan="6" class="problem">{{ e }}</td></tr>
{% endfor %}
{% endfor %}
</tbody>
</table>
{% else %}
<p class="muted" id="no-recipes">No recipes: nothing enrolled in the catalog and nothing in the state dir.</p>
{% endif %}
</section>

<section id="runs">
<h2>Last runs <small>oldest → newest; bar = duration; hatched = quick (lower confidence, never gates merge)</small></h2>
{% for lane in v.timeline %}
<div class="lane" data-recipe="{{ lane.recipe }}">
<h3>{{ lane.recipe }}<small>{{ lane.shown }}{% if lane.total is not none %} of {{ lane.total }}{% endif %} runs</small></h3>
{% if lane.runs %}
<ol class="timeline">
{% for r in lane.runs %}
<li class="run v-{{ r.verdict_class }}{{ ' quick' if r.quick else '' }}" data-run-id="{{ r.run_id }}" data-mode="{{ r.mode }}" data-verdict="{{ r.verdict }}" title="run {{ r.run_id }} · {{ r.ref }} {{ r.commit_short }}">
<div class="run-head"><span class="mode">{{ r.mode }}</span><span class="badge b-{{ r.verdict_class }} verdict">{{ r.verdict }}</span></div>
<span class="confidence{{ '' if r.quick else ' authoritative' }}">{{ r.confidence }}</span>
<div class="dur"><span style="width: {{ r.bar_percent | pct }}"></span></div>
<span class="sub duration"><b>{{ r.duration }}</b></span>
<span class="sub started">{{ r.started }}</span>
<span class="sub mono">{{ r.run_id }} · {{ r.ref }}</span>
</li>
{% endfor %}
</ol>
{% else %}
<p class="muted">no runs recorded</p>
{% endif %}
</div>
{% else %}
<p class="muted">No runs recorded.</p>
{% endfor %}
</section>

<section id="alerts">
<h2>Unseen alerts <small>{% if v.alerts.error %}cannot be read{% else %}{{ v.alerts.unseen }} waiting for the relay{% if v.alerts.seen is not none %}, {{ v.alerts.seen }} relayed{% endif %}{% for k, n in v.alerts.kinds %}{{ ' · ' if loop.first else ', ' }}{{ k }} {{ n }}{% endfor %}{% endif %}</small></h2>
{% if v.alerts.error %}
<p class="problem">{{ v.alerts.error }}</p>
{% elif v.alerts.rows %}
<table>
<thead><tr><th>when</th><th>kind</th><th>target</th><th>attempted</th><th>last good</th><th>recovered</th><th>notes</th></tr></thead>
<tbody>
{% for a in v.alerts.rows %}
{% if a.corrupt %}
<tr class="alert corrupt"><td>-</td><td><span class="badge b-crit">corrupt</span></td><td colspan="5"><span class="mono">{{ a.file }}</span><span class="sub problem">{{ a.error }}</span></td></tr>
{% else %}
<tr class="alert" data-kind="{{ a.kind }}">
<td class="when"><b>{{ a.at_age }}</b><span class="sub">{{ a.at }}</span></td>
<td class="kind"><span class="badge b-{{ 'warn' if a.kind.startswith('held') else 'crit' if a.kind in ('rollback', 'quick-rollback', 'disk-low') else 'other' }}">{{ a.kind }}</span></td>
<td class="target mono">{{ a.target }}</td>
<td class="attempted mono">{{ a.attempted }}</td>
<td class="last-good mono">{{ a.last_good }}</td>
<td class="recovered"><span class="badge b-{{ a.recovered_class }}">{{ a.recovered }}</span></td>
<td class="notes">{% if a.notes %}<details><summary>{{ a.notes_summary }}</summary><pre class="notes">{{ a.notes }}</pre></details>{% else %}-{% endif %}</td>
</tr>
{% endif %}
{% endfor %}
</tbody>
</table>
{% if v.alerts.more > 0 %}<p class="muted">and {{ v.alerts.more }} older unseen alert(s) in <code>{{ v.alerts.path }}</code>.</p>{% endif %}
{% else %}
<p class="muted" id="no-alerts">No unseen alerts.</p>
{% endif %}
</section>

<section id="disk">
<h2>Disk <small>used / total; the guard prunes and refuses when free space runs short</small></h2>
{% for d in v.disk %}
<div class="disk" data-disk="{{ d.name }}">
<div><b>{{ d.label }}</b><span class="sub mono">{{ d.path }}</span></div>
{% if d.error %}
<div class="problem">{{ d.error }}</div><div></div>
{% else %}
<div class="bar {{ d.level }}" role="img" aria-label="{{ d.used_percent }}% used"><span style="width: {{ d.used_percent | pct }}"></span></div>
<div class="disk-text"><b>{{ d.free_human }} free</b> of {{ d.total_human }} ({{ d.free_percent }} %)</div>
{% endif %}
</div>
{% endfor %}
</section>

<section id="sweep">
<h2>Last sweep</h2>
{% if not v.sweep %}
<p class="muted">None recorded.</p>
{% elif v.sweep.error %}
<p class="problem">{{ v.sweep.error }}</p>
{% else %}
<p><span class="badge b-{{ v.sweep.result_class }}">{{ v.sweep.result }}</span>
started {{ v.sweep.started }} ({{ v.sweep.started_age }}), finished {{ v.sweep.finished }}
{% for r in v.sweep.recipes %}{{ ' · ' if loop.first else ', ' }}{{ r.recipe }} <span class="badge b-{{ r.verdict_class }}">{{ r.verdict }}</span> {{ r.duration }}{% endfor %}</p>
{% endif %}
</section>

{% if v.errors %}
<section id="problems">
<h2>Problems <small>parts of the state that could not be read</small></h2>
<ul>
{% for e in v.errors %}
<li class="problem">{{ e }}</li>
{% endfor %}
</ul>
</section>
{% endif %}

<footer>coopcloud.ci · <code>ansible-playbook playbooks/status.yml -e format=html</code> ·
catalog <code>{{ v.catalog_dir }}</code> · ages as of {{ v.now }} · a static page: it changes only when generated again.</footer>
</main>
</body>
</html>
"""
