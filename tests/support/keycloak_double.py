"""A Keycloak test double: a real HTTP server on loopback that answers like Keycloak (>= 17).

Keycloak cannot be installed on the machines that run the tests (SPEC §4), so the
collection's Keycloak client is tested against this server instead. It is written from
Keycloak's Admin REST API and OIDC endpoints, not from our client: wherever a third-party
client (``python-keycloak``, see tests/unit/test_keycloak_double_contract.py) disagrees with
it, this file is wrong.

What a client sees, as Keycloak does it:

- no ``/auth`` prefix (Keycloak >= 17); ``master`` exists with the user ``admin`` and the
  public client ``admin-cli`` (direct access grants on);
- admin tokens by password grant on ``master``/``admin-cli``; access tokens are RS256 JWTs
  (a key per realm, published at ``.../protocol/openid-connect/certs``) with ``iss`` =
  ``{base}/realms/{realm}`` = the discovery document's ``issuer``, ``exp``, ``iat``,
  ``azp``, ``sid``, ``preferred_username``; ``expires_in`` in the token answer; expiry and
  ended sessions are honoured (401 on the admin API, ``invalid_grant`` on refresh);
- ``POST /admin/realms``: 201, empty body, ``Location``; 409 on duplicates; realms are
  disabled unless created with ``enabled: true``;
- ``404 {"error": "Realm not found."}`` for unknown realms on admin paths and
  ``404 {"error": "Realm does not exist"}`` on OIDC paths;
- clients take Keycloak's REST defaults (``RepresentationToModel.createClient`` and the
  storage's ``addClient``): enabled, standard flow on, *confidential* (``publicClient``
  false) with a generated secret, direct access grants *off* unless asked for;
- users are disabled unless created with ``enabled: true``; the password grant answers
  ``400 invalid_grant "Account is not fully set up"`` while email, first or last name is
  missing or a required action is pending (a temporary password adds ``UPDATE_PASSWORD``);
- errors in Keycloak's three shapes: ``{"errorMessage": ...}`` (admin validation and
  conflicts), ``{"error": ...}`` (not found, 401/403 on the admin API) and OAuth
  ``{"error", "error_description"}`` (token endpoint).

Knobs for tests: ``admin_password``, ``admin_token_lifetime`` (master's access token
lifespan, 60 s like Keycloak), ``token_lifetime`` (other realms, 300 s), ``fail_next(n)``
(the next ``n`` requests answer 5xx), ``down()``/``up()`` (stop and resume listening on the
same port, cutting open connections), ``end_sessions(realm)`` (an admin "log out all
sessions": outstanding tokens answer 401), ``requests`` (a log of ``(method, path,
status)``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from support.loopback_http import LoopbackServer

ADMIN_REALM = "master"
ADMIN_CLIENT = "admin-cli"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class _Reply(Exception):
    """Raised inside a handler to answer with ``status`` and a JSON ``body`` (or none)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _oauth_error(status: int, error: str, description: str) -> _Reply:
    return _Reply(status, {"error": error, "error_description": description})


@dataclass
class _Realm:
    name: str
    enabled: bool
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    display_name: str | None = None
    access_token_lifespan: int = 300
    clients: dict[str, dict] = field(default_factory=dict)
    users: dict[str, dict] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)
    key: Any = None
    kid: str = ""

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.key.public_key().public_numbers()
        self.jwk = {
            "kid": "",
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        }
        self.kid = _b64url(hashlib.sha256(self.jwk["n"].encode()).digest())[:43]
        self.jwk["kid"] = self.kid

    def representation(self) -> dict:
        rep = {
            "id": self.id,
            "realm": self.name,
            "enabled": self.enabled,
            "accessTokenLifespan": self.access_token_lifespan,
            "sslRequired": "external",
            "registrationAllowed": False,
            "verifyEmail": False,
            "loginWithEmailAllowed": True,
        }
        if self.display_name is not None:
            rep["displayName"] = self.display_name
        return rep

    def client_by_client_id(self, client_id: str) -> dict | None:
        return next((c for c in self.clients.values() if c["clientId"] == client_id), None)

    def user_by_username(self, username: str) -> dict | None:
        username = username.lower()
        return next((u for u in self.users.values() if u["username"] == username), None)


#: the admin password of the unit tests' double (the ``kc`` fixture, tests/unit/conftest.py)
KC_ADMIN_PASSWORD = "double-admin-pw"


class KeycloakDouble(LoopbackServer):
    """The server. Use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        *,
        admin_user: str = "admin",
        admin_password: str = "admin",
        admin_token_lifetime: int = 60,
        token_lifetime: int = 300,
        refresh_lifetime: int = 1800,
    ) -> None:
        self.admin_user = admin_user
        self.admin_password = admin_password
        self.token_lifetime = token_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.lock = threading.RLock()
        self.realms: dict[str, _Realm] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._failures: list[tuple[int, str | None]] = []
        self._connections: set[socket.socket] = set()
        self.port = 0
        master = _Realm(ADMIN_REALM, enabled=True, access_token_lifespan=admin_token_lifetime)
        master.clients[str(uuid.uuid4())] = self._client_defaults(
            {
                "clientId": ADMIN_CLIENT,
                "publicClient": True,
                "directAccessGrantsEnabled": True,
                "standardFlowEnabled": False,
                "name": "${client_admin-cli}",
            }
        )
        admin_id = str(uuid.uuid4())
        master.users[admin_id] = {
            "id": admin_id,
            "username": admin_user,
            "enabled": True,
            "emailVerified": False,
            "firstName": None,
            "lastName": None,
            "email": None,
            "requiredActions": [],
            "createdTimestamp": int(time.time() * 1000),
            "attributes": {},
            "admin": True,
        }
        master.passwords[admin_id] = admin_password
        self.realms[ADMIN_REALM] = master

    # -- knobs ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token_lifetime(self) -> int:
        return self.realms[ADMIN_REALM].access_token_lifespan

    @admin_token_lifetime.setter
    def admin_token_lifetime(self, seconds: int) -> None:
        self.realms[ADMIN_REALM].access_token_lifespan = seconds

    def set_admin_password(self, password: str) -> None:
        with self.lock:
            master = self.realms[ADMIN_REALM]
            self.admin_password = password
            master.passwords[master.user_by_username(self.admin_user)["id"]] = password

    def fail_next(self, count: int, status: int = 503, path_prefix: str | None = None) -> None:
        """The next ``count`` requests (under ``path_prefix``, if given) answer ``status``."""
        with self.lock:
            self._failures.extend([(status, path_prefix)] * count)

    def end_sessions(self, realm: str = ADMIN_REALM) -> None:
        """Log out every session of ``realm``: its outstanding tokens stop working."""
        with self.lock:
            self.realms[realm].sessions.clear()

    def realm_names(self) -> list[str]:
        with self.lock:
            return list(self.realms)

    def add_realm(self, name: str) -> None:
        """Plant a realm directly (as another team would have made it)."""
        with self.lock:
            self.realms[name] = _Realm(name, enabled=True)

    def calls(self, method: str | None = None, prefix: str = "") -> list[tuple[str, str, int]]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r[0] == method) and r[1].startswith(prefix)
            ]

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> KeycloakDouble:
        self.up()
        return self

    def up(self) -> None:
        """Listen (again, on the same port after :meth:`down`)."""
        double = self

        class Handler(_Handler):
            pass

        Handler.double = double
        self._listen(Handler, "keycloak-double")

    def down(self) -> None:
        """Stop listening and cut open connections: clients see connection refused/reset."""
        self._close()

    stop = down

    def __enter__(self) -> KeycloakDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- tokens -----------------------------------------------------------------------
    def issuer(self, realm: str) -> str:
        return f"{self.base_url}/realms/{realm}"

    def _sign(self, realm: _Realm, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": realm.kid}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = realm.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def verify(
        self, realm: _Realm, token: str, typ: str = "Bearer", check_session: bool = True
    ) -> dict | None:
        """The claims of ``token`` if it is a live token of ``realm`` of type ``typ``."""
        try:
            head, body, sig = token.split(".")
            realm.key.public_key().verify(
                _b64url_decode(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
            claims = json.loads(_b64url_decode(body))
        except Exception:  # any malformed or forged token is simply invalid
            return None
        if claims.get("typ") != typ or claims.get("iss") != self.issuer(realm.name):
            return None
        if time.time() >= claims.get("exp", 0):
            return None
        if check_session and claims.get("sid") not in realm.sessions:
            return None
        return claims

    def _issue(
        self, realm: _Realm, client: dict, user: dict | None, scope: str, sid: str | None = None
    ) -> dict:
        now = int(time.time())
        if sid is None:
            sid = str(uuid.uuid4())
            realm.sessions.add(sid)
        lifetime = realm.access_token_lifespan
        subject = user["id"] if user else client["id"]
        scopes = ["profile", "email"]
        if "openid" in scope.split():
            scopes.insert(0, "openid")
        claims = {
            "exp": now + lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer(realm.name),
            "aud": "account",
            "sub": subject,
            "typ": "Bearer",
            "azp": client["clientId"],
            "sid": sid,
            "scope": " ".join(scopes),
            "preferred_username": user["username"]
            if user
            else f"service-account-{client['clientId']}",
            "email_verified": bool(user and user.get("emailVerified")),
        }
        if user:
            for claim, attr in (
                ("email", "email"),
                ("given_name", "firstName"),
                ("family_name", "lastName"),
            ):
                if user.get(attr):
                    claims[claim] = user[attr]
            if user.get("firstName") or user.get("lastName"):
                claims["name"] = " ".join(
                    p for p in (user.get("firstName"), user.get("lastName")) if p
                )
        refresh = {
            "exp": now + self.refresh_lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer(realm.name),
            "aud": self.issuer(realm.name),
            "sub": subject,
            "typ": "Refresh",
            "azp": client["clientId"],
            "sid": sid,
            "scope": claims["scope"],
        }
        answer = {
            "access_token": self._sign(realm, claims),
            "expires_in": lifetime,
            "refresh_expires_in": self.refresh_lifetime,
            "refresh_token": self._sign(realm, refresh),
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": sid,
            "scope": claims["scope"],
        }
        if "openid" in scopes:
            id_claims = dict(
                claims,
                typ="ID",
                aud=client["clientId"],
                at_hash=_b64url(hashlib.sha256(answer["access_token"].encode()).digest()[:16]),
            )
            id_claims.pop("scope", None)
            answer["id_token"] = self._sign(realm, id_claims)
        return answer

    # -- representations --------------------------------------------------------------
    @staticmethod
    def _client_defaults(rep: dict) -> dict:
        public = bool(rep.get("publicClient", False))
        client = {
            "id": rep.get("id") or str(uuid.uuid4()),
            "clientId": rep["clientId"],
            "name": rep.get("name", ""),
            "enabled": rep.get("enabled", True),
            "publicClient": public,
            "bearerOnly": rep.get("bearerOnly", False),
            "standardFlowEnabled": rep.get("standardFlowEnabled", True),
            "implicitFlowEnabled": rep.get("implicitFlowEnabled", False),
            "directAccessGrantsEnabled": rep.get("directAccessGrantsEnabled", False),
            "serviceAccountsEnabled": rep.get("serviceAccountsEnabled", False),
            "clientAuthenticatorType": rep.get("clientAuthenticatorType", "client-secret"),
            "redirectUris": list(rep.get("redirectUris") or []),
            "webOrigins": list(rep.get("webOrigins") or []),
            "protocol": rep.get("protocol", "openid-connect"),
            "fullScopeAllowed": rep.get("fullScopeAllowed", True),
            "consentRequired": rep.get("consentRequired", False),
            "frontchannelLogout": rep.get("frontchannelLogout", True),
            "attributes": dict(rep.get("attributes") or {}),
            "notBefore": 0,
        }
        client["secret"] = rep.get("secret") or secrets.token_urlsafe(24)
        return client


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KeycloakDouble"
    double: KeycloakDouble

    def _created(self, path: str) -> _Reply:
        """201 with no body and ``Location: <base>/admin/realms/<path>``, as Keycloak answers."""
        return _Reply(201, None, {"Location": f"{self.double.base_url}/admin/realms/{path}"})

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.double.lock:
            self.double._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.double.lock:
            self.double._connections.discard(self.connection)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ---------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(length) if length else b""
        try:
            self._maybe_fail(path)
            with self.double.lock:
                self._route(method, path)
        except _Reply as reply:
            self._send(reply.status, reply.body, reply.headers)
        except Exception as exc:  # a bug here answers like Keycloak's 500
            self._send(500, {"error": "unknown_error", "error_description": repr(exc)})

    def _maybe_fail(self, path: str) -> None:
        with self.double.lock:
            match = next(
                (
                    i
                    for i, (_, prefix) in enumerate(self.double._failures)
                    if prefix is None or path.startswith(prefix)
                ),
                None,
            )
            if match is None:
                return
            status, _ = self.double._failures.pop(match)
        if status == 500:
            raise _Reply(500, {"error": "unknown_error"})
        # 502/503/504 come from the proxy in front of Keycloak, as HTML.
        raise _Reply(status, f"<html><body><h1>{status} Service Unavailable</h1></body></html>")

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        # Logged before answering, so a test that got the answer also sees the entry.
        with self.double.lock:
            self.double.requests.append((self.command, urlsplit(self.path).path, status))
        if body is None:
            data, ctype = b"", None
        elif isinstance(body, str):
            data, ctype = body.encode(), "text/html;charset=UTF-8"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _json(self) -> Any:
        try:
            return json.loads(self.raw_body or b"null")
        except ValueError:
            raise _Reply(400, {"error": "unknown_error"}) from None

    def _form(self) -> dict[str, str]:
        return {
            k: v[-1] for k, v in parse_qs(self.raw_body.decode(), keep_blank_values=True).items()
        }

    # -- routes -----------------------------------------------------------------------
    def _route(self, method: str, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["health", "ready"] and method == "GET":
            raise _Reply(200, {"status": "UP", "checks": []})
        if parts[:1] == ["admin"] and parts[1:2] == ["realms"]:
            self._admin(method, parts[2:])
        if parts[:1] == ["realms"] and len(parts) >= 2:
            self._oidc(method, parts[1], parts[2:])
        raise _Reply(404, {"error": "Unable to find matching target resource method"})

    def _oidc(self, method: str, name: str, rest: list[str]) -> None:
        realm = self.double.realms.get(name)
        if realm is None:
            raise _Reply(404, {"error": "Realm does not exist"})
        base = self.double.issuer(name)
        oidc = f"{base}/protocol/openid-connect"
        if rest == [] and method == "GET":
            der = realm.key.public_key().public_bytes(
                encoding=serialization.Encoding.DER,
                format=serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            raise _Reply(
                200,
                {
                    "realm": name,
                    "public_key": base64.b64encode(der).decode(),
                    "token-service": oidc,
                    "account-service": f"{base}/account",
                    "tokens-not-before": 0,
                },
            )
        if rest == [".well-known", "openid-configuration"] and method == "GET":
            raise _Reply(
                200,
                {
                    "issuer": base,
                    "authorization_endpoint": f"{oidc}/auth",
                    "token_endpoint": f"{oidc}/token",
                    "introspection_endpoint": f"{oidc}/token/introspect",
                    "userinfo_endpoint": f"{oidc}/userinfo",
                    "end_session_endpoint": f"{oidc}/logout",
                    "jwks_uri": f"{oidc}/certs",
                    "grant_types_supported": [
                        "authorization_code",
                        "implicit",
                        "refresh_token",
                        "password",
                        "client_credentials",
                    ],
                    "response_types_supported": [
                        "code",
                        "none",
                        "id_token",
                        "token",
                        "id_token token",
                        "code id_token",
                        "code token",
                        "code id_token token",
                    ],
                    "subject_types_supported": ["public", "pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_basic",
                        "client_secret_post",
                    ],
                    "scopes_supported": ["openid", "profile", "email"],
                    "claims_supported": [
                        "aud",
                        "sub",
                        "iss",
                        "auth_time",
                        "name",
                        "given_name",
                        "family_name",
                        "preferred_username",
                        "email",
                        "email_verified",
                        "acr",
                        "azp",
                    ],
                },
            )
        if rest == ["protocol", "openid-connect", "certs"] and method == "GET":
            raise _Reply(200, {"keys": [realm.jwk]})
        if rest == ["protocol", "openid-connect", "token"] and method == "POST":
            self._token(realm)
        if rest == ["protocol", "openid-connect", "userinfo"] and method in ("GET", "POST"):
            claims = self._bearer(realm, admin=False)
            user = realm.users.get(claims["sub"], {})
            info = {
                "sub": claims["sub"],
                "preferred_username": claims["preferred_username"],
                "email_verified": bool(user.get("emailVerified")),
            }
            for key in ("email", "given_name", "family_name", "name"):
                if key in claims:
                    info[key] = claims[key]
            raise _Reply(200, info)
        raise _Reply(404, {"error": "Unable to find matching target resource method"})

    def _client_auth(self, realm: _Realm, form: dict[str, str]) -> dict:
        client_id, secret = form.get("client_id") or "", form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError):
                basic_id, _, basic_secret = base64.b64decode(auth[6:]).decode().partition(":")
                client_id, secret = unquote(basic_id), unquote(basic_secret)
        if not client_id:
            raise _oauth_error(401, "invalid_client", "Missing parameter: client_id")
        client = realm.client_by_client_id(client_id)
        if client is None or not client["enabled"]:
            raise _oauth_error(
                401, "invalid_client", "Invalid client or Invalid client credentials"
            )
        if client["bearerOnly"]:
            raise _oauth_error(400, "invalid_client", "Bearer-only not allowed")
        if not client["publicClient"]:
            if not secret:
                raise _oauth_error(
                    401, "unauthorized_client", "Client secret not provided in request"
                )
            if not secrets.compare_digest(secret, client["secret"]):
                raise _oauth_error(
                    401, "unauthorized_client", "Invalid client or Invalid client credentials"
                )
        return client

    def _token(self, realm: _Realm) -> None:
        form = self._form()
        grant = form.get("grant_type")
        if not grant:
            raise _oauth_error(400, "invalid_request", "Missing form parameter: grant_type")
        if not realm.enabled:
            raise _oauth_error(403, "access_denied", "Realm not enabled")
        client = self._client_auth(realm, form)
        scope = form.get("scope") or ""
        if grant == "password":
            if not client["directAccessGrantsEnabled"]:
                raise _oauth_error(
                    400, "unauthorized_client", "Client not allowed for direct access grants"
                )
            username = form.get("username") or ""
            user = realm.user_by_username(username)
            if user is None and "@" in username:
                user = next(
                    (
                        u
                        for u in realm.users.values()
                        if (u.get("email") or "").lower() == username.lower()
                    ),
                    None,
                )
            password = realm.passwords.get(user["id"]) if user else None
            if password is None or not secrets.compare_digest(form.get("password") or "", password):
                raise _oauth_error(401, "invalid_grant", "Invalid user credentials")
            if not user["enabled"]:
                raise _oauth_error(400, "invalid_grant", "Account disabled")
            # Keycloak's default user profile requires these in every realm but master.
            required = () if realm.name == ADMIN_REALM else ("email", "firstName", "lastName")
            missing = [a for a in required if not user.get(a)]
            if missing or user.get("requiredActions"):
                raise _oauth_error(400, "invalid_grant", "Account is not fully set up")
            raise _Reply(200, self.double._issue(realm, client, user, scope))
        if grant == "refresh_token":
            claims = self.double.verify(
                realm, form.get("refresh_token") or "", typ="Refresh", check_session=False
            )
            if claims is None:
                raise _oauth_error(400, "invalid_grant", "Token is not active")
            if claims["sid"] not in realm.sessions:
                raise _oauth_error(400, "invalid_grant", "Session not active")
            if claims["azp"] != client["clientId"]:
                raise _oauth_error(
                    400,
                    "invalid_grant",
                    "Invalid refresh token. Token client and authorized client don't match",
                )
            user = realm.users.get(claims["sub"])
            raise _Reply(
                200, self.double._issue(realm, client, user, claims["scope"], claims["sid"])
            )
        if grant == "client_credentials":
            if client["publicClient"]:
                raise _oauth_error(
                    401,
                    "unauthorized_client",
                    "Public client not allowed to retrieve service account",
                )
            if not client["serviceAccountsEnabled"]:
                raise _oauth_error(
                    401, "unauthorized_client", "Client not enabled to retrieve service account"
                )
            raise _Reply(200, self.double._issue(realm, client, None, scope))
        raise _oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")

    def _bearer(self, realm: _Realm, admin: bool) -> dict:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if admin:
            # The admin API takes tokens of master (our model: only master's admin user).
            claims = self.double.verify(self.double.realms[ADMIN_REALM], token)
            if claims is None:
                raise _Reply(401, {"error": "HTTP 401 Unauthorized"})
            user = self.double.realms[ADMIN_REALM].users.get(claims["sub"])
            if not user or not user.get("admin"):
                raise _Reply(403, {"error": "HTTP 403 Forbidden"})
            return claims
        claims = self.double.verify(realm, token)
        if claims is None:
            raise _oauth_error(401, "invalid_token", "Token verification failed")
        return claims

    # -- admin API --------------------------------------------------------------------
    def _admin(self, method: str, rest: list[str]) -> None:
        self._bearer(self.double.realms[ADMIN_REALM], admin=True)
        realms = self.double.realms
        if not rest:
            if method == "GET":
                raise _Reply(200, [r.representation() for r in realms.values()])
            if method == "POST":
                rep = self._json()
                name = rep.get("realm") if isinstance(rep, dict) else None
                if not name:
                    raise _Reply(400, {"errorMessage": "Realm name cannot be empty"})
                if name in realms:
                    # Keycloak's text up to 26.2 (newer ones say "Realm <name> already exists").
                    raise _Reply(409, {"errorMessage": "Conflict detected. See logs for details"})
                realm = _Realm(
                    name,
                    enabled=bool(rep.get("enabled", False)),
                    display_name=rep.get("displayName"),
                )
                if rep.get("id"):
                    realm.id = rep["id"]
                if rep.get("accessTokenLifespan"):
                    realm.access_token_lifespan = int(rep["accessTokenLifespan"])
                else:
                    realm.access_token_lifespan = self.double.token_lifetime
                realms[name] = realm
                raise self._created(name)
            raise _Reply(405, {"error": "HTTP 405 Method Not Allowed"})
        realm = realms.get(rest[0])
        if realm is None:
            raise _Reply(404, {"error": "Realm not found."})
        sub = rest[1:]
        if not sub:
            if method == "GET":
                raise _Reply(200, realm.representation())
            if method == "PUT":
                rep = self._json() or {}
                if "enabled" in rep:
                    realm.enabled = bool(rep["enabled"])
                if "displayName" in rep:
                    realm.display_name = rep["displayName"]
                if rep.get("accessTokenLifespan"):
                    realm.access_token_lifespan = int(rep["accessTokenLifespan"])
                raise _Reply(204)
            if method == "DELETE":
                if realm.name == ADMIN_REALM:
                    raise _Reply(400, {"errorMessage": "Can't delete master realm"})
                del realms[realm.name]
                raise _Reply(204)
            raise _Reply(405, {"error": "HTTP 405 Method Not Allowed"})
        if sub[0] == "clients":
            self._clients(method, realm, sub[1:])
        if sub[0] == "users":
            self._users(method, realm, sub[1:])
        raise _Reply(404, {"error": "Unable to find matching target resource method"})

    def _clients(self, method: str, realm: _Realm, rest: list[str]) -> None:
        if not rest:
            if method == "GET":
                found = list(realm.clients.values())
                if "clientId" in self.query:
                    wanted = self.query["clientId"]
                    if self.query.get("search") == "true":
                        found = [c for c in found if wanted.lower() in c["clientId"].lower()]
                    else:
                        found = [c for c in found if c["clientId"] == wanted]
                raise _Reply(200, self._page(found))
            if method == "POST":
                rep = self._json()
                if not isinstance(rep, dict) or not rep.get("clientId"):
                    raise _Reply(400, {"errorMessage": "Client id is missing"})
                if realm.client_by_client_id(rep["clientId"]):
                    raise _Reply(409, {"errorMessage": f"Client {rep['clientId']} already exists"})
                for uri in rep.get("redirectUris") or []:
                    if not re.match(r"^(\*|/|[a-zA-Z][a-zA-Z0-9+.-]*:)", uri):
                        raise _Reply(
                            400,
                            {
                                "error": "invalid_input",
                                "error_description": "A redirect URI is not a valid URI",
                            },
                        )
                client = KeycloakDouble._client_defaults(rep)
                if client["publicClient"]:
                    client.pop("secret")
                realm.clients[client["id"]] = client
                raise self._created(f"{realm.name}/clients/{client['id']}")
            raise _Reply(405, {"error": "HTTP 405 Method Not Allowed"})
        client = realm.clients.get(rest[0])
        if client is None:
            raise _Reply(404, {"error": "Could not find client"})
        if rest[1:] == []:
            if method == "GET":
                raise _Reply(200, client)
            if method == "PUT":
                rep = self._json() or {}
                for key, value in rep.items():
                    if key not in ("id",):
                        client[key] = value
                if not client["publicClient"] and not client.get("secret"):
                    client["secret"] = secrets.token_urlsafe(24)
                raise _Reply(204)
            if method == "DELETE":
                del realm.clients[client["id"]]
                raise _Reply(204)
        if rest[1:] == ["client-secret"]:
            if client["publicClient"]:
                raise _Reply(400, {"error": "unknown_error"})
            if method == "POST":
                client["secret"] = secrets.token_urlsafe(24)
            if method in ("GET", "POST"):
                raise _Reply(200, {"type": "secret", "value": client["secret"]})
        raise _Reply(404, {"error": "Unable to find matching target resource method"})

    def _page(self, items: list) -> list:
        first = int(self.query.get("first") or 0)
        maximum = int(self.query.get("max") or 100)
        return items[first : first + maximum] if maximum >= 0 else items[first:]

    @staticmethod
    def _user_rep(user: dict) -> dict:
        rep = {k: v for k, v in user.items() if v is not None and k != "admin"}
        rep.setdefault("requiredActions", [])
        return rep

    def _users(self, method: str, realm: _Realm, rest: list[str]) -> None:
        if rest == ["count"] and method == "GET":
            raise _Reply(200, len(realm.users))
        if not rest:
            if method == "GET":
                found = list(realm.users.values())
                exact = self.query.get("exact") == "true"
                for param in ("username", "email", "firstName", "lastName"):
                    if param in self.query:
                        wanted = self.query[param].lower()

                        def keep(user: dict, param: str = param, wanted: str = wanted) -> bool:
                            have = (user.get(param) or "").lower()
                            return have == wanted if exact else wanted in have

                        found = [u for u in found if keep(u)]
                if "search" in self.query:
                    text = self.query["search"].lower().strip("*")
                    found = [
                        u
                        for u in found
                        if any(
                            text in (u.get(a) or "").lower()
                            for a in ("username", "email", "firstName", "lastName")
                        )
                    ]
                raise _Reply(200, [self._user_rep(u) for u in self._page(found)])
            if method == "POST":
                rep = self._json()
                if not isinstance(rep, dict) or not rep.get("username"):
                    raise _Reply(
                        400,
                        {
                            "field": "username",
                            "errorMessage": "error-user-attribute-required",
                            "params": ["username"],
                        },
                    )
                username = rep["username"].lower()
                if realm.user_by_username(username):
                    raise _Reply(409, {"errorMessage": "User exists with same username"})
                email = (rep.get("email") or "").lower() or None
                if email and any((u.get("email") or "") == email for u in realm.users.values()):
                    raise _Reply(409, {"errorMessage": "User exists with same email"})
                if email and not re.match(r"^[^@\s]+@[^@\s]+$", email):
                    raise _Reply(
                        400,
                        {
                            "field": "email",
                            "errorMessage": "error-invalid-email",
                            "params": ["email", email],
                        },
                    )
                user_id = str(uuid.uuid4())
                user = {
                    "id": user_id,
                    "username": username,
                    "email": email,
                    "firstName": rep.get("firstName") or None,
                    "lastName": rep.get("lastName") or None,
                    "enabled": bool(rep.get("enabled", False)),
                    "emailVerified": bool(rep.get("emailVerified", False)),
                    "requiredActions": list(rep.get("requiredActions") or []),
                    "attributes": dict(rep.get("attributes") or {}),
                    "createdTimestamp": int(time.time() * 1000),
                }
                realm.users[user_id] = user
                for cred in rep.get("credentials") or []:
                    if cred.get("type", "password") == "password" and cred.get("value"):
                        realm.passwords[user_id] = cred["value"]
                        if cred.get("temporary"):
                            user["requiredActions"].append("UPDATE_PASSWORD")
                raise self._created(f"{realm.name}/users/{user_id}")
            raise _Reply(405, {"error": "HTTP 405 Method Not Allowed"})
        user = realm.users.get(rest[0])
        if user is None:
            raise _Reply(404, {"error": "User not found"})
        if rest[1:] == []:
            if method == "GET":
                raise _Reply(200, self._user_rep(user))
            if method == "PUT":
                rep = self._json() or {}
                for key in (
                    "email",
                    "firstName",
                    "lastName",
                    "enabled",
                    "emailVerified",
                    "requiredActions",
                    "attributes",
                ):
                    if key in rep:
                        user[key] = rep[key].lower() if key == "email" and rep[key] else rep[key]
                raise _Reply(204)
            if method == "DELETE":
                del realm.users[user["id"]]
                realm.passwords.pop(user["id"], None)
                raise _Reply(204)
        if rest[1:] == ["reset-password"] and method == "PUT":
            cred = self._json() or {}
            if not cred.get("value"):
                raise _Reply(
                    400, {"error": "invalid_request", "error_description": "Missing password value"}
                )
            realm.passwords[user["id"]] = cred["value"]
            actions = [a for a in user.get("requiredActions", []) if a != "UPDATE_PASSWORD"]
            if cred.get("temporary"):
                actions.append("UPDATE_PASSWORD")
            user["requiredActions"] = actions
            raise _Reply(204)
        raise _Reply(404, {"error": "Unable to find matching target resource method"})


def decode_unverified(token: str) -> dict:
    """The claims of a JWT, unverified (for assertions in tests)."""
    return json.loads(_b64url_decode(token.split(".")[1]))


@pytest.fixture
def keycloak_double():
    """A running :class:`KeycloakDouble` (admin/admin), stopped after the test."""
    with KeycloakDouble() as double:
        yield double
