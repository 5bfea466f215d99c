"""The Keycloak Admin REST client against the test double, over real sockets."""

from __future__ import annotations

import threading
import time

import pytest
from support.keycloak_double import KC_ADMIN_PASSWORD, KeycloakDouble, decode_unverified

from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak import (
    KeycloakAdmin,
    KeycloakError,
    RealmRefused,
    derive_secret,
    error_message,
    realms_to_reap,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak_realms import (
    CiRealms,
    RealmSpec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError

ADMIN_PASSWORD = KC_ADMIN_PASSWORD


def admin_for(kc: KeycloakDouble, **kwargs) -> KeycloakAdmin:
    kwargs.setdefault("backoff", 0.05)
    return KeycloakAdmin(kc.base_url, "admin", kwargs.pop("password", ADMIN_PASSWORD), **kwargs)


def statuses(kc: KeycloakDouble, status: int) -> list:
    return [r for r in kc.requests if r[2] == status]


# -- pure helpers -----------------------------------------------------------------------
def test_error_message_reads_all_three_keycloak_shapes():
    assert error_message({"errorMessage": "User exists with same username"}) == (
        "User exists with same username"
    )
    assert error_message({"error": "Realm not found."}) == "Realm not found."
    assert error_message(
        {"error": "invalid_grant", "error_description": "Invalid user credentials"}
    ) == ("invalid_grant: Invalid user credentials")
    assert (
        error_message(None, "<html>\n<h1>Bad Gateway</h1></html>")
        == "<html> <h1>Bad Gateway</h1></html>"
    )
    assert error_message(None, "") == "(empty answer)"


def test_realms_to_reap_never_returns_master_or_foreign_realms():
    names = [
        "master",
        "team-sso",
        "app-abcdef",
        "app-123456",
        "notes-0a0b0c",
        "APP-ABCDEF",
        "app-abcdef-x",
        "x" * 41 + "-abcdef",
        "",
    ]
    assert realms_to_reap(names, ["123456"]) == ["app-abcdef", "notes-0a0b0c"]
    assert realms_to_reap(names, []) == ["app-abcdef", "app-123456", "notes-0a0b0c"]
    # Whatever the arguments: master and non-CI realms are never in the answer.
    assert realms_to_reap(["master", "team-sso"], []) == []
    assert realms_to_reap(["master"], ["master", "", None]) == []
    assert realms_to_reap([None, 3, "master"], []) == []  # type: ignore[list-item]


def test_derived_secrets_are_stable_per_realm_and_hide_the_key():
    one = derive_secret("k", "app-abcdef", "client-secret")
    assert one == derive_secret("k", "app-abcdef", "client-secret")
    assert one != derive_secret("k", "app-abcdee", "client-secret")
    assert one != derive_secret("k", "app-abcdef", "user-password")
    assert one != derive_secret("k2", "app-abcdef", "client-secret")
    assert len(one) == 40 and int(one, 16) >= 0


def test_base_url_is_normalised_and_validated():
    assert (
        KeycloakAdmin("https://sso.example.org/", "admin", "x").base_url
        == "https://sso.example.org"
    )
    assert KeycloakAdmin("http://old:8080/auth/", "admin", "x").base_url == "http://old:8080/auth"
    assert KeycloakAdmin("http://old:8080/auth", "admin", "x").issuer("r") == (
        "http://old:8080/auth/realms/r"
    )
    with pytest.raises(ValidationError, match="Keycloak URL"):
        KeycloakAdmin("sso.example.org", "admin", "x")


# -- realm lifecycle ----------------------------------------------------------------------
def test_realm_lifecycle(kc, unique):
    admin = admin_for(kc)
    realm = f"app-{unique}"
    assert admin.get_realm(realm) is None
    assert admin.create_realm(realm) is True
    assert admin.create_realm(realm) is False  # 409: exists
    rep = admin.get_realm(realm)
    assert rep["realm"] == realm and rep["enabled"] is True
    assert realm in [r["realm"] for r in admin.list_realms()]
    assert admin.delete_realm(realm) is True
    assert admin.delete_realm(realm) is False  # 404 is fine
    assert admin.get_realm(realm) is None
    assert realm not in kc.realm_names()


def test_client_user_and_token_whose_issuer_is_the_discovery_issuer(kc, unique):
    admin = admin_for(kc)
    realm = f"app-{unique}"
    admin.create_realm(realm)
    client_uuid = admin.create_client(realm, "app", ["https://app.example.org/*"])
    client = admin.get_client_by_client_id(realm, "app")
    assert client["id"] == client_uuid
    assert client["publicClient"] is False and client["directAccessGrantsEnabled"] is True
    assert client["redirectUris"] == ["https://app.example.org/*"]
    assert admin.get_client_by_client_id(realm, "ap") is None
    secret = admin.get_client_secret(realm, client_uuid)
    user_id = admin.create_user(realm, "alice", "alice@example.org", "Alice", "Example")
    assert admin.get_user_by_username(realm, "alice")["id"] == user_id
    assert admin.get_user_by_username(realm, "ali") is None
    admin.set_password(realm, user_id, "pw-alice")

    token = admin.password_grant(realm, "app", secret, "alice", "pw-alice")
    claims = decode_unverified(token["access_token"])
    config = admin.discovery(realm)
    assert claims["iss"] == config["issuer"] == f"{kc.base_url}/realms/{realm}"
    assert claims["azp"] == "app" and claims["preferred_username"] == "alice"
    assert token["expires_in"] == claims["exp"] - claims["iat"]
    assert config["token_endpoint"] == f"{kc.base_url}/realms/{realm}/protocol/openid-connect/token"

    with pytest.raises(KeycloakError) as bad:
        admin.password_grant(realm, "app", secret, "alice", "wrong")
    assert bad.value.matches(401, "Invalid user credentials")
    assert "wrong" not in str(bad.value)
    with pytest.raises(KeycloakError) as bad_secret:
        admin.password_grant(realm, "app", "not-the-secret", "alice", "pw-alice")
    assert bad_secret.value.status == 401
    assert "not-the-secret" not in str(bad_secret.value)


def test_errors_are_matched_on_status_and_message(kc, unique):
    admin = admin_for(kc)
    realm = f"app-{unique}"
    admin.create_realm(realm)
    admin.create_user(realm, "bob", "bob@example.org", "Bob", "Example")
    with pytest.raises(KeycloakError) as dup:
        admin.create_user(realm, "bob", "bob2@example.org", "Bob", "Example")
    assert dup.value.matches(409, "same username")
    assert str(dup.value) == (
        f"could not create user 'bob' in Keycloak realm '{realm}' at {kc.base_url}: "
        "409 User exists with same username"
    )
    with pytest.raises(KeycloakError) as missing:
        admin.get_client_secret(realm, "no-such-id")
    assert missing.value.matches(404, "could not find client")
    with pytest.raises(KeycloakError) as no_realm:
        admin.discovery(f"gone-{unique}")
    assert no_realm.value.status == 404
    with pytest.raises(KeycloakError) as no_realm_admin:
        admin.get_client_by_client_id(f"gone-{unique}", "app")
    assert no_realm_admin.value.matches(404, "Realm not found.")


# -- tokens -------------------------------------------------------------------------------
def test_admin_token_is_renewed_before_it_expires(kc):
    kc.admin_token_lifetime = 2
    admin = admin_for(kc)
    admin.list_realms()
    assert admin.logins == 1
    admin.list_realms()
    assert admin.logins == 1  # still fresh: reused
    time.sleep(1.7)  # past expires_in minus the margin, before the real expiry
    admin.list_realms()
    assert admin.logins == 2
    assert statuses(kc, 401) == []  # renewed ahead, never refused


def test_admin_token_is_renewed_once_on_401(kc, unique):
    admin = admin_for(kc)
    admin.list_realms()
    kc.end_sessions("master")  # outstanding admin tokens now answer 401
    assert admin.create_realm(f"app-{unique}") is True
    assert admin.logins == 2
    assert [r[:2] for r in statuses(kc, 401)] == [("POST", "/admin/realms")]


def test_expired_admin_token_answers_401_and_is_replaced(kc):
    kc.admin_token_lifetime = 1
    admin = admin_for(kc)
    admin.list_realms()
    admin._token_deadline = time.monotonic() + 60  # pretend it is still fresh
    time.sleep(1.1)
    assert admin.list_realms()
    assert len(statuses(kc, 401)) == 1 and admin.logins == 2


def test_wrong_admin_password_is_one_clear_error_naming_the_user(kc):
    admin = admin_for(kc, password="Wr0ng-Pa55word")
    with pytest.raises(KeycloakError) as refused:
        admin.list_realms()
    assert str(refused.value) == (
        f"Keycloak at {kc.base_url} refused the admin login for user 'admin': "
        "401 invalid_grant: Invalid user credentials"
    )
    assert refused.value.status == 401
    for text in (str(refused.value), repr(refused.value), refused.value.body, repr(admin)):
        assert "Wr0ng-Pa55word" not in text
        assert ADMIN_PASSWORD not in text


# -- retries ------------------------------------------------------------------------------
def test_5xx_answers_are_retried_then_succeed(kc, unique):
    admin = admin_for(kc, retries=4)
    admin.list_realms()
    kc.fail_next(2, status=503)
    assert admin.create_realm(f"app-{unique}") is True
    assert [r[2] for r in kc.requests[-3:]] == [503, 503, 201]
    kc.fail_next(1, status=500)
    assert admin.get_realm(f"app-{unique}")["realm"] == f"app-{unique}"


def test_5xx_storm_is_one_clear_error_after_bounded_attempts(kc):
    admin = admin_for(kc, retries=3)
    kc.fail_next(1000, status=502)
    started = time.monotonic()
    with pytest.raises(KeycloakError) as storm:
        admin.list_realms()
    assert time.monotonic() - started < 3
    assert storm.value.status == 502
    assert "after 4 attempt(s)" in str(storm.value)
    assert kc.base_url in str(storm.value)
    assert len(statuses(kc, 502)) == 4  # the login, tried 4 times, never more


def test_5xx_storm_is_bounded_in_time(kc):
    admin = admin_for(kc, retries=100, backoff=0.2, max_retry_time=1.0)
    kc.fail_next(1000, status=503)
    started = time.monotonic()
    with pytest.raises(KeycloakError) as storm:
        admin.list_realms()
    assert time.monotonic() - started < 2.0
    assert storm.value.status == 503
    assert len(statuses(kc, 503)) < 10


def test_connection_refused_is_one_clear_error(kc):
    admin = admin_for(kc, retries=2)
    kc.down()
    with pytest.raises(KeycloakError) as down:
        admin.list_realms()
    assert down.value.status is None
    assert str(down.value).startswith(
        f"admin login for user 'admin': Keycloak at {kc.base_url} is unreachable or failing"
    )
    assert "ConnectError" in str(down.value) and "3 attempt(s)" in str(down.value)


def test_connection_errors_are_retried_until_keycloak_is_back(kc, unique):
    admin = admin_for(kc, retries=6, backoff=0.1)
    admin.list_realms()
    kc.down()
    timer = threading.Timer(0.4, kc.up)
    timer.start()
    try:
        assert admin.create_realm(f"app-{unique}") is True
    finally:
        timer.join()
    assert f"app-{unique}" in kc.realm_names()


# -- safety -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["master", "Master", "team-sso", "app-ABCDEF", "app-abcdef/../master", "", "app-abcdeff"],
)
def test_delete_refuses_any_realm_but_a_per_run_one_before_asking_keycloak(kc, name):
    admin = admin_for(kc)
    with pytest.raises(RealmRefused, match="refusing to delete Keycloak realm"):
        admin.delete_realm(name)
    assert kc.calls("DELETE") == []
    assert "master" in kc.realm_names()


def test_reaping_keeps_master_foreign_and_live_realms(kc):
    admin = admin_for(kc)
    kc.add_realm("team-sso")
    for name in ("app-aaaaaa", "app-bbbbbb", "notes-cccccc"):
        admin.create_realm(name)
    realms = CiRealms(admin, ADMIN_PASSWORD)

    predicted = realms.reap(["bbbbbb"], check_mode=True)
    assert predicted.changed and sorted(predicted.result["deleted"]) == [
        "app-aaaaaa",
        "notes-cccccc",
    ]
    assert kc.calls("DELETE") == []

    done = realms.reap(["bbbbbb"])
    assert sorted(done.result["deleted"]) == ["app-aaaaaa", "notes-cccccc"]
    assert sorted(done.result["kept"]) == ["app-bbbbbb", "master", "team-sso"]
    assert sorted(kc.realm_names()) == ["app-bbbbbb", "master", "team-sso"]
    again = realms.reap(["bbbbbb"])
    assert not again.changed and again.result["deleted"] == []

    with pytest.raises(ValidationError):
        realms.reap(["not-a-run-id"])
    assert sorted(kc.realm_names()) == ["app-bbbbbb", "master", "team-sso"]


# -- CI realms ----------------------------------------------------------------------------
def test_present_is_idempotent_and_check_mode_predicts(kc, unique):
    admin = admin_for(kc)
    realms = CiRealms(admin, ADMIN_PASSWORD)
    spec = RealmSpec(recipe="app", run_id=unique, redirect_uris=["https://a.example.org/*"])

    predicted = realms.present(spec, check_mode=True)
    assert predicted.changed and f"app-{unique}" not in kc.realm_names()
    assert kc.calls("POST", "/admin") == [] and kc.calls("PUT") == []

    made = realms.present(spec)
    assert made.changed and made.actions == predicted.actions
    assert made.result["credentials"] == predicted.result["credentials"]
    creds = made.result["credentials"]
    token = admin.password_grant(
        f"app-{unique}", "app", creds["client_secret"], "ci-user", creds["user_password"]
    )
    assert decode_unverified(token["access_token"])["iss"] == made.result["issuer"]

    writes = len(kc.calls("POST", "/admin")) + len(kc.calls("PUT"))
    again = realms.present(spec)
    assert not again.changed and again.actions == []
    assert again.result["credentials"] == creds
    assert len(kc.calls("POST", "/admin")) + len(kc.calls("PUT")) == writes  # nothing written
    assert realms.present(spec, check_mode=True).changed is False

    changed_uris = RealmSpec(recipe="app", run_id=unique, redirect_uris=["https://b.example.org/*"])
    assert realms.present(changed_uris, check_mode=True).actions == ["update client redirectUris"]
    assert realms.present(changed_uris).changed
    assert admin.get_client_by_client_id(f"app-{unique}", "app")["redirectUris"] == [
        "https://b.example.org/*"
    ]
    assert realms.absent("app", unique).changed
    assert not realms.absent("app", unique).changed


def test_present_repairs_a_disabled_realm_and_a_half_set_up_user(kc, unique):
    admin = admin_for(kc)
    realms = CiRealms(admin, ADMIN_PASSWORD)
    realm = f"app-{unique}"
    admin.create_realm(realm, enabled=False)
    user_id = admin.create_user(realm, "ci-user", "x@example.org", "", "")
    admin.update_user(realm, user_id, {"requiredActions": ["VERIFY_EMAIL"]})
    spec = RealmSpec(recipe="app", run_id=unique)
    predicted = realms.present(spec, check_mode=True)
    assert predicted.actions == [
        "enable realm",
        "create client",
        "update user email, firstName, lastName, requiredActions",
        "set password",
    ]
    done = realms.present(spec)
    assert done.actions == predicted.actions
    assert admin.get_realm(realm)["enabled"] is True
    creds = done.result["credentials"]
    admin.password_grant(realm, "app", creds["client_secret"], "ci-user", creds["user_password"])
    assert not realms.present(spec).changed
