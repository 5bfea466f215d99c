"""``dbkeep``: an example recipe that behaves like a database, made on demand.

At first boot its entrypoint stores the SHA-256 of ``/run/secrets/db_password`` in its
volume (as Postgres stores the password ``POSTGRES_PASSWORD_FILE`` names); at every later
start it refuses to serve, and exits, unless the secret it is given has that digest. So a
canonical seeded from a cold app's data only starts with the cold app's password.

Tags ``1.0.0+1.0`` (image ``ccci/web:1.28``) and ``1.1.0+1.1`` (``ccci/web:1.29``) are
healthy; the branch ``broken`` asks for an image that does not exist. The secret is
declared the way real recipes declare it (``SECRET_DB_PASSWORD_VERSION=v1 # length=32``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from support.recipes import (
    CI_OVERLAY,
    HTML_ABRA_SH,
    commit,
    dump_compose,
    external_secret,
    git,
    html_compose,
    init_repo,
)

NAME = "dbkeep"

ENTRYPOINT = """\
#!/bin/sh
# A database in miniature: initialise with the password at first boot, then insist on it.
set -e
given=$(sha256sum < /run/secrets/db_password | cut -d' ' -f1)
if [ ! -f /var/lib/db/password.sha256 ]; then
  echo "$given" > /var/lib/db/password.sha256
  mkdir -p /var/lib/db/www
  printf '<h1>%s</h1>\\n' "${DOMAIN}" > /var/lib/db/www/index.html
fi
if [ "$(cat /var/lib/db/password.sha256)" != "$given" ]; then
  echo "FATAL: password authentication failed for user db" >&2
  exit 1
fi
exec httpd -f -p 80 -h /var/lib/db/www
"""

ENV_SAMPLE = """\
TYPE=dbkeep

DOMAIN=dbkeep.example.com

COMPOSE_FILE="compose.yml"

SECRET_DB_PASSWORD_VERSION=v1  # length=32
"""

CATALOG_ENTRY = """\
---
recipe: dbkeep
warm_canonical: true
sso: null
stages: [install, upgrade, serving]
http:
  service: app
  port: 80
health:
  path: /index.html
  status: [200]
  body: "<h1>"
  timeout: 90
  interval: 2
overlays: []
env: {}
upgrade_from: previous
"""


def compose(image: str, version: str) -> str:
    """custom-html's compose file with a password: the secret, its volume, fewer restarts."""
    doc = yaml.safe_load(html_compose(image, version))
    app = doc["services"]["app"]
    app["secrets"] = ["db_password"]
    app["volumes"] = ["data:/var/lib/db"]
    app["deploy"]["restart_policy"]["max_attempts"] = 2
    doc["secrets"] = {"db_password": external_secret("db_password")}
    doc["volumes"] = {"data": None}
    return dump_compose(doc)


def make_dbkeep(recipes_dir: Path) -> dict:
    """The recipe's git repository under ``recipes_dir`` (made once per folder)."""
    repo = Path(recipes_dir) / NAME
    if (repo / ".git").exists():
        git(repo, "checkout", "-q", "main")
    else:
        init_repo(repo)
        base = {".env.sample": ENV_SAMPLE, "entrypoint.sh": ENTRYPOINT, "abra.sh": HTML_ABRA_SH,
                "compose.ci.yml": CI_OVERLAY, "README.md": "# dbkeep\n"}  # fmt: skip
        commit(
            repo,
            "dbkeep 1.0.0+1.0",
            {**base, "compose.yml": compose("ccci/web:1.28", "1.0.0+1.0")},
            tag="1.0.0+1.0",
        )
        commit(
            repo,
            "dbkeep 1.1.0+1.1",
            {"compose.yml": compose("ccci/web:1.29", "1.1.0+1.1")},
            tag="1.1.0+1.1",
        )
        git(repo, "checkout", "-q", "-b", "broken")
        commit(
            repo,
            "dbkeep: an image that does not exist",
            {"compose.yml": compose("ccci/web:9.99-doesnotexist", "1.2.0+9.99")},
        )
        git(repo, "checkout", "-q", "main")
    return {"name": NAME, "latest": "1.1.0+1.1", "previous": "1.0.0+1.0",
            "broken_branch": "broken", "volumes": ["data"]}  # fmt: skip


def make_catalog(dest: Path) -> Path:
    """A catalog holding only ``dbkeep`` (enrolled), for ``ccci_catalog_dir``."""
    (dest / NAME).mkdir(parents=True, exist_ok=True)
    (dest / NAME / "recipe.yml").write_text(CATALOG_ENTRY)
    return dest
