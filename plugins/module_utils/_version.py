# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recipe version tags. PRIVATE to the collection: no compatibility promises.

A Co-op Cloud recipe version is ``<recipe-semver>+<app-version>``: ``1.11.0+1.29.0``,
``2.0.1+1.0.6-social-amd64``, ``1.0.0+1.28``. Older recipes tag plain ``v2.4.8`` (no app
part). Order is by the recipe part; the app part only breaks ties. A tag that is not a
version (``latest``, ``test-branch``) is ignored wherever tags are listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TAG_RE = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:\+(?P<app>[0-9A-Za-z][0-9A-Za-z._-]*))?$"
)
_APP_NUM_RE = re.compile(r"^v?(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class Version:
    tag: str
    recipe: tuple[int, int, int]
    app: str | None

    @classmethod
    def parse(cls, tag: str) -> Version:
        match = _TAG_RE.match(tag or "")
        if not match:
            raise ValueError(
                f"{tag!r} is not a recipe version: expected <recipe-semver>+<app-version> "
                "such as 1.11.0+1.29.0 (or the older v2.4.8)"
            )
        recipe = (int(match["major"]), int(match["minor"]), int(match["patch"]))
        return cls(tag=tag, recipe=recipe, app=match["app"])

    @classmethod
    def try_parse(cls, tag: str) -> Version | None:
        try:
            return cls.parse(tag)
        except ValueError:
            return None

    @property
    def app_numbers(self) -> tuple[int, ...]:
        """The leading dotted numbers of the app part: ``1.0.6-social-amd64`` -> (1, 0, 6)."""
        match = _APP_NUM_RE.match(self.app or "")
        return tuple(int(n) for n in match.group(1).split(".")) if match else ()

    @property
    def key(self) -> tuple:
        return (self.recipe, self.app_numbers, self.app or "")

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __str__(self) -> str:
        return self.tag


def is_version(tag: str) -> bool:
    return Version.try_parse(tag) is not None


def sort_versions(tags) -> list[Version]:
    """The version tags among ``tags``, oldest first; other tags are dropped."""
    return sorted(v for v in (Version.try_parse(t) for t in tags) if v is not None)


def latest(tags) -> Version | None:
    ordered = sort_versions(tags)
    return ordered[-1] if ordered else None


def major_bump(current: Version, candidate: Version) -> list[str]:
    """Why moving from ``current`` to ``candidate`` crosses a major version ([] if not).

    A major bump of either part counts: the recipe's semver major, or the first number
    of the app version.
    """
    reasons = []
    if candidate.recipe[0] > current.recipe[0]:
        reasons.append(f"recipe major {current.recipe[0]} -> {candidate.recipe[0]}")
    cur_app, cand_app = current.app_numbers, candidate.app_numbers
    if cur_app and cand_app and cand_app[0] > cur_app[0]:
        reasons.append(f"app major {cur_app[0]} -> {cand_app[0]}")
    return reasons


def between(tags, current: Version, candidate: Version) -> list[Version]:
    """Versions after ``current`` up to and including ``candidate``, oldest first."""
    return [v for v in sort_versions(tags) if current.key < v.key <= candidate.key]
