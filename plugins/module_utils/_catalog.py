# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recipe catalog: per-recipe CI metadata. PRIVATE to the collection: no compatibility promises.

``<catalog_dir>/<recipe>/recipe.yml`` says whether a recipe is enrolled in the warm
layer, which stages its runs have, how its health is probed, which overlays are tested,
whether it needs SSO, and which env overrides every deploy gets. An optional
``<catalog_dir>/<recipe>/tests/`` folder holds the pytest files of the custom stage.
``catalog/README.md`` documents the schema for operators.

Every entry is validated on load. Each problem raises :class:`CatalogError` with one
sentence that names the file and the key. Unknown keys are refused, so a typo never
silently turns a setting off.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    validate_recipe,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._version import Version

ENTRY_FILE = "recipe.yml"
TESTS_DIR = "tests"
#: Every stage a run can have, in the order they run.
STAGES = ("install", "upgrade", "serving", "overlay", "custom")
SSO_PROVIDERS = ("keycloak",)

_ENV_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Overlay paths end up in COMPOSE_FILE, which ':' separates: keep to plain path characters.
_OVERLAY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.ya?ml$")
_TEST_FILE_RE = re.compile(r"^(test_.*|.*_test)\.py$")

_TOP_KEYS = (
    "recipe",
    "warm_canonical",
    "sso",
    "stages",
    "http",
    "health",
    "overlays",
    "env",
    "upgrade_from",
)
_HTTP_KEYS = ("service", "port")
_HEALTH_KEYS = ("path", "status", "body", "timeout", "interval")
_OVERLAY_KEYS = ("file", "env")


class CatalogError(CcciError, ValueError):
    """A catalog entry is missing or invalid. The message names the file and the key."""


@dataclass(frozen=True)
class HttpSpec:
    service: str = "app"
    port: int = 80


@dataclass(frozen=True)
class HealthSpec:
    path: str = "/"
    status: tuple[int, ...] = (200,)
    body: str | None = None
    timeout: float = 120
    interval: float = 2


@dataclass(frozen=True)
class Overlay:
    file: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogEntry:
    """One validated catalog entry. ``to_dict()`` is what the ``catalog_entry`` module returns."""

    recipe: str
    path: str | None = None
    warm_canonical: bool = False
    sso: str | None = None
    stages: tuple[str, ...] = STAGES
    http: HttpSpec = field(default_factory=HttpSpec)
    health: HealthSpec = field(default_factory=HealthSpec)
    overlays: tuple[Overlay, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    upgrade_from: str = "previous"
    tests_dir: str | None = None
    tests: tuple[str, ...] = ()

    def runs(self, stage: str) -> bool:
        """Whether ``stage`` is one of this recipe's stages (it may still skip, e.g. no overlays)."""
        return stage in self.stages

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "path": self.path,
            "found": self.path is not None,
            "warm_canonical": self.warm_canonical,
            "sso": self.sso,
            "stages": list(self.stages),
            "skipped_stages": [s for s in STAGES if s not in self.stages],
            "http": {"service": self.http.service, "port": self.http.port},
            "health": {
                "path": self.health.path,
                "status": list(self.health.status),
                "body": self.health.body,
                "timeout": self.health.timeout,
                "interval": self.health.interval,
            },
            "overlays": [{"file": o.file, "env": dict(o.env)} for o in self.overlays],
            "env": dict(self.env),
            "upgrade_from": self.upgrade_from,
            "tests_dir": self.tests_dir,
            "tests": list(self.tests),
        }


# --- YAML --------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: the catalog entry file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: the catalog entry cannot be read ({exc})") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{path}: the file is not valid YAML{where}: {problem}") from exc


# --- validation helpers -----------------------------------------------------------------


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.path}: key '{key}' {problem}")

    def mapping(self, key: str, value: Any, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            prefix = f"{key}." if key else ""
            raise CatalogError(
                f"{self.path}: unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(allowed)})"
            )
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be a whole number from {low} to {high}, got {value!r}")
        return value

    def seconds(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.fail(key, f"must be a positive number of seconds, got {value!r}")
        return value

    def env(self, key: str, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of NAME: 'value' strings, got {_kind(value)}")
        out: dict[str, str] = {}
        for name, val in value.items():
            if not isinstance(name, str) or not _ENV_KEY_RE.match(name):
                raise self.fail(
                    f"{key}.{name}", "is not a valid variable name (use ^[A-Z][A-Z0-9_]*$)"
                )
            if not isinstance(val, str):
                raise self.fail(
                    f"{key}.{name}",
                    f"must be a string, got {_kind(val)} {val!r} (quote it in YAML)",
                )
            out[name] = val
        return out

    def overlay_file(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a relative path to a compose file, got {value!r}")
        if value.startswith("/") or os.path.isabs(value):
            raise self.fail(key, f"must be relative to the recipe, not absolute: {value!r}")
        if ".." in value.split("/"):
            raise self.fail(key, f"must stay inside the recipe ('..' is refused): {value!r}")
        if not _OVERLAY_RE.match(value) or "//" in value or "/./" in f"/{value}":
            raise self.fail(
                key,
                f"must be a plain path ending in .yml or .yaml (letters, digits, _ . / -): "
                f"{value!r}",
            )
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _parse(raw: Any, path: Path, folder: str, tests_dir: Path) -> CatalogEntry:
    check = _Checker(path)
    if raw is None:
        raise CatalogError(f"{path}: the file is empty; key 'recipe' is required")
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: the top level must be a mapping of keys, got {_kind(raw)}")
    check.mapping("", raw, _TOP_KEYS)

    if "recipe" not in raw:
        raise check.fail("recipe", "is required (the recipe name, equal to the folder name)")
    try:
        recipe = validate_recipe(raw["recipe"])
    except ValidationError as exc:
        raise check.fail("recipe", f"is invalid: {exc}") from None
    if recipe != folder:
        raise check.fail(
            "recipe", f"is {recipe!r} but the entry lives in folder {folder!r}; they must match"
        )

    warm = check.boolean("warm_canonical", raw.get("warm_canonical", False))

    sso = raw.get("sso")
    if sso is not None and sso not in SSO_PROVIDERS:
        raise check.fail("sso", f"must be null or one of {', '.join(SSO_PROVIDERS)}, got {sso!r}")

    stages: tuple[str, ...] = STAGES
    if "stages" in raw:
        value = raw["stages"]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise check.fail("stages", f"must be a list of stage names, got {_kind(value)}")
        unknown = [s for s in value if s not in STAGES]
        if unknown:
            raise check.fail(
                "stages", f"names unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})"
            )
        dupes = sorted({s for s in value if value.count(s) > 1})
        if dupes:
            raise check.fail("stages", f"lists stage {dupes[0]!r} twice")
        if "install" not in value:
            raise check.fail("stages", "must include 'install': a run without install cannot run")
        stages = tuple(s for s in STAGES if s in value)

    http = HttpSpec()
    if "http" in raw:
        value = check.mapping("http", raw["http"], _HTTP_KEYS)
        service = value.get("service", http.service)
        if not isinstance(service, str) or not _SERVICE_RE.match(service):
            raise check.fail("http.service", f"must be a compose service name, got {service!r}")
        port = check.integer("http.port", value.get("port", http.port), 1, 65535)
        http = HttpSpec(service=service, port=port)

    health = HealthSpec()
    if "health" in raw:
        value = check.mapping("health", raw["health"], _HEALTH_KEYS)
        hpath = value.get("path", health.path)
        if (
            not isinstance(hpath, str)
            or not hpath.startswith("/")
            or any(c.isspace() for c in hpath)
        ):
            raise check.fail("health.path", f"must be a URL path starting with '/', got {hpath!r}")
        status = value.get("status", list(health.status))
        if isinstance(status, bool) or not isinstance(status, list) or not status:
            raise check.fail(
                "health.status", f"must be a non-empty list of HTTP status codes, got {status!r}"
            )
        codes = tuple(
            check.integer(f"health.status[{i}]", code, 100, 599) for i, code in enumerate(status)
        )
        body = value.get("body")
        if body is not None:
            if not isinstance(body, str) or not body:
                raise check.fail(
                    "health.body", f"must be null or a regular expression, got {body!r}"
                )
            try:
                re.compile(body)
            except re.error as exc:
                raise check.fail(
                    "health.body", f"is not a valid regular expression ({exc})"
                ) from None
        timeout = check.seconds("health.timeout", value.get("timeout", health.timeout))
        interval = check.seconds("health.interval", value.get("interval", health.interval))
        if interval > timeout:
            raise check.fail(
                "health.interval", f"({interval}) must not exceed health.timeout ({timeout})"
            )
        health = HealthSpec(path=hpath, status=codes, body=body, timeout=timeout, interval=interval)

    overlays: list[Overlay] = []
    if "overlays" in raw:
        value = raw["overlays"]
        if not isinstance(value, list):
            raise check.fail(
                "overlays", f"must be a list of compose file paths, got {_kind(value)}"
            )
        for i, item in enumerate(value):
            key = f"overlays[{i}]"
            if isinstance(item, str):
                overlays.append(Overlay(file=check.overlay_file(key, item)))
                continue
            if not isinstance(item, dict):
                raise check.fail(key, f"must be a path or a mapping with 'file', got {_kind(item)}")
            check.mapping(key, item, _OVERLAY_KEYS)
            if "file" not in item:
                raise check.fail(f"{key}.file", "is required")
            ofile = check.overlay_file(f"{key}.file", item["file"])
            oenv = check.env(f"{key}.env", item.get("env", {}))
            overlays.append(Overlay(file=ofile, env=oenv))
        files = [o.file for o in overlays]
        dupes = sorted({f for f in files if files.count(f) > 1})
        if dupes:
            raise check.fail("overlays", f"lists {dupes[0]!r} twice")

    env = check.env("env", raw.get("env", {}))

    upgrade_from = raw.get("upgrade_from", "previous")
    if upgrade_from != "previous" and (
        not isinstance(upgrade_from, str) or Version.try_parse(upgrade_from) is None
    ):
        raise check.fail(
            "upgrade_from",
            f"must be 'previous' or a version tag such as 1.0.0+1.28, got {upgrade_from!r}",
        )

    tests: tuple[str, ...] = ()
    tests_path: str | None = None
    if tests_dir.is_dir():
        tests = tuple(sorted(p.name for p in tests_dir.iterdir() if _TEST_FILE_RE.match(p.name)))
        tests_path = str(tests_dir)

    return CatalogEntry(
        recipe=recipe,
        path=str(path),
        warm_canonical=warm,
        sso=sso,
        stages=stages,
        http=http,
        health=health,
        overlays=tuple(overlays),
        env=env,
        upgrade_from=upgrade_from,
        tests_dir=tests_path,
        tests=tests,
    )


# --- public API -------------------------------------------------------------------------


def default_entry(recipe: str) -> CatalogEntry:
    """The entry a recipe without a ``recipe.yml`` gets: every stage, app/80, not enrolled."""
    return CatalogEntry(recipe=validate_recipe(recipe))


def load_entry(
    catalog_dir: str | os.PathLike, recipe: str, missing_ok: bool = False
) -> CatalogEntry:
    """The validated entry of ``recipe``; raises :class:`CatalogError`.

    With ``missing_ok`` a recipe that has no ``recipe.yml`` gets :func:`default_entry`
    (``path`` is then ``None``); an entry that exists but is invalid always raises.
    """
    try:
        validate_recipe(recipe)
    except ValidationError as exc:
        raise CatalogError(str(exc)) from None
    base = Path(catalog_dir)
    if not base.is_dir():
        raise CatalogError(f"catalog directory {base} does not exist or is not a directory")
    path = base / recipe / ENTRY_FILE
    if not path.is_file():
        if missing_ok and not path.exists():
            return default_entry(recipe)
        raise CatalogError(
            f"{path}: the catalog has no entry for recipe {recipe!r} "
            f"(create {recipe}/{ENTRY_FILE} in {base})"
        )
    return _parse(_read_yaml(path), path, recipe, base / recipe / TESTS_DIR)


def list_entries(catalog_dir: str | os.PathLike) -> tuple[list[CatalogEntry], list[str]]:
    """``(entries, errors)``: every valid entry sorted by recipe, and one message per invalid one.

    Sub-folders whose names start with ``.`` or ``_`` are ignored; any other sub-folder
    must be a valid entry, so a broken or half-made entry is reported, not skipped.
    """
    base = Path(catalog_dir)
    if not base.is_dir():
        raise CatalogError(f"catalog directory {base} does not exist or is not a directory")
    entries: list[CatalogEntry] = []
    errors: list[str] = []
    for child in sorted(base.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        try:
            validate_recipe(child.name)
        except ValidationError as exc:
            errors.append(f"{child}: the folder name is not a recipe name ({exc})")
            continue
        try:
            entries.append(load_entry(base, child.name))
        except CatalogError as exc:
            errors.append(str(exc))
    return entries, errors


def enrolled(catalog_dir: str | os.PathLike) -> list[str]:
    """The recipes enrolled in the warm layer (``warm_canonical: true``), sorted."""
    entries, _errors = list_entries(catalog_dir)
    return sorted(e.recipe for e in entries if e.warm_canonical)


def _config_roots() -> list[str]:
    """``collections_path`` of the ansible.cfg Ansible itself would read, relative to that file."""
    candidates = [os.environ.get("ANSIBLE_CONFIG", ""), "ansible.cfg", "~/.ansible.cfg"]
    for candidate in candidates:
        path = Path(os.path.expanduser(candidate)) if candidate else None
        if path is not None and path.is_dir():
            path = path / "ansible.cfg"
        if path is None or not path.is_file():
            continue
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            return []
        value = parser.get("defaults", "collections_path", fallback=None) or parser.get(
            "defaults", "collections_paths", fallback=""
        )
        base = path.resolve().parent
        return [
            str(base / os.path.expanduser(p.strip())) for p in value.split(os.pathsep) if p.strip()
        ]
    return []


def _collection_roots() -> list[Path]:
    roots: list[str] = []
    for var in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"):
        roots.extend(p for p in os.environ.get(var, "").split(os.pathsep) if p)
    roots += _config_roots()
    roots += ["~/.ansible/collections", "/usr/share/ansible/collections"]
    roots += [p for p in sys.path if p]
    return [Path(os.path.expanduser(r)) for r in roots]


def default_catalog_dir() -> str:
    """The collection's own ``catalog/`` folder (the example catalog).

    Found beside this file when the collection is imported from disk, else in the
    Ansible collection paths (when a module runs from a zipped AnsiballZ payload its
    module_utils are not on disk): ``$ANSIBLE_COLLECTIONS_PATH``, ``collections_path``
    of the ansible.cfg Ansible reads (``$ANSIBLE_CONFIG``, ``./ansible.cfg``,
    ``~/.ansible.cfg``), the default paths and ``sys.path``. ``$CCCI_CATALOG_DIR`` wins
    over all of them.
    """
    override = os.environ.get("CCCI_CATALOG_DIR")
    if override:
        return override
    here = Path(__file__).resolve().parents[2] / "catalog"
    if here.is_dir():
        return str(here)
    for root in _collection_roots():
        candidate = root / "ansible_collections" / "coopcloud" / "ci" / "catalog"
        if candidate.is_dir():
            return str(candidate)
    raise CatalogError(
        "the collection's example catalog was not found beside the collection or in the "
        "Ansible collection paths; pass catalog_dir (ccci_catalog_dir) explicitly"
    )
