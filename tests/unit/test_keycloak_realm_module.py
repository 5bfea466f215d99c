"""keycloak_realm's main() against the Keycloak test double: states, check mode, diff,
idempotence, environment fallbacks and failures."""

from __future__ import annotations

import json

import pytest
from support.keycloak_double import KC_ADMIN_PASSWORD, KeycloakDouble, decode_unverified
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak import (
    KeycloakAdmin,
    derive_secret,
)
from ansible_collections.coopcloud.ci.plugins.modules import keycloak_realm

PASSWORD = KC_ADMIN_PASSWORD


@pytest.fixture
def run(capsys, kc):
    def _run(check: bool = False, diff: bool = False, **args) -> dict:
        args.setdefault("keycloak_url", kc.base_url)
        args.setdefault("admin_password", PASSWORD)
        args.setdefault("retries", 1)
        args = {k: v for k, v in args.items() if v is not None}  # None: leave the option out
        return run_main(keycloak_realm, args, capsys, check=check, diff=diff)[1]

    return _run


def writes(kc: KeycloakDouble) -> list:
    return [
        r for r in kc.requests if r[0] in ("POST", "PUT", "DELETE") and r[1].startswith("/admin")
    ]


def test_present_creates_a_realm_whose_user_can_log_in_then_is_ok(run, kc, unique):
    realm = f"notes-{unique}"
    first = run(recipe="notes", run_id=unique, redirect_uris=["https://n.example.org/*"], diff=True)
    assert first["changed"] is True
    assert first["realm"] == realm
    assert first["issuer"] == f"{kc.base_url}/realms/{realm}"
    assert first["token_endpoint"] == f"{kc.base_url}/realms/{realm}/protocol/openid-connect/token"
    assert first["client_id"] == "notes" and first["username"] == "ci-user"
    assert first["actions"] == ["create realm", "create client", "create user", "set password"]
    creds = first["credentials"]
    assert creds["client_secret"] == derive_secret(PASSWORD, realm, "client-secret")
    assert creds["user_password"] == derive_secret(PASSWORD, realm, "user-password")
    assert first["diff"]["before"] == {}
    assert first["diff"]["after"]["client"]["redirectUris"] == ["https://n.example.org/*"]
    assert creds["client_secret"] not in json.dumps(first["diff"])
    assert creds["user_password"] not in json.dumps(first["diff"])

    assert kc.realms[realm].enabled
    with KeycloakAdmin(kc.base_url, "admin", PASSWORD) as admin:
        answer = admin.password_grant(
            realm, "notes", creds["client_secret"], "ci-user", creds["user_password"]
        )
    assert decode_unverified(answer["access_token"])["iss"] == first["issuer"]

    before = len(writes(kc))
    second = run(
        recipe="notes", run_id=unique, redirect_uris=["https://n.example.org/*"], diff=True
    )
    assert second["changed"] is False and second["actions"] == []
    assert second["credentials"] == creds
    assert second["diff"]["before"] == second["diff"]["after"]
    assert len(writes(kc)) == before


def test_check_mode_predicts_exactly_and_writes_nothing(run, kc, unique):
    predicted = run(check=True, recipe="notes", run_id=unique)
    assert predicted["changed"] is True
    assert f"notes-{unique}" not in kc.realm_names()
    assert writes(kc) == []
    real = run(recipe="notes", run_id=unique)
    assert real["actions"] == predicted["actions"]
    assert real["credentials"] == predicted["credentials"]
    assert {k: real[k] for k in ("issuer", "token_endpoint")} == {
        k: predicted[k] for k in ("issuer", "token_endpoint")
    }
    after = len(writes(kc))
    assert run(check=True, recipe="notes", run_id=unique)["changed"] is False
    # A user whose password was changed behind our back is predicted and repaired.
    realm = kc.realms[f"notes-{unique}"]
    user = realm.user_by_username("ci-user")
    realm.passwords[user["id"]] = "changed-elsewhere"
    assert run(check=True, recipe="notes", run_id=unique)["actions"] == ["set password"]
    assert len(writes(kc)) == after
    assert run(recipe="notes", run_id=unique)["actions"] == ["set password"]
    assert run(recipe="notes", run_id=unique)["changed"] is False


def test_given_secrets_are_used_and_masked_in_the_result(run, kc, unique):
    given = {
        "recipe": "notes",
        "run_id": unique,
        "client_id": "web",
        "username": "Tester",
        "client_secret": "given-client-secret-1",
        "user_password": "given-user-password-1",
    }
    result = run(**given)
    assert result["changed"] is True and result["client_id"] == "web"
    assert result["username"] == "tester"  # as Keycloak stores it
    masked = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert result["credentials"] == {"client_secret": masked, "user_password": masked}
    realm = kc.realms[f"notes-{unique}"]
    assert realm.client_by_client_id("web")["secret"] == "given-client-secret-1"
    assert realm.passwords[realm.user_by_username("tester")["id"]] == "given-user-password-1"
    assert "given-" not in json.dumps(result)
    again = run(**given)
    assert again["changed"] is False
    rotated = run(**{**given, "client_secret": "given-client-secret-2"})
    assert rotated["actions"] == ["update client secret"]
    assert realm.client_by_client_id("web")["secret"] == "given-client-secret-2"


def test_absent_twice(run, kc, unique):
    run(recipe="notes", run_id=unique)
    predicted = run(check=True, diff=True, recipe="notes", run_id=unique, state="absent")
    assert predicted["changed"] is True and f"notes-{unique}" in kc.realm_names()
    assert predicted["diff"] == {"before": {"realm": f"notes-{unique}"}, "after": {}}
    gone = run(recipe="notes", run_id=unique, state="absent")
    assert gone["changed"] is True and gone["actions"] == ["delete realm"]
    assert f"notes-{unique}" not in kc.realm_names()
    again = run(recipe="notes", run_id=unique, state="absent")
    assert again["changed"] is False and again["realm"] == f"notes-{unique}"


def test_reaped_and_info(run, kc):
    kc.add_realm("team-sso")
    for run_id in ("aaaaaa", "bbbbbb"):
        run(recipe="notes", run_id=run_id)
    run(recipe="other", run_id="cccccc")

    info = run(state="info")
    assert info["changed"] is False
    by_name = {r["realm"]: r for r in info["realms"]}
    assert by_name["master"] == {
        "realm": "master",
        "enabled": True,
        "ci": False,
        "recipe": None,
        "run_id": None,
    }
    assert by_name["team-sso"]["ci"] is False
    assert by_name["notes-aaaaaa"] == {
        "realm": "notes-aaaaaa",
        "enabled": True,
        "ci": True,
        "recipe": "notes",
        "run_id": "aaaaaa",
    }

    only_notes = run(check=True, state="reaped", recipe="notes", live_run_ids=["bbbbbb"])
    assert only_notes["changed"] is True and only_notes["deleted"] == ["notes-aaaaaa"]
    predicted = run(check=True, diff=True, state="reaped", live_run_ids=["bbbbbb"])
    assert sorted(predicted["deleted"]) == ["notes-aaaaaa", "other-cccccc"]
    assert "notes-aaaaaa" in kc.realm_names()
    reaped = run(state="reaped", live_run_ids=["bbbbbb"])
    assert sorted(reaped["deleted"]) == sorted(predicted["deleted"])
    assert sorted(reaped["kept"]) == ["master", "notes-bbbbbb", "team-sso"]
    assert sorted(kc.realm_names()) == ["master", "notes-bbbbbb", "team-sso"]
    assert run(state="reaped", live_run_ids=["bbbbbb"])["changed"] is False
    # No live runs at all: every CI realm goes, master and the planted one stay.
    run(state="reaped")
    assert sorted(kc.realm_names()) == ["master", "team-sso"]


def test_settings_from_the_environment(run, kc, monkeypatch, unique):
    monkeypatch.setenv("CCCI_KEYCLOAK_URL", kc.base_url)
    monkeypatch.setenv("CCCI_KEYCLOAK_ADMIN_USER", "admin")
    monkeypatch.setenv("CCCI_KEYCLOAK_ADMIN_PASSWORD", PASSWORD)
    result = run(keycloak_url=None, admin_password=None, recipe="notes", run_id=unique)
    assert result["changed"] is True
    monkeypatch.setenv("CCCI_KEYCLOAK_ADMIN_USER", "someone")
    refused = run(keycloak_url=None, admin_password=None, state="info")
    assert refused["failed"] is True and "user 'someone'" in refused["msg"]


def test_wrong_admin_password_fails_clearly_without_leaking(run, kc, unique):
    result = run(admin_password="Sentinel-Wrong-Pw", recipe="notes", run_id=unique)
    assert result["failed"] is True
    assert result["msg"] == (
        f"Keycloak at {kc.base_url} refused the admin login for user 'admin': "
        "401 invalid_grant: Invalid user credentials"
    )
    assert result["status"] == 401
    assert "Sentinel-Wrong-Pw" not in json.dumps(result)
    assert f"notes-{unique}" not in kc.realm_names()


def test_unreachable_keycloak_and_5xx_storm_fail_clearly(run, kc, unique):
    kc.fail_next(100, status=503)
    storm = run(recipe="notes", run_id=unique, retries=2, max_retry_time=5)
    assert storm["failed"] is True and storm["status"] == 503
    assert "unreachable or failing" in storm["msg"] and "3 attempt(s)" in storm["msg"]
    kc.down()
    down = run(recipe="notes", run_id=unique, retries=1)
    assert down["failed"] is True and "status" not in down
    assert f"Keycloak at {kc.base_url} is unreachable" in down["msg"]


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ({"recipe": "Bad_Name", "run_id": "abcdef"}, "recipe name 'Bad_Name' is invalid"),
        ({"recipe": "notes", "run_id": "xyz"}, "run id 'xyz' is invalid"),
        ({"recipe": "notes"}, "run_id"),
        ({"state": "reaped", "live_run_ids": ["master"]}, "run id 'master' is invalid"),
        ({"keycloak_url": "sso.example.org", "state": "info"}, "Keycloak URL"),
    ],
)
def test_bad_arguments_fail_before_anything_is_touched(run, kc, args, text):
    result = run(**args)
    assert result["failed"] is True and text in result["msg"]
    assert writes(kc) == []
