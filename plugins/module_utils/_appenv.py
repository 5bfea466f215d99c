# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The app env of a recipe checkout. PRIVATE to the collection: no compatibility promises.

A Co-op Cloud app is configured by an env file in shell syntax: the recipe's ``.env.sample``
gives the defaults, the operator's app env (``~/.abra/servers/<server>/<domain>.env``)
overrides them, and the ``export NAME=value`` lines of the recipe's ``abra.sh`` are merged
last (that is what abra does). Real recipes rely on every corner of that syntax:

- ``COMPOSE_FILE="$COMPOSE_FILE:compose.x.yml"`` extends itself line by line, quoted or
  not, and may name overlays in subfolders (``postgres/compose.postgres.tune.yml``);
  a commented ``#COMPOSE_FILE=...`` is not active;
- ``SECRET_<NAME>_VERSION=v1  # length=128 charset=hex`` declares a swarm secret
  ``<stack>_<name>_<version>``; ``# generate=false`` means the operator must supply it;
- ``abra.sh`` exports (``export APP_ENTRYPOINT_VERSION=v4``) override ``${VAR:-default}``
  defaults used in compose files;
- the app env's first line is ``TYPE=<recipe>``, ``TYPE=<recipe>:<version>`` or
  ``RECIPE=<recipe>``;
- the deployed version is a compose label, ``coop-cloud.${STACK_NAME}.version=X+Y`` on
  ``app`` (new form) or ``coop-cloud.${STACK_NAME}.<service>.version=<tag>-<digest8>``
  (old form), sometimes empty or on another service.

Nothing here logs or returns a secret's value except :func:`generate_secret` and
:func:`secret_values`, whose callers must treat the result as secret.
"""

from __future__ import annotations

import os
import re
import secrets as _secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    matching,
    stack_name,
    validate_recipe,
)


class AppEnvError(CcciError, ValueError):
    """The app env or the recipe files it names are unusable. The message is for the user."""


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN_RE = re.compile(r"^(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=(?P<rest>.*)$")
_ABRA_EXPORT_RE = re.compile(r"^export[ \t]+(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<rest>.*)$")
_SECRET_KEY_RE = re.compile(r"^SECRET_(?P<name>[A-Z0-9_]+?)_VERSION$")
_DOCKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VERSION_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")

#: Docker refuses secret and config names longer than this.
MAX_SECRET_NAME_LEN = 64

Lookup = Callable[[str], "str | None"]


# --- the shell-like value syntax ----------------------------------------------------------


def _piece_at(text: str, i: int, lookup: Lookup | None, where: str) -> tuple[str, int]:
    """What ``text[i]`` stands for where ``$`` expands (``lookup`` None: nowhere): the
    expansion of the ``$`` there, else the character itself; and the index after it."""
    if text[i] == "$" and lookup is not None:
        return _expand_at(text, i, lookup, where)
    return text[i], i + 1


def _expand_at(text: str, i: int, lookup: Lookup, where: str) -> tuple[str, int]:
    """Expand the ``$`` at ``text[i]``; return the expansion and the index after it."""
    n = len(text)
    if i + 1 < n and text[i + 1] == "{":
        depth, j = 1, i + 2
        while j < n and depth:
            if text[j] == "}":
                depth -= 1
            elif text.startswith("${", j):
                depth += 1
                j += 1
            j += 1
        if depth:
            raise AppEnvError(f"{where}: '${{' is not closed by '}}'")
        inner = text[i + 2 : j - 1]
        match = _NAME_RE.match(inner)
        if not match:
            raise AppEnvError(f"{where}: bad substitution '${{{inner}}}'")
        name, op = match.group(), inner[match.end() :]
        value = lookup(name)
        if op == "":
            return value or "", j
        for prefix, use_default in ((":-", lambda v: not v), ("-", lambda v: v is None)):
            if op.startswith(prefix):
                if use_default(value):
                    return _expand_plain(op[len(prefix) :], lookup, where), j
                return value or "", j
        raise AppEnvError(f"{where}: unsupported substitution '${{{inner}}}'")
    match = _NAME_RE.match(text, i + 1)
    if not match:
        return "$", i + 1
    return lookup(match.group()) or "", match.end()


def _expand_plain(text: str, lookup: Lookup, where: str) -> str:
    out, i = [], 0
    while i < len(text):
        piece, i = _piece_at(text, i, lookup, where)
        out.append(piece)
    return "".join(out)


def interpolate(text: str, env: Mapping[str, str], where: str = "compose") -> str:
    """Compose interpolation of ``text`` with ``env``: ``$VAR``, ``${VAR}``, ``${VAR:-x}``,
    ``${VAR-x}``; ``$$`` is a literal ``$``."""
    return "$".join(_expand_plain(part, env.get, where) for part in str(text).split("$$"))


def _scan_value(rest: str, lookup: Lookup | None, where: str) -> tuple[str, str]:
    """Parse the right-hand side of ``KEY=``: ``(value, trailing comment)``.

    Single quotes are literal; double quotes expand ``$VAR`` and honour ``\\"``, ``\\\\``,
    ``\\$``; unquoted text expands too and ends at white space followed by ``#`` (a
    comment) or at the end of the line. ``lookup`` None disables expansion.
    """
    out: list[str] = []
    i, n = 0, len(rest)
    while i < n and rest[i] in " \t":
        i += 1
    while i < n:
        c = rest[i]
        if c == "'":
            j = rest.find("'", i + 1)
            if j < 0:
                raise AppEnvError(f"{where}: a single quote is not closed")
            out.append(rest[i + 1 : j])
            i = j + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise AppEnvError(f"{where}: a double quote is not closed")
                c = rest[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and rest[i + 1] in '"\\$`':
                    out.append(rest[i + 1])
                    i += 2
                else:
                    piece, i = _piece_at(rest, i, lookup, where)
                    out.append(piece)
        elif c in " \t":
            j = i
            while j < n and rest[j] in " \t":
                j += 1
            if j >= n:
                break
            if rest[j] == "#":
                return "".join(out), rest[j + 1 :].strip()
            out.append(rest[i:j])  # inner blanks of an unquoted value are kept
            i = j
        elif c == "\\" and i + 1 < n:
            out.append(rest[i + 1])
            i += 2
        else:
            piece, i = _piece_at(rest, i, lookup, where)
            out.append(piece)
    return "".join(out), ""


def parse_env(
    text: str, base: Mapping[str, str] | None = None, *, fixed: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Parse env-file text the way a shell would source it.

    Returns ``base`` (copied) updated with the assignments of ``text``, in order. ``$VAR``,
    ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` expand from keys assigned earlier
    in ``text`` or present in ``base``; unknown variables expand to ``""``. Keys in
    ``fixed`` keep their value whatever ``text`` assigns (the app's ``DOMAIN``).
    Raises :class:`AppEnvError` naming the line of a malformed assignment.
    """
    env: dict[str, str] = dict(base or {})
    fixed = dict(fixed or {})
    env.update(fixed)

    def lookup(name: str) -> str | None:
        return env.get(name)

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGN_RE.match(line)
        if not match:
            raise AppEnvError(f"line {lineno} is not an assignment KEY=VALUE: {line[:60]!r}")
        value, _comment = _scan_value(match["rest"], lookup, f"line {lineno}")
        if match["key"] not in fixed:
            env[match["key"]] = value
    return env


def parse_abra_sh(text: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of an ``abra.sh``, quoted or not, in order.

    Like abra, only exports at the start of a line count: indented exports live inside
    shell functions and run later, if at all. Values are taken literally (no expansion).
    """
    exports: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        match = _ABRA_EXPORT_RE.match(raw.rstrip())
        if not match:
            continue
        value, _comment = _scan_value(match["rest"], None, f"abra.sh line {lineno}")
        exports[match["key"]] = value
    return exports


def parse_type_line(text: str) -> tuple[str, str | None]:
    """``(recipe, version)`` from an app env's first meaningful line.

    Accepts ``TYPE=<recipe>``, ``TYPE=<recipe>:<version>``, ``RECIPE=<recipe>`` and
    ``RECIPE=<recipe>:<version>`` (quoted or not, optionally ``export``-ed).
    """
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGN_RE.match(line)
        if not match or match["key"] not in ("TYPE", "RECIPE"):
            raise ValueError(
                f"the app env's first line must be TYPE=<recipe>[:<version>] or "
                f"RECIPE=<recipe>[:<version>], found line {lineno}: {line[:60]!r}"
            )
        value, _comment = _scan_value(match["rest"], None, f"line {lineno}")
        recipe, sep, version = value.strip().partition(":")
        validate_recipe(recipe)
        if not sep:
            return recipe, None
        if not _VERSION_VALUE_RE.match(version):
            raise ValueError(
                f"the app env's {match['key']} line names recipe {recipe!r} with an invalid "
                f"version {version!r}"
            )
        return recipe, version
    raise ValueError("the app env is empty: its first line must be TYPE=<recipe>")


# --- secrets ------------------------------------------------------------------------------

CHARSETS = {
    "alnum": string.ascii_letters + string.digits,
    "default": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "special": string.ascii_letters + string.digits + string.punctuation,
}
DEFAULT_LENGTH = 32
DEFAULT_CHARSET = "alnum"


@dataclass(frozen=True)
class SecretSpec:
    """One recipe secret: swarm name ``<stack>_<name>_<version>``; value never held here."""

    name: str
    version: str
    length: int = DEFAULT_LENGTH
    charset: str = DEFAULT_CHARSET
    generate: bool = True
    remote: str | None = None  # the swarm name a compose file gives it, when it does

    @property
    def env_key(self) -> str:
        return f"SECRET_{self.name.upper()}_VERSION"


def _parse_modifiers(comment: str) -> dict[str, str]:
    mods = {}
    for token in re.split(r"[\s,]+", comment.strip()):
        if "=" in token:
            key, _, value = token.partition("=")
            mods[key.strip().lower()] = value.strip()
    return mods


def _secret_spec(
    key: str,
    version: str,
    comment: str,
    where: str,
    name: str | None = None,
    remote: str | None = None,
) -> SecretSpec:
    name = name or _SECRET_KEY_RE.match(key)["name"].lower()
    mods = _parse_modifiers(comment)
    length = DEFAULT_LENGTH
    if "length" in mods:
        if not mods["length"].isdigit() or not 1 <= int(mods["length"]) <= 4096:
            raise AppEnvError(f"{where}: secret {name!r} has length={mods['length']!r}; use 1-4096")
        length = int(mods["length"])
    charset = mods.get("charset", DEFAULT_CHARSET).lower()
    if charset not in CHARSETS:
        raise AppEnvError(
            f"{where}: secret {name!r} has charset={charset!r}; use one of "
            + ", ".join(sorted(CHARSETS))
        )
    generate = mods.get("generate", "true").lower() not in ("false", "no", "0")
    return SecretSpec(
        name=name, version=version, length=length, charset=charset, generate=generate,
        remote=remote,
    )  # fmt: skip


def _sample_comments(env_sample_text: str) -> dict[str, tuple[str, str]]:
    """``{SECRET_<NAME>_VERSION: (comment, where)}`` of every line of ``.env.sample``,
    commented lines included (they carry the modifiers of secrets an overlay enables)."""
    found: dict[str, tuple[str, str]] = {}
    for lineno, raw in enumerate(env_sample_text.splitlines(), 1):
        line = raw.strip()
        commented = line.startswith("#")
        match = _ASSIGN_RE.match(line.lstrip("#").strip())
        if not match or not _SECRET_KEY_RE.match(match["key"]):
            continue
        try:
            _, comment = _scan_value(match["rest"], None, f".env.sample line {lineno}")
        except AppEnvError:
            continue
        if match["key"] not in found or not commented:
            found[match["key"]] = (comment, f".env.sample line {lineno}")
    return found


def compose_secrets(
    compose_docs: Iterable[Mapping[str, Any]],
    env: Mapping[str, str],
    env_sample_text: str = "",
) -> list[SecretSpec] | None:
    """The swarm secrets the active compose files declare, as abra takes them
    (abra ``pkg/secret`` ``ReadSecretsConfig``): every top-level ``secrets:`` entry of the
    merged files (a later file overrides the same key) that is not created from a
    ``file:``; its swarm name is its ``name:`` interpolated with the app env (version
    defaults such as ``${SECRET_X_VERSION:-v1}`` apply), its version what follows the
    last ``_``; modifiers come from the ``SECRET_<KEY>_VERSION`` line of ``.env.sample``,
    commented or not. ``None`` when no compose file declares a secret."""
    merged: dict[str, Any] = {}
    for doc in compose_docs:
        for key, spec in ((doc or {}).get("secrets") or {}).items():
            merged[str(key)] = spec or {}
    if not merged:
        return None
    comments = _sample_comments(env_sample_text)
    specs = []
    for key, spec in merged.items():
        if not isinstance(spec, Mapping) or spec.get("file"):
            continue
        where = f"compose secret {key!r}"
        remote = interpolate(spec.get("name") or key, env, where).strip()
        if not remote or remote.endswith("_") or "_" not in remote:
            raise AppEnvError(
                f"{where} has no version: its name {spec.get('name') or key!r} gives "
                f"{remote!r}; set its version variable in the app env (e.g. "
                f"SECRET_{key.upper()}_VERSION=v1)"
            )
        env_key = f"SECRET_{key.upper()}_VERSION"
        comment, where = comments.get(env_key, ("", where))
        version = remote.rsplit("_", 1)[1]
        if remote == f"{env.get('STACK_NAME')}_{key}_{version}":
            remote = None  # the usual name: nothing to remember
        specs.append(_secret_spec(env_key, version, comment, where, name=key, remote=remote))
    return specs


def parse_secrets(env_sample_text: str, env: Mapping[str, str] | None = None) -> list[SecretSpec]:
    """The secrets a recipe declares, in ``.env.sample`` order.

    A secret is active when its ``SECRET_<NAME>_VERSION`` line is active in ``.env.sample``
    or the key is set in ``env`` (the app env enables a commented one, or bumps the
    version: ``env`` wins). Modifiers come from the line's comment, also on commented
    lines: ``# length=128 charset=hex``, ``# generate=false``.
    """
    env = env or {}
    declared: dict[str, tuple[str, str, bool, str]] = {}  # key -> (version, comment, active, where)
    for lineno, raw in enumerate(env_sample_text.splitlines(), 1):
        line = raw.strip()
        commented = line.startswith("#")
        if commented:
            line = line.lstrip("#").strip()
        match = _ASSIGN_RE.match(line)
        if not match or not _SECRET_KEY_RE.match(match["key"]):
            continue
        where = f".env.sample line {lineno}"
        try:
            version, comment = _scan_value(match["rest"], None, where)
        except AppEnvError:
            if commented:
                continue
            raise
        key = match["key"]
        if key in declared and commented and declared[key][2]:
            continue  # an active declaration beats a later commented example
        declared[key] = (version.strip(), comment, not commented, where)
    for key in env:
        if _SECRET_KEY_RE.match(key) and key not in declared:
            declared[key] = ("", "", True, f"app env key {key}")
    specs = []
    for key, (version, comment, active, where) in declared.items():
        if key in env:
            version, active = env[key].strip(), True
        if not active:
            continue
        if not version:
            raise AppEnvError(f"{where}: secret {key} has no version (e.g. {key}=v1)")
        specs.append(_secret_spec(key, version, comment, where))
    return specs


def generate_secret(spec: SecretSpec) -> str:
    """A new random value of exactly ``spec.length`` characters from ``spec.charset``."""
    alphabet = CHARSETS[spec.charset]
    return "".join(_secrets.choice(alphabet) for _ in range(spec.length))


def secret_name(stack: str, spec: SecretSpec) -> str:
    """The swarm secret: the name its compose file gives it, else
    ``<stack>_<name>_<version>`` (Docker allows 64 characters)."""
    name = spec.remote or f"{stack}_{spec.name}_{spec.version}"
    matching(
        name, _DOCKER_NAME_RE, "secret name", "Docker names use letters, digits, '_', '.', '-'"
    )
    if len(name) > MAX_SECRET_NAME_LEN:
        raise ValidationError(
            f"secret name {name!r} has {len(name)} characters; Docker allows "
            f"{MAX_SECRET_NAME_LEN}: use a shorter domain or secret name"
        )
    return name


def secret_values(
    stack: str,
    specs: Iterable[SecretSpec],
    provided: Mapping[str, str] | None = None,
    existing: Iterable[str] = (),
) -> dict[str, str]:
    """Values of the swarm secrets to create: ``{<stack>_<name>_<version>: value}``.

    A secret already on the swarm (its full name in ``existing``) is left alone; one the
    caller ``provided`` (by short name, e.g. ``db_password``) takes that value; others are
    generated, except ``generate=false`` ones, which must be provided: all missing ones are
    named in one :class:`AppEnvError`. The result holds secret values: never log it.
    """
    provided = provided or {}
    existing = set(existing)
    values, missing = {}, []
    for spec in specs:
        full = secret_name(stack, spec)
        if full in existing:
            continue
        if spec.name in provided and provided[spec.name] is not None:
            values[full] = str(provided[spec.name])
        elif spec.generate:
            values[full] = generate_secret(spec)
        else:
            missing.append(f"{spec.name} ({full})")
    if missing:
        raise AppEnvError(
            "these secrets are marked generate=false and must be supplied by the caller: "
            + ", ".join(missing)
        )
    return values


# --- compose files and version labels -----------------------------------------------------


def compose_files_from(env: Mapping[str, str], checkout_dir: str) -> list[str]:
    """The compose files of ``COMPOSE_FILE`` (``:``-separated; default ``compose.yml``).

    Each must be a relative path that stays inside ``checkout_dir`` (no absolute path, no
    ``..``, no symlink out) and is an existing file; otherwise :class:`AppEnvError`.
    """
    raw = env.get("COMPOSE_FILE", "")
    files = [part.strip() for part in raw.split(":") if part.strip()] or ["compose.yml"]
    root = os.path.realpath(checkout_dir)
    seen: list[str] = []
    for rel in files:
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise AppEnvError(
                f"COMPOSE_FILE names {rel!r}: compose files must be relative paths inside "
                "the recipe"
            )
        full = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([root, full]) != root:
            raise AppEnvError(f"COMPOSE_FILE names {rel!r}, which leads outside the recipe")
        if not os.path.isfile(full):
            raise AppEnvError(
                f"COMPOSE_FILE names {rel!r}, which does not exist in the recipe checkout "
                f"{checkout_dir}"
            )
        norm = os.path.normpath(rel)
        if norm not in seen:
            seen.append(norm)
    return seen


def load_compose(checkout_dir: str, compose_files: Iterable[str]) -> list[dict[str, Any]]:
    """The compose files as parsed YAML, in order."""
    import yaml

    docs = []
    for rel in compose_files:
        try:
            with open(os.path.join(checkout_dir, rel), encoding="utf-8") as handle:
                doc = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise AppEnvError(f"compose file {rel} of the recipe cannot be read: {exc}") from exc
        if not isinstance(doc, dict):
            raise AppEnvError(f"compose file {rel} of the recipe is not a mapping")
        docs.append(doc)
    return docs


@dataclass(frozen=True)
class VersionLabel:
    """A ``coop-cloud.<stack>[.<service>].version`` label found in compose or on a service."""

    service: str | None  # the service carrying the label
    key: str
    value: str
    form: str  # "new" (coop-cloud.<stack>.version) or "old" (coop-cloud.<stack>.<svc>.version)
    version: str  # the value without an old-form "-<digest8>" suffix
    digest: str | None  # the old form's 8 hex digest, if present


_OLD_DIGEST_RE = re.compile(r"^(?P<version>.+)-(?P<digest>[0-9a-f]{8})$")


def _label_items(labels) -> Iterable[tuple[str, str]]:
    if isinstance(labels, Mapping):
        for key, value in labels.items():
            yield str(key), "" if value is None else str(value)
    elif isinstance(labels, list):
        for item in labels:
            key, _, value = str(item).partition("=")
            yield key, value


def _stack_key_re(stack: str | None) -> re.Pattern:
    names = [r"\$\{STACK_NAME\}", r"\$STACK_NAME"]
    if stack:
        names.append(re.escape(stack))
    return re.compile(
        r"^coop-cloud\.(?:" + "|".join(names) + r")\.(?:(?P<service>[A-Za-z0-9_.-]+?)\.)?version$"
    )


def version_from_labels(
    labels,
    stack: str | None = None,
    service: str | None = None,
    env: Mapping[str, str] | None = None,
) -> VersionLabel | None:
    """The non-empty version label among one service's ``labels`` (list or mapping).

    Matches keys written with ``${STACK_NAME}`` (compose as committed) or with ``stack``
    (interpolated, as on a deployed service); with ``env`` the value is interpolated
    (``${COOP_CLOUD_VERSION:-latest}``). The new form wins over the old; the old
    per-service form counts only on the ``app`` service: on other services it carries
    their image's tag (``coop-cloud.${STACK_NAME}.db.version=8.0``), not the recipe's.
    """
    key_re = _stack_key_re(stack)
    found: list[VersionLabel] = []
    for key, value in _label_items(labels):
        match = key_re.match(key.strip())
        value = value.strip().strip("\"'")
        if env is not None and "$" in value:
            value = interpolate(value, env, f"label {key.strip()}").strip()
        if not match or not value:
            continue
        form = "old" if match["service"] else "new"
        if form == "old" and (match["service"] != "app" or (service and service != "app")):
            continue
        version, digest = value, None
        if form == "old":
            old = _OLD_DIGEST_RE.match(value)
            if old:
                version, digest = old["version"], old["digest"]
        found.append(VersionLabel(service, key.strip(), value, form, version, digest))
    found.sort(key=lambda label: label.form != "new")
    return found[0] if found else None


def version_label(
    compose, stack: str | None = None, env: Mapping[str, str] | None = None
) -> VersionLabel | None:
    """The deployed-version label in parsed compose YAML (one dict or a list, later wins).

    Looks at ``deploy.labels`` (and service ``labels``) of every service: the new form on
    ``app`` first, then the new form on any service, then the old per-service form (on
    ``app`` first). Empty labels are skipped. None when no service carries one.
    """
    docs = compose if isinstance(compose, list) else [compose]
    per_service: dict[str, list] = {}
    for doc in docs:
        services = (doc or {}).get("services") or {}
        for name, svc in services.items():
            svc = svc or {}
            labels = []
            for source in ((svc.get("deploy") or {}).get("labels"), svc.get("labels")):
                labels.extend(_label_items(source or []))
            per_service.setdefault(str(name), []).extend(labels)
    candidates = []
    for name, labels in per_service.items():
        merged = dict(labels)  # later files override the same key
        label = version_from_labels(merged, stack, service=name, env=env)
        if label:
            candidates.append(label)
    if not candidates:
        return None
    candidates.sort(key=lambda label: (label.form != "new", label.service != "app"))
    return candidates[0]


# --- the whole app env --------------------------------------------------------------------


@dataclass
class AppEnv:
    """The env of one app of a recipe checkout, with its compose files and secrets."""

    checkout_dir: str
    domain: str
    stack: str
    env: dict[str, str]
    compose_files: list[str]
    secrets: list[SecretSpec] = field(default_factory=list)
    recipe: str | None = None  # from TYPE= / RECIPE= when present
    abra_exports: dict[str, str] = field(default_factory=dict)

    def compose_paths(self) -> list[str]:
        """The compose files as absolute paths, in ``COMPOSE_FILE`` order."""
        return [os.path.join(self.checkout_dir, rel) for rel in self.compose_files]

    def secret_names(self) -> dict[str, str]:
        """``{short name: swarm secret name}`` for every active secret."""
        return {spec.name: secret_name(self.stack, spec) for spec in self.secrets}

    def secret_values(
        self, provided: Mapping[str, str] | None = None, existing: Iterable[str] = ()
    ) -> dict[str, str]:
        """See :func:`secret_values`. The result holds secret values: never log it."""
        return secret_values(self.stack, self.secrets, provided, existing)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AppEnvError(f"cannot read {path}: {exc}") from exc


def build_app_env(
    checkout_dir: str,
    domain: str,
    overrides: Mapping[str, str] | str | None = None,
) -> AppEnv:
    """The app env of ``domain`` for the recipe checked out at ``checkout_dir``.

    Order, as abra builds it: ``.env.sample`` defaults, then ``overrides`` (a mapping of
    literal values, or the text of an app env file, parsed with ``$VAR`` expansion over
    the defaults), then the ``abra.sh`` exports; ``DOMAIN`` and ``STACK_NAME`` always
    come from ``domain``. Compose files are checked to exist inside the checkout.
    """
    stack = stack_name(domain)
    fixed = {"DOMAIN": domain, "STACK_NAME": stack}
    sample = _read(os.path.join(checkout_dir, ".env.sample"))
    if sample is None:
        raise AppEnvError(f"the recipe checkout {checkout_dir} has no .env.sample")
    try:
        env = parse_env(sample, fixed=fixed)
    except AppEnvError as exc:
        raise AppEnvError(f".env.sample of {checkout_dir}: {exc}") from exc
    if isinstance(overrides, str):
        try:
            env = parse_env(overrides, env, fixed=fixed)
        except AppEnvError as exc:
            raise AppEnvError(f"app env overrides: {exc}") from exc
    elif overrides:
        for key, value in overrides.items():
            if not _NAME_RE.fullmatch(str(key)):
                raise AppEnvError(f"env override {key!r} is not a valid variable name")
            if key not in fixed:
                env[str(key)] = "" if value is None else str(value)
    abra_sh = _read(os.path.join(checkout_dir, "abra.sh"))
    exports = parse_abra_sh(abra_sh) if abra_sh is not None else {}
    for key, value in exports.items():
        if key not in fixed:
            env[key] = value
    recipe = None
    type_value = env.get("TYPE") or env.get("RECIPE")
    if type_value:
        recipe = type_value.partition(":")[0] or None
    compose_files = compose_files_from(env, checkout_dir)
    # secrets: those the active compose files declare, as abra takes them; none when
    # they declare none, whatever SECRET_*_VERSION the env sets (abra creates none)
    specs = compose_secrets(load_compose(checkout_dir, compose_files), env, sample) or []
    for spec in specs:
        secret_name(stack, spec)  # fail early: a name Docker would refuse
    return AppEnv(
        checkout_dir=os.path.abspath(checkout_dir),
        domain=domain,
        stack=stack,
        env=env,
        compose_files=compose_files,
        secrets=specs,
        recipe=recipe,
        abra_exports=exports,
    )
