# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-run CI realms on the warm Keycloak (WC1). PRIVATE to the collection.

What ``keycloak_realm`` does, over the one transport :class:`_keycloak.KeycloakAdmin`:
make a run's realm, client and user (:meth:`CiRealms.present`), delete it
(:meth:`CiRealms.absent`), reap the realms of dead runs and list them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak import (
    KeycloakAdmin,
    KeycloakError,
    derive_secret,
    ensure_deletable,
    is_ci_realm,
    realms_to_reap,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._names import (
    ValidationError,
    parse_realm_name,
    realm_name,
    validate_run_id,
)


def _user_value(user: dict, key: str) -> Any:
    value = user.get(key)
    if key == "requiredActions":
        return list(value or [])
    if key in ("enabled", "emailVerified"):
        return bool(value)
    return value


#: The user fields ``present`` sets and compares (and returns, without secrets).
USER_KEYS = (
    "username",
    "email",
    "firstName",
    "lastName",
    "enabled",
    "emailVerified",
    "requiredActions",
)

#: The client fields a realm's summary and diff show.
CLIENT_KEYS = (
    "clientId",
    "publicClient",
    "standardFlowEnabled",
    "directAccessGrantsEnabled",
    "redirectUris",
)


@dataclass
class RealmSpec:
    """What ``state: present`` wants: a realm, one client and one user."""

    recipe: str
    run_id: str
    client_id: str | None = None
    redirect_uris: list[str] = field(default_factory=list)
    username: str = "ci-user"
    client_secret: str | None = None
    user_password: str | None = None

    def __post_init__(self) -> None:
        # Keycloak stores usernames (and emails) in lower case.
        self.username = (self.username or "").lower()
        if not self.username:
            raise ValidationError("username must not be empty")

    @property
    def realm(self) -> str:
        return realm_name(self.recipe, self.run_id)

    @property
    def client(self) -> str:
        return self.client_id or self.recipe

    @property
    def email(self) -> str:
        return f"{self.username}@{self.realm}.ci.invalid"


@dataclass
class Outcome:
    """What a state did (or would do, in check mode)."""

    changed: bool
    actions: list[str] = field(default_factory=list)
    diff: dict | None = None
    result: dict = field(default_factory=dict)


class CiRealms:
    """The CI's realms on one Keycloak: plan first, then act unless ``check_mode``."""

    def __init__(self, admin: KeycloakAdmin, secret_key: str) -> None:
        self.admin = admin
        self.secret_key = secret_key

    # present -----------------------------------------------------------------------------
    def present(self, spec: RealmSpec, check_mode: bool = False) -> Outcome:
        admin, realm = self.admin, spec.realm
        actions: list[str] = []
        want_client = admin.client_representation(spec.client, spec.redirect_uris)
        user_fields = admin.user_representation(spec.username, spec.email, "CI", spec.recipe)
        password = spec.user_password or derive_secret(self.secret_key, realm, "user-password")

        existing = admin.get_realm(realm)
        client = user = None
        client_changes: dict = {}
        current_secret: str | None = None
        user_changes: dict = {}
        secret = spec.client_secret
        if existing is None:
            actions += ["create realm", "create client", "create user", "set password"]
            secret = secret or derive_secret(self.secret_key, realm, "client-secret")
        else:
            if not existing.get("enabled"):
                actions.append("enable realm")
            client = admin.get_client_by_client_id(realm, spec.client)
            if client is None:
                actions.append("create client")
                secret = secret or derive_secret(self.secret_key, realm, "client-secret")
            else:
                client_changes = {
                    k: v
                    for k, v in want_client.items()
                    if k != "redirectUris" and client.get(k) != v
                }
                if sorted(client.get("redirectUris") or []) != sorted(spec.redirect_uris):
                    client_changes["redirectUris"] = list(spec.redirect_uris)
                if not client.get("publicClient"):
                    current_secret = admin.get_client_secret(realm, client["id"])
                if secret is not None and current_secret != secret:
                    client_changes["secret"] = secret
                secret = secret or current_secret
                if client_changes:
                    actions.append("update client " + ", ".join(sorted(client_changes)))
            user = admin.get_user_by_username(realm, spec.username)
            if user is None:
                actions += ["create user", "set password"]
            else:
                user_changes = {
                    k: v
                    for k, v in user_fields.items()
                    if k != "username" and _user_value(user, k) != v
                }
                if user_changes:
                    actions.append("update user " + ", ".join(sorted(user_changes)))
                # The password can only be tried where a login could succeed at all.
                testable = (
                    existing.get("enabled")
                    and client is not None
                    and client.get("enabled")
                    and client.get("directAccessGrantsEnabled")
                    and not user_changes
                )
                if not testable or not self._can_log_in(
                    realm, spec.client, current_secret, spec.username, password
                ):
                    actions.append("set password")

        before = self._summary(realm, existing, client, user)
        after = {
            "realm": realm,
            "enabled": True,
            "client": {k: want_client[k] for k in CLIENT_KEYS},
            "user": {k: user_fields[k] for k in USER_KEYS},
        }
        if not check_mode and actions:
            if existing is None:
                admin.create_realm(realm)
            elif "enable realm" in actions:
                admin.update_realm(realm, {"enabled": True})
            if client is None:
                client_uuid = admin.create_client(realm, spec.client, spec.redirect_uris, secret)
            else:
                client_uuid = client["id"]
                if client_changes:
                    admin.update_client(realm, client_uuid, client_changes)
            secret = admin.get_client_secret(realm, client_uuid)
            if user is None:
                user_id = admin.create_user(realm, spec.username, spec.email, "CI", spec.recipe)
            else:
                user_id = user["id"]
                if user_changes:
                    admin.update_user(realm, user_id, user_changes)
            if "set password" in actions:
                admin.set_password(realm, user_id, password)

        result = {
            "realm": realm,
            "client_id": spec.client,
            "username": spec.username,
            "credentials": {"client_secret": secret, "user_password": password},
        }
        result.update(self._endpoints(realm, exists=not check_mode or existing is not None))
        return Outcome(bool(actions), actions, {"before": before, "after": after}, result)

    def _can_log_in(
        self, realm: str, client_id: str, secret: str | None, username: str, password: str
    ) -> bool:
        try:
            self.admin.password_grant(realm, client_id, secret, username, password)
        except KeycloakError as exc:
            if exc.status in (400, 401):
                return False
            raise
        return True

    def _endpoints(self, realm: str, exists: bool) -> dict:
        if exists:
            config = self.admin.discovery(realm)
            return {"issuer": config["issuer"], "token_endpoint": config["token_endpoint"]}
        issuer = self.admin.issuer(realm)
        return {"issuer": issuer, "token_endpoint": f"{issuer}/protocol/openid-connect/token"}

    @staticmethod
    def _summary(realm: str, existing: dict | None, client: dict | None, user: dict | None) -> dict:
        if existing is None:
            return {}
        summary: dict[str, Any] = {"realm": realm, "enabled": bool(existing.get("enabled"))}
        if client is not None:
            summary["client"] = {k: client.get(k) for k in CLIENT_KEYS}
        if user is not None:
            summary["user"] = {k: user.get(k) for k in USER_KEYS}
        return summary

    # absent ------------------------------------------------------------------------------
    def absent(self, recipe: str, run_id: str, check_mode: bool = False) -> Outcome:
        realm = realm_name(recipe, run_id)
        ensure_deletable(realm)
        existing = self.admin.get_realm(realm)
        if existing is None:
            return Outcome(False, [], {"before": {}, "after": {}}, {"realm": realm})
        if not check_mode:
            self.admin.delete_realm(realm)
        return Outcome(
            True, ["delete realm"], {"before": {"realm": realm}, "after": {}}, {"realm": realm}
        )

    # reaped ------------------------------------------------------------------------------
    def reap(
        self, live_run_ids: Iterable[str], recipe: str | None = None, check_mode: bool = False
    ) -> Outcome:
        live = [validate_run_id(r) for r in live_run_ids]
        names = [r["realm"] for r in self.admin.list_realms()]
        doomed = realms_to_reap(names, live)
        if recipe is not None:
            doomed = [n for n in doomed if parse_realm_name(n)[0] == recipe]
        deleted = []
        for name in doomed:
            if check_mode or self.admin.delete_realm(name):
                deleted.append(name)
        kept = [n for n in names if n not in doomed]
        return Outcome(
            bool(deleted),
            [f"delete realm {n}" for n in deleted],
            {"before": {"realms": sorted(names)}, "after": {"realms": sorted(kept)}},
            {"deleted": deleted, "kept": kept},
        )

    # info --------------------------------------------------------------------------------
    def info(self) -> list[dict]:
        realms = []
        for rep in self.admin.list_realms():
            name = rep["realm"]
            parsed = parse_realm_name(name) if is_ci_realm(name) else None
            realms.append(
                {
                    "realm": name,
                    "enabled": bool(rep.get("enabled")),
                    "ci": parsed is not None,
                    "recipe": parsed[0] if parsed else None,
                    "run_id": parsed[1] if parsed else None,
                }
            )
        return realms
