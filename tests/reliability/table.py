"""The case tables of docs/reliability.md, rendered from the battery's own case lists.

``python tests/reliability/table.py --write`` rewrites every generated block of
docs/reliability.md (between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``);
test_docs_table.py fails when the page and the battery disagree, so the page stays true.
Placeholders of the case lists read: ``<id>`` the test's unique id, ``<pwn>`` the sentinel
``/tmp/ccci-pwned-<id>`` an injected command would create, ``<file>`` an existing file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parents[1] / "docs" / "reliability.md"
NAMES = {"u": "<id>", "pwn": "/tmp/ccci-pwned-<id>", "file": "<file>", "state": "<state>",
         "recipes": "<recipes>", "archive": "<slot>/content.tar",
         "manifest": "<slot>/manifest.json"}  # fmt: skip


def code(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if text == "":
        return "(empty)"
    text = text.replace("|", "\\|").replace("\n", "\\n").replace("\x00", "\\x00")
    if len(text) > 70:
        text = text[:60] + "…" + f" ({len(text)} chars)"
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _fill(value: object) -> object:
    if isinstance(value, str):
        return value.format(**NAMES)
    if isinstance(value, list):
        return [_fill(v) for v in value]
    return value


def _options(args: dict) -> str:
    return " ".join(f"{k}={code(_fill(v))}" for k, v in args.items())


def _rows(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "collections")]
    from reliability import test_bad_arguments as bad
    from reliability import test_corruption as corrupt
    from reliability import test_hostile_archives as hostile

    out = {}
    out["corruption"] = _rows(
        ["case", "what was tried", "what held"],
        [
            [case, "snapshot damaged, then `volume_snapshot` `state=restored` and "
             "`state=info verify=true`",
             f"both fail: {code(_fill(words))}; "
             "snapshot bytes, volume tree and engine unchanged, no staging dir; "
             "re-seed (`state=present force=true`) + restore gives the known-good tree digest"]
            for case, _, words in corrupt.CASES
        ]
        + [["truncated `canonical.json`", "`Registry.load/at_rest/set_status/seed`, "
            "`warm_canonical state=info`, `restore.yml`",
            "all fail naming the file (`… is not valid JSON`); file never replaced, nothing "
            "else changed (restore.yml's lock guard file stays, the lock is released); "
            "moved aside, the re-seed works"]],
    )  # fmt: skip
    out["hostile"] = _rows(
        ["case", "what was tried", "what held"],
        [[case, "archive with correct sha256/size installed as the snapshot, restored "
          "through `volume_snapshot`" + (f" with `max_members={hostile.MAX_MEMBERS}`"
                                         if "many" in case else ""),
          f"refused: {code(words)}, naming the archive; volume tree, snapshot and engine "
          "unchanged; no staging dir; nothing at the member's target"
          + ("; no volume created" if "without volumes" in case else "")]
         for case, _, words in hostile.ALL],
    )  # fmt: skip
    out["bad-plays"] = _rows(
        ["case", "what was tried", "what held"],
        [[case, f"`{playbook}` " + " ".join(f"-e {k}={code(_fill(v))}" for k, v in more.items()),
          f"exit 2: {code(_fill(words))}; nothing deployed, engine and recipes unchanged, "
          "state dir unchanged but for the run's own ERROR record"]
         for case, playbook, more, words in bad.PLAY_CASES],
    )  # fmt: skip
    out["bad-modules"] = _rows(
        ["case", "what was tried", "what held"],
        [[case, f"`{module}` {_options(args)}",
          f"failed: {code(_fill(words))}; state dir, recipes and engine unchanged"]
         for case, module, args, words in bad.MODULE_CASES]
        + [[case, f"`keycloak_realm` {_options(args)}",
            f"failed: {code(_fill(words))}; no write to the Keycloak API, `master` and every "
            "realm kept"]
           for case, args, words in bad.REALM_CASES],
    )  # fmt: skip
    out.update(_warm_blocks())
    out["triggers"] = _rows(
        ["case", "comment", "what held"],
        [[case, code(comment), "`{run: false, mode: null}`: no run, no error"]
         for case, comment in bad.TRIGGERS],
    )  # fmt: skip
    return out


def _warm_blocks() -> dict[str, str]:
    """Crashes, concurrency and secrets (test_crashes, test_concurrency, test_secrets)."""
    from ansible_collections.coopcloud.ci.plugins.module_utils._faults import POINTS
    from reliability import test_concurrency as conc
    from reliability import test_crashes as crash
    from reliability import test_kills as kills
    from reliability import test_secrets as sec

    plays = {
        "quick": "`quick.yml` at the previous tag",
        "restore": "`restore.yml`",
        "promote": "`cold.yml` at the latest tag (green: promotes)",
    }
    out = {}
    rows = []
    for case, recipe, kind, point, start, status in crash.CASES:
        where = POINTS[point.split("@")[0]]
        if "@" in point:
            where += f" (pass {point.split('@')[1]})"
        digest = (
            "registry digest != manifest digest (documented: `consistent: false`)"
            if point == "snapshot.swapped"
            else "registry digest = manifest digest"
        )
        back = crash.RECOVERY.get(point, "")
        moved = (
            "the interrupted promotion completed (registry = the new snapshot, "
            "`promoted_by` the killed run" + (" / the operator's run" if back else "") + ")"
            if point in crash.ADVANCES
            else "known-good unmoved"
        )
        rows.append(
            [
                case,
                f"{plays[kind]} of {recipe}, from {start}; SIGKILL to every process of the play "
                f"at `{point}`: {where}",
                f"snapshot verifies; `canonical.json` parses, status `{status}`, {digest}; "
                "the lock names the killed `ansible-playbook` (dead: stale)",
                f"{back} the next quick run breaks the stale lock, PASS; canonical idle, "
                f"undeployed, unlocked, volume trees = the manifest's tree digests; {moved}".strip(),
            ]
        )
    out["crashes"] = _rows(["case", "what was tried", "left by the kill", "what held"], rows)
    out["concurrency"] = _rows(
        ["recipe", "what was started (all 20 runs at once)", "what held"],
        [[recipe, _load_runs(conc.RUNS, recipe, 2, "`quick.yml` at {}"),
          _load_runs(conc.RUNS, recipe, 3, "verdict {}")
          + "; its lock intervals pairwise disjoint (four of five waited), each recipe's "
          "meeting another's; afterwards no lock, canonical at rest, trees = the known-good, "
          "known-good and snapshot bytes unmoved"]
         for recipe in conc.RECIPES],
    )  # fmt: skip
    out["kills"] = _rows(
        ["case", "what was tried", "what held"],
        [[case, f"{plays[kind]} of {recipe}"
          + (" from a canonical left dirty (status `quick`, writes in every volume: what a "
             "dead run leaves)" if case in kills.LEFT_DIRTY else "")
          + f", paused at `{point}` "
          f"({POINTS[point.split('@')[0]]}); " + KILLS[kill]
          + f"; at once a second run: {SECOND[second]}",
          "the second run took the lock only after every hold of the work lock by the first "
          "run's processes had ended" + HELD[kill] + "; no process of the first run left; "
          + ("canonical at rest, trees = the known-good (the promotion "
             + ("the second run made" if second == "cold" else "the orphan completed") + ")"
             if kind == "promote" else "canonical at rest, trees = the known-good, unmoved")]
         for case, recipe, kind, point, kill, second in kills.CASES],
    )  # fmt: skip
    out["engine-restart"] = _engine_rows()
    out["secrets"] = _rows(
        ["lane", "started through", "what held"],
        [
            [
                lane,
                f"`{book}` via `bin/ccci` and via plain `ansible-playbook`, `ANSIBLE_VERBOSITY=3`",
                "ran green with the sentinels in use; zero hits for any sentinel of either way",
            ]
            for lane, book in sec.LANES
        ]
        + [
            [
                "the search itself",
                "each sentinel planted in a copy of the searched files",
                "found, once each, only in the planted copy",
            ]
        ],
    )
    return out


KILLS = {
    "playbook": "SIGKILL to `ansible-playbook` alone (its module survives: Ansible's workers "
    "`setsid()`)",
    "shell-closed": "Drone cancel (the step from `docs/drone.example.yml`): SIGKILL to the "
    "step's `/bin/sh` only, the output's read end closed",
    "shell-unread": "Drone cancel (the step from `docs/drone.example.yml`): SIGKILL to the "
    "step's `/bin/sh` only, the output left unread in a full pipe",
}
SECOND = {"quick": "`quick.yml` at the previous tag, PASS",
          "cold": "`cold.yml` at the latest tag, PASS (promotes)"}  # fmt: skip
HELD = {
    "playbook": " (it waited for the orphan: `lock-wait` with `orphan`, and its record says "
    "so), then broke the dead run's lock",
    "shell-closed": " (the owner alive: the orphaned play ran on to its end, verdict PASS, "
    "and gave the lock back)",
    "shell-unread": " (the owner alive: the orphaned play ran on to its end, verdict PASS, "
    "and gave the lock back)",
}


def _engine_rows() -> str:
    """The engine-restart cases (issue 15, item 5), when their module exists.

    The module ``reliability/test_engine_restart.py`` lists its cases as ``CASES``, tuples
    ``(case, play, recipe, moment, outage)``: ``play`` a key of :data:`ENGINE_PLAYS`,
    ``moment`` the crash point (``_faults.POINTS``) the play was held at, ``outage`` a key
    of :data:`OUTAGES`. Each row then says what was tried and the held outcome every case
    asserts."""
    try:
        from reliability import test_engine_restart as engine
    except ImportError:
        return _rows(["case", "what was tried", "what held"], [["(none yet)", "", ""]])
    from ansible_collections.coopcloud.ci.plugins.module_utils._faults import POINTS

    return _rows(
        ["case", "what was tried", "what held"],
        [[case, f"{ENGINE_PLAYS[play]} of {recipe}, held at `{moment}` "
          f"({POINTS[moment.split('@')[0]]}); {OUTAGES[outage]}",
          "the run ends ERROR (exit non-zero, no stage recorded as failed), its error naming "
          "the engine's socket; the next quick run of the recipe puts the canonical back and "
          "PASSes; registry, manifest bytes and the volume's tree on the worker = the "
          "known-good"]
         for case, play, recipe, moment, outage in engine.CASES],
    )  # fmt: skip


ENGINE_PLAYS = {
    "quick": "`quick.yml` at the previous tag",
    "restore": "`restore.yml`",
    "promote": "`cold.yml` at the latest tag (green: promotes)",
}
OUTAGES = {
    "restart": "the `dockerd` of both bed nodes stopped there and started again at once",
    "stop-20": "the `dockerd` of both bed nodes stopped there, the run let go on without "
    "them, and started 20 s later",
}


def _load_runs(runs: list[tuple], recipe: str, column: int, form: str) -> str:
    """How many of ``recipe``'s load runs have each value of ``column``, e.g. "4 x ..."."""
    values = [r[column] for r in runs if r[1] == recipe]
    return "; ".join(
        f"{values.count(v)} x " + form.format(LOAD_WORDS.get(v, v))
        for v in sorted(set(values), key=values.index)
    )


LOAD_WORDS = {
    "previous": "`previous`",
    "broken_branch": "`broken` (branch: image missing)",
    "PASS": "PASS, exit 0",
    "FAIL": "FAIL, exit non-zero, one `quick-rollback` alert (`recovered: true`)",
}


def render(text: str) -> str:
    for name, table in blocks().items():
        pattern = re.compile(
            rf"(<!-- generated: {name} -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.DOTALL
        )
        if not pattern.search(text):
            raise SystemExit(f"{DOC} has no generated block {name!r}")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    current = DOC.read_text()
    fresh = render(current)
    if "--write" in sys.argv:
        DOC.write_text(fresh)
    elif fresh != current:
        raise SystemExit(f"{DOC} is out of date: run {sys.argv[0]} --write")
