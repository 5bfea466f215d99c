"""Stand-ins for warm infrastructure: real git recipes the reconcile play upgrades.

``warm-kv`` stands in for a stateful piece (Keycloak): one service ``app`` keeping its
data in the volume ``data`` (mounted at ``/var/lib/kv``) and answering ``GET /health``
with ``ok <app version>`` (busybox httpd; ``/data/`` serves the data folder).

``warm-proxy`` stands in for a stateless piece (Traefik): the same health endpoint, no
volume.

Each version is a commit with an annotated tag ``<recipe-semver>+<app-version>`` and
``releaseNotes/<tag>.md``. The versions (:data:`VERSIONS`):

``1.0.0+2.0``  the base, healthy (image ``ccci/web:2.0``)
``1.1.0+2.1``  a healthy newer version
``1.2.0+2.2``  a broken newer version. warm-kv: the container starts, "migrates" every
               file of its data volume (overwrites it), and answers ``/health`` with
               ``error ...``, so the HTTP gate fails while the swarm sees it running.
               warm-proxy: its image tag does not exist, so the deploy itself fails.
``1.3.0+2.2``  healthy, but its release notes call for a manual migration
``2.0.0+3.0``  a major bump of both parts, healthy

Tests build one repository per scenario with :func:`make_infra_recipe` and add later
versions with :func:`add_version`, so "the latest version" is always the one under test.
"""

from __future__ import annotations

from pathlib import Path

from support.recipes import commit, git, init_repo, release

VERSIONS = ["1.0.0+2.0", "1.1.0+2.1", "1.2.0+2.2", "1.3.0+2.2", "2.0.0+3.0"]
BASE, HEALTHY, BROKEN, MIGRATION, MAJOR = VERSIONS

HEALTH = {"path": "/health", "status": [200], "body": "^ok "}

MIGRATION_NOTES = """\
# 1.3.0+2.2

Manual migration required: export the realms with `kv-admin export` before upgrading,
then import them into the new schema.
"""

NOTES = {
    BASE: "First release.\n",
    HEALTHY: "Web 2.1. No breaking changes.\n",
    BROKEN: "Web 2.2 with the new storage schema.\n",
    MIGRATION: MIGRATION_NOTES,
    MAJOR: "Web 3.0.\n",
}

# The container's script ($$ is compose's escape for a literal $).
HEALTHY_START = """\
mkdir -p /srv /var/lib/kv
echo "ok $$(cat /etc/app-version)" > /srv/health
ln -sfn /var/lib/kv /srv/data
[ -f /var/lib/kv/created-by ] || cat /etc/app-version > /var/lib/kv/created-by
exec httpd -f -p 80 -h /srv
"""

BROKEN_START = """\
mkdir -p /srv /var/lib/kv
for f in /var/lib/kv/*; do [ -f "$$f" ] && echo "schema 3" > "$$f"; done
echo 3 > /var/lib/kv/schema
echo "error: schema 3 is not readable by this build" > /srv/health
ln -sfn /var/lib/kv /srv/data
exec httpd -f -p 80 -h /srv
"""

PROXY_START = """\
mkdir -p /srv
echo "ok $$(cat /etc/app-version)" > /srv/health
exec httpd -f -p 80 -h /srv
"""


def _indent(script: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line + "\n" for line in script.splitlines())


def _image(recipe: str, version: str) -> str:
    if recipe == "warm-proxy" and version == BROKEN:
        return "ccci/web:9.99-doesnotexist"
    return "ccci/web:" + version.split("+", 1)[1]


def compose(recipe: str, version: str) -> str:
    stateful = recipe == "warm-kv"
    script = PROXY_START
    if stateful:
        script = BROKEN_START if version == BROKEN else HEALTHY_START
    volume_lines = "    volumes:\n      - data:/var/lib/kv\n" if stateful else ""
    volumes = "\nvolumes:\n  data:\n" if stateful else ""
    return f"""\
---
version: "3.8"

services:
  app:
    image: {_image(recipe, version)}
    command:
      - sh
      - -c
      - |
{_indent(script, 8)}    # busybox httpd and sh ignore SIGTERM: do not wait 10 s for each stop.
    stop_grace_period: 1s
    environment:
      - DOMAIN
{volume_lines}    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/health"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 1s
    deploy:
      restart_policy:
        condition: on-failure
        max_attempts: 3
      labels:
        - "traefik.enable=true"
        - "coop-cloud.${{STACK_NAME}}.version={version}"
{volumes}"""


def env_sample(recipe: str) -> str:
    return f'TYPE={recipe}\n\nDOMAIN={recipe}.example.com\n\nCOMPOSE_FILE="compose.yml"\n'


def add_version(repo: Path, version: str) -> str:
    """Commit ``version`` of the recipe at ``repo`` (named after its folder) and tag it."""
    recipe = Path(repo).name
    if version not in VERSIONS:
        raise ValueError(f"unknown fixture version {version!r}; known: {VERSIONS}")
    return release(Path(repo), version, compose(recipe, version), NOTES[version])


def make_infra_recipe(recipes_dir: Path, recipe: str, versions: list[str]) -> dict:
    """Create ``<recipes_dir>/<recipe>`` (``warm-kv`` or ``warm-proxy``) with ``versions``
    committed and tagged in this order. Returns ``{name, path, tags: {version: commit}}``."""
    if recipe not in ("warm-kv", "warm-proxy"):
        raise ValueError(f"unknown infra recipe {recipe!r}")
    repo = init_repo(Path(recipes_dir) / recipe)
    commit(
        repo,
        f"{recipe}: recipe skeleton",
        {".env.sample": env_sample(recipe), "README.md": f"# {recipe}\n\nA CI stand-in.\n"},
    )
    tags = {v: add_version(repo, v) for v in versions}
    return {"name": recipe, "path": str(repo), "tags": tags}


def tags_of(repo: Path) -> list[str]:
    return git(Path(repo), "tag", "--list").split()
