"""From a pull request comment to a verdict on the pull request (issue 12), on the real swarm.

A comment is delivered, signed, by the forge double to the comment bridge (a real
process), which creates one build on the Drone double. The pipeline is ``docs/drone.example.yml`` as pasted (only the values marked "adapt"
changed), run by the emulator of drone-runner-exec (support/drone_exec.py) for the build
the Drone double recorded; the results land on the forge double, which checks every
exchange against Gitea's OpenAPI document. Two builds share one bed:

1. ``!testme`` on a pull request whose head is the recipe's latest release: the cold lane,
   PASS, the required ``coopcloud-ci/cold`` status and the result comment; being a green
   cold run of the latest tag it also seeds the canonical (WC5);
2. ``!testme --quick`` on a pull request from a fork, whose head commit lives on the origin
   only under ``refs/pull/<n>/head``: the quick lane on that canonical tests exactly the
   fork's head, PASS, under the non-gating ``coopcloud-ci/quick (lower confidence)``
   context, and leaves the known-good unmoved.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from support.pr_bed import FORGE_TOKEN, PrBed
from support.warmbed import KNOWN_GOOD_KEYS, at_rest

pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.xdist_group("test_pr_path")]

HTML = "custom-html"


@pytest.fixture(scope="module")
def pr_bed(examples, tmp_path_factory, docker_client):
    bed = PrBed.make(
        tmp_path_factory.mktemp("pr-path"),
        examples[HTML]["path"],
        HTML,
        f"p{os.urandom(3).hex()}",
        stages=["install", "upgrade", "serving"],
    )
    try:
        yield bed
    finally:
        bed.close()


def assert_reported(bed: PrBed, pr: dict, build: dict, context: str, verdict_line: str) -> str:
    """The statuses on the PR head (pending, then the verdict) and the result comment."""
    sha = pr["head"]["sha"]
    link = f"{bed.drone.base_url}/coop/{HTML}/{build['number']}"
    statuses = bed.statuses(sha)
    assert [(s["status"], s["context"]) for s in statuses] == [
        ("success", context),
        ("pending", context),
    ], statuses
    assert statuses[0]["description"].startswith(verdict_line), statuses[0]
    assert {s["target_url"] for s in statuses} == {link}
    replies = [c for c in bed.comments(pr["number"]) if c["body"].startswith(f"**{context}: ")]
    assert len(replies) == 1, bed.comments(pr["number"])
    body = replies[0]["body"]
    assert body.startswith(f"**{context}: PASS** (") and f"at `{sha[:12]}`" in body
    assert replies[0]["user"]["login"] == "ci-bot"
    return body


def test_comment_to_verdict_cold_then_quick_on_a_fork(pr_bed, examples, docker_client):
    bed = pr_bed
    html = examples[HTML]
    latest_commit = html["tags"][html["latest"]]

    # 1. !testme on a PR at the latest release: the authoritative cold lane
    pr1 = bed.pull_request(at=latest_commit)
    build1 = bed.comment(pr1, "!testme")
    assert len(bed.drone.builds) == 1 and build1["params"]["CCCI_MODE"] == "cold"
    assert build1["after"] == latest_commit
    started = time.monotonic()
    result = bed.run_build(build1)
    cold_seconds = time.monotonic() - started
    assert result.status == "success", result.log()[-6000:]
    assert [(s.name.split()[0], s.state, s.exit_code) for s in result.steps] == [
        ("trigger", "success", 0),
        ("cold", "success", 0),
        ("quick", "success", 0),  # not asked for: says so and exits 0
    ]
    assert "quick run" not in result.step("cold").log
    assert (
        "COLD VERDICT: PASS" in result.step("cold").log
    )  # the ci_log callback the example selects
    env = result.envs["cold (authoritative, gates merge)"]
    assert env["HOME"].startswith(str(result.root)) and not result.root.exists()
    assert env["ANSIBLE_INVENTORY"] == str(bed.inventory)  # from the step's own environment
    assert env["CCCI_FORGE_TOKEN"] == FORGE_TOKEN  # from_secret

    record = bed.record_of(latest_commit, "cold")
    assert (record["verdict"], record["confidence"]) == ("PASS", "authoritative")
    assert record["stages"] == {
        "install": "pass", "upgrade": "pass", "serving": "pass", "overlay": "skip", "custom": "skip"
    }  # fmt: skip
    junit = bed.bed.state_dir / "junit" / f"{HTML}-{build1['number']}-cold.xml"
    assert 'failures="0"' in junit.read_text()  # outlives the build, under the state dir
    assert_reported(bed, pr1, build1, "coopcloud-ci/cold", "PASS: install pass, upgrade pass")
    registry = bed.bed.registry(HTML)  # green cold at the latest tag: the canonical is seeded
    assert (registry["version"], registry["promoted_by"]) == (html["latest"], record["run_id"])

    # 2. !testme --quick on a PR from a fork: its head exists only as refs/pull/2/head
    pr2 = bed.pull_request(at=latest_commit, change={"README.md": "# custom-html, forked\n"},
                           fork="mallory/custom-html")  # fmt: skip
    fork_sha = pr2["head"]["sha"]
    before = bed.bed.proof(docker_client, HTML)
    build2 = bed.comment(pr2, "!testme --quick")
    assert (build2["after"], build2["params"]["CCCI_MODE"]) == (fork_sha, "quick")
    started = time.monotonic()
    result = bed.run_build(build2)
    quick_seconds = time.monotonic() - started
    assert result.status == "success", result.log()[-6000:]
    assert result.step("quick").exit_code == 0, result.step("quick").log[-6000:]
    assert "cold lane asked for, no cold run" not in result.step("quick").log
    record = bed.record_of(fork_sha, "quick")
    assert (record["verdict"], record["confidence"]) == ("PASS", "lower")
    assert record["ref"] == fork_sha and record["version"] is None
    body = assert_reported(
        bed, pr2, build2, "coopcloud-ci/quick (lower confidence)", "PASS: upgrade pass"
    )
    assert "(lower confidence, never gates merge)" in body
    after = bed.bed.proof(docker_client, HTML)
    assert at_rest(after) == []
    assert {k: after["registry"][k] for k in KNOWN_GOOD_KEYS} == {
        k: before["registry"][k] for k in KNOWN_GOOD_KEYS
    }

    # every exchange with the forge was one Gitea's API accepts; the token never leaks
    bed.forge.check()
    for step_result in bed.builds[0].steps + bed.builds[1].steps:
        assert FORGE_TOKEN not in step_result.log
    stored = [p.read_bytes() for p in bed.bed.state_dir.rglob("*") if p.is_file()]
    assert all(FORGE_TOKEN.encode() not in data for data in stored)
    assert all(json.loads(p.read_text()) for p in (bed.bed.state_dir / "runs").glob("*.json"))
    print(f"cold build {cold_seconds:.0f} s, quick build on a fork {quick_seconds:.0f} s")
