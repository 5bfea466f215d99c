"""Custom stage of sso-site: the test user logs in with what the app was given.

Runs with the environment documented in catalog/README.md, including the per-run realm's
CCCI_OIDC_* variables (the recipe's catalog entry says ``sso: keycloak``). The app serves
what it was given at ``/oidc.json`` (issuer, client id, client secret); the login is a
password grant at the issuer's token endpoint with that client and the realm's test user.

Secrets never go into assertion messages: comparisons of secret values are made first and
only their outcome is asserted (pytest would print both sides of a failed ``==``).
"""

from __future__ import annotations

import base64
import hmac
import json
import os

import httpx


def _env(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: the custom stage must export it (see catalog/README.md)"
    return value


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _given() -> dict:
    """What the app was given, as it serves it."""
    response = httpx.get(_env("CCCI_BASE_URL").rstrip("/") + "/oidc.json", timeout=10)
    assert response.status_code == 200, f"GET /oidc.json answered {response.status_code}"
    given = response.json()
    assert set(given) == {"issuer", "client_id", "client_secret"}, f"keys: {sorted(given)}"
    return given


def test_the_app_was_given_the_run_realm():
    given = _given()
    assert given["issuer"] == _env("CCCI_OIDC_ISSUER")
    assert given["issuer"].endswith(f"/realms/{_env('CCCI_RECIPE')}-{_env('CCCI_RUN_ID')}")
    assert given["client_id"] == _env("CCCI_OIDC_CLIENT_ID")
    same_secret = hmac.compare_digest(given["client_secret"], _env("CCCI_OIDC_CLIENT_SECRET"))
    assert same_secret, "the app's client secret is not the run's client secret"


def test_the_test_user_logs_in_with_what_the_app_was_given():
    given = _given()
    discovery = httpx.get(given["issuer"] + "/.well-known/openid-configuration", timeout=10)
    assert discovery.status_code == 200, f"discovery answered {discovery.status_code}"
    assert discovery.json()["issuer"] == given["issuer"]
    username = _env("CCCI_OIDC_USERNAME")
    response = httpx.post(
        discovery.json()["token_endpoint"],
        data={
            "grant_type": "password",
            "client_id": given["client_id"],
            "client_secret": given["client_secret"],
            "username": username,
            "password": _env("CCCI_OIDC_PASSWORD"),
            "scope": "openid",
        },
        timeout=10,
    )
    # Keycloak's error answers name the error, never the credentials.
    assert response.status_code == 200, f"password grant: {response.status_code} {response.text}"
    token = response.json().get("access_token")
    assert token, f"no access_token in the answer (keys: {sorted(response.json())})"
    claims = _claims(token)
    assert claims["iss"] == given["issuer"]
    assert claims["azp"] == given["client_id"]
    assert claims["preferred_username"] == username
