"""keycloak_realm end to end: through ansible-runner, as plays run it, against the Keycloak
test double (a real HTTP server on loopback; no swarm needed)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ansible_runner
import pytest
import yaml
from support.ansible import ROOT, dump, run_module
from support.keycloak_double import KeycloakDouble, decode_unverified

from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak import (
    KeycloakAdmin,
    derive_secret,
)

FQCN = "coopcloud.ci.keycloak_realm"
PASSWORD = "integration-admin-pw"


@pytest.fixture
def kc():
    with KeycloakDouble(admin_password=PASSWORD) as double:
        yield double


def module(kc: KeycloakDouble, **args):
    args.setdefault("keycloak_url", kc.base_url)
    args.setdefault("admin_password", PASSWORD)
    return args


def log_in(kc: KeycloakDouble, result: dict) -> dict:
    creds = result["credentials"]
    with KeycloakAdmin(kc.base_url, "admin", PASSWORD) as admin:
        token = admin.password_grant(
            result["realm"],
            result["client_id"],
            creds["client_secret"],
            result["username"],
            creds["user_password"],
        )
    return decode_unverified(token["access_token"])


def test_present_check_real_again_then_absent(kc, unique):
    args = module(
        kc, recipe="custom-html", run_id=unique, redirect_uris=["https://c.example.org/*"]
    )
    realm = f"custom-html-{unique}"

    check = run_module(FQCN, args, check=True, diff=True)
    assert check.rc == 0, dump(check)
    assert check.last["changed"] is True
    assert realm not in kc.realm_names()

    real = run_module(FQCN, args, diff=True)
    assert real.rc == 0, dump(real)
    assert real.last["changed"] is True
    assert real.last["actions"] == check.last["actions"]
    assert real.last["issuer"] == f"{kc.base_url}/realms/{realm}"
    claims = log_in(kc, real.last)
    assert claims["iss"] == real.last["issuer"] and claims["azp"] == "custom-html"
    assert claims["preferred_username"] == "ci-user"

    again_check = run_module(FQCN, args, check=True)
    assert again_check.last["changed"] is False, dump(again_check)
    again = run_module(FQCN, args)
    assert again.last["changed"] is False, dump(again)
    assert again.last["credentials"] == real.last["credentials"]

    absent = dict(args, state="absent")
    gone_check = run_module(FQCN, absent, check=True)
    assert gone_check.last["changed"] is True and realm in kc.realm_names()
    gone = run_module(FQCN, absent)
    assert gone.last["changed"] is True and realm not in kc.realm_names()
    assert run_module(FQCN, absent, check=True).last["changed"] is False
    assert run_module(FQCN, absent).last["changed"] is False


def test_two_runs_at_once_get_distinct_realms_that_both_issue_tokens(kc):
    run_ids = ["0a0a0a", "0b0b0b"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda run_id: run_module(FQCN, module(kc, recipe="notes", run_id=run_id)), run_ids
            )
        )
    assert [r.rc for r in results] == [0, 0], "\n".join(dump(r) for r in results)
    realms = [r.last["realm"] for r in results]
    assert realms == ["notes-0a0a0a", "notes-0b0b0b"]
    issuers = {log_in(kc, r.last)["iss"] for r in results}
    assert issuers == {f"{kc.base_url}/realms/notes-0a0a0a", f"{kc.base_url}/realms/notes-0b0b0b"}
    assert results[0].last["credentials"] != results[1].last["credentials"]


def test_reaped_keeps_master_the_planted_realm_and_the_live_run(kc):
    kc.add_realm("team-sso")
    for run_id in ("111111", "222222", "333333"):
        assert run_module(FQCN, module(kc, recipe="notes", run_id=run_id)).rc == 0

    info = run_module(FQCN, module(kc, state="info"))
    ci = sorted(r["realm"] for r in info.last["realms"] if r["ci"])
    assert ci == ["notes-111111", "notes-222222", "notes-333333"]

    reap = module(kc, state="reaped", live_run_ids=["222222"])
    check = run_module(FQCN, reap, check=True)
    assert sorted(check.last["deleted"]) == ["notes-111111", "notes-333333"]
    assert len(kc.realm_names()) == 5
    real = run_module(FQCN, reap)
    assert real.rc == 0 and real.last["changed"] is True, dump(real)
    assert sorted(real.last["deleted"]) == ["notes-111111", "notes-333333"]
    assert sorted(kc.realm_names()) == ["master", "notes-222222", "team-sso"]
    assert run_module(FQCN, reap).last["changed"] is False


def test_failures_are_one_clear_message_and_a_non_zero_exit(kc, unique):
    kc.fail_next(1000, status=503)
    storm = run_module(FQCN, module(kc, recipe="notes", run_id=unique, retries=2))
    assert storm.rc != 0
    assert "unreachable or failing" in storm.last["msg"] and storm.last["status"] == 503
    kc.down()
    down = run_module(FQCN, module(kc, recipe="notes", run_id=unique, retries=1))
    assert down.rc != 0 and f"Keycloak at {kc.base_url} is unreachable" in down.last["msg"]


# -- no secret leaks ------------------------------------------------------------------------
def _play(kc: KeycloakDouble, run_id: str, secrets: dict[str, str]) -> list:
    connection = {"keycloak_url": kc.base_url, "admin_password": secrets["admin"]}
    realm_args = {"recipe": "notes", "run_id": run_id}
    return [
        {
            "name": "an SSO run's realm, the way the lanes use it",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Make the per-run realm",
                    FQCN: {
                        **connection,
                        **realm_args,
                        "client_secret": secrets["client"],
                        "user_password": secrets["user"],
                    },
                    "register": "sso",
                    "no_log": True,
                },
                {
                    "name": "Make the realm of the run with generated secrets",
                    FQCN: {**connection, "recipe": "notes", "run_id": "fedcba"},
                    "register": "sso_generated",
                    "no_log": True,
                },
                {
                    "name": "Say which realm the run uses",
                    "ansible.builtin.debug": {
                        "msg": "realm {{ sso.realm }} issuer {{ sso.issuer }}"
                    },
                },
                {
                    "name": "List realms",
                    FQCN: {**connection, "state": "info"},
                },
                {
                    "name": "Reap with nothing live but this run",
                    FQCN: {**connection, "state": "reaped", "live_run_ids": [run_id]},
                },
                {
                    "name": "Delete the per-run realm",
                    FQCN: {**connection, **realm_args, "state": "absent"},
                },
                {
                    "name": "A wrong admin password fails",
                    FQCN: {**connection, "admin_password": secrets["wrong"], "state": "info"},
                    "ignore_errors": True,
                },
            ],
        }
    ]


def test_sentinel_secrets_never_reach_stdout_or_artifacts(kc, unique, tmp_path):
    sentinels = {
        "admin": f"SENTINEL-ADMIN-{unique}",
        "client": f"SENTINEL-CLIENT-{unique}",
        "user": f"SENTINEL-USER-{unique}",
        "wrong": f"SENTINEL-WRONG-{unique}",
    }
    kc.set_admin_password(sentinels["admin"])
    # The generated secrets of the second realm are secrets too.
    derived = [
        derive_secret(sentinels["admin"], "notes-fedcba", p)
        for p in ("client-secret", "user-password")
    ]

    private = tmp_path / "runner"
    (private / "project").mkdir(parents=True)
    # The play (which must hold the inputs) lives outside the private data dir.
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump(_play(kc, unique, sentinels)))
    runner = ansible_runner.run(
        private_data_dir=str(private),
        playbook=str(play),
        inventory=str(ROOT / "inventory" / "local.yml"),
        envvars={
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
            "ANSIBLE_NOCOLOR": "1",
        },
        project_dir=str(ROOT),
        verbosity=3,
        quiet=True,
    )
    stdout = runner.stdout.read()
    assert runner.rc == 0, stdout
    # The play did the real thing: realm made (then deleted), a token could be had.
    assert f"realm notes-{unique} issuer {kc.base_url}/realms/notes-{unique}" in stdout
    assert kc.calls("POST", "/admin/realms")
    assert f"notes-{unique}" not in kc.realm_names()
    assert "refused the admin login" in stdout  # the failing task ran and said why

    artifacts = Path(runner.config.artifact_dir)
    files = [p for p in private.rglob("*") if p.is_file()]
    assert any(p.parent.name == "job_events" for p in files)
    hits = []
    for secret in [*sentinels.values(), *derived]:
        if secret in stdout:
            hits.append(("stdout", secret))
        for path in files:
            if secret.encode() in path.read_bytes():
                hits.append((os.path.relpath(path, private), secret))
    assert hits == [], f"secrets leaked (artifacts in {artifacts}): {hits}"
