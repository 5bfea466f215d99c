"""The recipe corpus (tests/data/recipes, shapes of public Co-op Cloud recipes) through
everything the collection reads of a recipe, on the real engine.

For every recipe, built as a real git repository with its tags: the app env and its
overlays resolve; the secrets its active compose files declare are created on the swarm
under abra's names; ``docker stack config`` accepts the compose files with our labels
overlay, and shows every secret and config the files reference; the version label and
the tags parse; the release gate decides as abra's upgrade would (a major version is
held with the notes of every version it crosses). ``static-site`` (``start-first``, a
label differing from its ``v``-tags) also runs ``playbooks/cold.yml`` twice with a
stand-in image under the recipe's image name: with the stack driver, and with
``ccci_driver=abra`` and an abra stand-in that records every call.

The table of the results is ``docs/recipe-corpus.md``; ``CCCI_WRITE_CORPUS_TABLE=1``
rewrites it, otherwise the test fails when it is stale.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from support.ansible import ROOT, dump, run_playbook
from support.fixtures import init_state, remove_stack_everything
from support.recipes import commit, init_repo

from ansible_collections.coopcloud.ci.plugins.module_utils._app import (
    compose_version,
    plan_deploy,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._driver import StackDriver
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    cold_domain,
    stack_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import RecipeRepo
from ansible_collections.coopcloud.ci.plugins.module_utils._release import decide
from ansible_collections.coopcloud.ci.plugins.module_utils._version import Version
from integration.test_cold_lane import SUFFIX, extravars

# One worker runs the whole module: the last test checks the table the others fill in.
pytestmark = [pytest.mark.swarm, pytest.mark.xdist_group("test_recipe_corpus")]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "recipes"
TABLE = ROOT / "docs" / "recipe-corpus.md"
NAMES = sorted(p.name for p in CORPUS.iterdir() if (p / "manifest.yml").is_file())
LABEL_RE = re.compile(r"(coop-cloud\.\$\{STACK_NAME\}\.version=)[^\"\n]*")
STANDIN = Path(__file__).resolve().parents[1] / "support" / "abra_standin.py"
COLUMNS = ["env", "overlays", "secrets", "configs", "labels", "tags", "gate", "install", "upgrade"]


def manifest(name: str) -> dict:
    return yaml.safe_load((CORPUS / name / "manifest.yml").read_text())


def build(name: str, recipes_dir: Path) -> dict[str, str]:
    """The recipe as a git repository: one commit and tag per manifest tag, the version
    label of its compose files set to the manifest's value at that tag."""
    src = CORPUS / name
    repo = init_repo(recipes_dir / name)
    files = {
        str(p.relative_to(src)): p.read_text()
        for p in sorted(src.rglob("*"))
        if p.is_file() and p.name != "manifest.yml"
    }
    commits = {}
    for tag, label in manifest(name)["tags"].items():
        at_tag = {
            rel: LABEL_RE.sub(lambda m, v=label: m.group(1) + v, text) if "compose" in rel else text
            for rel, text in files.items()
        }
        commits[tag] = commit(repo, f"release {tag}", at_tag, tag=tag)
    return commits


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    recipes_dir = root / "recipes"
    return {
        "root": root,
        "recipes_dir": recipes_dir,
        "commits": {name: build(name, recipes_dir) for name in NAMES},
        "rows": {},
    }


def stack_config(checkout: str, files: list[str], env: dict) -> dict:
    cmd = ["docker", "stack", "config"]
    for rel in files:
        cmd += ["-c", rel]
    proc = subprocess.run(
        cmd, cwd=checkout, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_reads_deploys_configs_and_gates_as_abra_would(name, corpus, unique, tmp_path):
    corpus["rows"].setdefault(name, {}).update(check_reads(name, corpus, unique, tmp_path))


def check_reads(name: str, corpus: dict, unique: str, tmp_path: Path) -> dict[str, str]:
    """The recipe read, planned, configured and gated as abra would; its row of the table
    (all columns but the cold run's)."""
    spec, expect = manifest(name), manifest(name)["expect"]
    tags = list(spec["tags"])
    repo = RecipeRepo(str(corpus["recipes_dir"]), name)
    # tags: every one is a version, in the manifest's order (oldest first)
    assert repo.version_tags() == tags
    assert [Version.parse(t).tag for t in tags] == tags
    latest = tags[-1]
    commit_ = repo.commit_of(latest)
    assert commit_ == corpus["commits"][name][latest]
    checkout = repo.checkout(commit_, str(tmp_path / "checkout"))

    domain = f"{name}-{unique}.{SUFFIX}"
    stack = stack_name(domain)
    driver = StackDriver()
    plan = plan_deploy(driver, checkout, domain, commit_, spec["env"],
                       secrets=spec["provided_secrets"])  # fmt: skip
    try:
        # the app env and its overlays
        assert plan.app.compose_files == expect["compose_files"]
        assert plan.app.env["STACK_NAME"] == stack and plan.app.env["DOMAIN"] == domain
        # secrets: those of the active compose files, under abra's names, created
        wanted = sorted(s.format(stack=stack) for s in expect["secrets"])
        assert plan.secrets_to_create == wanted
        assert sorted(plan.app.secret_names().values()) == wanted
        created = driver.ensure_secrets(stack, plan.secrets)
        assert created == wanted
        # docker stack config takes the recipe with our overlay; every secret and config
        # it references is there, and the version deployed overwrites the recipe's label
        overlay = driver.write_labels_overlay(
            checkout, plan.app.compose_files, latest, commit_, stack=stack,
            publish={"service": "app", "port": 80, "published": 18000},
        )  # fmt: skip
        merged = stack_config(checkout, [*plan.app.compose_files, overlay], plan.app.env)
        existing = {s.name for s in driver.client.secrets.list()}
        referenced = {s["name"] for s in (merged.get("secrets") or {}).values()}
        assert referenced == set(wanted) and referenced <= existing
        configs = sorted(c["name"] for c in (merged.get("configs") or {}).values())
        assert configs == sorted(c.format(stack=stack) for c in expect["configs"])
        for cfg in (merged.get("configs") or {}).values():
            assert os.path.isfile(os.path.join(checkout, cfg["file"])), cfg
        app = merged["services"]["app"]
        assert app["deploy"]["labels"][f"coop-cloud.{stack}.version"] == latest
        # a host-mode port and start-first would deadlock an upgrade: never start-first
        # where a port is published on the host (the recipe's own, or ours on app)
        for svc in ["app", *expect.get("stop_first", [])]:
            order = (merged["services"][svc]["deploy"].get("update_config") or {}).get("order")
            assert order != "start-first", (svc, order)
        assert "proxy" in merged["networks"] and merged["networks"]["proxy"]["external"]
        # the recipe's own version label, interpolated; old per-service labels ignored
        label = compose_version(plan)
        assert label == expect["label"] and "$" not in label
        # the release gate, from the version before (or the manifest's) to the latest
        start = expect.get("gate_from") or tags[-2]
        decision = decide(start, latest, repo.release_notes, tags)
        assert decision.verdict == expect["gate"], decision.reasons
        if "notes" in expect:
            assert list(decision.notes) == expect["notes"]
            for version, text in decision.notes.items():
                assert text == repo.release_notes(version) and text.strip()
    finally:
        remove_stack_everything(stack)
    return {
        "env": f"{len(plan.app.env)} keys",
        "overlays": ", ".join(plan.app.compose_files[1:]) or "none",
        "secrets": str(len(wanted)),
        "configs": str(len(configs)),
        "labels": label,
        "tags": f"{tags[0]} … {latest}" if len(tags) > 1 else latest,
        "gate": f"{decision.verdict} ({start} → {latest})",
    }


# --- cold runs ---------------------------------------------------------------------------

STANDIN_DOCKERFILE = """\
FROM ccci/busybox:latest
LABEL ccci.stand-in="{image}"
CMD ["/bin/sh", "-c", "d=/usr/share/nginx/html; mkdir -p $d; [ -f $d/index.html ] || echo '<h1>stand-in</h1>' > $d/index.html; exec httpd -f -p 80 -h $d"]
"""


def standin_image(client, image: str) -> None:
    """A busybox web server tagged under the recipe's own image name (kept: idempotent)."""
    try:
        if client.images.get(image).labels.get("ccci.stand-in") == image:
            return
    except Exception:  # not there yet
        pass
    dockerfile = STANDIN_DOCKERFILE.format(image=image).encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=image, rm=True)


def cold_recipes() -> list[str]:
    return [n for n in NAMES if manifest(n).get("cold_run")]


def write_catalog(root: Path, name: str) -> Path:
    catalog = root / "catalog"
    (catalog / name).mkdir(parents=True, exist_ok=True)
    entry = {
        "recipe": name,
        "warm_canonical": False,
        "sso": None,
        "stages": ["install", "upgrade", "serving"],
        "http": {"service": "app", "port": 80},
        "health": {"path": "/index.html", "status": [200], "body": "<h1>", "timeout": 120,
                   "interval": 2},
        "overlays": [],
        "env": {},
        "upgrade_from": "previous",
    }  # fmt: skip
    (catalog / name / "recipe.yml").write_text(yaml.safe_dump(entry))
    return catalog


def cold_run(corpus, name: str, run_id: str, tmp: Path, **more) -> tuple:
    state_dir = init_state(tmp / "state")
    private = tmp / "runner"
    private.mkdir()
    args = extravars(
        corpus["recipes_dir"], state_dir, run_id, name, ref=list(manifest(name)["tags"])[-1],
        ccci_catalog_dir=str(write_catalog(corpus["root"], name)), **more,
    )  # fmt: skip
    res = run_playbook("cold.yml", args, private_dir=private)
    record_path = state_dir / "runs" / f"{run_id}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    return res, record


@pytest.mark.slow
@pytest.mark.parametrize("name", cold_recipes())
def test_cold_run_installs_and_upgrades_start_first_with_a_published_port(
    name, corpus, docker_client, tmp_path
):
    check_cold_run(name, corpus, docker_client, tmp_path)
    corpus["rows"].setdefault(name, {}).update(install="pass", upgrade="pass")


def check_cold_run(name: str, corpus: dict, docker_client, tmp_path: Path) -> None:
    """A cold run of the recipe's latest tag with stand-in images: install and upgrade pass."""
    for image in manifest(name)["images"]:
        standin_image(docker_client, image)
    run_id = os.urandom(3).hex()
    stack = stack_name(cold_domain(name, run_id, SUFFIX))
    try:
        res, record = cold_run(corpus, name, run_id, tmp_path)
        assert res.rc == 0, dump(res)
        assert record["verdict"] == "PASS", record
        assert record["stages"] == {"install": "pass", "upgrade": "pass", "serving": "pass",
                                    "overlay": "skip", "custom": "skip"}  # fmt: skip
        # the version is the tag deployed, not the label the recipe carries
        tags = list(manifest(name)["tags"])
        assert record["version"] == tags[-1]
        assert record["stage_details"]["upgrade"]["message"].startswith(f"{tags[-2]} (")
    finally:
        remove_stack_everything(stack)


@pytest.mark.slow
def test_abra_driver_cold_run_tears_down_with_the_same_abra_dir(
    corpus, docker_client, tmp_path, monkeypatch
):
    name = cold_recipes()[0]
    for image in manifest(name)["images"]:
        standin_image(docker_client, image)
    log = tmp_path / "abra-calls.jsonl"
    abra_root = tmp_path / "abra-root"
    monkeypatch.setenv("CCCI_ABRA", str(STANDIN))
    monkeypatch.setenv("CCCI_ABRA_ROOT", str(abra_root))
    monkeypatch.setenv("CCCI_ABRA_STANDIN_LOG", str(log))
    run_id = os.urandom(3).hex()
    domain = cold_domain(name, run_id, SUFFIX)
    stack = stack_name(domain)
    try:
        res, record = cold_run(corpus, name, run_id, tmp_path, ccci_driver="abra")
        assert res.rc == 0, dump(res)
        assert record["verdict"] == "PASS", record
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        verbs = [c["argv"][1] for c in calls]
        # install fresh; the upgrade stage removes it, installs the earlier version and
        # upgrades; then the cold teardown: each finds the app's env file again
        assert verbs == ["deploy", "undeploy", "remove", "deploy", "deploy", "undeploy", "remove"]
        assert all(c["outcome"] == "rc 0" for c in calls), calls
        assert {c["abra_dir"] for c in calls} == {str(abra_root / stack)}
        assert calls[0]["argv"] == ["app", "deploy", "-C", "-c", "-D", "-f", "-n", domain]
        # the teardown took the app off and left no temporary dir behind
        assert not abra_root.exists() or list(abra_root.iterdir()) == []
        assert (
            docker_client.services.list(filters={"label": f"com.docker.stack.namespace={stack}"})
            == []
        )
    finally:
        remove_stack_everything(stack)


# --- the table ---------------------------------------------------------------------------


def render(rows: dict) -> str:
    lines = [
        "# Recipe corpus",
        "",
        "Generated by `tests/integration/test_recipe_corpus.py` "
        "(`CCCI_WRITE_CORPUS_TABLE=1` rewrites it) from the recipes in `tests/data/recipes/` "
        "(re-created shapes of public Co-op Cloud recipes: see its README). `install` and "
        "`upgrade` are the stages of a cold run with stand-in images under the recipe's image "
        "names; the other recipes get the cheaper checks only.",
        "",
        "| recipe | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for name in NAMES:
        row = rows[name]
        lines.append(f"| {name} | " + " | ".join(row[c] for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def test_corpus_table_in_docs_is_current(corpus, unique, docker_client, tmp_path):
    """The table from the rows the module's tests built; a row they did not (this test run
    alone, or some of them left out by ``-k``) is built here by the same checks."""
    rows = corpus["rows"]
    for name in NAMES:
        row = rows.setdefault(name, {})
        if "env" not in row:
            (tmp_path / f"reads-{name}").mkdir()
            row.update(check_reads(name, corpus, unique, tmp_path / f"reads-{name}"))
        if name in cold_recipes() and "install" not in row:
            (tmp_path / f"cold-{name}").mkdir()
            check_cold_run(name, corpus, docker_client, tmp_path / f"cold-{name}")
            row.update(install="pass", upgrade="pass")
        row.setdefault("install", "not run")
        row.setdefault("upgrade", "not run")
    text = render(rows)
    if os.environ.get("CCCI_WRITE_CORPUS_TABLE") == "1":
        TABLE.write_text(text)
    assert TABLE.read_text() == text, "docs/recipe-corpus.md is stale: CCCI_WRITE_CORPUS_TABLE=1"
