# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names and their validation. PRIVATE to the collection: no compatibility promises.

Everything a user can type (recipe names, domains, refs, run ids, realm names, state
directories) is checked here, at the edge, before anything is touched. Each check raises
:class:`ValidationError` with one sentence naming the bad value and the rule it broke.
"""

from __future__ import annotations

import os
import re
import secrets

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError

RECIPE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
RUN_ID_RE = re.compile(r"^[0-9a-f]{6}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
FULL_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REALM_RE = re.compile(r"^(?P<recipe>[a-z0-9][a-z0-9-]{0,39})-(?P<run_id>[0-9a-f]{6})$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_REF_RE = re.compile(r"^[A-Za-z0-9._+/-]{1,200}$")
_VOLUME_SHORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

#: Docker refuses service names longer than 63 characters; a stack's service is
#: ``<stack>_<service>``, so stacks are kept well under that.
MAX_STACK_LEN = 50


class ValidationError(CcciError, ValueError):
    """A value a user supplied breaks a naming rule. The message is for the user."""

    standalone = True


def matching(
    value: object,
    pattern: re.Pattern[str],
    what: str,
    rule: str,
    error: type[CcciError] = ValidationError,
) -> str:
    """``value`` when it is a string that ``pattern`` matches; else ``error`` with the one
    sentence ``<what> <value> is invalid: <rule>``. The match-or-raise of every name check."""
    if not isinstance(value, str) or not pattern.match(value):
        raise error(f"{what} {value!r} is invalid: {rule}")
    return value


def validate_recipe(name: object) -> str:
    rule = "use 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit"
    return matching(name, RECIPE_RE, "recipe name", rule)


def validate_run_id(run_id: object) -> str:
    return matching(run_id, RUN_ID_RE, "run id", "use exactly 6 lowercase hex digits")


def new_run_id() -> str:
    return secrets.token_hex(3)


def validate_domain(domain: object) -> str:
    if not isinstance(domain, str) or not domain or len(domain) > 253:
        raise ValidationError(f"domain {domain!r} is invalid: use a lowercase DNS name")
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        raise ValidationError(
            f"domain {domain!r} is invalid: use a lowercase DNS name of at least two labels "
            "(a-z, 0-9 and '-', no leading or trailing '-')"
        )
    if len(stack_name_unchecked(domain)) > MAX_STACK_LEN:
        raise ValidationError(
            f"domain {domain!r} is too long: its stack name would exceed {MAX_STACK_LEN} "
            "characters and Docker limits service names to 63"
        )
    return domain


def stack_name_unchecked(domain: str) -> str:
    return domain.replace(".", "_")


def stack_name(domain: str) -> str:
    """The swarm stack of the app at ``domain``: the domain with ``.`` replaced by ``_``."""
    return stack_name_unchecked(validate_domain(domain))


def validate_volume_short(short: object, error: type[CcciError] = ValidationError) -> str:
    """A volume's name in a compose file (``<stack>_<short>`` is the swarm's)."""
    rule = "use 1-63 letters, digits and _ . -, starting with a letter or digit"
    return matching(short, _VOLUME_SHORT_RE, "volume name", rule, error)


def volume_name(stack: str, short: str) -> str:
    """The swarm volume ``<stack>_<short>`` that ``docker stack deploy`` creates."""
    return f"{stack}_{validate_volume_short(short)}"


def validate_ref(ref: object) -> str:
    """A commit, tag or branch name that is safe to hand to git as a revision.

    Refuses anything git could read as an option (a leading ``-``), revision syntax that
    reaches beyond one ref (``..``, ``@{``, ``^``, ``~``, ``:``), white space and shell
    metacharacters.
    """
    matching(ref, _REF_RE, "ref",
             "use a commit (7-40 hex digits), a tag or a branch name of letters, digits and "
             ". _ + / -")  # fmt: skip
    if (
        ref.startswith(("-", "/", "."))
        or ref.endswith(("/", ".", ".lock"))
        or ".." in ref
        or "//" in ref
    ):
        raise ValidationError(f"ref {ref!r} is invalid: it is not a plain git ref name")
    return ref


def validate_fetch_ref(ref: object) -> str:
    """A full ref to fetch besides the branches and tags, e.g. a pull request's head
    ``refs/pull/7/head``: a plain ref name (:func:`validate_ref`) under ``refs/``."""
    validate_ref(ref)
    if not ref.startswith("refs/") or ref.count("/") < 2:
        raise ValidationError(
            f"fetch ref {ref!r} is invalid: give a full ref such as refs/pull/7/head"
        )
    return ref


def is_commit(ref: str) -> bool:
    return bool(COMMIT_RE.match(ref))


def realm_name(recipe: str, run_id: str) -> str:
    """The per-run Keycloak realm ``<recipe>-<run_id>``."""
    return f"{validate_recipe(recipe)}-{validate_run_id(run_id)}"


def parse_realm_name(realm: str) -> tuple[str, str] | None:
    """``(recipe, run_id)`` when ``realm`` is a per-run CI realm, else ``None``."""
    match = REALM_RE.match(realm or "")
    if not match:
        return None
    return match.group("recipe"), match.group("run_id")


def canonical_domain(recipe: str, suffix: str) -> str:
    """The stable domain of a recipe's data-warm canonical: ``warm-<recipe>.<suffix>``."""
    return validate_domain(f"warm-{validate_recipe(recipe)}.{suffix}")


def cold_domain(recipe: str, run_id: str, suffix: str) -> str:
    """The per-run domain of a cold run: ``<recipe[:4]>-<run_id>.<suffix>``."""
    return validate_domain(f"{validate_recipe(recipe)[:4]}-{validate_run_id(run_id)}.{suffix}")


def validate_state_dir(path: object) -> str:
    """An absolute directory that is not ``/`` and not an existing non-directory."""
    if not isinstance(path, str) or not path:
        raise ValidationError(f"state directory {path!r} is invalid: give an absolute path")
    if not os.path.isabs(path):
        raise ValidationError(f"state directory {path!r} is relative: give an absolute path")
    norm = os.path.normpath(path)
    if norm == "/":
        raise ValidationError("state directory '/' is refused: give a directory of its own")
    if os.path.exists(norm) and not os.path.isdir(norm):
        raise ValidationError(f"state directory {path!r} exists and is not a directory")
    return norm
