"""playbooks/cold.yml on the real swarm, run the way Drone runs it (through ansible-runner).

Every run publishes the app's HTTP port on the host (``ccci_access=published``) and
works on the example recipes (tests/support/recipes.py). After each run, nothing
carrying the run's stack namespace label may be left: no service, container, volume,
network, secret or config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.ansible import ROOT, dump, run_module, run_playbook
from support.fixtures import GREEN_COLD_STAGES, init_state, lane_vars, remove_stack_everything

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    cold_domain,
    stack_name,
)

pytestmark = [pytest.mark.swarm]
# one worker under pytest-xdist (--dist loadgroup) for the tests that read the green run
GREEN = pytest.mark.xdist_group("test_cold_lane")

SUFFIX = "ccci.test"
STAGES = ["install", "upgrade", "serving", "overlay", "custom"]
HEALTH_TIMEOUT = 120  # the examples' catalog entries


def extravars(examples_root, state_dir, run_id, recipe, ref=None, **more) -> dict:
    # Promote-on-green has its own tests (test_promote.py); here a green run must leave
    # nothing behind, not even a canonical on the shared suffix.
    more.setdefault("ccci_promote", False)
    return lane_vars(examples_root, state_dir, SUFFIX, recipe, ref, run_id, **more)


def cold(args: dict, tmp: Path):
    """Run playbooks/cold.yml with ``args``; ansible-runner's files go under ``tmp``."""
    private = tmp / "runner"
    private.mkdir(exist_ok=True)
    return run_playbook("cold.yml", args, private_dir=private)


def stack_of(recipe: str, run_id: str) -> str:
    return stack_name(cold_domain(recipe, run_id, SUFFIX))


def record_of(state_dir: Path, run_id: str) -> dict:
    return json.loads((state_dir / "runs" / f"{run_id}.json").read_text())


@pytest.fixture
def failing_cold(examples_root, state_dir, unique, tmp_path, cleanup_stacks):
    """Runs a cold run of a recipe that must fail: returns the play's result, the run's
    record and the app's stack (removed after the test whatever happens)."""

    def run(recipe: str, **more):
        stack = stack_of(recipe, unique)
        cleanup_stacks.append(stack)
        res = cold(extravars(examples_root, state_dir, unique, recipe, **more), tmp_path)
        assert res.rc != 0, dump(res)
        return res, record_of(state_dir, unique), stack

    return run


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    return {case.get("name").split(" ")[0]: case for case in root.iter("testcase")}


def leftovers(client, stack: str) -> dict[str, list[str]]:
    """Everything of the engine that carries the stack's namespace label."""
    label = {"label": f"com.docker.stack.namespace={stack}"}
    api = client.api
    found = {
        "services": [s["Spec"]["Name"] for s in api.services(filters=label)],
        "containers": [c["Id"][:12] for c in api.containers(all=True, filters=label)],
        "volumes": [v["Name"] for v in (api.volumes(filters=label) or {}).get("Volumes") or []],
        "networks": [n["Name"] for n in api.networks(filters=label)],
        "secrets": [s["Spec"]["Name"] for s in api.secrets(filters=label)],
        "configs": [c["Spec"]["Name"] for c in api.configs(filters=label)],
    }
    return {kind: names for kind, names in found.items() if names}


@pytest.fixture(scope="module")
def green(examples, examples_root, tmp_path_factory):
    """One green cold run of custom-html at its latest tag, shared by the tests that read it."""
    tmp = tmp_path_factory.mktemp("green")
    state_dir = init_state(tmp / "state")
    run_id = os.urandom(3).hex()
    junit = tmp / "junit.xml"
    started = time.monotonic()
    res = cold(
        extravars(
            examples_root,
            state_dir,
            run_id,
            "custom-html",
            ref=examples["custom-html"]["latest"],
            junit=str(junit),
        ),
        tmp,
    )
    yield {
        "res": res,
        "run_id": run_id,
        "state_dir": state_dir,
        "junit": junit,
        "stack": stack_of("custom-html", run_id),
        "seconds": time.monotonic() - started,
    }
    remove_stack_everything(stack_of("custom-html", run_id))


@GREEN
@pytest.mark.slow
def test_green_cold_run_passes_every_applicable_stage(green, examples, docker_client):
    res = green["res"]
    assert res.rc == 0, dump(res)
    record = record_of(green["state_dir"], green["run_id"])
    html = examples["custom-html"]
    assert record["verdict"] == "PASS" and record["status"] == "finished"
    assert (record["mode"], record["confidence"]) == ("cold", "authoritative")
    assert (record["version"], record["commit"]) == (html["latest"], html["tags"][html["latest"]])
    assert record["domain"] == cold_domain("custom-html", green["run_id"], SUFFIX)
    assert record["stages"] == GREEN_COLD_STAGES
    assert record["stage_order"] == STAGES
    details = record["stage_details"]
    assert details["overlay"]["message"] == "the catalog entry lists no overlays"
    assert details["custom"]["message"].startswith("2 passed in "), details["custom"]
    assert "answered 200" in details["serving"]["message"]

    cases = junit_cases(green["junit"])
    assert list(cases) == STAGES
    assert cases["overlay"].find("skipped").get("message") == "the catalog entry lists no overlays"
    assert all(case.find("failure") is None for case in cases.values())
    assert ET.parse(green["junit"]).getroot().get("failures") == "0"

    summary = res.task("Show the summary")["msg"]
    assert "verdict: PASS" in summary and "mode: cold (confidence: authoritative)" in summary

    # the teardown left nothing of the run
    assert leftovers(docker_client, green["stack"]) == {}


@pytest.mark.slow
@GREEN
def test_upgrade_keeps_the_data_written_before_it(green, examples):
    res = green["res"]
    assert res.rc == 0, dump(res)
    html = examples["custom-html"]
    # the bytes the play wrote into the volume before the upgrade ...
    plan = res.task("Remember what runs before the upgrade, and the marker to write")
    upgrade = plan["ansible_facts"]["ccci_upgrade"]
    assert upgrade["from_version"] == html["previous"]
    assert upgrade["from_commit"] == html["tags"][html["previous"]]
    assert upgrade["volume"] == f"{green['stack']}_content"
    assert len(upgrade["marker"]) == 48
    # ... are the bytes it read back from the volume after the upgrade
    read = res.task("Read the marker back and remove it")
    assert read["content"] == upgrade["marker"]
    # and the stage recorded what it checked
    message = record_of(green["state_dir"], green["run_id"])["stage_details"]["upgrade"]["message"]
    digest = hashlib.sha256(upgrade["marker"].encode()).hexdigest()
    assert message == (
        f"{html['previous']} ({html['tags'][html['previous']][:12]}) -> "
        f"{html['latest']} ({html['tags'][html['latest']][:12]}); marker sha256 {digest} in "
        f"volume {upgrade['volume']} intact after the upgrade; serving ok"
    )
    # the same task removed it again
    assert read["changed"] is True


@pytest.mark.slow
def test_broken_ref_fails_fast_and_is_torn_down(
    examples, unique, tmp_path, docker_client, failing_cold
):
    junit = tmp_path / "junit.xml"
    started = time.monotonic()
    res, record, stack = failing_cold("custom-html", ref="broken", junit=str(junit))
    elapsed = time.monotonic() - started
    assert record["verdict"] == "FAIL"
    assert record["commit"] == examples["custom-html"]["broken_ref"]
    install = record["stage_details"]["install"]
    assert install["result"] == "fail"
    assert "No such image: ccci/web:9.99-doesnotexist" in install["message"], install
    # fast: the task's own error, not the health timeout
    assert install["seconds"] < HEALTH_TIMEOUT / 4, install
    assert elapsed < HEALTH_TIMEOUT, elapsed
    for stage in STAGES[1:]:
        assert record["stages"][stage] == "skip"
        assert record["stage_details"][stage]["message"] == "install failed"
    cases = junit_cases(junit)
    assert "No such image" in cases["install"].find("failure").get("message")
    assert res.task("Stop unless the run passed")["msg"] == (
        f"run {unique} of custom-html: verdict FAIL (install failed)"
    )
    # the teardown still ran and removed everything
    assert res.task("Remove the app, its volumes and its secrets")["changed"] is True
    assert leftovers(docker_client, stack) == {}


FAILING_TEST = '''\
"""A custom test that fails on purpose, and one that checks the documented environment."""

import os


def test_environment_is_documented():
    for name in ("DOMAIN", "CCCI_BASE_URL", "CCCI_STACK", "CCCI_RECIPE", "CCCI_COMMIT",
                 "CCCI_RUN_ID", "CCCI_MODE", "CCCI_VERSION", "CCCI_REF"):
        assert name in os.environ, name
    assert os.environ["CCCI_STACK"] == os.environ["DOMAIN"].replace(".", "_")
    assert os.environ["CCCI_MODE"] == "cold"


def test_the_front_page_says_hello():
    assert "hello" == "goodbye", "the front page does not say hello"
'''


@pytest.mark.slow
def test_notes_overlay_passes_and_a_failing_custom_test_fails_the_run(
    examples, unique, tmp_path, docker_client, failing_cold
):
    catalog = tmp_path / "catalog"
    shutil.copytree(ROOT / "catalog" / "notes", catalog / "notes")
    (catalog / "notes" / "tests" / "test_fails.py").write_text(FAILING_TEST)
    # upgrade is covered by the green run above: leave it out here (recorded as skip)
    entry = catalog / "notes" / "recipe.yml"
    entry.write_text(
        entry.read_text().replace(
            "stages: [install, upgrade, serving, overlay, custom]",
            "stages: [install, serving, overlay, custom]",
        )
    )
    res, record, stack = failing_cold("notes", ccci_catalog_dir=str(catalog))
    assert record["version"] == examples["notes"]["latest"]
    assert record["verdict"] == "FAIL"
    assert record["stages"] == {
        "install": "pass",
        "upgrade": "skip",
        "serving": "pass",
        "overlay": "pass",
        "custom": "fail",
    }, record["stage_details"]
    details = record["stage_details"]
    assert details["upgrade"]["message"] == "not among the stages of the catalog entry"
    assert details["overlay"]["message"] == (
        "db/compose.db-tune.yml deployed, healthy and serving; plain app back"
    )
    custom = details["custom"]["message"]
    assert custom.startswith("pytest exited 1:"), custom
    assert "1 failed, 3 passed" in custom, custom
    assert "test_the_front_page_says_hello" in custom, custom
    # the overlay deploy really ran with the overlay's env, then the plain app came back
    deploys = [
        t["res"]
        for t in res.tasks
        if t["task"].startswith("Deploy the app at") and t["event"] == "runner_on_ok"
    ]
    assert [d["changed"] for d in deploys] == [True, True, True]
    assert res.task("Stop unless the run passed")["msg"] == (
        f"run {unique} of notes: verdict FAIL (custom failed)"
    )
    assert leftovers(docker_client, stack) == {}


@pytest.mark.parametrize(
    "case, more, message",
    [
        ("bad recipe", {"recipe": "Bad_Name"}, "recipe name 'Bad_Name' is invalid"),
        ("unknown ref", {"ref": "no-such-ref"}, "ref 'no-such-ref' not found in recipe"),
        ("no suffix", {"ccci_domain_suffix": ""}, "ccci_domain_suffix is required"),
        ("relative state dir", {"ccci_state_dir": "state"}, "is relative: give an absolute"),
    ],
)
def test_bad_input_stops_with_one_message_and_deploys_nothing(
    case, more, message, examples, examples_root, state_dir, unique, docker_client, tmp_path
):
    args = {**extravars(examples_root, state_dir, unique, "custom-html"), **more}
    res = cold(args, tmp_path)
    assert res.rc != 0, dump(res)
    stop = res.task("Stop, the run could not start")["msg"]
    assert stop.startswith(f"run {unique} of {args['recipe']} could not start: "), stop
    assert message in stop, stop
    assert "Task failed" not in stop, stop
    assert not any(t["task"].startswith("Deploy the app") for t in res.tasks)
    assert leftovers(docker_client, stack_name(f"cust-{unique}.{SUFFIX}")) == {}
    record = state_dir / "runs" / f"{unique}.json"
    if case == "relative state dir":
        assert not record.exists()
    else:
        assert json.loads(record.read_text())["verdict"] == "ERROR"
        assert message in json.loads(record.read_text())["error"]


@pytest.mark.slow
def test_killed_run_leaves_no_orphan_after_the_documented_clean_up(
    examples, examples_root, state_dir, unique, tmp_path, docker_client, cleanup_stacks
):
    stack = stack_of("custom-html", unique)
    domain = cold_domain("custom-html", unique, SUFFIX)
    cleanup_stacks.append(stack)
    args = extravars(examples_root, state_dir, unique, "custom-html")
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
    }
    log = (tmp_path / "play.log").open("w")
    play = subprocess.Popen(
        [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/cold.yml",
         "-e", json.dumps(args)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not docker_client.api.services(
            filters={"label": f"com.docker.stack.namespace={stack}"}
        ):
            assert play.poll() is None, (tmp_path / "play.log").read_text()
            assert time.monotonic() < deadline, "the run's stack never appeared"
            time.sleep(0.2)
    finally:
        os.killpg(play.pid, signal.SIGKILL)
        play.wait(30)
        log.close()
    assert play.returncode == -signal.SIGKILL

    # the run was cut off mid-stage: its record says so, its app is still there
    record = record_of(state_dir, unique)
    assert record["status"] == "running" and record["verdict"] is None
    assert record["domain"] == domain
    assert "services" in leftovers(docker_client, stack)

    # the documented clean-up (docs/cold-lane.md): the teardown, for that domain
    res = run_module("coopcloud.ci.recipe_app", {"domain": domain, "state": "absent"})
    assert res.rc == 0 and res.last["changed"] is True, dump(res)
    assert leftovers(docker_client, stack) == {}
    # and it is idempotent
    assert (
        run_module("coopcloud.ci.recipe_app", {"domain": domain, "state": "absent"}).last["changed"]
        is False
    )
