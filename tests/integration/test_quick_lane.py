"""playbooks/quick.yml on the real swarm (SPEC WC4, WC7, WC8 and §5).

A canonical is only ever made the way production makes it: a green cold run of the
recipe's latest tag (promote-on-green, WC5). The module fixture seeds one custom-html
canonical under a domain suffix and state dir of its own (the overlap test adds notes,
installed from the session's seeded snapshot by ``warm_canonical state=seeded``, the last
step of that same promotion: tests/support/seeds.py), and the tests then take turns
on it: each quick run must leave it exactly as they found it - the same registry
(version, commit, snapshot digest, promoted by), the same snapshot manifest bytes, and
the canonical's volume holding exactly the known-good tree (whole-tree digest equal to
the one in the snapshot's manifest). That the next test starts from the known-good bytes
is itself part of what is tested.

Every run publishes the app's HTTP port on the host (``ccci_access=published``) and uses
the collection's example catalog, or the catalog in ``CCCI_CATALOG_DIR`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from support import volumes
from support.ansible import ROOT, dump, run_module, run_playbook
from support.fixtures import init_state, lane_vars, remove_stack_everything

from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    canonical_domain,
    cold_domain,
    stack_name,
    volume_name,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry

# one worker under pytest-xdist (--dist loadgroup): the tests share a module-scoped set-up
pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.xdist_group("test_quick_lane")]

HTML = "custom-html"
NOTES = "notes"
# What a quick run must never move (WC4, WC5).
KNOWN_GOOD_KEYS = ("version", "commit", "snapshot_digest", "promoted_by", "seeded_at")
RESTORE_TASK = "TASK [coopcloud.ci.lane_quick : Undeploy the canonical and restore its known-good]"


def extravars(env: dict, recipe: str, ref: str | None, run_id: str, **more) -> dict:
    if os.environ.get("CCCI_CATALOG_DIR"):  # another catalog than the collection's example one
        more = {"ccci_catalog_dir": os.environ["CCCI_CATALOG_DIR"], **more}
    return lane_vars(env["recipes_dir"], env["state_dir"], env["suffix"], recipe, ref, run_id,
                     **more)  # fmt: skip


def play(book: str, args: dict, tmp: Path):
    private = tmp / f"runner-{args['ccci_run_id']}"
    private.mkdir(parents=True, exist_ok=True)
    return run_playbook(book, args, private_dir=private)


def record_of(state_dir: Path, run_id: str) -> dict:
    return json.loads((state_dir / "runs" / f"{run_id}.json").read_text())


def run_id() -> str:
    return os.urandom(3).hex()


def registry_of(state_dir: Path, recipe: str) -> dict:
    return json.loads((state_dir / recipe / "canonical.json").read_text())


def manifest_bytes(state_dir: Path, recipe: str) -> bytes:
    return (state_dir / recipe / "snapshot" / "manifest.json").read_bytes()


def canonical_volumes(client, suffix: str, recipe: str, shorts: list[str]) -> dict[str, Path]:
    stack = stack_name(canonical_domain(recipe, suffix))
    # where a run's writes are (an undeployed overlay volume's upper dir)
    return {short: volumes.write_dir(client, volume_name(stack, short)) for short in shorts}


def canonical_trees(client, suffix: str, recipe: str, shorts: list[str]) -> dict[str, str]:
    stack = stack_name(canonical_domain(recipe, suffix))
    return {short: volumes.tree(client, volume_name(stack, short)) for short in shorts}


def canonical_services(client, suffix: str, recipe: str) -> list[str]:
    stack = stack_name(canonical_domain(recipe, suffix))
    label = {"label": f"com.docker.stack.namespace={stack}"}
    return [s["Spec"]["Name"] for s in client.api.services(filters=label)]


def at_rest_proof(client, env: dict, recipe: str, shorts: list[str]) -> dict:
    """The registry, the snapshot manifest, and each volume's tree vs its known-good digest."""
    manifest = json.loads(manifest_bytes(env["state_dir"], recipe))
    trees = canonical_trees(client, env["suffix"], recipe, shorts)
    known_good = {short: manifest["volumes"][short]["tree_digest"] for short in shorts}
    return {
        "registry": registry_of(env["state_dir"], recipe),
        "manifest": manifest_bytes(env["state_dir"], recipe),
        "trees": trees,
        "known_good": known_good,
        "services": canonical_services(client, env["suffix"], recipe),
    }


def assert_left_at_rest(before: dict, after: dict) -> None:
    """Nothing of the known-good moved, the canonical is idle and holds the known-good bytes."""
    for key in KNOWN_GOOD_KEYS:
        assert after["registry"][key] == before["registry"][key], key
    assert after["manifest"] == before["manifest"]  # the snapshot manifest, byte for byte
    assert after["registry"]["status"] == "idle"
    assert after["services"] == []  # undeployed
    assert after["trees"] == after["known_good"]  # the volumes hold exactly the known-good


def assert_figures(record: dict, verdict: str) -> None:
    """Seconds to verdict and to rest: both there, the verdict first, both within the run,
    and the rest after the lock note (the canonical idle again before the lock goes back)."""
    t = record["timings"]
    assert 0 <= t["verdict_seconds"] <= t["rest_seconds"] <= t["total_seconds"], t
    assert t["verdict_at"] <= t["rest_at"] <= record["finished_at"], t
    assert t["verdict_reported"] == verdict


def notes_times(record: dict) -> tuple[datetime, datetime]:
    """The lock interval the run noted: taken (after acquiring) .. given back (before releasing)."""
    got = [re.match(r"lock acquired at (\S+)", n) for n in record["notes"]]
    rel = [re.match(r"lock released at (\S+)", n) for n in record["notes"]]
    acquired = [m.group(1) for m in got if m]
    released = [m.group(1) for m in rel if m]
    assert len(acquired) == 1 and len(released) == 1, record["notes"]
    return (
        datetime.fromisoformat(acquired[0].replace("Z", "+00:00")),
        datetime.fromisoformat(released[0].replace("Z", "+00:00")),
    )


def alerts_of(state_dir: Path, kind: str) -> list[dict]:
    out = []
    for path in sorted((state_dir / "alerts").glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("kind") == kind:
            out.append(data)
    return out


def seed(env: dict, recipe: str, tag: str) -> dict:
    """A green cold run at the latest tag: the way a canonical comes to exist (WC5)."""
    rid = run_id()
    res = play("cold.yml", extravars(env, recipe, tag, rid), env["tmp"])
    env["cold_stacks"].append(stack_name(cold_domain(recipe, rid, env["suffix"])))
    assert res.rc == 0, dump(res)
    registry = registry_of(env["state_dir"], recipe)
    assert (registry["version"], registry["promoted_by"]) == (tag, rid), registry
    assert registry["status"] == "idle"
    return registry


def remove_canonical(env: dict, recipe: str) -> None:
    run_module(
        "coopcloud.ci.warm_canonical",
        {
            "recipe": recipe,
            "state": "absent",
            "confirm": True,
            "state_dir": str(env["state_dir"]),
            "domain_suffix": env["suffix"],
        },
    )
    remove_stack_everything(stack_name(canonical_domain(recipe, env["suffix"])))


@pytest.fixture(scope="module")
def warm(examples, examples_root, tmp_path_factory, docker_client):
    """A custom-html canonical seeded by a green cold run at 1.1.0+1.29, for this module only."""
    tmp = tmp_path_factory.mktemp("quick")
    state_dir = init_state(tmp / "state")
    env = {
        "tmp": tmp,
        "state_dir": state_dir,
        "recipes_dir": examples_root,
        # a suffix of this module's own: its canonicals are never anybody else's
        "suffix": f"q{os.urandom(3).hex()}.ccci.test",
        "cold_stacks": [],
        "seeded": [],
    }
    try:
        env["seed_registry"] = seed(env, HTML, examples[HTML]["latest"])
        env["seeded"].append(HTML)
        yield env
    finally:
        for recipe in (HTML, NOTES):
            remove_canonical(env, recipe)
        for stack in env["cold_stacks"]:
            remove_stack_everything(stack)


def test_quick_pass_at_another_healthy_ref_moves_nothing(warm, examples, docker_client):
    html = examples[HTML]
    before = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    assert before["trees"] == before["known_good"]
    rid = run_id()
    started = time.monotonic()
    res = play("quick.yml", extravars(warm, HTML, html["previous"], rid), warm["tmp"])
    seconds = time.monotonic() - started
    assert res.rc == 0, dump(res)

    record = record_of(warm["state_dir"], rid)
    assert (record["mode"], record["confidence"], record["verdict"]) == ("quick", "lower", "PASS")
    assert "lower confidence" in record["label"] and record["gates_merge"] is False
    assert (record["version"], record["commit"]) == (
        html["previous"],
        html["tags"][html["previous"]],
    )
    assert record["domain"] == canonical_domain(HTML, warm["suffix"])
    assert record["stages"] == {
        "upgrade": "pass",
        "serving": "pass",
        "overlay": "skip",
        "custom": "pass",
    }, record
    assert "install" not in record["stages"]  # quick never installs fresh
    # the upgrade moved the canonical in place, from the known-good to the ref under test
    assert record["stage_details"]["upgrade"]["message"].startswith(
        f"{html['latest']} ({html['tags'][html['latest']][:12]}) -> {html['previous']}"
    )
    for key in KNOWN_GOOD_KEYS:
        assert record["canonical_before"][key] == before["registry"][key]
        assert record["canonical_after"][key] == before["registry"][key]
    assert record["canonical_after"]["status"] == "idle"

    after = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    assert_left_at_rest(before, after)
    # the verdict comes first, then the known-good is put back
    verdict = res.stdout.index("QUICK VERDICT: PASS")
    assert verdict < res.stdout.index(RESTORE_TASK)
    assert "lower confidence, never gates merge" in res.stdout
    assert alerts_of(warm["state_dir"], "quick-rollback") == []
    acquired, released = notes_times(record)
    assert acquired < released
    assert_figures(record, "PASS")
    print(f"quick PASS in {seconds:.0f} s")


def test_quick_fail_at_broken_ref_restores_the_known_good(warm, examples, docker_client):
    html = examples[HTML]
    before = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    rid = run_id()
    res = play("quick.yml", extravars(warm, HTML, html["broken_branch"], rid), warm["tmp"])
    assert res.rc != 0, dump(res)
    assert f"run {rid} of {HTML}: verdict FAIL" in res.stdout

    record = record_of(warm["state_dir"], rid)
    assert (record["mode"], record["confidence"], record["verdict"]) == ("quick", "lower", "FAIL")
    assert record["commit"] == html["broken_ref"]
    assert record["stages"]["upgrade"] == "fail", record
    assert "9.99" in record["stage_details"]["upgrade"]["message"]  # the image that is missing

    after = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    # not promoted, idle, and the known-good bytes back (the upgrade stage's marker, written
    # into the volume before the failed upgrade, is gone with everything else it changed)
    assert_left_at_rest(before, after)
    mount = canonical_volumes(docker_client, warm["suffix"], HTML, ["content"])["content"]
    assert not (mount / f".ccci-marker-{rid}").exists()
    assert record["canonical_after"]["version"] == html["latest"]

    verdict = res.stdout.index("QUICK VERDICT: FAIL")
    assert verdict < res.stdout.index(RESTORE_TASK)
    assert_figures(record, "FAIL")
    alerts = [a for a in alerts_of(warm["state_dir"], "quick-rollback") if a["run_id"] == rid]
    assert len(alerts) == 1, alerts_of(warm["state_dir"], "quick-rollback")
    alert = alerts[0]
    assert alert["target"] == HTML
    assert alert["attempted"] == html["broken_ref"][:12]
    assert alert["last_good"] == html["latest"]
    assert alert["recovered"] is True
    assert alert["commit"] == html["broken_ref"]


def test_canonical_left_not_at_rest_is_restored_before_use(warm, examples, docker_client):
    """A run died mid-way: status quick, the volume changed. The next run restores first."""
    html = examples[HTML]
    before = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    Registry(str(warm["state_dir"]), HTML).set_status("quick", "dead00")
    mount = canonical_volumes(docker_client, warm["suffix"], HTML, ["content"])["content"]
    # what a dead run could leave: the front page without the heading the health probe
    # wants (so reattaching without a restore would be unhealthy: ERROR), and a stray file
    (mount / "index.html").write_text("half-upgraded\n")
    (mount / "left-by-a-dead-run").write_bytes(os.urandom(64))
    tree = canonical_trees(docker_client, warm["suffix"], HTML, ["content"])["content"]
    assert tree != before["known_good"]["content"]

    rid = run_id()
    res = play("quick.yml", extravars(warm, HTML, html["previous"], rid), warm["tmp"])
    assert res.rc == 0, dump(res)
    assert f"{HTML} is not at rest (quick since" in res.stdout
    record = record_of(warm["state_dir"], rid)
    assert record["verdict"] == "PASS"
    assert any(n.startswith("canonical found not at rest (status quick)") for n in record["notes"])
    # the record's canonical_before is the canonical after the restore, at rest
    assert record["canonical_before"]["status"] == "idle"
    after = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    assert_left_at_rest(before, after)
    assert not (mount / "left-by-a-dead-run").exists()


def test_no_canonical_falls_back_to_a_full_cold_run(warm, examples, docker_client):
    html = examples[HTML]
    # a suffix and state dir without any canonical
    bare = {
        **warm,
        "state_dir": warm["tmp"] / "bare-state",
        "suffix": f"b{os.urandom(3).hex()}.ccci.test",
    }
    init_state(bare["state_dir"])
    rid = run_id()
    bare_stack = stack_name(cold_domain(HTML, rid, bare["suffix"]))
    warm["cold_stacks"].append(bare_stack)
    res = play("quick.yml", extravars(bare, HTML, html["previous"], rid), warm["tmp"])
    assert res.rc == 0, dump(res)
    assert "falling back to COLD" in res.stdout
    assert "QUICK VERDICT" not in res.stdout

    record = record_of(bare["state_dir"], rid)
    assert (record["mode"], record["confidence"], record["verdict"]) == (
        "cold",
        "authoritative",
        "PASS",
    )
    assert "requested quick, no canonical: falling back to COLD" in record["notes"]
    assert record["domain"] == cold_domain(HTML, rid, bare["suffix"])
    assert record["stages"]["install"] == "pass"  # a full cold run: installed fresh
    assert record["stage_order"] == ["install", "upgrade", "serving", "overlay", "custom"]
    assert_figures(record, "PASS")  # a cold run: its verdict and its rest at its finish
    # an older ref never promotes: still no canonical; and the cold app is torn down
    assert not (bare["state_dir"] / HTML / "canonical.json").exists()
    label = {"label": f"com.docker.stack.namespace={bare_stack}"}
    assert docker_client.api.services(filters=label) == []
    assert (docker_client.api.volumes(filters=label) or {}).get("Volumes") in (None, [])


def spawn(env: dict, recipe: str, ref: str, rid: str, tmp: Path) -> subprocess.Popen:
    """ansible-playbook quick.yml in a process of its own, the way Drone starts it."""
    varfile = tmp / f"vars-{rid}.json"
    varfile.write_text(json.dumps(extravars(env, recipe, ref, rid)))
    log = open(tmp / f"quick-{rid}.log", "w")  # noqa: SIM115 - closed by the caller
    bin_dir = os.path.dirname(sys.executable)
    return subprocess.Popen(
        [os.path.join(bin_dir, "ansible-playbook"), "playbooks/quick.yml", "-e", f"@{varfile}"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        },
    )


def test_quick_runs_of_one_recipe_never_overlap_and_of_two_recipes_do(
    warm, examples, seeds, docker_client
):
    """WC8. Three quick runs started together: two of custom-html, one of notes.

    What is compared: each run notes in its record the time it held the recipe's lock -
    "lock acquired at" (taken after the lock is held) and "lock released at" (taken before
    it is given back) - and every step on the canonical lies between the two. The two
    custom-html intervals must be disjoint; the notes interval must intersect the
    custom-html run that got the lock first (they ran on their canonicals at once).
    """
    html, notes = examples[HTML], examples[NOTES]
    # the notes canonical: the session's seeded one (support/seeds.py), installed in this
    # module's state dir by the promotion's own last step (warm_canonical state=seeded)
    seeds.adopt(NOTES, warm["state_dir"], warm["suffix"], overlay=True)
    warm["seeded"].append(NOTES)
    before_html = at_rest_proof(docker_client, warm, HTML, html["volumes"])
    before_notes = at_rest_proof(docker_client, warm, NOTES, notes["volumes"])

    ids = {"a": run_id(), "b": run_id(), "n": run_id()}
    procs = {
        "a": spawn(warm, HTML, html["previous"], ids["a"], warm["tmp"]),
        "b": spawn(warm, HTML, html["previous"], ids["b"], warm["tmp"]),
        "n": spawn(warm, NOTES, notes["previous"], ids["n"], warm["tmp"]),
    }
    rcs = {key: proc.wait(timeout=1500) for key, proc in procs.items()}
    logs = {k: (warm["tmp"] / f"quick-{ids[k]}.log").read_text() for k in ids}
    assert rcs == {"a": 0, "b": 0, "n": 0}, "\n\n".join(logs[k][-8000:] for k in ids if rcs[k])

    records = {key: record_of(warm["state_dir"], rid) for key, rid in ids.items()}
    assert all(r["verdict"] == "PASS" and r["mode"] == "quick" for r in records.values())
    spans = {key: notes_times(record) for key, record in records.items()}
    first, second = sorted(("a", "b"), key=lambda k: spans[k][0])
    # same recipe: one after the other
    assert spans[first][1] <= spans[second][0], spans
    # ... and the second one waited for the first
    waited = float(re.search(r"waited ([0-9.]+) s", " ".join(records[second]["notes"])).group(1))
    assert waited > 0
    # different recipes: at the same time
    assert spans["n"][0] < spans[first][1] and spans[first][0] < spans["n"][1], spans

    assert_left_at_rest(before_html, at_rest_proof(docker_client, warm, HTML, html["volumes"]))
    assert_left_at_rest(before_notes, at_rest_proof(docker_client, warm, NOTES, notes["volumes"]))


def test_quick_pass_log_with_the_ci_log_callback(warm, examples, monkeypatch):
    """Drone's log (ANSIBLE_STDOUT_CALLBACK=coopcloud.ci.ci_log, through ansible-runner as
    bin/ccci runs it): one line per step, the stages as recorded, the verdict line last."""
    html = examples[HTML]
    monkeypatch.setenv("ANSIBLE_STDOUT_CALLBACK", "coopcloud.ci.ci_log")
    rid = run_id()
    res = play("quick.yml", extravars(warm, HTML, html["previous"], rid), warm["tmp"])
    assert res.rc == 0, dump(res)
    lines = res.stdout.rstrip("\n").splitlines()
    assert len(lines) <= 40, res.stdout
    assert lines[-1].startswith("QUICK VERDICT: PASS - custom-html at"), res.stdout
    assert lines[-2] == f"record: {warm['state_dir']}/runs/{rid}.json"
    assert res.stdout.count("QUICK VERDICT") == 1
    for stage, result in (("upgrade", "pass"), ("serving", "pass"), ("overlay", "skip")):
        assert any(line.strip().startswith(f"stage {stage}: {result}") for line in lines)
    assert "TASK [" not in res.stdout and "PLAY RECAP" not in res.stdout
    assert "skipping" not in res.stdout
