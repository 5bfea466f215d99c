"""The example recipes: real git repositories with real tags, made on demand.

Nothing here is committed as a blob: :func:`make_examples` writes each recipe's files
commit by commit and tags them the way Co-op Cloud recipes are tagged
(``<recipe-semver>+<app-version>``). Every later test and the demo use these.

``custom-html`` (example a) — a stateful static site: one service ``app`` serving files
from one named volume ``content``. On first start its entrypoint writes ``index.html``
(first-boot data initialisation). Tags ``1.0.0+1.28`` and ``1.1.0+1.29`` are healthy;
the branch ``broken`` points at a commit whose image tag does not exist.

``notes`` (example b) — two services (``app`` serving ``content``, ``db`` keeping
``data``), two volumes, a versioned secret, a golang-templated config whose version comes
from ``abra.sh``, and an overlay in a subfolder selected through ``COMPOSE_FILE``
(``db/compose.db-tune.yml``), with ``releaseNotes/<tag>.md`` for each release.

Both carry ``compose.ci.yml``, the CI overlay that publishes the app's port 80 on the
host (``mode: host``: this kernel has no IPVS, so ingress publishing does not answer) at
``${CI_HTTP_PORT}``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

GIT_ENV = {
    "GIT_AUTHOR_NAME": "ccci examples",
    "GIT_AUTHOR_EMAIL": "examples@ccci.invalid",
    "GIT_COMMITTER_NAME": "ccci examples",
    "GIT_COMMITTER_EMAIL": "examples@ccci.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    # one date for every commit and tag: each worker's examples get the same commit ids,
    # so a canonical seeded from one worker's (tests/support/seeds.py) fits the others'
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    )
    return out.stdout.strip()


def write_files(repo: Path, files: dict[str, str | None]) -> None:
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit(repo: Path, message: str, files: dict[str, str | None], tag: str | None = None) -> str:
    """Write ``files`` (``None`` deletes), commit, optionally add an annotated tag."""
    write_files(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", "-a", "-m", f"release {tag}", tag)
    return git(repo, "rev-parse", "HEAD")


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return path


def release(repo: Path, version: str, compose: str, notes: str, files: dict | None = None) -> str:
    """Commit a release the way recipes do: its ``compose.yml`` and ``releaseNotes/<tag>.md``
    (plus ``files``), message ``<recipe> <version>``, annotated tag ``version``."""
    release_files = {"compose.yml": compose, f"releaseNotes/{version}.md": notes}
    return commit(repo, f"{repo.name} {version}", {**(files or {}), **release_files}, tag=version)


def make_recipe(
    path: Path, files: dict[str, str], releases: dict[str, tuple[str, str]]
) -> tuple[Path, dict[str, str]]:
    """A new recipe repository at ``path`` (named after its folder): ``files`` and then each
    release ``{version: (compose.yml, release notes)}``, oldest first, committed and tagged.
    Returns the repository and ``{version: commit}``."""
    repo = init_repo(Path(path))
    tags: dict[str, str] = {}
    for version, (compose, notes) in releases.items():
        tags[version] = release(repo, version, compose, notes, {} if tags else files)
    return repo, tags


def external_secret(name: str) -> dict:
    """The top-level compose entry of a versioned secret the way abra names it."""
    stack_name = "${STACK_NAME}"
    return {"external": True, "name": f"{stack_name}_{name}_${{SECRET_{name.upper()}_VERSION}}"}


def dump_compose(doc: dict) -> str:
    return "---\n" + yaml.safe_dump(doc, sort_keys=False)


# --- example (a): custom-html ---------------------------------------------------------

HTML_ENTRYPOINT = """\
#!/bin/sh
# First boot: initialise the site once, like a real app initialises its data.
set -e
if [ ! -f /var/www/index.html ]; then
  printf '<h1>%s</h1>\\n' "${DOMAIN}" > /var/www/index.html
  printf 'initialised %s\\n' "$(cat /etc/app-version)" > /var/www/.initialised
fi
cp /etc/app-version /var/www/.served-by 2>/dev/null || true
exec httpd -f -p 80 -h /var/www
"""


def html_compose(image: str, version: str) -> str:
    return f"""\
---
version: "3.8"

services:
  app:
    image: {image}
    entrypoint: ["/bin/sh", "/docker-entrypoint.sh"]
    # busybox httpd and sh ignore SIGTERM: do not wait 10 s for each stop.
    stop_grace_period: 1s
    environment:
      - DOMAIN
    configs:
      - source: entrypoint
        target: /docker-entrypoint.sh
        mode: 0555
    volumes:
      - content:/var/www
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/index.html"]
      interval: 2s
      timeout: 2s
      retries: 5
      start_period: 2s
    deploy:
      restart_policy:
        condition: on-failure
        max_attempts: 3
      labels:
        - "traefik.enable=true"
        - "traefik.http.routers.${{STACK_NAME}}.rule=Host(`${{DOMAIN}}`)"
        - "traefik.http.services.${{STACK_NAME}}.loadbalancer.server.port=80"
        - "coop-cloud.${{STACK_NAME}}.version={version}"

configs:
  entrypoint:
    name: ${{STACK_NAME}}_entrypoint_${{ENTRYPOINT_VERSION}}
    file: entrypoint.sh

volumes:
  content:
"""


CI_OVERLAY = """\
---
# CI overlay: publish the app on the host so tests reach it over real HTTP.
version: "3.8"

services:
  app:
    ports:
      - target: 80
        published: ${CI_HTTP_PORT}
        protocol: tcp
        mode: host
"""

HTML_ENV = """\
TYPE=custom-html

DOMAIN=custom-html.example.com

## Domain aliases
#EXTRA_DOMAINS=',`www.custom-html.example.com`'

LETS_ENCRYPT_ENV=production

COMPOSE_FILE="compose.yml"
#COMPOSE_FILE="$COMPOSE_FILE:compose.ci.yml"
"""

HTML_ABRA_SH = """\
# Versions of the configs: bump when the file changes so swarm makes a new config.
export ENTRYPOINT_VERSION=v1
"""


def make_custom_html(path: Path) -> dict:
    base = {
        ".env.sample": HTML_ENV,
        "abra.sh": HTML_ABRA_SH,
        "entrypoint.sh": HTML_ENTRYPOINT,
        "compose.ci.yml": CI_OVERLAY,
        "README.md": "# custom-html\n\nA static site served from one volume.\n",
    }
    repo, tags = make_recipe(
        path,
        base,
        {
            "1.0.0+1.28": (html_compose("ccci/web:1.28", "1.0.0+1.28"), "First release.\n"),
            "1.1.0+1.29": (html_compose("ccci/web:1.29", "1.1.0+1.29"), "Upgrade to web 1.29.\n"),
        },
    )
    git(repo, "checkout", "-q", "-b", "broken")
    bad = commit(
        repo,
        "custom-html: try web 9.99 (this image does not exist)",
        {"compose.yml": html_compose("ccci/web:9.99-doesnotexist", "1.2.0+9.99")},
    )
    git(repo, "checkout", "-q", "main")
    return {
        "name": "custom-html",
        "path": str(repo),
        "tags": tags,
        "latest": "1.1.0+1.29",
        "previous": "1.0.0+1.28",
        "broken_ref": bad,
        "broken_branch": "broken",
        "volumes": ["content"],
        "services": ["app"],
    }


# --- example (b): notes ----------------------------------------------------------------

NOTES_DB_ENTRYPOINT = """\
#!/bin/sh
# {{ .Service.Name }} — rendered by swarm's golang template driver.
set -e
if [ ! -f /data/notes.db ]; then
  printf 'schema=1\\n' > /data/notes.db
fi
echo "db ready (password of $(wc -c < /run/secrets/db_password) bytes)" > /data/ready
exec sh -c 'while :; do sleep 3600; done'
"""


def notes_compose(web: str, version: str) -> str:
    return f"""\
---
version: "3.8"

services:
  app:
    image: {web}
    command: ["httpd", "-f", "-p", "80", "-h", "/srv/notes"]
    stop_grace_period: 1s
    environment:
      - DOMAIN
      - NOTES_TITLE=${{NOTES_TITLE:-Notes}}
    volumes:
      - content:/srv/notes
    deploy:
      labels:
        - "traefik.enable=true"
        - "traefik.http.routers.${{STACK_NAME}}.rule=Host(`${{DOMAIN}}`)"
        - "coop-cloud.${{STACK_NAME}}.version={version}"

  db:
    image: ccci/busybox:latest
    entrypoint: ["/bin/sh", "/entrypoint.db.sh"]
    stop_grace_period: 1s
    secrets:
      - db_password
    configs:
      - source: db_entrypoint
        target: /entrypoint.db.sh
        mode: 0555
    volumes:
      - data:/data

secrets:
  db_password:
    external: true
    name: ${{STACK_NAME}}_db_password_${{SECRET_DB_PASSWORD_VERSION}}

configs:
  db_entrypoint:
    name: ${{STACK_NAME}}_db_entrypoint_${{DB_ENTRYPOINT_VERSION}}
    file: entrypoint.db.sh.tmpl
    template_driver: golang

volumes:
  content:
  data:
"""


NOTES_TUNE = """\
---
# Tuning overlay, selected through COMPOSE_FILE.
version: "3.8"

services:
  db:
    environment:
      - DB_CACHE_MB=${DB_CACHE_MB:-64}
    deploy:
      labels:
        - "ccci.example.overlay=db-tune"
"""

NOTES_ENV = """\
TYPE=notes

DOMAIN=notes.example.com

COMPOSE_FILE="compose.yml"
COMPOSE_FILE="$COMPOSE_FILE:db/compose.db-tune.yml"
#COMPOSE_FILE="$COMPOSE_FILE:compose.ci.yml"

NOTES_TITLE="Our notes"
DB_CACHE_MB=128

SECRET_DB_PASSWORD_VERSION=v1  # length=32 charset=hex
#SECRET_SMTP_PASSWORD_VERSION=v1  # generate=false
"""

NOTES_ABRA_SH = """\
export DB_ENTRYPOINT_VERSION=v2
"""


def make_notes(path: Path) -> dict:
    base = {
        ".env.sample": NOTES_ENV,
        "abra.sh": NOTES_ABRA_SH,
        "entrypoint.db.sh.tmpl": NOTES_DB_ENTRYPOINT,
        "db/compose.db-tune.yml": NOTES_TUNE,
        "compose.ci.yml": CI_OVERLAY,
        "README.md": "# notes\n\nA web front and a db, two volumes.\n",
    }
    repo, tags = make_recipe(
        path,
        base,
        {
            "1.0.0+2.0": (notes_compose("ccci/web:2.0", "1.0.0+2.0"), "First release.\n"),
            "1.1.0+2.1": (
                notes_compose("ccci/web:2.1", "1.1.0+2.1"),
                "Web 2.1; the db cache is now tunable.\n",
            ),
        },
    )
    return {
        "name": "notes",
        "path": str(repo),
        "tags": tags,
        "latest": "1.1.0+2.1",
        "previous": "1.0.0+2.0",
        "volumes": ["content", "data"],
        "services": ["app", "db"],
        "overlay": "db/compose.db-tune.yml",
    }


def make_examples(recipes_dir: Path) -> dict[str, dict]:
    """Create both example recipes under ``recipes_dir`` (one folder per recipe)."""
    recipes_dir = Path(recipes_dir)
    return {
        "custom-html": make_custom_html(recipes_dir / "custom-html"),
        "notes": make_notes(recipes_dir / "notes"),
    }


if __name__ == "__main__":  # pragma: no cover - a convenience for people
    import json
    import sys

    print(json.dumps(make_examples(Path(sys.argv[1])), indent=2))
