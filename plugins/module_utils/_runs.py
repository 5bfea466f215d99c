# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run records. PRIVATE to the collection: no compatibility promises.

Every run (cold or quick) leaves ``<state_dir>/runs/<run_id>.json``: what was tested
(recipe, ref, version, commit, domain), how (mode and the confidence it implies), each
stage's result and timing, the verdict, and the canonical before and after. The file is
written atomically when the run starts (``status: running``), after each stage, and when
it finishes, so a crashed run leaves a record that says how far it got.

Verdict rules (:func:`verdict_of`):

* ``ERROR`` when a Docker engine of the run stopped or restarted while it ran
  (``engine_fault``; see ``_engine``): what the stages saw may be the engine's doing;
* ``FAIL`` when any stage failed;
* otherwise ``ERROR`` when the run could not run: an error was given at finish (bad
  input, no checkout, an interrupted play), or no stage passed at all (nothing ran, or
  everything was skipped: a run that tested nothing is never a pass);
* otherwise ``PASS``.

Two moments of every run, in ``timings`` (each ``<name>_at`` and ``<name>_seconds``
since the start): ``verdict``, when the verdict line was reported (a quick run reports
it before it puts the canonical back; a cold run when it finishes), and ``rest``, when
the run left the warm layer at rest again (the canonical idle and its known-good back,
or the cold app torn down). :meth:`RunRecord.mark` sets one the first time; a run that
never marked them gets both at its finish.

Confidence is derived from the mode, never passed: ``cold`` is ``authoritative``;
``quick`` is ``lower`` and its ``label`` says "lower confidence, never gates merge".

Records never hold secrets. The API takes no environment or credentials, and every
free-form value (canonical snapshots of the registry, messages, notes) goes through
:func:`scrub`/:func:`scrub_text`, which drop keys whose names look secret and mask
``password=...``-style text.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    matching,
    validate_run_id,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    StateError,
    parse_time,
    read_json,
    stamp,
    write_json,
)

SCHEMA = 1
RUNS_DIR = "runs"
CONFIDENCE = {"cold": "authoritative", "quick": "lower"}
LABELS = {
    "cold": "cold run: authoritative",
    "quick": "quick run: lower confidence, never gates merge",
}
RESULTS = ("pass", "fail", "skip")
VERDICTS = ("PASS", "FAIL", "ERROR")
MARKS = ("verdict", "rest")

_STAGE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_TEXT_MAX = 4000
_FIELD_MAX = 200
_SECRET_KEY_RE = re.compile(
    r"passw|passphrase|secret|token|credential|api[_-]?key|private[_-]?key|(^|[_-])pwd($|[_-])",
    re.IGNORECASE,
)
_SECRET_TEXT_RES = (
    # NAME=value, NAME: value, "name": "value" where the name looks secret
    (
        re.compile(
            r"""(?i)(["']?[\w.-]*(?:passw|passphrase|secret|token|api[_-]?key)[\w.-]*["']?"""
            r"""\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&]+)"""
        ),
        r"\1***",
    ),
    # credentials inside URLs: scheme://user:password@host
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), r"\1***@"),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 ***"),
)


class RunError(CcciError, ValueError):
    """A run record cannot be written as asked. The message names the run and the problem."""


# --- secrets ------------------------------------------------------------------------------


def looks_secret(key: object) -> bool:
    """Whether a dict key names something secret (password, secret, token, api key, ...)."""
    return isinstance(key, str) and bool(_SECRET_KEY_RE.search(key))


def scrub_text(text: str) -> str:
    """``text`` with secret-looking assignments, URL credentials and bearer tokens masked."""
    for pattern, replacement in _SECRET_TEXT_RES:
        text = pattern.sub(replacement, text)
    return text


def scrub(value: Any, where: str = "") -> tuple[Any, list[str]]:
    """A deep copy of ``value`` without secret-looking keys, and the paths of those dropped.

    Strings are passed through :func:`scrub_text`. Only JSON types survive: anything
    else raises :class:`RunError`, so a record is always plain JSON.
    """
    dropped: list[str] = []

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, Mapping):
            out = {}
            for key, item in obj.items():
                if not isinstance(key, str):
                    raise RunError(f"{path or 'value'} has a non-string key {key!r}")
                child = f"{path}.{key}" if path else key
                if looks_secret(key):
                    dropped.append(child)
                    continue
                out[key] = walk(item, child)
            return out
        if isinstance(obj, list | tuple):
            return [walk(item, f"{path}[{i}]") for i, item in enumerate(obj)]
        if isinstance(obj, str):
            return scrub_text(str(obj))
        if obj is None or isinstance(obj, bool | int | float):
            return obj
        raise RunError(f"{path or 'value'} is a {type(obj).__name__}, not a JSON value")

    return walk(value, where), dropped


# --- time ---------------------------------------------------------------------------------


def run_time(value: Any, what: str = "time") -> datetime.datetime:
    """A run's moment (``_state.parse_time``) to the second; a clear error when it is none."""
    moment = parse_time(value) if isinstance(value, str) else None
    if moment is None:
        raise RunError(f"{what} {value!r} is not an ISO-8601 time such as 2026-01-31T12:00:00Z")
    return moment.replace(microsecond=0)


def _seconds(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    return max(0, int((run_time(end) - run_time(start)).total_seconds()))


# --- helpers ------------------------------------------------------------------------------


def runs_dir(state_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(state_dir), RUNS_DIR)


def record_path(state_dir: str | os.PathLike, run_id: str) -> str:
    """``<state_dir>/runs/<run_id>.json`` (the run id is validated: it names a file)."""
    try:
        validate_run_id(run_id)
    except ValidationError as exc:
        raise RunError(str(exc)) from None
    return os.path.join(runs_dir(state_dir), f"{run_id}.json")


def _mode(mode: object) -> str:
    if mode not in CONFIDENCE:
        raise RunError(f"mode {mode!r} is invalid: use cold or quick")
    return mode  # type: ignore[return-value]


def _field(name: str, value: object, required: bool = False) -> str | None:
    """A short free-form identity field (recipe, ref, version, commit, domain).

    Stored as given, so a run refused for a bad recipe name still leaves an ERROR record
    saying what was asked; only its shape is checked here.
    """
    if value is None or value == "":
        if required:
            raise RunError(f"{name} is required to start a run record")
        return None
    if not isinstance(value, str):
        raise RunError(f"{name} {value!r} must be a string")
    if len(value) > _FIELD_MAX or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise RunError(
            f"{name} {value[:40]!r} is refused: use at most {_FIELD_MAX} printable characters"
        )
    return value


def clean_text(value: object, what: str) -> str | None:
    """A free-form text as a record keeps it: scrubbed of secrets, at most 4000 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RunError(f"{what} must be a string, got {type(value).__name__}")
    text = scrub_text(value)
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 14] + " … (truncated)"


def verdict_of(
    stages: Mapping[str, str], error: str | None = None, engine_fault: bool = False
) -> str:
    """The verdict of a finished run from its stage results (see the module docstring)."""
    results = list(stages.values())
    if engine_fault:
        return "ERROR"
    if "fail" in results:
        return "FAIL"
    if error or "pass" not in results:
        return "ERROR"
    return "PASS"


# --- the record -------------------------------------------------------------------------


class RunRecord:
    """One run's record. Every change is saved atomically unless ``autosave`` is false."""

    def __init__(self, state_dir: str | os.PathLike, data: dict[str, Any], autosave: bool = True):
        self.state_dir = os.fspath(state_dir)
        self.data = data
        self.autosave = autosave
        self.path = record_path(self.state_dir, data["run_id"])

    # construction

    @classmethod
    def start(
        cls,
        state_dir: str | os.PathLike,
        run_id: str,
        mode: str,
        recipe: str,
        ref: str | None = None,
        *,
        version: str | None = None,
        commit: str | None = None,
        domain: str | None = None,
        canonical_before: Mapping | None = None,
        notes: list[str] | tuple[str, ...] = (),
        started_at: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        engines: list[Mapping[str, Any]] | None = None,
        autosave: bool = True,
    ) -> RunRecord:
        """Begin the record of run ``run_id`` (``status: running``); refuse an existing one.

        ``engines``: who answered at each Docker engine of the run as it started
        (``_engine.boots``), compared at the verdict and the finish."""
        path = record_path(state_dir, run_id)
        if os.path.exists(path):
            raise RunError(
                f"run record {path} already exists; every run needs a new run id "
                "(or continue the existing record)"
            )
        mode = _mode(mode)
        started = stamp(run_time(started_at, "started_at") if started_at else None)
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "run_id": run_id,
            "mode": mode,
            "confidence": CONFIDENCE[mode],
            "label": LABELS[mode],
            "gates_merge": mode == "cold",
            "recipe": _field("recipe", recipe, required=True),
            "ref": _field("ref", ref),
            "version": None,
            "commit": None,
            "domain": None,
            "host": host or socket.gethostname(),
            "pid": os.getpid() if pid is None else int(pid),
            "status": "running",
            "verdict": None,
            "error": None,
            "engines": [dict(seen) for seen in engines or []],
            "engine_fault": False,
            "stages": {},
            "stage_order": [],
            "stage_details": {},
            "started_at": started,
            "finished_at": None,
            "canonical_before": None,
            "canonical_after": None,
            "timings": {"total_seconds": None, "stages_seconds": 0},
            "notes": [],
            "scrubbed": [],
        }
        record = cls(state_dir, data, autosave=False)
        record.update(
            version=version, commit=commit, domain=domain, canonical_before=canonical_before
        )
        for text in notes:
            record.note(text)
        record.autosave = autosave
        record._changed()
        return record

    @classmethod
    def load(cls, state_dir: str | os.PathLike, run_id: str, autosave: bool = True) -> RunRecord:
        path = record_path(state_dir, run_id)
        data = read_json(path)
        if not isinstance(data, dict) or data.get("run_id") != run_id or "stages" not in data:
            raise StateError(f"state file {path} is not a run record of run {run_id}")
        return cls(state_dir, data, autosave=autosave)

    # reading

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    @property
    def finished(self) -> bool:
        return self.data["status"] == "finished"

    @property
    def verdict(self) -> str | None:
        return self.data["verdict"]

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    # writing

    def save(self) -> None:
        write_json(self.path, self.data)

    def _changed(self) -> None:
        if self.autosave:
            self.save()

    def _running(self, what: str) -> None:
        if self.finished:
            raise RunError(
                f"run {self.run_id} already finished with verdict {self.verdict}; "
                f"cannot {what} (start a new run)"
            )

    def _free_form(self, name: str, value: Mapping | None) -> dict | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise RunError(f"{name} must be an object (the canonical registry) or null")
        clean, dropped = scrub(value, name)
        for path in dropped:
            if path not in self.data["scrubbed"]:
                self.data["scrubbed"].append(path)
        return clean

    def update(
        self,
        *,
        version: str | None = None,
        commit: str | None = None,
        domain: str | None = None,
        canonical_before: Mapping | None = None,
    ) -> None:
        """Fill in what became known after the start (resolved version, commit, ...)."""
        self._running("update it")
        for name, value in (("version", version), ("commit", commit), ("domain", domain)):
            if value is not None:
                self.data[name] = _field(name, value)
        if canonical_before is not None:
            self.data["canonical_before"] = self._free_form("canonical_before", canonical_before)
        self._changed()

    def note(self, text: str) -> None:
        """Add a note (e.g. "falling back to COLD"); the same note twice is kept once."""
        clean = clean_text(text, "note")
        if clean and clean not in self.data["notes"]:
            self.data["notes"].append(clean)
            self._changed()

    def stage(
        self,
        name: str,
        result: str,
        message: str | None = None,
        started_at: str | None = None,
        finished_at: str | None = None,
    ) -> None:
        """Record stage ``name`` as ``pass``, ``fail`` or ``skip``; recording it again replaces it.

        ``finished_at`` defaults to now; ``started_at`` to when the previous stage
        finished (or the run started), so a play that records each stage as it ends
        gets each stage's duration without timing it.
        """
        self._running(f"record stage {name!r}")
        matching(name, _STAGE_RE, "stage name", "use a-z, 0-9, '-' and '_'", RunError)
        if result not in RESULTS:
            raise RunError(f"stage {name} result {result!r} is invalid: use pass, fail or skip")
        end = stamp(run_time(finished_at, "finished_at") if finished_at else None)
        if started_at:
            begin = stamp(run_time(started_at, "started_at"))
        else:
            previous = [s for s in self.data["stage_order"] if s != name]
            begin = (
                self.data["stage_details"][previous[-1]]["finished_at"]
                if previous
                else self.data["started_at"]
            )
            begin = min(begin, end)
        if run_time(begin) > run_time(end):
            raise RunError(f"stage {name} started_at {begin} is after its finished_at {end}")
        if name not in self.data["stage_order"]:
            self.data["stage_order"].append(name)
        self.data["stages"][name] = result
        self.data["stage_details"][name] = {
            "result": result,
            "started_at": begin,
            "finished_at": end,
            "seconds": _seconds(begin, end),
            "message": clean_text(message, f"stage {name} message"),
        }
        self.data["timings"]["stages_seconds"] = sum(
            d["seconds"] or 0 for d in self.data["stage_details"].values()
        )
        self._changed()

    def mark(
        self, what: str, at: str | None = None, error: str | None = None, engine: str | None = None
    ) -> bool:
        """Note the moment ``what`` (one of :data:`MARKS`) happened, the first time only.

        For ``verdict`` the verdict reported then (:func:`verdict_of` the stages so far,
        ``error`` and ``engine``, the sentence of an engine that stopped or restarted) is
        kept too, as ``timings.verdict_reported``. Returns whether the record changed.
        """
        self._running(f"mark its {what}")
        if what not in MARKS:
            raise RunError(f"mark {what!r} is invalid: use {' or '.join(MARKS)}")
        timings = self.data["timings"]
        if timings.get(f"{what}_at"):
            return False
        moment = stamp(run_time(at, f"{what} time") if at else None)
        timings[f"{what}_at"] = moment
        timings[f"{what}_seconds"] = _seconds(self.data["started_at"], moment)
        if what == "verdict":
            timings["verdict_reported"] = verdict_of(
                self.data["stages"], error or self.data["error"], bool(engine)
            )
        self._changed()
        return True

    def finish(
        self,
        canonical_after: Mapping | None = None,
        *,
        error: str | None = None,
        docker_seconds: float | None = None,
        finished_at: str | None = None,
        engine: str | None = None,
    ) -> str:
        """Close the record: verdict, finish time, timings, the canonical after. Returns the
        verdict. ``engine``: the sentence of an engine that stopped or restarted during the
        run (``_engine.restarted``); it joins the error and the verdict is ``ERROR``."""
        self._running("finish it again")
        end = stamp(run_time(finished_at, "finished_at") if finished_at else None)
        error = "; ".join(text for text in (error, engine) if text)
        self.data["error"] = clean_text(error, "error") if error else None
        self.data["engine_fault"] = bool(engine)
        self.data["canonical_after"] = self._free_form("canonical_after", canonical_after)
        self.data["finished_at"] = end
        self.data["timings"]["total_seconds"] = _seconds(self.data["started_at"], end)
        if docker_seconds is not None:
            if isinstance(docker_seconds, bool) or not isinstance(docker_seconds, int | float):
                raise RunError(f"docker_seconds {docker_seconds!r} must be a number")
            self.data["timings"]["docker_seconds"] = round(float(docker_seconds), 3)
        self.data["verdict"] = verdict_of(
            self.data["stages"], self.data["error"], self.data["engine_fault"]
        )
        autosave, self.autosave = self.autosave, False
        for what in MARKS:
            self.mark(what, end)
        self.autosave = autosave
        self.data["status"] = "finished"
        self._changed()
        return self.data["verdict"]


def load(state_dir: str | os.PathLike, run_id: str) -> RunRecord:
    """The record of ``run_id``; :class:`StateError` when it is missing or malformed."""
    return RunRecord.load(state_dir, run_id)


def list_runs(
    state_dir: str | os.PathLike, recipe: str | None = None, errors: list[str] | None = None
) -> list[dict[str, Any]]:
    """Every run record (of ``recipe``, if given), newest first.

    A record that cannot be read raises :class:`StateError`, unless ``errors`` is a list:
    then its message is appended there and the listing goes on.
    """
    folder = runs_dir(state_dir)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        run_id, ext = os.path.splitext(name)
        if ext != ".json" or not re.match(r"^[0-9a-f]{6}$", run_id):
            continue
        path = os.path.join(folder, name)
        try:
            data = read_json(path)
            if not isinstance(data, dict) or data.get("run_id") != run_id:
                raise StateError(f"state file {path} is not a run record of run {run_id}")
            mtime = os.stat(path).st_mtime_ns
        except (StateError, OSError) as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            continue
        if recipe is None or data.get("recipe") == recipe:
            found.append((data.get("started_at") or "", mtime, data))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [data for _start, _mtime, data in found]


# --- reports ------------------------------------------------------------------------------


def _data(record: RunRecord | Mapping) -> Mapping[str, Any]:
    return record.data if isinstance(record, RunRecord) else record


def _order(data: Mapping[str, Any]) -> list[str]:
    order = list(data.get("stage_order") or [])
    return order + sorted(s for s in data.get("stages", {}) if s not in order)


def junit_xml(record: RunRecord | Mapping) -> str:
    """JUnit XML of the run: one ``<testcase>`` per stage (``<failure>``/``<skipped>``).

    A run that ended in ERROR carries one more test case, ``run``, with an ``<error>``.
    The suite and case names carry the mode, so a quick run never reads as a cold one.
    """
    data = _data(record)
    mode = data.get("mode", "?")
    suite_name = f"{data.get('recipe')} [{mode}]"
    classname = f"ccci.{data.get('recipe')}.{mode}"
    details = data.get("stage_details", {})
    stages = data.get("stages", {})
    order = _order(data)

    cases = []
    failures = skipped = errors = 0
    for name in order:
        result = stages[name]
        detail = details.get(name, {})
        case = ET.Element(
            "testcase",
            name=f"{name} [{mode}]",
            classname=classname,
            time=str(detail.get("seconds") or 0),
        )
        message = detail.get("message") or ""
        if result == "fail":
            failures += 1
            node = ET.SubElement(case, "failure", message=message or f"stage {name} failed")
            node.text = message or f"stage {name} failed"
        elif result == "skip":
            skipped += 1
            ET.SubElement(case, "skipped", message=message or f"stage {name} does not apply")
        cases.append(case)
    if data.get("verdict") == "ERROR":
        errors += 1
        text = data.get("error") or "the run tested nothing: no stage passed or failed"
        case = ET.Element("testcase", name=f"run [{mode}]", classname=classname, time="0")
        node = ET.SubElement(case, "error", message=text)
        node.text = text
        cases.append(case)

    total = (data.get("timings") or {}).get("total_seconds")
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=str(
            total if total is not None else sum(d.get("seconds") or 0 for d in details.values())
        ),
        timestamp=str(data.get("started_at") or ""),
        hostname=str(data.get("host") or ""),
    )
    props = ET.SubElement(suite, "properties")
    for key in (
        "run_id",
        "mode",
        "confidence",
        "label",
        "recipe",
        "ref",
        "version",
        "commit",
        "domain",
        "verdict",
    ):
        if data.get(key) is not None:
            ET.SubElement(props, "property", name=key, value=str(data[key]))
    suite.extend(cases)
    root = ET.Element(
        "testsuites",
        name=f"coopcloud.ci {data.get('run_id')}",
        tests=suite.get("tests"),
        failures=suite.get("failures"),
        errors=suite.get("errors"),
        skipped=suite.get("skipped"),
        time=suite.get("time"),
    )
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def verdict_line(record: RunRecord | Mapping, verdict: str | None = None) -> str | None:
    """The one line a CI log ends with, once the run is finished: ``COLD VERDICT: PASS - ...``.

    ``<MODE> VERDICT: <verdict> - <recipe> at <version or ref> (<commit>) on <domain>;
    stages <name> <result>, ...``. While the run is still going: None, unless ``verdict``
    is given (a quick run reports its verdict before it puts the canonical back).
    """
    data = _data(record)
    if data.get("status") == "finished":
        verdict = data.get("verdict")
    elif verdict is None:
        return None
    commit = str(data.get("commit") or "")[:12]
    at = data.get("version") or data.get("ref") or commit or "latest"
    line = f"{str(data.get('mode') or 'cold').upper()} VERDICT: {verdict} - "
    line += f"{data.get('recipe')} at {at}"
    if commit and commit != at:
        line += f" ({commit})"
    if data.get("domain"):
        line += f" on {data['domain']}"
    stages = ", ".join(f"{name} {data['stages'][name]}" for name in _order(data))
    line += f"; stages {stages or 'none'}"
    if data.get("mode") == "quick":
        line += " (lower confidence, never gates merge)"
    return line


def summary_lines(record: RunRecord | Mapping) -> list[str]:
    """A short human summary: what ran, how (mode, confidence), each stage, verdict, timings."""
    data = _data(record)
    mode = data.get("mode")
    what = f"{data.get('recipe')} @ {data.get('ref') or 'latest'}"
    if data.get("version") and data.get("version") != data.get("ref"):
        what += f" ({data['version']})"
    if data.get("commit"):
        what += f" commit {str(data['commit'])[:12]}"
    lines = [f"run {data.get('run_id')}: {what}"]
    if mode == "quick":
        lines.append("mode: quick (lower confidence, never gates merge)")
    else:
        lines.append(f"mode: {mode} (confidence: {data.get('confidence')})")
    order = _order(data)
    width = max([len(s) for s in order] + [7])
    details = data.get("stage_details", {})
    for name in order:
        detail = details.get(name, {})
        line = f"  {name:<{width}}  {data['stages'][name]:<4}"
        if detail.get("seconds") is not None:
            line += f"  {detail['seconds']:>4}s"
        if detail.get("message"):
            first = detail["message"].splitlines()[0] if detail["message"].strip() else ""
            line += f"  {first[:120]}"
        lines.append(line.rstrip())
    if not order:
        lines.append("  (no stage recorded)")
    if data.get("status") == "finished":
        verdict = f"verdict: {data.get('verdict')}"
        if data.get("error"):
            verdict += f": {data['error'].splitlines()[0][:200]}"
        lines.append(verdict)
        timings = data.get("timings") or {}
        timing = f"time: {timings.get('total_seconds')}s total"
        if timings.get("docker_seconds") is not None:
            timing += f", {timings['docker_seconds']}s docker"
        verdict, rest = timings.get("verdict_seconds"), timings.get("rest_seconds")
        if None not in (verdict, rest) and (verdict, rest) != (timings.get("total_seconds"),) * 2:
            timing += f"; verdict after {verdict}s, at rest after {rest}s"
        lines.append(timing)
    else:
        lines.append("verdict: (running)")
    lines.extend(f"note: {n}" for n in data.get("notes", []))
    return lines
