"""The recipe catalog: schema validation, listing, enrolment, and the shipped entries."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _catalog
from ansible_collections.coopcloud.ci.plugins.module_utils._catalog import (
    STAGES,
    CatalogError,
    default_entry,
    enrolled,
    list_entries,
    load_entry,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "catalog"


def write_entry(catalog: Path, folder: str, text: str) -> Path:
    path = catalog / folder / "recipe.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str, folder: str = "demo"):
    write_entry(tmp_path, folder, text)
    return load_entry(tmp_path, folder)


def error_of(tmp_path: Path, text: str, folder: str = "demo") -> str:
    path = write_entry(tmp_path, folder, text)
    with pytest.raises(CatalogError) as info:
        load_entry(tmp_path, folder)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    return message


# --- defaults and a full entry ----------------------------------------------------------


def test_minimal_entry_gets_the_documented_defaults(tmp_path):
    entry = load_text(tmp_path, "recipe: demo\n")
    assert entry.to_dict() == {
        "recipe": "demo",
        "path": str(tmp_path / "demo" / "recipe.yml"),
        "found": True,
        "warm_canonical": False,
        "sso": None,
        "stages": ["install", "upgrade", "serving", "overlay", "custom"],
        "skipped_stages": [],
        "http": {"service": "app", "port": 80},
        "health": {"path": "/", "status": [200], "body": None, "timeout": 120, "interval": 2},
        "overlays": [],
        "env": {},
        "upgrade_from": "previous",
        "tests_dir": None,
        "tests": [],
    }


def test_full_entry_is_normalised(tmp_path):
    text = """\
recipe: demo
warm_canonical: true
sso: keycloak
stages: [custom, install, serving]
http: {service: web, port: 8080}
health: {path: /healthz, status: [200, 204], body: "ok|ready", timeout: 30, interval: 0.5}
overlays:
  - compose.smtp.yml
  - file: db/compose.db-tune.yml
    env: {DB_CACHE_MB: "256"}
env: {APP_TITLE: "CI", LETS_ENCRYPT_ENV: staging}
upgrade_from: 1.0.0+1.28
"""
    write_entry(tmp_path, "demo", text)
    tests = tmp_path / "demo" / "tests"
    tests.mkdir()
    (tests / "test_b.py").write_text("def test_x():\n    assert 1 + 1 == 2\n")
    (tests / "a_test.py").write_text("")
    (tests / "helper.py").write_text("")
    data = load_entry(tmp_path, "demo").to_dict()
    assert data["warm_canonical"] is True
    assert data["sso"] == "keycloak"
    assert data["stages"] == ["install", "serving", "custom"]  # fixed run order
    assert data["skipped_stages"] == ["upgrade", "overlay"]
    assert data["http"] == {"service": "web", "port": 8080}
    assert data["health"] == {
        "path": "/healthz",
        "status": [200, 204],
        "body": "ok|ready",
        "timeout": 30,
        "interval": 0.5,
    }
    assert data["overlays"] == [
        {"file": "compose.smtp.yml", "env": {}},
        {"file": "db/compose.db-tune.yml", "env": {"DB_CACHE_MB": "256"}},
    ]
    assert data["env"] == {"APP_TITLE": "CI", "LETS_ENCRYPT_ENV": "staging"}
    assert data["upgrade_from"] == "1.0.0+1.28"
    assert data["tests_dir"] == str(tests)
    assert data["tests"] == ["a_test.py", "test_b.py"]


def test_entry_runs_and_default_entry():
    entry = default_entry("plain")
    assert entry.path is None and entry.to_dict()["found"] is False
    assert all(entry.runs(s) for s in STAGES)
    with pytest.raises(ValueError):
        default_entry("Bad Name")


# --- the validation battery -------------------------------------------------------------


def test_missing_entry_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(CatalogError) as info:
        load_entry(tmp_path, "absent")
    assert str(tmp_path / "absent" / "recipe.yml") in str(info.value)
    assert "no entry for recipe 'absent'" in str(info.value)


def test_missing_entry_with_missing_ok_is_the_default(tmp_path):
    entry = load_entry(tmp_path, "absent", missing_ok=True)
    assert entry == default_entry("absent")


def test_missing_ok_never_hides_an_invalid_entry(tmp_path):
    write_entry(tmp_path, "demo", "recipe: demo\nstagez: []\n")
    with pytest.raises(CatalogError, match="unknown key 'stagez'"):
        load_entry(tmp_path, "demo", missing_ok=True)


def test_missing_catalog_dir(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        load_entry(tmp_path / "nope", "demo")
    with pytest.raises(CatalogError, match="does not exist"):
        list_entries(tmp_path / "nope")


def test_bad_recipe_argument_is_refused_before_any_path_is_built(tmp_path):
    with pytest.raises(CatalogError, match=r"recipe name '\.\./etc' is invalid"):
        load_entry(tmp_path, "../etc")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("recipe: demo\nstages: [install\n", "not valid YAML at line"),
        ("recipe: demo\nrecipe: demo\n", "duplicate key 'recipe'"),
        ("", "the file is empty; key 'recipe' is required"),
        ("- recipe\n", "the top level must be a mapping"),
        ("warm_canonical: true\n", "key 'recipe' is required"),
        ("recipe: demo\nwarm_canonicl: true\n", "unknown key 'warm_canonicl'"),
        ("recipe: demo\nhttp: {service: app, prot: 80}\n", "unknown key 'http.prot'"),
        ("recipe: demo\nhealth: {path: /, timout: 3}\n", "unknown key 'health.timout'"),
        ("recipe: Demo\n", "key 'recipe' is invalid"),
        ("recipe: other\n", "key 'recipe' is 'other' but the entry lives in folder 'demo'"),
        ("recipe: demo\nwarm_canonical: 'yes'\n", "key 'warm_canonical' must be true or false"),
        ("recipe: demo\nwarm_canonical: 1\n", "key 'warm_canonical' must be true or false"),
        ("recipe: demo\nsso: authentik\n", "key 'sso' must be null or one of keycloak"),
        ("recipe: demo\nstages: install\n", "key 'stages' must be a list"),
        ("recipe: demo\nstages: [install, deploy]\n", "unknown stage 'deploy'"),
        ("recipe: demo\nstages: [install, serving, serving]\n", "lists stage 'serving' twice"),
        ("recipe: demo\nstages: [upgrade, serving]\n", "must include 'install'"),
        ("recipe: demo\nstages: []\n", "must include 'install'"),
        ("recipe: demo\nhttp: [app, 80]\n", "key 'http' must be a mapping"),
        ("recipe: demo\nhttp: {port: '80'}\n", "key 'http.port' must be a whole number"),
        ("recipe: demo\nhttp: {port: 70000}\n", "key 'http.port' must be a whole number"),
        ("recipe: demo\nhttp: {port: true}\n", "key 'http.port' must be a whole number"),
        ("recipe: demo\nhttp: {service: 'a b'}\n", "key 'http.service' must be a compose"),
        ("recipe: demo\nhealth: {path: healthz}\n", "key 'health.path' must be a URL path"),
        ("recipe: demo\nhealth: {status: 200}\n", "key 'health.status' must be a non-empty"),
        ("recipe: demo\nhealth: {status: []}\n", "key 'health.status' must be a non-empty"),
        ("recipe: demo\nhealth: {status: [200, 99]}\n", "key 'health.status[1]' must be"),
        ("recipe: demo\nhealth: {body: '(unclosed'}\n", "key 'health.body' is not a valid"),
        ("recipe: demo\nhealth: {body: 5}\n", "key 'health.body' must be null or a regular"),
        ("recipe: demo\nhealth: {timeout: 0}\n", "key 'health.timeout' must be a positive"),
        ("recipe: demo\nhealth: {interval: fast}\n", "key 'health.interval' must be a positive"),
        ("recipe: demo\nhealth: {timeout: 5, interval: 10}\n", "must not exceed health.timeout"),
        ("recipe: demo\noverlays: compose.x.yml\n", "key 'overlays' must be a list"),
        ("recipe: demo\noverlays: ['../x.yml']\n", "key 'overlays[0]' must stay inside"),
        ("recipe: demo\noverlays: [a/../../x.yml]\n", "key 'overlays[0]' must stay inside"),
        ("recipe: demo\noverlays: [/abs/compose.x.yml]\n", "key 'overlays[0]' must be relative"),
        ("recipe: demo\noverlays: ['a:b.yml']\n", "key 'overlays[0]' must be a plain path"),
        ("recipe: demo\noverlays: [compose.x.txt]\n", "key 'overlays[0]' must be a plain path"),
        ("recipe: demo\noverlays: [./compose.x.yml]\n", "key 'overlays[0]' must be a plain path"),
        ("recipe: demo\noverlays: [5]\n", "key 'overlays[0]' must be a path or a mapping"),
        ("recipe: demo\noverlays: [{env: {}}]\n", "key 'overlays[0].file' is required"),
        ("recipe: demo\noverlays: [{file: x.yml, vars: {}}]\n", "unknown key 'overlays[0].vars'"),
        ("recipe: demo\noverlays: [{file: ../x.yml}]\n", "key 'overlays[0].file' must stay"),
        ("recipe: demo\noverlays: [x.yml, {file: x.yml}]\n", "lists 'x.yml' twice"),
        (
            "recipe: demo\noverlays: [{file: x.yml, env: {A: 1}}]\n",
            "key 'overlays[0].env.A' must be a string",
        ),
        ("recipe: demo\nenv: [A]\n", "key 'env' must be a mapping"),
        ("recipe: demo\nenv: {lower: x}\n", "key 'env.lower' is not a valid variable name"),
        ("recipe: demo\nenv: {PORT: 80}\n", "key 'env.PORT' must be a string"),
        ("recipe: demo\nenv: {FLAG: true}\n", "key 'env.FLAG' must be a string"),
        ("recipe: demo\nupgrade_from: latest\n", "key 'upgrade_from' must be 'previous'"),
        ("recipe: demo\nupgrade_from: 1\n", "key 'upgrade_from' must be 'previous'"),
    ],
)
def test_invalid_entries_name_file_and_key(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_unreadable_entry(tmp_path):
    path = write_entry(tmp_path, "demo", "")
    path.write_bytes(b"recipe: demo\n\xff\xfe\n")
    with pytest.raises(CatalogError, match="cannot be read"):
        load_entry(tmp_path, "demo")


def test_entry_file_that_is_a_directory(tmp_path):
    (tmp_path / "demo" / "recipe.yml").mkdir(parents=True)
    with pytest.raises(CatalogError, match="no entry for recipe 'demo'"):
        load_entry(tmp_path, "demo", missing_ok=True)


# --- listing and enrolment --------------------------------------------------------------


def test_list_entries_reports_invalid_ones_and_enrolled_is_sorted(tmp_path):
    write_entry(tmp_path, "zeta", "recipe: zeta\nwarm_canonical: true\n")
    write_entry(tmp_path, "alpha", "recipe: alpha\nwarm_canonical: true\n")
    write_entry(tmp_path, "cold-only", "recipe: cold-only\n")
    write_entry(tmp_path, "broken", "recipe: broken\nwarm_canonical: maybe\n")
    (tmp_path / "half-made").mkdir()
    (tmp_path / "Bad_Folder").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "_templates").mkdir()
    (tmp_path / "README.md").write_text("# catalog\n")

    entries, errors = list_entries(tmp_path)
    assert [e.recipe for e in entries] == ["alpha", "cold-only", "zeta"]
    assert len(errors) == 3, errors
    joined = "\n".join(errors)
    assert "broken/recipe.yml: key 'warm_canonical' must be true or false" in joined
    assert "half-made/recipe.yml: the catalog has no entry" in joined
    assert "Bad_Folder: the folder name is not a recipe name" in joined
    assert enrolled(tmp_path) == ["alpha", "zeta"]


def test_empty_catalog(tmp_path):
    assert list_entries(tmp_path) == ([], [])
    assert enrolled(tmp_path) == []


# --- the shipped example catalog --------------------------------------------------------


def test_shipped_catalog_is_valid_and_the_warm_examples_are_enrolled():
    entries, errors = list_entries(SHIPPED)
    assert errors == []
    assert [e.recipe for e in entries] == ["custom-html", "notes", "sso-site"]
    # sso-site is a cold-only example: it needs a per-run realm, not a canonical.
    assert enrolled(SHIPPED) == ["custom-html", "notes"]


def test_shipped_custom_html():
    entry = load_entry(SHIPPED, "custom-html")
    assert entry.stages == STAGES
    assert entry.health.path == "/index.html"
    assert entry.overlays == ()
    assert entry.tests == ("test_site.py",)
    assert entry.tests_dir == str(SHIPPED / "custom-html" / "tests")


def test_shipped_notes():
    data = load_entry(SHIPPED, "notes").to_dict()
    assert data["overlays"] == [{"file": "db/compose.db-tune.yml", "env": {"DB_CACHE_MB": "256"}}]
    assert data["health"]["status"] == [200, 404]
    assert data["tests"] == ["test_notes.py"]


def test_default_catalog_dir_is_the_shipped_one(monkeypatch):
    monkeypatch.delenv("CCCI_CATALOG_DIR", raising=False)
    assert Path(_catalog.default_catalog_dir()).resolve() == SHIPPED.resolve()
    monkeypatch.setenv("CCCI_CATALOG_DIR", "/srv/catalog")
    assert _catalog.default_catalog_dir() == "/srv/catalog"


def test_default_catalog_dir_found_in_collection_paths(monkeypatch, tmp_path):
    """As from a zipped AnsiballZ payload: nothing beside the module_utils file on disk."""
    monkeypatch.delenv("CCCI_CATALOG_DIR", raising=False)
    fake = tmp_path / "payload.zip" / "ansible_collections/coopcloud/ci/plugins/module_utils/x.py"
    monkeypatch.setattr(_catalog, "__file__", str(fake))
    installed = tmp_path / "colls" / "ansible_collections" / "coopcloud" / "ci" / "catalog"
    installed.mkdir(parents=True)
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", f"/nonexistent:{tmp_path / 'colls'}")
    assert _catalog.default_catalog_dir() == str(installed)
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", "/nonexistent")
    monkeypatch.setattr(_catalog, "_collection_roots", lambda: [Path("/nonexistent")])
    with pytest.raises(CatalogError, match="pass catalog_dir"):
        _catalog.default_catalog_dir()


# --- the shipped custom tests really assert ---------------------------------------------


@pytest.fixture
def site(tmp_path):
    """A real HTTP server on loopback serving a folder; yields (folder, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_custom(recipe: str, base_url: str, domain: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DOMAIN": domain,
        "CCCI_BASE_URL": base_url,
        "CCCI_RECIPE": recipe,
        "CCCI_MODE": "cold",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(SHIPPED / recipe / "tests"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # runs the recipes' test scripts
def test_custom_html_tests_pass_on_a_good_site_and_fail_on_a_wrong_one(site):
    root, base = site
    (root / "index.html").write_text("<h1>cust-abc123.ci.example</h1>\n")
    (root / ".initialised").write_text("initialised 1.29\n")
    good = run_custom("custom-html", base, "cust-abc123.ci.example")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "2 passed" in good.stdout

    wrong_domain = run_custom("custom-html", base, "other.ci.example")
    assert wrong_domain.returncode == 1, wrong_domain.stdout
    assert "1 failed, 1 passed" in wrong_domain.stdout

    (root / ".initialised").unlink()
    not_initialised = run_custom("custom-html", base, "cust-abc123.ci.example")
    assert "1 failed, 1 passed" in not_initialised.stdout, not_initialised.stdout


@pytest.mark.slow  # runs the recipes' test scripts
def test_custom_tests_fail_without_their_environment():
    result = run_custom("custom-html", "", "")
    assert result.returncode == 1
    assert "CCCI_BASE_URL is not set" in result.stdout


@pytest.mark.slow  # runs the recipes' test scripts
def test_notes_tests_pass_on_a_serving_front_and_fail_when_nothing_answers(site):
    _root, base = site
    good = run_custom("notes", base, "note-abc123.ci.example")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "2 passed" in good.stdout
    # A port nothing listens on: both tests must fail, not pass or skip.
    dead = run_custom("notes", "http://127.0.0.1:9", "note-abc123.ci.example")
    assert dead.returncode == 1
    assert "2 failed" in dead.stdout


def test_default_catalog_dir_found_through_ansible_cfg(monkeypatch, tmp_path):
    """ansible.cfg's collections_path, relative to the cfg file, as Ansible reads it."""
    monkeypatch.delenv("CCCI_CATALOG_DIR", raising=False)
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATH", raising=False)
    monkeypatch.delenv("ANSIBLE_COLLECTIONS_PATHS", raising=False)
    fake = tmp_path / "payload.zip" / "ansible_collections/coopcloud/ci/plugins/module_utils/x.py"
    monkeypatch.setattr(_catalog, "__file__", str(fake))
    monkeypatch.setattr(_catalog.sys, "path", [])
    project = tmp_path / "project"
    installed = project / "colls" / "ansible_collections" / "coopcloud" / "ci" / "catalog"
    installed.mkdir(parents=True)
    (project / "ansible.cfg").write_text("[defaults]\ncollections_path = ./colls\n")
    monkeypatch.setenv("ANSIBLE_CONFIG", str(project / "ansible.cfg"))
    assert Path(_catalog.default_catalog_dir()).resolve() == installed.resolve()
    # Without ANSIBLE_CONFIG, ./ansible.cfg of the working directory is read.
    monkeypatch.delenv("ANSIBLE_CONFIG")
    monkeypatch.chdir(project)
    assert Path(_catalog.default_catalog_dir()).resolve() == installed.resolve()
