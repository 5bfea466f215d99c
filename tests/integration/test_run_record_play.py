"""A play that records a run the way cold.yml does, through ansible-runner (no swarm needed).

The play reads the catalog entry (default catalog, found from a packed AnsiballZ payload),
starts a record, records install (pass), upgrade (fail, from a rescued task) and overlay
(skip), finishes with JUnit, prints the summary and exits non-zero on a FAIL verdict.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml
from support.ansible import dump, run_playbook

ROOT = Path(__file__).resolve().parents[2]


def play(state_dir: Path, run_id: str, junit: Path) -> list:
    record = {"state_dir": str(state_dir), "run_id": run_id}
    return [
        {
            "name": "record a run",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "catalog entry",
                    "coopcloud.ci.catalog_entry": {"recipe": "custom-html"},
                    "register": "catalog",
                },
                {
                    "name": "start",
                    "coopcloud.ci.run_record": {
                        **record,
                        "state": "started",
                        "mode": "cold",
                        "recipe": "custom-html",
                        "ref": "1.1.0+1.29",
                        "domain": f"cust-{run_id}.ci.example",
                        "canonical_before": {
                            "version": "1.0.0+1.28",
                            "status": "idle",
                            "admin_password": "hunter2",
                        },
                    },
                    "register": "started",
                },
                {
                    "name": "the owner process",
                    "ansible.builtin.command": "cat /proc/{{ started.record.pid }}/cmdline",
                    "register": "owner",
                    "changed_when": False,
                },
                {
                    "name": "install",
                    "coopcloud.ci.run_record": {
                        **record,
                        "state": "stage",
                        "stage": "install",
                        "result": "pass",
                    },
                },
                {
                    "name": "upgrade",
                    "block": [
                        {
                            "name": "upgrade the app",
                            "ansible.builtin.command": "sh -c 'echo upgrade broke >&2; exit 3'",
                            "changed_when": False,
                        },
                        {
                            "name": "upgrade passed",
                            "coopcloud.ci.run_record": {
                                **record,
                                "state": "stage",
                                "stage": "upgrade",
                                "result": "pass",
                            },
                        },
                    ],
                    "rescue": [
                        {
                            "name": "upgrade failed",
                            "coopcloud.ci.run_record": {
                                **record,
                                "state": "stage",
                                "stage": "upgrade",
                                "result": "fail",
                                "message": "{{ ansible_failed_result.stderr }}",
                            },
                        }
                    ],
                },
                {
                    "name": "overlay",
                    "coopcloud.ci.run_record": {
                        **record,
                        "state": "stage",
                        "stage": "overlay",
                        "result": "skip",
                        "message": "{{ 'no overlays listed' if not catalog.entry.overlays else '' }}",
                    },
                },
                {
                    "name": "finish",
                    "coopcloud.ci.run_record": {
                        **record,
                        "state": "finished",
                        "junit": str(junit),
                        "canonical_after": {"version": "1.0.0+1.28", "status": "idle"},
                    },
                    "register": "run",
                },
                {"name": "summary", "ansible.builtin.debug": {"msg": "{{ run.summary }}"}},
                {
                    "name": "verdict",
                    "ansible.builtin.fail": {"msg": "verdict {{ run.verdict }}"},
                    "when": "run.verdict != 'PASS'",
                },
            ],
        }
    ]


def test_a_play_records_stages_verdict_and_junit(tmp_path, state_dir, unique):
    junit = tmp_path / "reports" / f"junit-{unique}.xml"
    playbook = tmp_path / "record.yml"
    playbook.write_text(yaml.safe_dump(play(state_dir, unique, junit), sort_keys=False))

    runner = tmp_path / "runner"
    runner.mkdir()
    # run_playbook joins its argument to playbooks/; an absolute path stands for itself.
    result = run_playbook(str(playbook), private_dir=runner)

    # The play ends non-zero exactly because the verdict is FAIL.
    assert result.rc != 0, dump(result)
    assert result.task("verdict")["msg"] == "verdict FAIL"

    catalog = result.task("catalog entry")
    assert Path(catalog["catalog_dir"]).resolve() == (ROOT / "catalog").resolve(), catalog
    assert catalog["entry"]["health"]["path"] == "/index.html"

    record = json.loads((state_dir / "runs" / f"{unique}.json").read_text())
    assert record["run_id"] == unique
    # The record names the play's own process (alive while the play ran), not the module's.
    assert "ansible-playbook" in result.task("the owner process")["stdout"]
    assert record["mode"] == "cold" and record["confidence"] == "authoritative"
    assert record["status"] == "finished" and record["verdict"] == "FAIL"
    assert record["stages"] == {"install": "pass", "upgrade": "fail", "overlay": "skip"}
    assert record["stage_order"] == ["install", "upgrade", "overlay"]
    assert record["stage_details"]["upgrade"]["message"] == "upgrade broke"
    assert record["stage_details"]["overlay"]["message"] == "no overlays listed"
    assert record["canonical_before"] == {"version": "1.0.0+1.28", "status": "idle"}
    assert record["canonical_after"] == {"version": "1.0.0+1.28", "status": "idle"}
    assert record["scrubbed"] == ["canonical_before.admin_password"]
    assert isinstance(record["timings"]["total_seconds"], int)
    assert record["domain"] == f"cust-{unique}.ci.example"
    assert "hunter2" not in (state_dir / "runs" / f"{unique}.json").read_text()
    assert "hunter2" not in result.stdout

    assert result.task("finish")["record"] == record
    summary = result.task("finish")["summary"]
    assert summary[1] == "mode: cold (confidence: authoritative)"
    assert "verdict: FAIL" in summary
    assert "verdict: FAIL" in result.stdout  # the summary task printed it

    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("name") == "custom-html [cold]"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["install [cold]", "upgrade [cold]", "overlay [cold]"]
    assert cases["upgrade [cold]"].find("failure").get("message") == "upgrade broke"
    assert cases["overlay [cold]"].find("skipped") is not None
    assert cases["install [cold]"].find("failure") is None
