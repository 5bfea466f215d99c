"""SSO recipes in the cold lane, on the real swarm, against the Keycloak test double.

A catalog entry with ``sso: keycloak`` (catalog/sso-site) makes the run create its own
realm ``<recipe>-<run_id>`` on the warm Keycloak before anything is deployed, hand the app
its issuer, client id and client secret (env + swarm secret) and the custom tests the
CCCI_OIDC_* variables, and delete the realm when the run finishes (SPEC WC1, docs/sso.md).
Keycloak is the double (tests/support/keycloak_double.py), a real HTTP server on loopback;
the recipe is ``sso-site`` (tests/support/sso_recipe.py), a real git repository.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.ansible import ROOT, dump, run_module, run_playbook
from support.fixtures import GREEN_COLD_STAGES, free_port, init_state
from support.keycloak_double import KeycloakDouble
from support.sso_recipe import make_sso_site

from ansible_collections.coopcloud.ci.plugins.module_utils._keycloak import derive_secret
from ansible_collections.coopcloud.ci.plugins.module_utils._names import cold_domain, stack_name

# no xdist_group: each test has its own Keycloak double, run ids and state dir (the
# module-scoped recipe is a git repository each worker makes for itself), so they spread
pytestmark = [pytest.mark.swarm, pytest.mark.slow]

RECIPE = "sso-site"
SUFFIX = "ccci.test"
PASSWORD = "sso-lanes-admin-pw"
PLANTED = "team-sso"  # a realm another team made: never touched
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


class RealmHistory(dict):
    """The double's realm table, remembering every realm made and the ones deleted."""

    def __init__(self, realms: dict) -> None:
        super().__init__(realms)
        self.created: list[str] = []
        self.deleted: dict[str, object] = {}
        self.events: list[tuple[str, str]] = []  # ("create" | "delete", realm) in order

    def __setitem__(self, name, realm) -> None:
        self.created.append(name)
        self.events.append(("create", name))
        super().__setitem__(name, realm)

    def __delitem__(self, name) -> None:
        self.deleted[name] = self[name]
        self.events.append(("delete", name))
        super().__delitem__(name)


@pytest.fixture
def kc():
    """The double (admin password PASSWORD) with the planted realm, recording realm history."""
    with KeycloakDouble(admin_password=PASSWORD) as double:
        double.add_realm(PLANTED)
        double.realms = RealmHistory(double.realms)
        yield double


@pytest.fixture(scope="module")
def recipes_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sso-recipes")
    make_sso_site(root / RECIPE)
    return root


@pytest.fixture
def no_keycloak_env(monkeypatch):
    for name in ("CCCI_KEYCLOAK_URL", "CCCI_KEYCLOAK_ADMIN_USER", "CCCI_KEYCLOAK_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def extravars(recipes_dir: Path, state_dir: Path, run_id: str, **more) -> dict:
    return {
        "recipe": RECIPE,
        "ccci_recipes_dir": str(recipes_dir),
        "ccci_state_dir": str(state_dir),
        "ccci_domain_suffix": SUFFIX,
        "ccci_access": "published",
        "ccci_fetch": False,
        "ccci_run_id": run_id,
        **more,
    }


def runner_dir(tmp: Path) -> Path:
    path = tmp / "runner"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stack_of(run_id: str) -> str:
    return stack_name(cold_domain(RECIPE, run_id, SUFFIX))


def record_of(state_dir: Path, run_id: str) -> dict:
    return json.loads((state_dir / "runs" / f"{run_id}.json").read_text())


class ServiceWatch:
    """Names of the swarm services created while it watches (the engine's live events;
    its event history is too short to ask afterwards on a busy test machine)."""

    def __init__(self, client) -> None:
        self.names: list[str] = []
        self._stream = client.events(filters={"type": "service", "event": "create"}, decode=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for event in self._stream:
                self.names.append(event["Actor"]["Attributes"].get("name", ""))

    def stop(self) -> ServiceWatch:
        if self._thread.is_alive():
            time.sleep(1)  # let the last events arrive
            with contextlib.suppress(Exception):
                self._stream.close()
            self._thread.join(5)
        return self

    def of_run(self, run_id: str) -> list[str]:
        """Services with the run id in their name, and any Keycloak, whoever made it."""
        return [n for n in self.names if run_id in n or "keycloak" in n.lower()]


@pytest.fixture
def service_watch(docker_client):
    watch = ServiceWatch(docker_client)
    yield watch
    watch.stop()


def leftovers(client, stack: str) -> list[str]:
    label = {"label": f"com.docker.stack.namespace={stack}"}
    api = client.api
    return (
        [s["Spec"]["Name"] for s in api.services(filters=label)]
        + [c["Id"][:12] for c in api.containers(all=True, filters=label)]
        + [v["Name"] for v in (api.volumes(filters=label) or {}).get("Volumes") or []]
        + [s["Spec"]["Name"] for s in api.secrets(filters=label)]
        + [c["Spec"]["Name"] for c in api.configs(filters=label)]
    )


def token_grants(kc: KeycloakDouble, realm: str) -> list[int]:
    """Statuses of the password grants made on ``realm``'s token endpoint."""
    return [s for _, _, s in kc.calls("POST", f"/realms/{realm}/protocol/openid-connect/token")]


def play_env(kc_url: str | None, password: str | None, **more) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CCCI_KEYCLOAK_") and not k.startswith("ANSIBLE_")
    }
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ANSIBLE_NOCOLOR="1",
        **more,
    )
    if kc_url:
        env["CCCI_KEYCLOAK_URL"] = kc_url
    if password:
        env["CCCI_KEYCLOAK_ADMIN_PASSWORD"] = password
    return env


def start_cold(args: dict, env: dict, log: Path) -> subprocess.Popen:
    """``ansible-playbook playbooks/cold.yml`` as Drone runs it, output to ``log``."""
    out = log.open("w")
    return subprocess.Popen(
        [ANSIBLE_PLAYBOOK, "playbooks/cold.yml", "-e", json.dumps(args)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


# -- a green SSO run ------------------------------------------------------------------------
def test_sso_cold_run_logs_in_through_its_own_realm_and_deletes_it(
    kc,
    recipes_dir,
    state_dir,
    unique,
    docker_client,
    cleanup_stacks,
    tmp_path,
    no_keycloak_env,
    service_watch,
):
    stack, realm = stack_of(unique), f"{RECIPE}-{unique}"
    cleanup_stacks.append(stack)
    # Keycloak from the play's variables here (the other tests use the environment)
    args = extravars(
        recipes_dir,
        state_dir,
        unique,
        ccci_keycloak_url=kc.base_url,
        ccci_keycloak_admin_password=PASSWORD,
    )
    res = run_playbook("cold.yml", args, private_dir=runner_dir(tmp_path))
    assert res.rc == 0, dump(res)

    record = record_of(state_dir, unique)
    assert record["verdict"] == "PASS", record
    assert record["stages"] == GREEN_COLD_STAGES
    custom = record["stage_details"]["custom"]["message"]
    assert re.fullmatch(r"2 passed in [0-9.]+s", custom), custom
    assert f"per-run realm {realm} deleted" in record["notes"]

    # the realm existed during the run, was made once, and the test user logged in on it
    # with what the app was given (the custom test's password grant answered 200)
    assert kc.realms.created.count(realm) == 1
    assert 200 in token_grants(kc, realm)
    issued = kc.realms.deleted[realm]
    client = issued.client_by_client_id(RECIPE)
    assert client["redirectUris"] == [f"https://{cold_domain(RECIPE, unique, SUFFIX)}/*"]
    assert client["secret"] == derive_secret(PASSWORD, realm, "client-secret")
    # ... and is gone: only master and the planted realm remain
    assert sorted(kc.realm_names()) == ["master", PLANTED]
    assert [name for name in kc.realms.created if name != realm] == []

    # Keycloak was never deployed: the run's only stack is its app, one service
    created = service_watch.stop().of_run(unique)
    assert created and set(created) == {f"{stack}_app"}, created
    assert leftovers(docker_client, stack) == []


# -- two at once ----------------------------------------------------------------------------
def test_two_sso_runs_started_together_get_distinct_realms_and_both_pass(
    kc, recipes_dir, tmp_path, docker_client, cleanup_stacks, service_watch
):
    run_ids = [os.urandom(3).hex() for _ in range(2)]
    cleanup_stacks.extend(stack_of(r) for r in run_ids)
    env = play_env(kc.base_url, PASSWORD)
    plays = []
    for run_id in run_ids:
        state = init_state(tmp_path / run_id)
        plays.append(
            (run_id, state, start_cold(extravars(recipes_dir, state, run_id), env, state / "log"))
        )
    for run_id, state, play in plays:
        try:
            play.wait(600)
        finally:
            if play.poll() is None:
                play.kill()
        assert play.returncode == 0, (state / "log").read_text()[-6000:]
        record = record_of(state, run_id)
        assert record["verdict"] == "PASS" and record["stages"]["custom"] == "pass", record

    realms = [f"{RECIPE}-{run_id}" for run_id in run_ids]
    assert realms[0] != realms[1]
    assert sorted(kc.realms.created) == sorted(realms)
    # the runs overlapped: both realms were made before either was deleted
    assert [kind for kind, _ in kc.realms.events] == ["create", "create", "delete", "delete"]
    for realm in realms:
        assert 200 in token_grants(kc, realm), f"no token issued in {realm}"
    secrets = {kc.realms.deleted[r].client_by_client_id(RECIPE)["secret"] for r in realms}
    assert len(secrets) == 2
    assert sorted(kc.realm_names()) == ["master", PLANTED]
    service_watch.stop()
    for run_id in run_ids:
        assert set(service_watch.of_run(run_id)) == {f"{stack_of(run_id)}_app"}
        assert leftovers(docker_client, stack_of(run_id)) == []


# -- failures: one clear sentence, nothing deployed ------------------------------------------
def _broken(kind: str, kc: KeycloakDouble) -> tuple[dict, str]:
    """Keycloak settings for ``kind`` and the sentence the run must stop with."""
    if kind == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
        return (
            {"ccci_keycloak_url": url, "ccci_keycloak_admin_password": PASSWORD},
            f"admin login for user 'admin': Keycloak at {url} is unreachable or failing: "
            "no usable answer after 5 attempt(s)",
        )
    if kind == "wrong password":
        return (
            {"ccci_keycloak_url": kc.base_url, "ccci_keycloak_admin_password": "not-the-password"},
            f"Keycloak at {kc.base_url} refused the admin login for user 'admin': "
            "401 invalid_grant: Invalid user credentials",
        )
    if kind == "5xx storm":
        kc.fail_next(10_000, status=503)
        return (
            {"ccci_keycloak_url": kc.base_url, "ccci_keycloak_admin_password": PASSWORD},
            f"admin login for user 'admin': Keycloak at {kc.base_url} is unreachable or "
            "failing: 503 no usable answer after 5 attempt(s)",
        )
    assert kind == "not configured"
    return (
        {},
        "recipe sso-site needs Keycloak (its catalog entry says sso: keycloak) but the Keycloak "
        "URL (ccci_keycloak_url or CCCI_KEYCLOAK_URL) and the admin password "
        "(CCCI_KEYCLOAK_ADMIN_PASSWORD or ccci_keycloak_admin_password) are not set; "
        "nothing was deployed",
    )


@pytest.mark.parametrize("kind", ["unreachable", "wrong password", "5xx storm", "not configured"])
def test_keycloak_failures_stop_the_run_with_one_sentence_and_deploy_nothing(
    kind,
    kc,
    recipes_dir,
    state_dir,
    unique,
    docker_client,
    tmp_path,
    no_keycloak_env,
    service_watch,
):
    settings, sentence = _broken(kind, kc)
    res = run_playbook(
        "cold.yml",
        extravars(recipes_dir, state_dir, unique, **settings),
        private_dir=runner_dir(tmp_path),
    )
    assert res.rc != 0, dump(res)
    stop = res.task("Stop, the run could not start")["msg"]
    assert stop.startswith(f"run {unique} of {RECIPE} could not start: "), stop
    assert sentence in stop, stop
    # every error line of the output is that one sentence (the failed task's, then the
    # run's "could not start"), and no traceback
    errors = [line for line in res.stdout.splitlines() if line.startswith("[ERROR]")]
    assert errors and all(sentence in line for line in errors), res.stdout[-4000:]
    assert f"run {unique} of {RECIPE} could not start: {sentence}" in errors[-1]
    assert "Traceback" not in res.stdout
    # nothing deployed, verdict ERROR with that sentence
    assert not any(t["task"].startswith("Deploy the app") for t in res.tasks)
    assert service_watch.stop().of_run(unique) == []
    assert leftovers(docker_client, stack_of(unique)) == []
    record = record_of(state_dir, unique)
    assert record["verdict"] == "ERROR" and sentence in record["error"], record
    assert f"{RECIPE}-{unique}" not in kc.realm_names()
    assert sorted(kc.realm_names()) == ["master", PLANTED]


# -- no secret leaks -----------------------------------------------------------------------
def find_in_tree(paths: list[Path], needles: dict[str, str]) -> dict[str, list[str]]:
    """Which of ``needles`` (label -> value) occur in which file under ``paths``."""
    hits: dict[str, list[str]] = {}
    encoded = {label: value.encode() for label, value in needles.items()}
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            data = path.read_bytes()
            for label, value in encoded.items():
                if value in data:
                    hits.setdefault(label, []).append(str(path))
    return hits


def test_no_secret_of_an_sso_run_reaches_output_records_alerts_or_runner_artifacts(
    kc, recipes_dir, tmp_path, unique, docker_client, cleanup_stacks
):
    sentinel = "sentinel-admin-pw-" + os.urandom(8).hex()
    kc.set_admin_password(sentinel)
    cleanup_stacks.append(stack_of(unique))
    realm = f"{RECIPE}-{unique}"
    state = init_state(tmp_path / "state")
    # bin/ccci, as the timers and Drone start plays: Keycloak settings from the environment,
    # at verbosity 3 (every module result, with its invocation, that is not no_log)
    env = play_env(kc.base_url, sentinel, ANSIBLE_VERBOSITY="3", CCCI_STATE_DIR=str(state))
    args = extravars(recipes_dir, state, unique)
    cmd = [sys.executable, str(ROOT / "bin" / "ccci"), "run", "cold.yml"]
    for key, value in args.items():
        cmd += ["-e", f"{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / "stdout").write_text(out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert record_of(state, unique)["verdict"] == "PASS"

    # what the double actually issued in the run's realm
    issued = kc.realms.deleted[realm]
    client_secret = issued.client_by_client_id(RECIPE)["secret"]
    user = issued.user_by_username("ci-user")
    user_password = issued.passwords[user["id"]]
    assert client_secret == derive_secret(sentinel, realm, "client-secret")
    assert 200 in token_grants(kc, realm)  # they were used: the login worked
    needles = {
        "admin password": sentinel,
        "client secret": client_secret,
        "user password": user_password,
    }
    artifacts = state / "runner"
    assert any(artifacts.rglob("job_events/*.json")), "ansible-runner wrote no events"
    assert (state / "runs" / f"{unique}.json").is_file()
    where = [tmp_path / "stdout", state / "runs", state / "alerts", artifacts]
    where = [p for p in where if p.exists()]
    assert find_in_tree(where, needles) == {}

    # the search finds a secret wherever it is: plant each in a copy and look again
    planted = tmp_path / "planted"
    planted.mkdir()
    for label, value in needles.items():
        (planted / label.replace(" ", "-")).write_text(f"prefix {value} suffix\n")
    found = find_in_tree([planted, *where], needles)
    assert sorted(found) == sorted(needles)
    assert all(hits == [str(planted / label.replace(" ", "-"))] for label, hits in found.items())


def test_sso_site_app_refuses_to_start_without_an_issuer(
    recipes_dir, unique, docker_client, cleanup_stacks
):
    """The example itself depends on what it is given: no issuer, no healthy app."""
    domain = cold_domain(RECIPE, unique, SUFFIX)
    cleanup_stacks.append(stack_name(domain))
    out = run_module(
        "coopcloud.ci.recipe_app",
        {
            "recipe": RECIPE,
            "domain": domain,
            "recipes_dir": str(recipes_dir),
            "fetch": False,
            "env": {"OIDC_ISSUER": ""},
            "secrets": {"oidc_client_secret": "throw-away"},
            "wait_timeout": 30,
        },
    )
    assert out.rc != 0, dump(out)
    # the entrypoint's `${OIDC_ISSUER:?...}` ends the container: never healthy
    assert domain.replace(".", "_") in out.last["msg"], out.last["msg"]
    assert "non-zero exit" in out.last["msg"], out.last["msg"]


LEAKY_TEST = """
import os


def test_prints_its_secrets_and_fails():
    print("secret", os.environ["CCCI_OIDC_CLIENT_SECRET"], "password", os.environ["CCCI_OIDC_PASSWORD"])
    print("token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lnbmF0dXJl")
    assert os.environ["CCCI_OIDC_CLIENT_SECRET"] == "not it"
"""


def test_a_failing_custom_test_that_prints_secrets_is_recorded_masked(
    kc, recipes_dir, state_dir, unique, tmp_path, docker_client, cleanup_stacks, no_keycloak_env
):
    cleanup_stacks.append(stack_of(unique))
    realm = f"{RECIPE}-{unique}"
    catalog = tmp_path / "catalog"
    shutil.copytree(ROOT / "catalog" / RECIPE, catalog / RECIPE)
    (catalog / RECIPE / "tests" / "test_leaky.py").write_text(LEAKY_TEST)
    entry = catalog / RECIPE / "recipe.yml"
    entry.write_text(  # the upgrade is covered above
        entry.read_text().replace(
            "stages: [install, upgrade, serving, custom]", "stages: [install, custom]"
        )
    )
    args = extravars(
        recipes_dir,
        state_dir,
        unique,
        ccci_catalog_dir=str(catalog),
        ccci_keycloak_url=kc.base_url,
        ccci_keycloak_admin_password=PASSWORD,
    )
    res = run_playbook("cold.yml", args, private_dir=runner_dir(tmp_path))
    assert res.rc != 0, dump(res)
    record = record_of(state_dir, unique)
    assert record["verdict"] == "FAIL" and record["stages"]["custom"] == "fail", record
    custom = record["stage_details"]["custom"]["message"]
    assert custom.startswith("pytest exited 1:") and "1 failed, 2 passed" in custom, custom
    # the lines that printed them are there, the values are not
    assert "secret ******** password ********" in custom, custom
    assert "token <jwt>" in custom, custom
    issued = kc.realms.deleted[realm]
    secrets = {
        "client secret": issued.client_by_client_id(RECIPE)["secret"],
        "user password": issued.passwords[issued.user_by_username("ci-user")["id"]],
    }
    (tmp_path / "stdout").write_text(res.stdout)
    assert find_in_tree([tmp_path / "stdout", state_dir, tmp_path / "runner"], secrets) == {}
    # the realm is deleted after a failed run too
    assert sorted(kc.realm_names()) == ["master", PLANTED]


# -- quick run of an enrolled SSO recipe ----------------------------------------------------
def test_quick_run_of_an_sso_canonical_reattaches_with_its_own_realm(
    kc, recipes_dir, state_dir, unique, docker_client, cleanup_stacks, tmp_path, monkeypatch
):
    """A warm SSO canonical, seeded by a green cold run, is reattached by a quick run with
    that run's realm (issuer, client id, and the client secret as a swarm secret): the
    custom login passes, the realm is deleted, and the known-good is put back."""
    monkeypatch.setenv("CCCI_KEYCLOAK_URL", kc.base_url)
    monkeypatch.setenv("CCCI_KEYCLOAK_ADMIN_PASSWORD", PASSWORD)
    catalog = tmp_path / "catalog"
    shutil.copytree(ROOT / "catalog" / RECIPE, catalog / RECIPE)
    entry = catalog / RECIPE / "recipe.yml"
    entry.write_text(entry.read_text().replace("warm_canonical: false", "warm_canonical: true"))
    assert "warm_canonical: true" in entry.read_text()
    suffix = f"{unique}.ccci.test"
    cleanup_stacks.append(stack_name(f"warm-{RECIPE}.{suffix}"))
    seed_id, quick_id = unique, f"{(int(unique, 16) + 1) % 0xFFFFFF:06x}"
    cleanup_stacks.append(stack_name(cold_domain(RECIPE, seed_id, suffix)))
    common = {"ccci_catalog_dir": str(catalog), "ccci_domain_suffix": suffix}

    seed = run_playbook(
        "cold.yml",
        extravars(recipes_dir, state_dir, seed_id, **common),
        private_dir=runner_dir(tmp_path / "seed"),
    )
    assert seed.rc == 0, dump(seed)
    registry = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    assert registry["promoted_by"] == seed_id and registry["version"] == "1.1.0+1.1"

    quick = run_playbook(
        "quick.yml",
        extravars(recipes_dir, state_dir, quick_id, ref="1.0.0+1.0", **common),
        private_dir=runner_dir(tmp_path / "quick"),
    )
    assert quick.rc == 0, dump(quick)
    record = record_of(state_dir, quick_id)
    assert record["mode"] == "quick" and record["verdict"] == "PASS", record
    assert record["stages"]["custom"] == "pass", record["stage_details"]
    realm = f"{RECIPE}-{quick_id}"
    assert 200 in token_grants(kc, realm)
    assert sorted(kc.realm_names()) == ["master", PLANTED]
    after = json.loads((state_dir / RECIPE / "canonical.json").read_text())
    assert after["status"] == "idle"
    assert {k: after[k] for k in ("version", "commit", "snapshot_digest", "promoted_by")} == {
        k: registry[k] for k in ("version", "commit", "snapshot_digest", "promoted_by")
    }
    removed = run_module(
        "coopcloud.ci.warm_canonical",
        {"recipe": RECIPE, "state": "absent", "confirm": True, "state_dir": str(state_dir)},
    )
    assert removed.rc == 0, dump(removed)
