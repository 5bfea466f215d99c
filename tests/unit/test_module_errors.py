"""Every module fails through one path: one sentence, the evidence, never a traceback.

One row per module (ansible-core 2.19, ``patch_module_args``): an input that makes its
work raise, the sentence the user reads, and the evidence that must come with it. Then
each module that needs a third-party SDK, run with that SDK hidden.
"""

from __future__ import annotations

import importlib
import sys

import pytest
from support.fixtures import init_state
from support.modules import run_main


def run(name: str, args: dict, capsys) -> tuple[int, dict]:
    module = importlib.import_module(f"ansible_collections.coopcloud.ci.plugins.modules.{name}")
    return run_main(module, args, capsys)


@pytest.fixture
def not_git(tmp_path):
    """A recipes folder whose ``custom-html`` is a plain folder: git fails on it."""
    (tmp_path / "recipes" / "custom-html").mkdir(parents=True)
    return str(tmp_path / "recipes")


def rows(tmp: str, not_git: str):
    state = f"{tmp}/state"
    return [
        # module, args, the sentence (a part of it), evidence that must be there
        (
            "recipe_ref",
            {"recipe": "custom-html", "recipes_dir": not_git, "fetch": False},
            "has no checkout at",
            {"rc": 128, "stdout": "", "stderr": "not a git repository"},
        ),
        (
            "release_gate",
            {"recipe": "custom-html", "recipes_dir": not_git, "current": "1.0.0+1.0"},
            "it is not a git repository",
            {"rc": 128, "stdout": "", "stderr": "not a git repository"},
        ),
        ("catalog_entry", {"recipe": "nope", "catalog_dir": tmp}, "nope", {}),
        (
            "run_record",
            {"state_dir": state, "run_id": "abc123", "state": "stage", "stage": "install",
             "result": "pass"},
            "does not exist; start it first with state=started",
            {"path": f"{state}/runs/abc123.json"},
        ),
        ("warm_lock", {"recipe": "x", "run_id": "NOTHEX", "state_dir": state}, "NOTHEX", {}),
        (
            "warm_alert",
            {"state_dir": state, "kind": "k", "target": "t", "extra": {"kind": "x"}},
            "extra alert fields ['kind'] clash with the fixed fields",
            {},
        ),
        ("warm_status", {"state_dir": state, "run_ids": ["zz"], "docker_root": tmp}, "run_ids:", {}),
        (
            "forge_report",
            {"url": "http://127.0.0.1:9", "token": "forge-token-0123", "repo": "o/r", "commit": "a" * 40,
             "mode": "cold", "pr": 0},
            "pull request number 0 is invalid",
            {},
        ),
        (
            "disk_guard",
            {"state_dir": state, "need_bytes": -1},
            "need_bytes must be 0 or more, got -1",
            {"ok": False, "pruned": [], "free": {}},
        ),
        (
            "health_gate",
            {"url": "http://127.0.0.1:9/", "wait_sleep": 0},
            "wait_timeout must be 0 or more and wait_sleep more than 0 seconds",
            {},
        ),
        (
            "keycloak_realm",
            {"keycloak_url": "http://127.0.0.1:9", "admin_password": "pw", "state": "info",
             "retries": 0, "timeout": 2},
            "127.0.0.1:9",
            {},
        ),
        (
            "volume_snapshot",
            {"recipe": "custom-html", "state_dir": state, "max_members": 0},
            "max_members 0 is invalid: give 1 or more",
            {},
        ),
        (
            "volume_snapshot",
            {"recipe": "custom-html", "state_dir": f"{tmp}/file", "state": "info"},
            "exists and is not a directory",
            {},
        ),
        (
            "volume_marker",
            {"recipe": "custom-html", "state_dir": state, "domain": "a.example", "node": "w9",
             "volume": "v", "name": ".m"},
            "does not know how to reach that node's engine: add it to CCCI_NODE_ENGINES",
            {},
        ),
    ]  # fmt: skip


MODULES = [row[0] for row in rows("/t", "/r")]


@pytest.mark.parametrize("index", range(len(MODULES)), ids=MODULES)
def test_a_failure_is_one_sentence_with_its_evidence(index, tmp_path, not_git, capsys):
    (tmp_path / "file").write_text("")
    init_state(tmp_path / "state")  # a state dir made on purpose: the modules refuse others
    name, args, says, evidence = rows(str(tmp_path), not_git)[index]
    rc, out = run(name, args, capsys)
    assert rc == 1 and out["failed"] is True, out
    assert says in out["msg"], out["msg"]
    assert "Traceback" not in out["msg"] and out["changed"] is False
    for key, value in evidence.items():
        if isinstance(value, str) and value:
            assert value in out[key], (key, out)
        else:
            assert out[key] == value, (key, out)


@pytest.mark.parametrize(
    ("name", "sdk", "args"),
    [
        ("health_gate", "docker", {"stack": "s"}),
        ("health_gate", "httpx", {"url": "http://127.0.0.1:9/"}),
        ("keycloak_realm", "httpx", {"keycloak_url": "http://k", "admin_password": "pw-0123",
                                     "state": "info"}),
        ("volume_snapshot", "docker", {"recipe": "r", "domain": "a.example", "state": "present",
                                       "state_dir": "STATE"}),
        ("disk_guard", "docker", {"state_dir": "STATE"}),
        ("warm_status", "docker", {"state_dir": "STATE"}),
    ],
)  # fmt: skip
def test_a_missing_sdk_is_named_the_ansible_way(name, sdk, args, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, sdk, None)  # import fails as if it were not installed
    args = {k: str(init_state(tmp_path)) if v == "STATE" else v for k, v in args.items()}
    rc, out = run(name, args, capsys)
    assert rc == 1
    assert out["msg"].startswith(f"Failed to import the required Python library ({sdk})"), out
