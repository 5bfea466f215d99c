"""Contract: a third-party Keycloak client (python-keycloak) accepts the test double.

If python-keycloak cannot create a realm, a client and a user against the double and
obtain a token there, the double is wrong: fix the double, never this test.
"""

from __future__ import annotations

import time

import pytest
from keycloak import KeycloakAdmin, KeycloakOpenID, KeycloakOpenIDConnection
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakGetError, KeycloakPostError
from support.keycloak_double import KeycloakDouble


@pytest.fixture
def kc():
    with KeycloakDouble(admin_password="contract-admin") as double:
        yield double


def _admin(kc: KeycloakDouble, password: str = "contract-admin") -> KeycloakAdmin:
    connection = KeycloakOpenIDConnection(
        server_url=kc.base_url,
        username="admin",
        password=password,
        realm_name="master",
        client_id="admin-cli",
        verify=True,
    )
    return KeycloakAdmin(connection=connection)


def test_python_keycloak_creates_realm_client_user_and_gets_a_token(kc, unique):
    admin = _admin(kc)
    realm = f"contract-{unique}"

    admin.create_realm({"realm": realm, "enabled": True})
    assert realm in [r["realm"] for r in admin.get_realms()]
    assert admin.get_realm(realm)["enabled"] is True
    # skip_exists: python-keycloak recognises the double's duplicate answer.
    admin.create_realm({"realm": realm, "enabled": True}, skip_exists=True)

    admin.change_current_realm(realm)
    client_uuid = admin.create_client(
        {
            "clientId": "app",
            "publicClient": False,
            "directAccessGrantsEnabled": True,
            "standardFlowEnabled": True,
            "redirectUris": ["https://app.example.org/*"],
        }
    )
    assert admin.get_client_id("app") == client_uuid
    secret = admin.get_client_secrets(client_uuid)["value"]
    assert secret

    user_id = admin.create_user(
        {
            "username": "Alice",
            "email": "alice@example.org",
            "firstName": "Alice",
            "lastName": "Example",
            "emailVerified": True,
            "enabled": True,
        }
    )
    assert admin.get_user_id("alice") == user_id
    assert admin.get_user(user_id)["username"] == "alice"
    admin.set_user_password(user_id, "s3cret-pass", temporary=False)

    oidc = KeycloakOpenID(
        server_url=kc.base_url, realm_name=realm, client_id="app", client_secret_key=secret
    )
    assert oidc.well_known()["issuer"] == f"{kc.base_url}/realms/{realm}"
    token = oidc.token("alice", "s3cret-pass")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] > 0
    # The signature verifies against the realm's published keys (jwcrypto, via certs).
    claims = oidc.decode_token(token["access_token"])
    assert claims["iss"] == oidc.well_known()["issuer"]
    assert claims["azp"] == "app"
    assert claims["preferred_username"] == "alice"
    assert claims["exp"] > claims["iat"]
    assert oidc.userinfo(token["access_token"])["email"] == "alice@example.org"
    refreshed = oidc.refresh_token(token["refresh_token"])
    assert oidc.decode_token(refreshed["access_token"])["sid"] == claims["sid"]

    admin.change_current_realm("master")
    admin.delete_realm(realm)
    assert realm not in [r["realm"] for r in admin.get_realms()]


def test_python_keycloak_sees_keycloak_errors(kc, unique):
    admin = _admin(kc)
    with pytest.raises(KeycloakGetError) as missing:
        admin.get_realm(f"nope-{unique}")
    assert missing.value.response_code == 404

    realm = f"contract-{unique}"
    admin.create_realm({"realm": realm, "enabled": True})
    with pytest.raises(KeycloakPostError) as dup:
        admin.create_realm({"realm": realm, "enabled": True})
    assert dup.value.response_code == 409

    admin.change_current_realm(realm)
    user_id = admin.create_user({"username": "bob", "enabled": True})
    admin.set_user_password(user_id, "pw-bob", temporary=False)
    client_uuid = admin.create_client(
        {"clientId": "app", "publicClient": False, "directAccessGrantsEnabled": True}
    )
    secret = admin.get_client_secrets(client_uuid)["value"]
    oidc = KeycloakOpenID(
        server_url=kc.base_url, realm_name=realm, client_id="app", client_secret_key=secret
    )
    # A user without email / first / last name cannot log in yet.
    with pytest.raises(KeycloakPostError) as not_set_up:
        oidc.token("bob", "pw-bob")
    assert not_set_up.value.response_code == 400
    assert b"Account is not fully set up" in not_set_up.value.response_body
    with pytest.raises(KeycloakAuthenticationError):
        oidc.token("bob", "wrong")


def test_python_keycloak_admin_login_refused_with_wrong_password(kc):
    with pytest.raises(KeycloakAuthenticationError) as refused:
        _admin(kc, password="wrong").get_realms()
    assert refused.value.response_code == 401
    assert b"invalid_grant" in refused.value.response_body


def test_python_keycloak_renews_an_expired_admin_token(kc, unique):
    kc.admin_token_lifetime = 1
    admin = _admin(kc)
    admin.get_realms()
    first_logins = len(kc.calls("POST", "/realms/master/protocol/openid-connect/token"))
    time.sleep(1.2)
    admin.create_realm({"realm": f"contract-{unique}", "enabled": True})
    assert len(kc.calls("POST", "/realms/master/protocol/openid-connect/token")) > first_logins
    assert f"contract-{unique}" in kc.realm_names()
