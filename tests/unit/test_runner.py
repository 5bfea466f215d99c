"""bin/ccci and its logic (_runner): argument handling, idents, secrets, real runs.

The real runs start ``bin/ccci`` as a process on throw-away playbooks (no docker needed)
and inspect what ansible-runner left under the state dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.fixtures import init_state

from ansible_collections.coopcloud.ci.plugins.module_utils import _runner as R

# Runs plays through ansible-runner: make test runs it, make check leaves it out
# (-m 'not slow').
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CCCI = ROOT / "bin" / "ccci"


# -- pure logic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CCCI_KEYCLOAK_ADMIN_PASSWORD",
        "CCCI_ALERT_URLS",
        "CCCI_KEYCLOAK_URL",
        "WEBHOOK_URL",
        "GITEA_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "API_KEY",
        "db_passwd",
        "SSH_AUTH_SOCK",
        "OIDC_CLIENT_CREDENTIALS",
    ],
)
def test_secret_looking_names(name):
    assert R.is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["PATH", "HOME", "CCCI_STATE_DIR", "CCCI_KEEP_ARTIFACTS", "CURL_CA_BUNDLE", "target", "LANG"],
)
def test_plain_names(name):
    assert not R.is_secret_name(name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("json://hooks.example.org/ci", False),
        ("https://example.org/path?x=1", False),
        ("keycloak", False),
        ("json://user:pw@hooks.example.org/ci", True),
        ("mailtos://me@example.org", True),
        ("a,https://tok@example.org/x", True),
    ],
)
def test_url_credentials(value, expected):
    assert R.url_has_credentials(value) is expected


def test_extravars_parse_like_ansible_playbook():
    assert R.parse_extravars(["target=keycloak", "max_tests=2", "note=a=b"]) == {
        "target": "keycloak",
        "max_tests": "2",
        "note": "a=b",
    }


@pytest.mark.parametrize(
    ("pair", "words"),
    [
        ("ccci_keycloak_admin_password=x", "looks secret"),
        ("ccci_alert_urls=json://h/x", "looks secret"),
        ("api_token=abc", "looks secret"),
        ("webhook=json://u:p@h/x", "URL with credentials"),
        ("novalue", "key=value"),
        ("bad-key=1", "key=value"),
        ("=1", "key=value"),
    ],
)
def test_extravars_refused(pair, words):
    with pytest.raises(R.UsageError, match=words):
        R.parse_extravars([pair])


def test_ident_sorts_by_time_and_names_the_play():
    early = R.make_ident(
        "playbooks/sweep.yml", datetime(2026, 11, 26, 23, 30, tzinfo=UTC), "aaaaaa"
    )
    late = R.make_ident("reconcile.yml", datetime(2026, 11, 27, 1, 0, tzinfo=UTC), "000000")
    assert early == "20261126T233000Z-sweep-aaaaaa"
    assert late == "20261127T010000Z-reconcile-000000"
    assert sorted([late, early]) == [early, late]
    assert R.play_label("/tmp/My Play.yaml") == "my-play"


def test_subcommands_map_to_playbooks(tmp_path):
    root = tmp_path / "coll"
    (root / "playbooks").mkdir(parents=True)
    for play in R.PLAYS.values():
        (root / "playbooks" / play).write_text("---\n")
    env = {"PATH": "/usr/bin"}
    for command, play in R.PLAYS.items():
        argv = [command, "keycloak"] if command == "reconcile" else [command]
        spec = R.build_spec(argv, env, root=root)
        assert spec.playbook == root / "playbooks" / play
    spec = R.build_spec(["reconcile", "traefik", "-e", "ccci_fetch=false"], env, root=root)
    assert spec.extravars == {
        "target": "traefik",
        "ccci_fetch": "false",
        "ccci_state_dir": R.DEFAULT_STATE_DIR,
    }
    with pytest.raises(R.UsageError, match="target once"):
        R.build_spec(["reconcile", "a", "-e", "target=b"], env, root=root)


def test_state_dir_inventory_and_keep_from_the_environment(tmp_path):
    root = tmp_path / "coll"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "sweep.yml").write_text("---\n")
    env = {
        "CCCI_STATE_DIR": str(tmp_path / "state"),
        "CCCI_INVENTORY": "/etc/ccci/hosts.yml",
        "CCCI_KEEP_ARTIFACTS": "7",
        "CCCI_KEYCLOAK_ADMIN_PASSWORD": "pw",
        "HOME": "/root",
    }
    spec = R.build_spec(["sweep", "--check"], env, root=root)
    assert spec.state_dir == tmp_path / "state"
    assert spec.private_data_dir == tmp_path / "state" / "runner" / "sweep"
    assert spec.artifact_dir.parent == spec.private_data_dir / "artifacts"
    assert spec.inventory == "/etc/ccci/hosts.yml"
    assert spec.keep == 7
    assert spec.check is True
    assert spec.hidden_env == {"CCCI_KEYCLOAK_ADMIN_PASSWORD": "pw"}
    assert "CCCI_KEYCLOAK_ADMIN_PASSWORD" not in spec.public_env
    assert "pw" not in json.dumps(spec.envvars()) + json.dumps(spec.extravars)
    assert spec.cmdline(CCCI)[-1] == "--check"
    # --state-dir wins over the environment; -e ccci_state_dir is the same setting
    spec = R.build_spec(["sweep", "--state-dir", "/srv/warm"], env, root=root)
    assert spec.state_dir == Path("/srv/warm")
    assert spec.extravars["ccci_state_dir"] == "/srv/warm"
    spec = R.build_spec(["sweep", "-e", "ccci_state_dir=/srv/w2"], {}, root=root)
    assert spec.state_dir == Path("/srv/w2")
    assert spec.inventory == str(root / "inventory" / "local.yml")
    assert spec.keep == R.DEFAULT_KEEP
    with pytest.raises(R.UsageError, match="differ"):
        R.build_spec(["sweep", "--state-dir", "/a", "-e", "ccci_state_dir=/b"], {}, root=root)


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["sweep", "--state-dir", "relative/dir"], {}, "absolute"),
        (["sweep"], {"CCCI_KEEP_ARTIFACTS": "many"}, "whole number"),
        (["sweep"], {"CCCI_KEEP_ARTIFACTS": "0"}, "at least 1"),
        (["run", "missing.yml"], {}, "not found"),
        (["frobnicate"], {}, "^$"),
        (["reconcile"], {}, "^$"),
    ],
)
def test_usage_errors(tmp_path, argv, env, words):
    root = tmp_path / "coll"
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "sweep.yml").write_text("---\n")
    with pytest.raises(R.UsageError, match=words):
        R.build_spec(argv, env, root=root)


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(R.UsageError, match="not a directory"):
        R.build_spec(["run", str(CCCI), "--state-dir", str(tmp_path / "f")], {})


def test_collections_path_checkout_and_installed(tmp_path):
    assert R.collections_path(ROOT) == ROOT / "collections"
    installed = tmp_path / "ansible_collections" / "coopcloud" / "ci"
    assert R.collections_path(installed) == tmp_path


# -- real runs of bin/ccci ---------------------------------------------------------------


def _play(path: Path, tasks: str, gather: bool = False) -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            - name: throw-away play
              hosts: localhost
              gather_facts: {str(gather).lower()}
              tasks:
            """
        )
        + textwrap.indent(textwrap.dedent(tasks), "    ")
    )
    return path


def _ccci(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CCCI_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, str(CCCI), *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _all_bytes(tree: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file())


def test_secrets_reach_the_play_and_never_the_disk(tmp_path):
    password = "S3ntinel-pw-" + os.urandom(4).hex()
    token = "S3ntinel-tok-" + os.urandom(4).hex()
    url = f"json://ci:{token}@hooks.example.org/x"
    want = hashlib.sha256((password + url).encode()).hexdigest()
    play = _play(
        tmp_path / "play.yml",
        """\
        - name: Read the secrets in a module process
          ansible.builtin.shell: printf '%s%s' "$CCCI_SENTINEL_PASSWORD" "$CCCI_ALERT_URLS"
          register: got
          changed_when: false
          no_log: true
        - name: The module saw exactly the secrets
          ansible.builtin.assert:
            that: got.stdout | hash('sha256') == want
          no_log: true
        """,
        gather=True,  # facts (ansible_env!) must not carry them into events either
    )
    state = init_state(tmp_path / "state")
    proc = _ccci(
        "run",
        str(play),
        "--state-dir",
        str(state),
        "-e",
        f"want={want}",
        env={"CCCI_SENTINEL_PASSWORD": password, "CCCI_ALERT_URLS": url},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok=3" in proc.stdout  # facts + both tasks ran
    data = _all_bytes(state)
    assert len(data) > 1000  # artifacts were written: events, stdout, command
    for secret in (password, token):
        assert secret.encode() not in data
        assert secret not in proc.stdout + proc.stderr
    (artifacts,) = (state / "runner" / "play" / "artifacts").iterdir()
    command = json.loads((artifacts / "command").read_text())
    assert "CCCI_SENTINEL_PASSWORD" not in command["env"]
    assert command["command"][1:3] == [str(CCCI), "_exec"]
    assert not (state / "runner" / "play" / "env").exists()


def test_plain_ansible_runner_would_write_the_secret(tmp_path, monkeypatch):
    """Why ccci hides secrets: ansible-runner dumps the environment into artifacts."""
    import ansible_runner

    sentinel = "S3ntinel-plain-" + os.urandom(4).hex()
    monkeypatch.setenv("CCCI_SENTINEL_PASSWORD", sentinel)
    play = _play(tmp_path / "p.yml", "- name: Nothing\n  ansible.builtin.meta: noop\n")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    (tmp_path / "pdd").mkdir()
    result = ansible_runner.run(
        private_data_dir=str(tmp_path / "pdd"), playbook=str(play), quiet=True
    )
    assert result.rc == 0
    assert sentinel.encode() in _all_bytes(tmp_path / "pdd")


def test_play_rc_is_passed_through_and_artifacts_match(tmp_path):
    state = init_state(tmp_path / "state")
    ok = _play(tmp_path / "ok.yml", "- name: Fine\n  ansible.builtin.debug:\n    msg: fine\n")
    bad = _play(tmp_path / "bad.yml", "- name: Break\n  ansible.builtin.fail:\n    msg: broken\n")
    broken_yaml = tmp_path / "broken.yml"
    broken_yaml.write_text("- hosts: localhost\n  tasks: [\n")
    results = {}
    for play in (ok, bad, broken_yaml):
        proc = _ccci("run", str(play), "--state-dir", str(state))
        (artifacts,) = (state / "runner" / R.play_label(str(play)) / "artifacts").iterdir()
        results[play.name] = (proc.returncode, int((artifacts / "rc").read_text()))
        assert f"ended with rc={proc.returncode}" in proc.stdout
    assert results["ok.yml"] == (0, 0)
    assert results["bad.yml"] == (2, 2)  # ansible-playbook: a host failed
    assert results["broken.yml"][0] == results["broken.yml"][1] != 0
    assert "broken" in _ccci("run", str(bad), "--state-dir", str(state)).stdout


def test_artifacts_rotate_per_play_and_idents_sort(tmp_path):
    state = init_state(tmp_path / "state")
    play = _play(tmp_path / "tick.yml", "- name: Tick\n  ansible.builtin.debug:\n    msg: t\n")
    other = _play(tmp_path / "tock.yml", "- name: Tock\n  ansible.builtin.debug:\n    msg: t\n")
    idents = []
    for _ in range(3):
        proc = _ccci("run", str(play), "--state-dir", str(state), env={"CCCI_KEEP_ARTIFACTS": "2"})
        assert proc.returncode == 0, proc.stderr
        idents.append(proc.stdout.split(":")[1].strip())
    assert _ccci("run", str(other), "--state-dir", str(state)).returncode == 0
    kept = {p.name for p in (state / "runner" / "tick" / "artifacts").iterdir()}
    assert kept == set(idents[1:])  # the oldest run went
    assert sorted(idents, key=lambda i: i.split("-")[0]) == idents  # to the second
    assert all(i.split("-")[1] == "tick" for i in idents)
    assert len(list((state / "runner" / "tock" / "artifacts").iterdir())) == 1


def test_check_mode_reaches_the_play(tmp_path):
    target = tmp_path / "made.txt"
    play = _play(
        tmp_path / "write.yml",
        f"""\
        - name: Write a file
          ansible.builtin.copy:
            content: x
            dest: {target}
            mode: "0644"
        """,
    )
    init_state(tmp_path / "s")
    proc = _ccci("run", str(play), "--state-dir", str(tmp_path / "s"), "--check")
    assert proc.returncode == 0, proc.stdout
    assert "changed: [localhost]" in proc.stdout
    assert not target.exists()
    assert _ccci("run", str(play), "--state-dir", str(tmp_path / "s")).returncode == 0
    assert target.read_text() == "x"


def test_refusals_exit_2_and_touch_nothing(tmp_path):
    state = init_state(tmp_path / "state")
    proc = _ccci("alerts", "--state-dir", str(state), "-e", "ccci_alert_urls=json://u:p@h/x")
    assert proc.returncode == 2
    assert "use the environment" in proc.stderr or "environment instead" in proc.stderr
    assert _ccci("bogus").returncode == 2
    assert _ccci("run").returncode == 2
    assert [p.name for p in state.iterdir()] == [".ccci-state"]  # only its marker, as made
    help_ = _ccci("--help")
    assert help_.returncode == 0 and "reconcile" in help_.stdout
