"""A state dir is made on purpose, never by accident (issue 15, item 4).

A mistyped ``ccci_state_dir`` (``/var/lib/ci-wram`` for ``/var/lib/ci-warm``) must stop
every play and every ``bin/ccci`` command with one clear message naming the path and how
to initialise it, and must not create the folder. The plays are run together (they fail
at their first task, the settings role's check), bin/ccci the way the timers run it.
Needs no swarm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from support.ansible import ROOT, dump, run_playbook
from support.fixtures import init_state

from ansible_collections.coopcloud.ci.plugins.module_utils._state import STATE_MARKER

CCCI = ROOT / "bin" / "ccci"
PLAYS = sorted(p.name for p in (ROOT / "playbooks").glob("*.yml"))
WORDS = "is not initialised"
HOW = "bin/ccci init-state --state-dir"


def _ccci(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    plain = {k: v for k, v in os.environ.items() if not k.startswith("CCCI_")}
    return subprocess.run([sys.executable, str(CCCI), *args], env={**plain, **(env or {})},
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_a_mistyped_state_dir_stops_every_play_and_ccci_and_is_not_created(tmp_path):
    assert len(PLAYS) == 8, PLAYS
    typo = tmp_path / "var" / "lib" / "ci-wram"
    extravars = {
        "ccci_state_dir": str(typo),
        "recipe": "custom-html",
        "target": "keycloak",
        "ccci_domain_suffix": "typo.ccci.test",
        "ccci_recipes_dir": str(tmp_path),
    }

    def play(name: str):
        private = tmp_path / f"runner-{name}"
        private.mkdir()
        return name, run_playbook(name, extravars, private_dir=private)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(play, PLAYS))
    for name, res in results.items():
        assert res.rc != 0, f"{name}: {dump(res)}"
        # the settings role's one check ran, and nothing else
        assert [(t["task"], t["event"]) for t in res.tasks] == [
            ("Refuse a state dir that was never initialised", "runner_on_failed"),
        ], f"{name}: {dump(res)}"
        msg = " ".join(res.last["msg"].split())
        assert WORDS in msg and f"{HOW} {typo}" in msg, f"{name}: {msg}"

    commands = [
        ("status", "--state-dir", str(typo)),
        ("run", "cold.yml", "-e", "recipe=custom-html", "--state-dir", str(typo)),
        ("sweep",),  # the state dir from the environment, as the units give it
        ("unit-failed", "ccci-sweep", "--state-dir", str(typo)),
    ]
    for args in commands:
        proc = _ccci(*args, env={"CCCI_STATE_DIR": str(typo)})
        assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
        assert f"state dir {typo} {WORDS}" in proc.stderr, (args, proc.stderr)
        assert f"{HOW} {typo}" in proc.stderr, (args, proc.stderr)
    assert not typo.exists() and not typo.parent.exists()

    # made on purpose: init-state creates it with its marker, and again is a no-op (a play
    # run in an initialised state dir is what every other test of the suite does)
    made = _ccci("init-state", "--state-dir", str(typo))
    assert made.returncode == 0 and "initialised" in made.stdout, made.stderr
    marker = json.loads((typo / STATE_MARKER).read_text())
    assert marker["format"] == 1
    again = _ccci("init-state", "--state-dir", str(typo))
    assert again.returncode == 0 and "already initialised" in again.stdout
    assert json.loads((typo / STATE_MARKER).read_text()) == marker


def test_init_state_adopts_an_existing_folder_and_refuses_a_newer_format(tmp_path):
    old = tmp_path / "old-state"
    (old / "custom-html").mkdir(parents=True)  # a state dir from before markers
    assert _ccci("init-state", "--state-dir", str(old)).returncode == 0
    assert (old / "custom-html").is_dir() and (old / STATE_MARKER).is_file()
    newer = init_state(tmp_path / "newer")
    (newer / STATE_MARKER).write_text('{"format": 99}\n')
    proc = _ccci("status", "--state-dir", str(newer))
    assert proc.returncode != 0 and "has format 99" in proc.stderr, proc.stderr
