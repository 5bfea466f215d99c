# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keycloak Admin REST client and per-run CI realms. PRIVATE to the collection: no
compatibility promises.

:class:`KeycloakAdmin` talks to Keycloak's Admin REST API (Keycloak >= 17, no ``/auth``
prefix; a base URL ending in ``/auth`` reaches older ones) with an admin token obtained by
password grant on realm ``master`` with client ``admin-cli``. The token is renewed before
it expires and once more when an answer says 401. Connection errors and 5xx answers are
retried with exponential back-off, bounded in attempts and in time, then end in one
:class:`KeycloakError` whose text is fit for the user and never holds a password or token.

:class:`CiRealms` builds what a CI run needs on top of it: a realm ``<recipe>-<run_id>``
with a confidential client and a fully set-up user (``present``), its deletion
(``absent``), the reaping of realms of dead runs and a listing. Only realms matching the
per-run pattern are ever deleted: ``master`` and any other realm never, whatever the
arguments (:func:`realms_to_reap`, and :meth:`KeycloakAdmin.delete_realm` refuses too).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

try:
    import httpx
except ImportError:  # the module fails with missing_required_lib (``_common.require``)
    httpx = None

from ansible_collections.coopcloud.ci.plugins.module_utils._common import CcciError
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    parse_realm_name,
)

ADMIN_REALM = "master"
ADMIN_CLIENT = "admin-cli"
#: Answers worth another try: the server or the proxy in front of it is unwell.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_BODY_LIMIT = 300


class KeycloakError(CcciError):
    """One failed exchange with Keycloak.

    ``status`` is the HTTP status (``None`` when no answer came), ``message`` the error
    Keycloak gave in any of its three shapes (``errorMessage``; ``error``; OAuth ``error``
    + ``error_description``), ``body`` the answer's text (shortened). ``str()`` is one
    sentence for the user: what was attempted, at which URL, and what came back.
    """

    def __init__(
        self, status: int | None, message: str, body: str = "", *, action: str = "", url: str = ""
    ) -> None:
        self.action = action
        self.url = url
        super().__init__(message, status=status, body=body)
        self.args = (self.sentence(),)

    def sentence(self) -> str:
        what = self.action or "Keycloak request failed"
        evidence = f"{self.status} {self.message}" if self.status is not None else self.message
        return f"{what}: {evidence}".rstrip(": ")

    def matches(self, status: int, text: str = "") -> bool:
        """True when the status is ``status`` and the message contains ``text`` (any case)."""
        return self.status == status and text.lower() in (self.message or "").lower()


class RealmRefused(ValidationError):
    """An attempt to delete a realm that is not a per-run CI realm."""


def error_message(body: Any, text: str = "") -> str:
    """Keycloak's error from an answer body in any of its shapes, else the raw text."""
    if isinstance(body, dict):
        error = body.get("error")
        description = body.get("error_description")
        if error and description:
            return f"{error}: {description}"
        for key in ("errorMessage", "error", "error_description", "message"):
            if body.get(key):
                return str(body[key])
    text = " ".join((text or "").split())
    return text[:_BODY_LIMIT] if text else "(empty answer)"


def is_ci_realm(name: str) -> bool:
    """True when ``name`` is a per-run CI realm ``<recipe>-<6 hex>``."""
    return name != ADMIN_REALM and parse_realm_name(name) is not None


def ensure_deletable(name: str) -> str:
    """``name`` when it is a per-run CI realm; raise :class:`RealmRefused` otherwise."""
    if not isinstance(name, str) or not is_ci_realm(name):
        raise RealmRefused(
            f"refusing to delete Keycloak realm {name!r}: only per-run CI realms named "
            "<recipe>-<6 hex digits> are ever deleted, never 'master' or any other realm"
        )
    return name


def realms_to_reap(realm_names: Iterable[str], live_run_ids: Iterable[str]) -> list[str]:
    """The per-run CI realms among ``realm_names`` whose run id is not live, in order.

    ``master`` and every realm not matching ``<recipe>-<6 hex>`` are never returned,
    whatever the arguments.
    """
    live = {r for r in live_run_ids if isinstance(r, str)}
    doomed = []
    for name in realm_names:
        if not isinstance(name, str) or not is_ci_realm(name):
            continue
        _recipe, run_id = parse_realm_name(name)
        if run_id not in live:
            doomed.append(name)
    return doomed


def derive_secret(key: str, realm: str, purpose: str) -> str:
    """A secret for ``purpose`` in ``realm``, derived from ``key`` (HMAC-SHA256, 40 hex).

    Used when the caller gives no secret: the same realm yields the same value again (so
    a second identical run changes nothing), different realms different values, and the
    key cannot be recovered from it.
    """
    digest = hmac.new(key.encode(), f"coopcloud.ci/{realm}/{purpose}".encode(), hashlib.sha256)
    return digest.hexdigest()[:40]


def _seg(value: str) -> str:
    return quote(value, safe="")


class KeycloakAdmin:
    """A synchronous client of the Keycloak Admin REST API (httpx)."""

    def __init__(
        self,
        base_url: str,
        admin_user: str,
        admin_password: str,
        *,
        validate_certs: bool = True,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_retry_time: float = 30.0,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValidationError(
                f"Keycloak URL {base_url!r} is invalid: give http(s)://host[:port] "
                "(add /auth only for Keycloak older than 17)"
            )
        self.base_url = base_url.rstrip("/")
        self.admin_user = admin_user
        self._password = admin_password
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_retry_time = max_retry_time
        self._http = httpx.Client(verify=validate_certs, timeout=timeout)
        self._token: str | None = None
        self._token_deadline = 0.0
        #: How many admin logins this client made (for tests and diagnostics).
        self.logins = 0

    def __repr__(self) -> str:
        return f"KeycloakAdmin({self.base_url!r}, admin_user={self.admin_user!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KeycloakAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ----------------------------------------------------------------------
    def _send(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on connection errors and 5xx, bounded in attempts and time."""
        url = self.base_url + path
        started = time.monotonic()
        attempts = self.retries + 1
        last: str = ""
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                status = None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                status = response.status_code
                last = f"{status} {error_message(_json_or_none(response), response.text)}"
            delay = self.backoff * (2 ** (attempt - 1))
            elapsed = time.monotonic() - started
            if attempt == attempts or elapsed + delay > self.max_retry_time:
                break
            time.sleep(delay)
        elapsed = time.monotonic() - started
        raise KeycloakError(
            status,
            f"no usable answer after {attempt} attempt(s) in {elapsed:.1f}s; last: {last}",
            action=f"{action}: Keycloak at {self.base_url} is unreachable or failing",
            url=url,
        )

    def _login(self) -> None:
        action = f"Keycloak at {self.base_url} refused the admin login for user {self.admin_user!r}"
        response = self._send(
            "POST",
            f"/realms/{ADMIN_REALM}/protocol/openid-connect/token",
            f"admin login for user {self.admin_user!r}",
            data={
                "grant_type": "password",
                "client_id": ADMIN_CLIENT,
                "username": self.admin_user,
                "password": self._password,
            },
        )
        body = _token_answer(response, action)
        self._token = body["access_token"]
        expires_in = float(body.get("expires_in") or 60)
        margin = min(10.0, expires_in / 5)
        self._token_deadline = time.monotonic() + expires_in - margin
        self.logins += 1

    def _bearer(self) -> str:
        if self._token is None or time.monotonic() >= self._token_deadline:
            self._login()
        return self._token  # type: ignore[return-value]

    def request(
        self,
        method: str,
        path: str,
        action: str,
        *,
        ok: Iterable[int] = (200,),
        allow: Iterable[int] = (),
        json: Any = None,
        params: dict | None = None,
    ) -> httpx.Response:
        """An authenticated admin request. Statuses in ``ok`` and ``allow`` are returned;
        anything else raises :class:`KeycloakError` naming ``action``."""
        kwargs: dict[str, Any] = {}
        if json is not None:
            kwargs["json"] = json
        if params:
            kwargs["params"] = params
        for renewed in (False, True):
            headers = {"Authorization": f"Bearer {self._bearer()}", "Accept": "application/json"}
            response = self._send(method, path, action, headers=headers, **kwargs)
            if response.status_code == 401 and not renewed:
                self._token = None  # revoked or expired early: log in again, once
                continue
            break
        if response.status_code in set(ok) | set(allow):
            return response
        raise KeycloakError(
            response.status_code,
            error_message(_json_or_none(response), response.text),
            _redact(response.text),
            action=f"{action} at {self.base_url}",
            url=str(response.url),
        )

    # -- realms -------------------------------------------------------------------------
    def list_realms(self) -> list[dict]:
        """Every realm the admin sees (``RealmRepresentation``s)."""
        return self.request("GET", "/admin/realms", "could not list Keycloak realms").json()

    def get_realm(self, realm: str) -> dict | None:
        """The realm's representation, or ``None`` when it does not exist."""
        response = self.request(
            "GET",
            f"/admin/realms/{_seg(realm)}",
            f"could not read Keycloak realm {realm!r}",
            allow=(404,),
        )
        return None if response.status_code == 404 else response.json()

    def create_realm(
        self, realm: str, *, enabled: bool = True, display_name: str | None = None
    ) -> bool:
        """Create ``realm``: ``True`` when created, ``False`` when it already existed."""
        rep: dict[str, Any] = {"realm": realm, "enabled": enabled}
        if display_name:
            rep["displayName"] = display_name
        response = self.request(
            "POST",
            "/admin/realms",
            f"could not create Keycloak realm {realm!r}",
            ok=(201,),
            allow=(400, 409),
            json=rep,
        )
        if response.status_code == 201:
            return True
        message = error_message(_json_or_none(response), response.text)
        # 409 (Keycloak 26.2.4 answered 400 "Realm <name> already exists" for a while).
        if response.status_code == 409 or "already exists" in message:
            return False
        raise KeycloakError(
            400,
            message,
            _redact(response.text),
            action=f"could not create Keycloak realm {realm!r} at {self.base_url}",
        )

    def update_realm(self, realm: str, changes: dict) -> None:
        """PUT ``changes`` (top-level realm attributes) onto ``realm``."""
        self.request(
            "PUT",
            f"/admin/realms/{_seg(realm)}",
            f"could not update Keycloak realm {realm!r}",
            ok=(204,),
            json=changes,
        )

    def delete_realm(self, realm: str) -> bool:
        """Delete the per-run CI realm ``realm``: ``True`` when deleted, ``False`` when absent.

        Raises :class:`RealmRefused` (before any request) for ``master`` and any realm not
        matching ``<recipe>-<6 hex>``.
        """
        ensure_deletable(realm)
        response = self.request(
            "DELETE",
            f"/admin/realms/{_seg(realm)}",
            f"could not delete Keycloak realm {realm!r}",
            ok=(204,),
            allow=(404,),
        )
        return response.status_code == 204

    # -- clients and users share one shape: look up, create, update ---------------------
    def _find(self, realm: str, kind: str, name: str, params: dict) -> list[dict]:
        return self.request(
            "GET",
            f"/admin/realms/{_seg(realm)}/{kind}s",
            f"could not look up {kind} {name!r} in Keycloak realm {realm!r}",
            params=params,
        ).json()

    def _create(self, realm: str, kind: str, name: str, rep: dict) -> str:
        """POST a new client or user; its id from the ``Location`` header."""
        response = self.request(
            "POST",
            f"/admin/realms/{_seg(realm)}/{kind}s",
            f"could not create {kind} {name!r} in Keycloak realm {realm!r}",
            ok=(201,),
            json=rep,
        )
        return _id_from_location(response, f"{kind} {name!r}")

    def _update(self, realm: str, kind: str, ident: str, changes: dict) -> None:
        self.request(
            "PUT",
            f"/admin/realms/{_seg(realm)}/{kind}s/{_seg(ident)}",
            f"could not update {kind} {ident!r} in Keycloak realm {realm!r}",
            ok=(204,),
            json=changes,
        )

    # -- clients ------------------------------------------------------------------------
    def get_client_by_client_id(self, realm: str, client_id: str) -> dict | None:
        """The client whose ``clientId`` is ``client_id`` (exact), or ``None``."""
        found = self._find(realm, "client", client_id, {"clientId": client_id})
        return next((c for c in found if c.get("clientId") == client_id), None)

    @staticmethod
    def client_representation(
        client_id: str, redirect_uris: list[str], secret: str | None = None
    ) -> dict:
        """What we want of an app's client: confidential, standard flow and direct grants."""
        rep: dict[str, Any] = {
            "clientId": client_id,
            "enabled": True,
            "protocol": "openid-connect",
            "publicClient": False,
            "clientAuthenticatorType": "client-secret",
            "standardFlowEnabled": True,
            "directAccessGrantsEnabled": True,
            "implicitFlowEnabled": False,
            "redirectUris": list(redirect_uris),
        }
        if secret is not None:
            rep["secret"] = secret
        return rep

    def create_client(
        self, realm: str, client_id: str, redirect_uris: list[str], secret: str | None = None
    ) -> str:
        """Create a confidential client with direct access grants; returns its id (UUID)."""
        rep = self.client_representation(client_id, redirect_uris, secret)
        return self._create(realm, "client", client_id, rep)

    def update_client(self, realm: str, client_uuid: str, changes: dict) -> None:
        """PUT ``changes`` onto the client ``client_uuid``."""
        self._update(realm, "client", client_uuid, changes)

    def get_client_secret(self, realm: str, client_uuid: str) -> str:
        """The client's current secret (``GET .../clients/{id}/client-secret``)."""
        response = self.request(
            "GET",
            f"/admin/realms/{_seg(realm)}/clients/{_seg(client_uuid)}/client-secret",
            f"could not read the client secret in Keycloak realm {realm!r}",
        )
        return response.json()["value"]

    # -- users --------------------------------------------------------------------------
    def get_user_by_username(self, realm: str, username: str) -> dict | None:
        """The user ``username`` (exact, Keycloak lowercases usernames), or ``None``."""
        found = self._find(realm, "user", username, {"username": username, "exact": "true"})
        return next((u for u in found if u.get("username", "").lower() == username.lower()), None)

    @staticmethod
    def user_representation(
        username: str,
        email: str,
        first_name: str,
        last_name: str,
        email_verified: bool = True,
        enabled: bool = True,
    ) -> dict:
        return {
            "username": username,
            "email": email,
            "firstName": first_name,
            "lastName": last_name,
            "emailVerified": email_verified,
            "enabled": enabled,
            "requiredActions": [],
        }

    def create_user(self, realm: str, *fields: Any, **options: Any) -> str:
        """Create the fully set-up user (no required actions) that
        :meth:`user_representation` makes of ``fields`` and ``options``; returns its id."""
        rep = self.user_representation(*fields, **options)
        return self._create(realm, "user", rep["username"], rep)

    def update_user(self, realm: str, user_id: str, changes: dict) -> None:
        self._update(realm, "user", user_id, changes)

    def set_password(
        self, realm: str, user_id: str, password: str, *, temporary: bool = False
    ) -> None:
        """Set the user's password (not temporary: no ``UPDATE_PASSWORD`` action follows)."""
        self.request(
            "PUT",
            f"/admin/realms/{_seg(realm)}/users/{_seg(user_id)}/reset-password",
            f"could not set the password of user {user_id!r} in Keycloak realm {realm!r}",
            ok=(204,),
            json={"type": "password", "value": password, "temporary": temporary},
        )

    # -- OIDC ---------------------------------------------------------------------------
    def password_grant(
        self,
        realm: str,
        client_id: str,
        client_secret: str | None,
        username: str,
        password: str,
        scope: str = "openid",
    ) -> dict:
        """Log ``username`` in by password grant; returns Keycloak's token answer."""
        data = {
            "grant_type": "password",
            "client_id": client_id,
            "username": username,
            "password": password,
            "scope": scope,
        }
        if client_secret:
            data["client_secret"] = client_secret
        action = f"login of user {username!r} with client {client_id!r} in Keycloak realm {realm!r}"
        response = self._send(
            "POST", f"/realms/{_seg(realm)}/protocol/openid-connect/token", action, data=data
        )
        return _token_answer(response, f"Keycloak at {self.base_url} refused the {action}")

    def discovery(self, realm: str) -> dict:
        """The realm's ``.well-known/openid-configuration``."""
        response = self._send(
            "GET",
            f"/realms/{_seg(realm)}/.well-known/openid-configuration",
            f"could not read the OpenID configuration of realm {realm!r}",
        )
        body = _json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise KeycloakError(
                response.status_code,
                error_message(body, response.text),
                _redact(response.text),
                action=f"could not read the OpenID configuration of Keycloak realm {realm!r} "
                f"at {self.base_url}",
                url=str(response.url),
            )
        return body

    def issuer(self, realm: str) -> str:
        """The issuer Keycloak announces for ``realm`` when reached at :attr:`base_url`."""
        return f"{self.base_url}/realms/{realm}"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _token_answer(response: httpx.Response, action: str) -> dict:
    """A token endpoint's answer holding an ``access_token``, else the
    :class:`KeycloakError` of its refusal."""
    body = _json_or_none(response)
    if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        raise KeycloakError(
            response.status_code,
            error_message(body, response.text),
            _redact(response.text),
            action=action,
            url=str(response.url),
        )
    return body


def _redact(text: str) -> str:
    """An answer body for error reports: shortened; token answers never reach here."""
    text = " ".join((text or "").split())
    return text[:_BODY_LIMIT]


def _id_from_location(response: httpx.Response, what: str) -> str:
    location = response.headers.get("Location", "")
    if not location:
        raise KeycloakError(
            response.status_code,
            "201 without a Location header",
            action=f"Keycloak created {what} but did not say where",
        )
    return location.rstrip("/").rsplit("/", 1)[-1]
