# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The trigger rule: which pull request comment asks for which lane (SPEC WC7).
PRIVATE to the collection: no compatibility promises.

One home for the rule. The filter ``coopcloud.ci.parse_trigger`` (in a play or a Drone
pipeline) and the comment bridge (``bin/ccci bridge``) both decide with :func:`parse_trigger`;
the bridge also answers a near miss (:func:`is_near_miss`) with what is accepted.

The rule: the comment, stripped of surrounding white space, is exactly ``!testme`` (the
cold lane) or ``!testme`` + spaces/tabs + ``--quick`` (the quick lane). Nothing else runs.
"""

from __future__ import annotations

import re
from typing import Any

#: ``!testme``, optionally followed by spaces/tabs and ``--quick``; nothing else.
TRIGGER_RE = re.compile(r"!testme(?P<quick>[ \t]+--quick)?")
#: A comment that starts like a command (any case) but is not one: ``!testme --quik``.
NEAR_MISS_RE = re.compile(r"!\s*test", re.IGNORECASE)
#: What a near miss is told, in a reply.
ACCEPTED = (
    "`!testme` (the cold lane: authoritative, the one that gates merge) or "
    "`!testme --quick` (the quick lane: lower confidence, never gates merge), "
    "alone in the comment, on one line"
)
_NO_RUN: dict[str, Any] = {"run": False, "mode": None}


def parse_trigger(comment: Any) -> dict[str, Any]:
    """``{"run": bool, "mode": "cold" | "quick" | None}`` for a PR comment."""
    if not isinstance(comment, str):
        return dict(_NO_RUN)
    match = TRIGGER_RE.fullmatch(comment.strip())
    if match is None:
        return dict(_NO_RUN)
    return {"run": True, "mode": "quick" if match.group("quick") else "cold"}


def is_near_miss(comment: Any) -> bool:
    """True for a comment that starts like the command but is not one (``!testme quick``).

    A comment that merely mentions ``!testme`` further on (``please !testme``) is talk for
    people, not a near miss: the bridge stays silent on it.
    """
    if not isinstance(comment, str) or parse_trigger(comment)["run"]:
        return False
    return NEAR_MISS_RE.match(comment.strip()) is not None
