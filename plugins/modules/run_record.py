#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: run_record
short_description: Write the record of a CI run, its JUnit XML and its summary
version_added: 0.1.0
description:
  - Every run, cold or quick, leaves C(<state_dir>/runs/<run_id>.json) - what was tested
    (recipe, ref, version, commit, domain), the mode and the confidence it implies, each
    stage's result and timing, the verdict, the canonical before and after, timings and
    notes. The file is written atomically (temporary file, fsync, rename) when the run
    starts, after each stage and when it finishes, so a crashed run leaves a record saying
    how far it got (C(status=running)).
  - O(state=started) creates the record (C(status=running)). On a record that is still
    running it fills in what became known since (O(version), O(commit), O(domain),
    O(canonical_before), O(notes)); O(mode), O(recipe) and O(ref) must then match.
  - O(state=stage) records one stage as V(pass), V(fail) or V(skip). Recording a stage
    again replaces it. Without O(started_at) a stage is taken to have started when the
    previous stage finished (or the run started).
  - O(state=finished) closes the record with its verdict and, with O(junit), writes JUnit
    XML (one test case per stage; C(failure) for V(fail), C(skipped) for V(skip)).
  - O(state=info) only reads the record.
  - O(mark) notes, with O(state=started), when the run reported its verdict (V(verdict))
    or left the warm layer at rest again (V(rest)), each the first time only, as
    C(timings.verdict_at)/C(verdict_seconds) and C(timings.rest_at)/C(rest_seconds)
    (seconds since the start). A run that never marked them gets both at its finish.
    With V(verdict) the module returns RV(verdict_line) for the verdict so far, and the
    record keeps it as C(timings.verdict_reported).
  - B(Verdict) - V(FAIL) when any stage failed; otherwise V(ERROR) when the run could not
    run (O(error) was given - bad input, no checkout, an interrupted play - or no stage
    passed - nothing ran, or everything was skipped); otherwise V(PASS). This module does
    not fail on a V(FAIL) or V(ERROR) verdict; end the play with M(ansible.builtin.fail)
    when RV(verdict) is not V(PASS).
  - >-
    B(Confidence) follows from O(mode) and cannot be set - V(cold) runs are
    V(authoritative); V(quick) runs are V(lower), and their C(label) says
    C(quick run: lower confidence, never gates merge), as do the summary and the JUnit
    properties.
  - B(No secrets) - the module takes no credentials or environment. O(canonical_before)
    and O(canonical_after) lose every key whose name looks secret (password, secret,
    token, credential, API or private key; the dropped paths are listed in the record's
    C(scrubbed)), and messages, notes and errors have C(password=...)-style text, URL
    credentials and bearer tokens masked.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.STATE_DIR]
options:
  run_id:
    description: The 6-hex run id; the record is C(<state_dir>/runs/<run_id>.json).
    type: str
    required: true
  state:
    description:
      - V(started) creates (or fills in) the record, V(stage) records one stage,
        V(finished) closes it, V(info) reads it.
    type: str
    choices: [started, stage, finished, info]
    default: info
  mode:
    description:
      - V(cold) (authoritative) or V(quick) (lower confidence).
      - Required with O(state=started).
    type: str
    choices: [cold, quick]
  recipe:
    description:
      - The recipe under test. Required with O(state=started).
      - Stored as given (at most 200 printable characters) so that a run refused for a
        bad recipe name still leaves an V(ERROR) record saying what was asked.
    type: str
  ref:
    description: The ref under test as given (commit, tag or branch); omitted means the latest tag.
    type: str
  version:
    description: The version tag the ref resolved to.
    type: str
  commit:
    description: The commit under test.
    type: str
  domain:
    description: The app domain of the run.
    type: str
  stage:
    description: The stage name (C(a-z), C(0-9), C(-), C(_)), for O(state=stage).
    type: str
  result:
    description: The stage result, for O(state=stage).
    type: str
    choices: [pass, fail, skip]
  message:
    description: Why the stage failed or skipped (or any detail), for O(state=stage).
    type: str
  started_at:
    description:
      - ISO-8601 time the stage started (O(state=stage)) or the run started
        (O(state=started)); defaults are described above.
    type: str
  finished_at:
    description: ISO-8601 time the stage or the run finished; defaults to now.
    type: str
  error:
    description:
      - With O(state=finished), why the run could not run; makes the verdict V(ERROR)
        unless a stage failed.
      - With the other states, the errors so far, counted in RV(verdict_so_far) only.
    type: str
  canonical_before:
    description:
      - The canonical registry (C(canonical.json)) as the run found it, or V(null).
        Secret-looking keys are dropped.
    type: dict
  canonical_after:
    description:
      - With O(state=finished), the canonical registry as the run left it, or V(null).
    type: dict
  notes:
    description:
      - Notes to add to the record (for example C(falling back to COLD)); a note already
        there is not added twice.
    type: list
    elements: str
    default: []
  docker_seconds:
    description: With O(state=finished), seconds spent in Docker, for the timings.
    type: float
  mark:
    description:
      - With O(state=started) or O(state=finished), the moments to note - V(verdict) (the
        verdict line is reported) and V(rest) (the canonical is idle again, or the app torn
        down) - at O(marked_at). A moment is noted once; closing the record notes any
        moment not noted yet at the finish.
    type: list
    elements: str
    choices: [verdict, rest]
    default: []
  skipped:
    description:
      - Stages to record as V(skip) before anything else this call writes, in order (with
        O(state=started), O(state=stage) or O(state=finished)). A play puts the stages that
        do not apply aside as it meets them and hands the list to its next write of the
        record; a stage already recorded as skipped with the same message is left as it is,
        so the same list may be handed again.
    type: list
    elements: dict
    default: []
    suboptions:
      stage:
        description: The stage name.
        type: str
        required: true
      message:
        description: Why it does not apply.
        type: str
      at:
        description: ISO-8601 time it was found not to apply (its finish); defaults to now.
        type: str
  marked_at:
    description:
      - ISO-8601 time of the moments in O(mark) (a lane notes when the canonical came to
        rest and hands the time to the close of the record); defaults to now.
    type: str
  junit:
    description:
      - With O(state=finished), a path to write the run's JUnit XML to (atomically).
    type: path
attributes:
  check_mode:
    support: full
    details:
      - Predicts the record (and whether it or the JUnit file would change) and writes
        nothing. When the record does not exist because its start ran in check mode too,
        O(state=stage) and O(state=finished) report a change and return RV(record=null).
  diff_mode:
    support: full
    details:
      - Shows the record before and after.
  idempotent:
    support: full
    details:
      - O(state=started) and O(state=stage) repeated with the same values, and
        O(state=finished) on a finished record, change nothing.
author:
  - coopcloud.ci developers
seealso:
  - module: coopcloud.ci.catalog_entry
"""

EXAMPLES = r"""
- name: Start the record of this cold run
  coopcloud.ci.run_record:
    state: started
    state_dir: "{{ ccci_state_dir }}"
    run_id: "{{ ccci_run_id }}"
    mode: cold
    recipe: "{{ recipe }}"
    ref: "{{ ref | default(omit) }}"
    domain: "{{ app_domain }}"

- name: Record the install stage
  coopcloud.ci.run_record:
    state: stage
    state_dir: "{{ ccci_state_dir }}"
    run_id: "{{ ccci_run_id }}"
    stage: install
    result: "{{ 'pass' if install is succeeded else 'fail' }}"
    message: "{{ install.msg | default(omit) }}"

- name: Finish the record, write JUnit and show the summary
  coopcloud.ci.run_record:
    state: finished
    state_dir: "{{ ccci_state_dir }}"
    run_id: "{{ ccci_run_id }}"
    junit: "{{ junit | default(omit) }}"
  register: run

- name: Summary
  ansible.builtin.debug:
    msg: "{{ run.summary }}"

- name: Exit non-zero unless the run passed
  ansible.builtin.fail:
    msg: "verdict {{ run.verdict }}"
  when: run.verdict != 'PASS'
"""

RETURN = r"""
record:
  description: The run record (as written, or as it would be in check mode).
  returned: success
  type: dict
  sample:
    run_id: a1b2c3
    mode: quick
    confidence: lower
    label: "quick run: lower confidence, never gates merge"
    gates_merge: false
    recipe: custom-html
    ref: 1.1.0+1.29
    version: 1.1.0+1.29
    commit: 0123456789abcdef0123456789abcdef01234567
    domain: warm-custom-html.ci.example.org
    host: ci-1
    pid: 4242
    status: finished
    verdict: PASS
    error: null
    stages: {upgrade: pass, serving: pass, overlay: skip, custom: pass}
    stage_order: [upgrade, serving, overlay, custom]
    stage_details:
      upgrade:
        result: pass
        started_at: "2026-01-01T12:00:00Z"
        finished_at: "2026-01-01T12:00:41Z"
        seconds: 41
        message: null
    started_at: "2026-01-01T12:00:00Z"
    finished_at: "2026-01-01T12:01:30Z"
    canonical_before: {recipe: custom-html, version: 1.0.0+1.28, status: idle}
    canonical_after: {recipe: custom-html, version: 1.0.0+1.28, status: idle}
    timings:
      total_seconds: 90
      stages_seconds: 88
      docker_seconds: 61.2
      verdict_at: "2026-01-01T12:01:12Z"
      verdict_seconds: 72
      verdict_reported: PASS
      rest_at: "2026-01-01T12:01:29Z"
      rest_seconds: 89
    notes: []
    scrubbed: []
    schema: 1
verdict:
  description: V(PASS), V(FAIL) or V(ERROR) once finished, else V(null).
  returned: success
  type: str
  sample: PASS
verdict_so_far:
  description:
    - The verdict the record would get if it were closed now with O(error) (a lane
      reports it before its clean-up, e.g. the QUICK VERDICT line); the same rule as
      RV(verdict). Once finished, RV(verdict).
  returned: success
  type: str
  sample: FAIL
summary:
  description: A short human summary - what ran, mode and confidence, each stage, verdict, timings.
  returned: success
  type: list
  elements: str
  sample:
    - "run a1b2c3: custom-html @ 1.1.0+1.29 commit 0123456789ab"
    - "mode: quick (lower confidence, never gates merge)"
    - "  upgrade  pass    41s"
    - "verdict: PASS"
    - "time: 90s total, 61.2s docker"
verdict_line:
  description:
    - The line a CI log ends with, once finished - C(COLD VERDICT:) (or C(QUICK VERDICT:))
      followed by the verdict, recipe, version, commit, domain and each stage's result.
    - With O(mark=[verdict]) on a running record, the same line for the verdict so far.
  returned: when O(state=finished), or O(mark) holds V(verdict)
  type: str
  sample: "COLD VERDICT: PASS - custom-html at 1.1.0+1.29 (0123456789ab) on c-a1b2c3.ci.example.org; stages install pass, upgrade skip"
path:
  description: The record file.
  returned: always
  type: str
  sample: /var/lib/ci-warm/runs/a1b2c3.json
junit:
  description: The JUnit file written (or that would be written), with O(junit) and O(state=finished).
  returned: when O(junit) is given with O(state=finished)
  type: str
  sample: /tmp/junit-a1b2c3.xml
"""

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    CcciError,
    pick,
    plain_specs,
    recipe_spec,
    run_id_spec,
    run_module,
    state_dir_spec,
    state_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._engine import boots, restarted
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import find_owner_pid
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import (
    RunError,
    RunRecord,
    clean_text,
    junit_xml,
    record_path,
    run_time,
    summary_lines,
    verdict_line,
    verdict_of,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import (
    atomic_write_bytes,
    require_state_dir,
)


def _load(state_dir: str, run_id: str) -> RunRecord | None:
    if not os.path.exists(record_path(state_dir, run_id)):
        return None
    return RunRecord.load(state_dir, run_id, autosave=False)


def _notes(record: RunRecord, notes: list[str]) -> None:
    for text in notes:
        record.note(text)


def _record_stage(
    record: RunRecord,
    name: str,
    result: str,
    message: str | None,
    started_at: str | None = None,
    finished_at: str | None = None,
    *,
    compare_times: bool = True,
) -> None:
    """Record stage ``name`` unless the record already holds it so (a repeated call is
    ``ok``); a stage put aside as skipped is handed again with each write, so its times
    are not compared."""
    detail = record.data["stage_details"].get(name)
    same = (
        detail is not None
        and detail["result"] == result
        and detail["message"] == clean_text(message, "message")
        and (
            not compare_times
            or (
                _same_time(started_at, detail["started_at"])
                and _same_time(finished_at, detail["finished_at"])
            )
        )
    )
    if not same:
        record.stage(name, result, message, started_at, finished_at)


def _skipped(record: RunRecord, skipped: list[dict]) -> None:
    for item in skipped:
        _record_stage(
            record, item["stage"], "skip", item["message"], None, item["at"], compare_times=False
        )


def started(p: dict, state_dir: str, current: RunRecord | None) -> RunRecord:
    if current is None:
        record = RunRecord.start(
            state_dir,
            p["run_id"],
            p["mode"],
            p["recipe"],
            p["ref"],
            **pick(p, "version", "commit", "domain", "canonical_before", "notes", "started_at"),
            # The play's own process, not this short-lived module: it is what tells a
            # live run from a dead one (reap, the disk guard's cold-run finder).
            pid=find_owner_pid() or os.getpid(),
            engines=boots(),
            autosave=False,
        )
    else:
        record = current
        data = current.data
        for key in ("mode", "recipe", "ref"):
            if p[key] is not None and p[key] != data[key]:
                raise RunError(
                    f"run record {current.path} already exists with {key} {data[key]!r}, not "
                    f"{p[key]!r}; every run needs a new run id"
                )
        current.update(
            version=p["version"],
            commit=p["commit"],
            domain=p["domain"],
            canonical_before=p["canonical_before"],
        )
        _notes(current, p["notes"])
    _skipped(record, p["skipped"])
    _marks(p, record)
    return record


def _marks(p: dict, record: RunRecord) -> None:
    for what in p["mark"]:
        engine = restarted(record.data.get("engines")) if what == "verdict" else None
        record.mark(what, p["marked_at"], error=p["error"], engine=engine)


def stage(p: dict, current: RunRecord) -> RunRecord:
    _skipped(current, p["skipped"])
    _record_stage(current, p["stage"], p["result"], p["message"], p["started_at"], p["finished_at"])
    _notes(current, p["notes"])
    return current


def finished(p: dict, current: RunRecord) -> RunRecord:
    if not current.finished:
        _notes(current, p["notes"])
        _skipped(current, p["skipped"])
        _marks(p, current)
        current.finish(
            p["canonical_after"],
            error=p["error"],
            docker_seconds=p["docker_seconds"],
            finished_at=p["finished_at"],
            engine=restarted(current.data.get("engines")),
        )
    return current


def _same_time(given: str | None, stored: str) -> bool:
    return given is None or run_time(given) == run_time(stored)


def record_run(module: AnsibleModule) -> dict:
    p = module.params
    state = p["state"]
    state_dir = require_state_dir(p["state_dir"])
    path = record_path(state_dir, p["run_id"])
    current = _load(state_dir, p["run_id"])

    result: dict = {"changed": False, "path": path}
    if current is None and state != "started":
        if state != "info" and module.check_mode:
            return {
                "changed": True,
                "record": None,
                "verdict": None,
                "summary": [],
                "msg": f"run record {path} does not exist yet (its start ran in check mode)",
                "path": path,
            }
        raise CcciError(
            f"run record {path} does not exist; start it first with state=started", path=path
        )

    if p["mark"] and state not in ("started", "finished"):
        raise CcciError(f"mark is only for state=started or finished, not state={state}", path=path)
    if p["skipped"] and state == "info":
        raise CcciError("skipped is only for state=started, stage or finished, not info", path=path)
    before = current.to_dict() if current is not None else None
    try:
        if state == "started":
            record = started(p, state_dir, current)
        elif state == "stage":
            record = stage(p, current)
        elif state == "finished":
            record = finished(p, current)
        else:
            record = current
    except CcciError as exc:
        exc.facts["path"] = path
        raise

    after = record.to_dict()
    changed = after != before
    if changed and not module.check_mode:
        try:
            record.save()
        except OSError as exc:
            raise CcciError(f"run record {path} cannot be written: {exc}", path=path) from exc
    result.update(
        changed=changed,
        record=after,
        verdict=after["verdict"],
        verdict_so_far=after["verdict"] or verdict_of(after["stages"], p["error"]),
        summary=summary_lines(after),
    )
    if state == "finished":
        result["verdict_line"] = verdict_line(after)
    elif "verdict" in p["mark"]:
        result["verdict_line"] = verdict_line(after, after["timings"]["verdict_reported"])

    if state == "finished" and p["junit"]:
        xml = junit_xml(after).encode()
        old = None
        with contextlib.suppress(OSError), open(p["junit"], "rb") as handle:
            old = handle.read()
        if old != xml:
            result["changed"] = True
            if not module.check_mode:
                try:
                    atomic_write_bytes(p["junit"], xml)
                except OSError as exc:
                    raise CcciError(
                        f"JUnit file {p['junit']} cannot be written: {exc}",
                        path=path,
                        record=after,
                        verdict=after["verdict"],
                    ) from exc
        result["junit"] = p["junit"]

    if changed:
        result["diff"] = {"before": before or {}, "after": after}
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **state_dir_spec(),
            **run_id_spec(required=True),
            **state_spec(["started", "stage", "finished", "info"], "info"),
            "mode": {"type": "str", "choices": ["cold", "quick"]},
            **recipe_spec(required=False),
            **plain_specs("str", "ref", "version", "commit", "domain", "stage"),
            "result": {"type": "str", "choices": ["pass", "fail", "skip"]},
            **plain_specs("str", "message", "started_at", "finished_at", "error", "marked_at"),
            "canonical_before": {"type": "dict"},
            "canonical_after": {"type": "dict"},
            "notes": {"type": "list", "elements": "str", "default": []},
            "docker_seconds": {"type": "float"},
            "mark": {
                "type": "list",
                "elements": "str",
                "choices": ["verdict", "rest"],
                "default": [],
            },
            "junit": {"type": "path"},
            "skipped": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "stage": {"type": "str", "required": True},
                    "message": {"type": "str"},
                    "at": {"type": "str"},
                },
            },
        },
        required_if=[
            ("state", "started", ("mode", "recipe")),
            ("state", "stage", ("stage", "result")),
        ],
        supports_check_mode=True,
    )
    run_module(module, lambda: record_run(module), diff_when_asked=True)


if __name__ == "__main__":
    main()
