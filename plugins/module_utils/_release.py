# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release safety gate (SPEC WC1.2). PRIVATE to the collection: no compatibility promises.

Before warm infrastructure moves from its ``current`` version to a ``candidate`` it passes
this gate. Pure logic: the caller hands in the recipe's tags and a function that returns
the release notes of a version, so the gate is testable with plain dicts.

Verdicts:

* ``noop``: the candidate is the current version or older; the gate never downgrades.
* ``held-major``: the recipe semver major or the app version's first number goes up.
* ``held-manual-migration``: the release notes of a version after ``current`` up to and
  including ``candidate`` call for a manual migration (:data:`PHRASES`).
* ``proceed``: none of the above, or the operator accepted exactly this candidate.

When both holds apply the verdict is ``held-major``; every reason is listed either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ansible_collections.coopcloud.ci.plugins.module_utils._version import (
    Version,
    between,
    major_bump,
)

PROCEED = "proceed"
HELD_MAJOR = "held-major"
HELD_MANUAL = "held-manual-migration"
NOOP = "noop"
VERDICTS = (PROCEED, HELD_MAJOR, HELD_MANUAL, NOOP)

_W = r"\s+"  # words of a phrase may be split by any white space, line breaks included

#: The phrases that make release notes hold an upgrade, as (name, pattern). Matching is
#: case-insensitive on whole words; a mention that is plainly negated does not hold
#: (see :func:`find_phrases`). Keep docs/alerts.md and the release_gate docs in step.
PHRASES: tuple[tuple[str, str], ...] = (
    (
        "manual migration",
        rf"\bmanual{_W}(?:(?:database|data|db|config|configuration){_W})?migrations?\b",
    ),
    ("migrate manually", rf"\bmigrat(?:e|ed|ing|ion){_W}(?:[\w'-]+{_W}){{0,3}}?manually\b"),
    ("manually migrate", rf"\bmanually{_W}migrat(?:e|ed|ing|ion)\b"),
    ("manual intervention", rf"\bmanual{_W}interventions?\b"),
    ("manual step", rf"\bmanual{_W}(?:(?:upgrade|migration|update){_W})?steps?\b"),
    ("manual upgrade", rf"\bmanual{_W}upgrades?\b"),
    ("manual action", rf"\bmanual{_W}actions?\b"),
    ("action required", rf"\baction{_W}(?:is{_W})?required\b"),
    ("requires manual", rf"\brequires?{_W}(?:(?:a|some){_W})?manual\b"),
    ("breaking change", rf"\bbreaking{_W}changes?\b"),
    ("backwards incompatible", r"\bbackwards?[\s-]+incompatible\b"),
    ("not backwards compatible", rf"\bnot{_W}backwards?[\s-]+compatible\b"),
    ("incompatible change", rf"\bincompatible{_W}changes?\b"),
    ("before upgrading", rf"\bbefore{_W}(?:you{_W})?upgrad(?:ing|e)\b"),
    ("migration guide", rf"\bmigration{_W}(?:guide|instructions)\b"),
    ("upgrade guide", rf"\bupgrade{_W}(?:guide|instructions)\b"),
)
_COMPILED = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in PHRASES)

# A negation right before a mention: "no", "not", "without", "does not need" and the like,
# followed only by filler words ("no need for a manual migration", "without any manual
# steps", "no action needed before upgrading"). "Do not skip the manual migration" is NOT
# a negation of the migration: "skip" is not filler, so it holds.
_FILLER = (
    r"(?:need|needs|needed|for|any|an|a|further|additional|other|special|extra|action|"
    r"actions|required|necessary|is|are|be|to|do|of|the)"
)
_NEG_BEFORE = re.compile(
    rf"(?:\bno|\bnot|\bwithout|\bnor|n't{_W}(?:need|require)s?|\bnot{_W}(?:need|require)s?)"
    rf"{_W}(?:{_FILLER}{_W}){{0,4}}$",
    re.IGNORECASE,
)
# A negation right after: "... is not required", "... are no longer needed",
# "Breaking changes: none".
_NEG_AFTER = re.compile(
    rf"^(?:{_W}(?:is|are|will{_W}be))?{_W}(?:not|no{_W}longer){_W}(?:required|needed|necessary)\b"
    r"|^[\s:*#_>-]*(?:none|n/a|nothing)\b",
    re.IGNORECASE,
)
# A mention's sentence starts after the last sentence end, blank line or list bullet.
_CLAUSE_START = re.compile(r"(?:[.!?;]\s|\n\s*\n|\n\s*[-*+]\s|\n#+\s)")


def _negated(text: str, start: int, end: int) -> bool:
    before = text[max(0, start - 80) : start]
    ends = [m.end() for m in _CLAUSE_START.finditer(before)]
    if ends:
        before = before[ends[-1] :]
    if _NEG_BEFORE.search(before):
        return True
    return bool(_NEG_AFTER.match(text[end : end + 60]))


def find_phrases(text: str | None) -> list[str]:
    """The names of the :data:`PHRASES` that ``text`` uses (not negated), in list order."""
    if not text:
        return []
    found = []
    for name, pattern in _COMPILED:
        for match in pattern.finditer(text):
            if not _negated(text, match.start(), match.end()):
                found.append(name)
                break
    return found


@dataclass
class GateDecision:
    verdict: str
    current: str
    candidate: str
    reasons: list[str] = field(default_factory=list)
    #: version -> the full text of its release notes: those that call for a hold and, when
    #: a major version is crossed, every crossed version that has notes
    notes: dict[str, str] = field(default_factory=dict)
    #: version -> the phrase names found in its notes
    matched_phrases: dict[str, list[str]] = field(default_factory=dict)
    #: versions whose notes were read (existing or not), oldest first
    versions_checked: list[str] = field(default_factory=list)
    #: true when the operator's ``accept`` turned a hold into ``proceed``
    accepted: bool = False

    @property
    def held(self) -> bool:
        return self.verdict in (HELD_MAJOR, HELD_MANUAL)

    def notes_text(self) -> str:
        """The matched notes as one text, a heading per version (for an alert)."""
        return "\n\n".join(
            f"## {version}\n\n{text.strip()}" for version, text in self.notes.items()
        )

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "current": self.current,
            "candidate": self.candidate,
            "reasons": list(self.reasons),
            "notes": dict(self.notes),
            "notes_text": self.notes_text(),
            "matched_phrases": {k: list(v) for k, v in self.matched_phrases.items()},
            "versions_checked": list(self.versions_checked),
            "accepted": self.accepted,
        }


def _parse(tag: str, role: str) -> Version:
    try:
        return Version.parse(tag)
    except ValueError as exc:
        raise ValueError(f"{role} version {exc}") from None


def decide(
    current: str,
    candidate: str,
    notes_for: Callable[[str], str | None],
    tags: Iterable[str],
    accept: str | None = None,
) -> GateDecision:
    """Decide whether warm infrastructure may move from ``current`` to ``candidate``.

    ``notes_for(version)`` returns the release notes text of a version tag, or ``None``
    when it has none. ``tags`` are the recipe's tags (non-version tags are ignored); the
    notes of every version after ``current`` up to and including ``candidate`` are read.
    ``accept`` is a version the operator explicitly accepts: when it names ``candidate``
    a hold becomes ``proceed`` (the reasons stay, marked as accepted). Raises
    ``ValueError`` when ``current`` or ``candidate`` is not a version.
    """
    cur = _parse(current, "current")
    cand = _parse(candidate, "candidate")
    decision = GateDecision(verdict=PROCEED, current=cur.tag, candidate=cand.tag)

    if cand.key <= cur.key:
        decision.verdict = NOOP
        if cand.key == cur.key:
            decision.reasons.append(f"candidate {cand} is the current version: nothing to do")
        else:
            decision.reasons.append(
                f"candidate {cand} is older than the current version {cur}: the gate never "
                "downgrades"
            )
        return decision

    majors = major_bump(cur, cand)
    if majors:
        decision.reasons.append(
            f"{cur} -> {cand} crosses a major version ({'; '.join(majors)}): a human must "
            "take it on purpose"
        )

    versions = between(list(tags), cur, cand)
    if all(v.key != cand.key for v in versions):
        versions.append(cand)
    for version in versions:
        decision.versions_checked.append(version.tag)
        text = notes_for(version.tag)
        phrases = find_phrases(text)
        if text and text.strip() and majors:
            # a major hold carries every crossed version's notes: the human deciding
            # needs all of them, not only those that matched a phrase
            decision.notes[version.tag] = text
        if phrases:
            decision.notes[version.tag] = text or ""
            decision.matched_phrases[version.tag] = phrases
            decision.reasons.append(
                f"the release notes of {version} call for a manual migration "
                f"(matched: {', '.join(repr(p) for p in phrases)})"
            )

    if majors:
        decision.verdict = HELD_MAJOR
    elif decision.matched_phrases:
        decision.verdict = HELD_MANUAL

    if accept is not None and accept != "":
        acc = Version.try_parse(accept)
        if acc is not None and acc.key == cand.key:
            if decision.held:
                decision.reasons = [f"accepted by the operator: {r}" for r in decision.reasons]
                decision.accepted = True
            decision.verdict = PROCEED
        else:
            decision.reasons.append(
                f"accept={accept} does not name the candidate {cand}: not applied (accept "
                "takes exactly the version to proceed to)"
            )
    return decision


# --- the reconcile plan -------------------------------------------------------------------

#: What a reconcile of one warm infrastructure target does (docs/reconcile.md, "Decisions").
FINISH = "finish"  # an interrupted upgrade had finished: commit it as the last-good
RECOVER = "recover"  # an interrupted upgrade had not: roll it back
UNHEALTHY = "unhealthy"  # something runs and is not healthy: alert, change nothing
INSTALL = "install"  # nothing runs and nothing is recorded: first install of the latest
HOLD = "hold"  # the gate holds the latest: alert, change nothing
NOOP_HEALTHY = "noop"  # up to date (or the latest already rolled back) and healthy
REATTACH = "reattach"  # the last-good is not deployed: redeploy it
UPGRADE = "upgrade"  # move to the latest behind the health gate
PLANS = (FINISH, RECOVER, UNHEALTHY, INSTALL, HOLD, NOOP_HEALTHY, REATTACH, UPGRADE)


@dataclass(frozen=True)
class Observed:
    """What a reconcile found before deciding (read, never changed).

    ``running`` is what runs at the target's domain (``state``, ``version``, ``commit``:
    recipe_app's diff ``before``), ``healthy`` whether its probe answered healthy, and
    ``last_good`` the target's last-good record (``version``, ``commit``, and ``attempt``
    or ``failed`` when an upgrade broke off or rolled back) or ``None``.
    """

    running: dict
    healthy: bool
    last_good: dict | None

    @property
    def deployed(self) -> bool:
        return self.running.get("state") == "deployed"

    @property
    def healthy_now(self) -> bool:
        return self.deployed and bool(self.healthy)

    @property
    def attempt(self) -> dict | None:
        return (self.last_good or {}).get("attempt") or None

    def current(self) -> str:
        """The version a reconcile moves from: what runs when it is healthy, else the last-good."""
        if self.healthy_now and self.running.get("version"):
            return self.running["version"]
        return (self.last_good or {}).get("version") or ""

    def asks_the_gate(self) -> bool:
        """The gate is asked only when no upgrade broke off and there is a version to move from."""
        return not self.attempt and bool(self.current())

    def records_running(self) -> bool:
        """What runs healthy (with a version and a commit) becomes the last-good when none
        is recorded, or when no upgrade broke off and the record names something else."""
        version, commit = self.running.get("version"), self.running.get("commit")
        if not (self.healthy_now and version and commit):
            return False
        if self.last_good is None:
            return True
        old = (self.last_good.get("version"), self.last_good.get("commit"))
        return not self.attempt and old != (version, commit)

    def retry_refused(self, latest: str, accept: str | None) -> bool:
        """The latest version rolled back here before and the operator did not accept it again."""
        failed = (self.last_good or {}).get("failed")
        return isinstance(failed, dict) and failed.get("version") == latest and accept != latest


def reconcile_plan(
    seen: Observed, verdict: str | None, latest: str, accept: str | None = None
) -> str:
    """The one plan of :data:`PLANS` for a target, from what was seen and the gate's verdict.

    ``verdict`` is the release gate's verdict from :meth:`Observed.current` to ``latest``,
    or ``None`` when the gate was not asked (:meth:`Observed.asks_the_gate`).
    """
    attempt = seen.attempt
    if attempt:
        same = seen.healthy_now and seen.running.get("commit") == attempt.get("commit")
        return FINISH if same else RECOVER
    if not seen.current():
        return UNHEALTHY if seen.deployed else INSTALL
    if verdict in (HELD_MAJOR, HELD_MANUAL):
        return UNHEALTHY if seen.deployed and not seen.healthy_now else HOLD
    if verdict == NOOP or seen.retry_refused(latest, accept):
        if seen.healthy_now:
            return NOOP_HEALTHY
        return UNHEALTHY if seen.deployed else REATTACH
    return UPGRADE


def last_good_record(seen: Observed, plan: str, at: str) -> tuple[dict | None, str]:
    """The last-good record to write before the plan's steps, or ``None``, and the note
    that says so (empty when the plan's own sentence does): what runs healthy
    (:meth:`Observed.records_running`), or the interrupted upgrade that had finished
    (plan :data:`FINISH`). ``at`` is the moment it is recorded."""
    old = seen.last_good or {}
    now = {"version": seen.running.get("version"), "commit": seen.running.get("commit"),
           "at": at, "attempt": None}  # fmt: skip
    if plan == FINISH:
        return {**old, **now, "failed": None}, ""
    if seen.records_running():
        note = f"recorded {now['version']} as last-good: it runs healthy"
        return {**old, **now, "failed": old.get("failed")}, note
    return None, ""


def reconcile_decision(
    seen: Observed,
    verdict: str | None,
    latest: str,
    accept: str | None = None,
    at: str = "",
) -> dict:
    """The plan with what the reconcile's steps need: the version to move from, whether a
    retry of the latest is refused, the version to deploy (``reattach`` redeploys the
    last-good at its commit and is carried out as an ``upgrade``), and the last-good
    record to write first (:func:`last_good_record`, stamped ``at``)."""
    plan = reconcile_plan(seen, verdict, latest, accept)
    last_good = seen.last_good or {}
    reattach = plan == REATTACH
    record, note = last_good_record(seen, plan, at)
    return {
        "record": record,
        "record_note": note,
        "plan": UPGRADE if reattach else plan,
        "reattach": reattach,
        "current": seen.current(),
        "retry_refused": seen.retry_refused(latest, accept),
        "deploy": (
            {"version": last_good.get("version"), "ref": last_good.get("commit")}
            if reattach
            else {"version": latest, "ref": latest}
        ),
    }
