"""The SSO example recipe ``sso-site``: a real git repository with real tags, made on demand.

An app that logs its users in through OpenID Connect, reduced to what a CI run can check:
one service ``app`` (``ccci/web:<v>``, busybox) whose entrypoint writes what the app was
given for its login into ``/var/www/oidc.json`` and then serves ``/var/www`` with httpd:

- ``OIDC_ISSUER`` and ``OIDC_CLIENT_ID`` from the app env (the CI sets them per run to the
  run's realm on the warm Keycloak, docs/sso.md);
- the client secret from the swarm secret ``oidc_client_secret``, declared the way real
  recipes declare secrets an operator must supply:
  ``SECRET_OIDC_CLIENT_SECRET_VERSION=v1  # generate=false``.

Serving the client secret is only acceptable because it is a test app and the secret is
a per-run throw-away (its realm is deleted when the run ends): it lets the recipe's custom
test (catalog/sso-site/tests/test_login.py) log in with exactly what the app was given.
The entrypoint refuses to start without an issuer, a client id or the secret, so a run
that did not hand them over fails at install.

Tags ``1.0.0+1.0`` (image ``ccci/web:1.27``) and ``1.1.0+1.1`` (``ccci/web:1.28``), each
with ``releaseNotes/<tag>.md``. The domain, issuer and client change per run; nothing of
the app is kept in a volume (``oidc.json`` is rewritten at every start).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from support.recipes import HTML_ABRA_SH, dump_compose, external_secret, html_compose, make_recipe

NAME = "sso-site"

ENTRYPOINT = """\
#!/bin/sh
# Write what this app was given for its OpenID Connect login, then serve it.
set -e
: "${OIDC_ISSUER:?OIDC_ISSUER is not set: the app has no OpenID provider}"
: "${OIDC_CLIENT_ID:?OIDC_CLIENT_ID is not set: the app has no client}"
secret_file=/run/secrets/oidc_client_secret
if [ ! -s "$secret_file" ]; then
  echo "no client secret in $secret_file" >&2
  exit 1
fi
mkdir -p /var/www
printf '{"issuer": "%s", "client_id": "%s", "client_secret": "%s"}\\n' \\
  "$OIDC_ISSUER" "$OIDC_CLIENT_ID" "$(cat "$secret_file")" > /var/www/oidc.json
printf '<h1>sso-site %s</h1>\\n' "$(cat /etc/app-version)" > /var/www/index.html
exec httpd -f -p 80 -h /var/www
"""


def compose(image: str, version: str) -> str:
    """custom-html's compose file (same entrypoint config, volume, healthcheck and labels)
    with what the login needs: the provider's env and the client secret."""
    doc = yaml.safe_load(html_compose(image, version))
    app = doc["services"]["app"]
    app["environment"] += ["OIDC_ISSUER", "OIDC_CLIENT_ID"]
    app["secrets"] = ["oidc_client_secret"]
    doc["secrets"] = {"oidc_client_secret": external_secret("oidc_client_secret")}
    return dump_compose(doc)


ENV_SAMPLE = """\
TYPE=sso-site

DOMAIN=sso-site.example.com

LETS_ENCRYPT_ENV=production

COMPOSE_FILE="compose.yml"

## OpenID Connect: the provider's issuer and this app's client there.
OIDC_ISSUER=https://sso.example.com/realms/example
OIDC_CLIENT_ID=sso-site

## The client's secret: made by the OpenID provider, so it cannot be generated here.
SECRET_OIDC_CLIENT_SECRET_VERSION=v1  # generate=false
"""

README = """\
# sso-site

A site that logs its users in through OpenID Connect (issuer `OIDC_ISSUER`, client
`OIDC_CLIENT_ID`, client secret in the swarm secret `oidc_client_secret`). A test app:
it serves what it was given at `/oidc.json`.
"""


def make_sso_site(path: Path) -> dict:
    """Create the ``sso-site`` recipe at ``path`` (a new git repository) and describe it."""
    base = {
        ".env.sample": ENV_SAMPLE,
        "abra.sh": HTML_ABRA_SH,
        "entrypoint.sh": ENTRYPOINT,
        "README.md": README,
    }
    repo, tags = make_recipe(
        path,
        base,
        {
            "1.0.0+1.0": (compose("ccci/web:1.27", "1.0.0+1.0"), "First release.\n"),
            "1.1.0+1.1": (compose("ccci/web:1.28", "1.1.0+1.1"), "Web 1.28.\n"),
        },
    )
    return {
        "name": NAME,
        "path": str(repo),
        "tags": tags,
        "latest": "1.1.0+1.1",
        "previous": "1.0.0+1.0",
        "volumes": [],
        "services": ["app"],
        "secret": "oidc_client_secret",
    }


if __name__ == "__main__":  # pragma: no cover - from tests/: python -m support.sso_recipe DIR
    import json
    import sys

    print(json.dumps(make_sso_site(Path(sys.argv[1]) / NAME), indent=2))
