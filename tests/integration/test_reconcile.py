"""playbooks/reconcile.yml on the real swarm (SPEC WC1.1, WC1.2, acceptance 6).

Every test builds its own warm-infrastructure recipe (tests/support/infra_recipes.py),
adds versions as the scenario goes, and runs the play the way the timer does, through
ansible-runner. The app's port 80 is published on the host, so the health gate and the
tests reach it over real HTTP.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest
from support.ansible import dump, run_module, run_playbook
from support.fixtures import free_port, init_state
from support.infra_recipes import (
    BASE,
    BROKEN,
    HEALTH,
    HEALTHY,
    MAJOR,
    MIGRATION,
    add_version,
    make_infra_recipe,
)

from ansible_collections.coopcloud.ci.plugins.module_utils._names import stack_name

pytestmark = pytest.mark.swarm

SUFFIX = "ccci.test"
RESULT = re.compile(r"RECONCILE RESULT: ([a-z-]+):(.*)")


class Infra:
    """One warm-infrastructure target of one test: its recipe, domain, state and runs."""

    def __init__(self, tmp: Path, recipe: str, name: str, unique: str, stateful: bool, port):
        self.tmp = tmp
        self.name = name
        self.recipes_dir = tmp / "recipes"
        self.state_dir = init_state(tmp / "state")
        self.domain = f"{name}-{unique}.{SUFFIX}"
        self.stack = stack_name(self.domain)
        self.repo = Path(make_infra_recipe(self.recipes_dir, recipe, [BASE])["path"])
        http = {"service": "app", "port": 80}
        if port:
            http["published"] = port
        self.target = {
            "recipe": recipe,
            "domain": self.domain,
            "stateful": stateful,
            "health": {**HEALTH, "timeout": 20, "interval": 1},
            "http": http,
        }
        self.runs = 0

    def run(self, check: bool = False, target: str | None = None, **more):
        self.runs += 1
        private = self.tmp / f"runner-{self.runs}"
        private.mkdir()
        res = run_playbook(
            "reconcile.yml",
            {
                "target": target or self.name,
                "ccci_warm_infra": {self.name: self.target},
                "ccci_state_dir": str(self.state_dir),
                "ccci_recipes_dir": str(self.recipes_dir),
                "ccci_fetch": False,
                **more,
            },
            check=check,
            private_dir=private,
        )
        lines = RESULT.findall(res.stdout)
        assert len(lines) == 1, dump(res)
        res.result_status, res.result_details = lines[0]
        return res

    def add(self, version: str) -> str:
        return add_version(self.repo, version)

    @property
    def last_good(self) -> dict:
        return json.loads((self.state_dir / self.name / "last_good").read_text())

    def alerts(self, kind: str | None = None) -> list[dict]:
        folder = self.state_dir / "alerts"
        found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        return [a for a in found if kind is None or a["kind"] == kind]

    def services(self, client) -> dict[str, dict]:
        """Per service: the version labels and UpdatedAt, as the engine reports them."""
        label = {"label": f"com.docker.stack.namespace={self.stack}"}
        out = {}
        for svc in client.api.services(filters=label):
            labels = svc["Spec"].get("Labels") or {}
            out[svc["Spec"]["Name"]] = {
                "version": labels.get(f"coop-cloud.{self.stack}.version"),
                "ccci_version": labels.get("coop-cloud.ccci.version"),
                "commit": labels.get("coop-cloud.ccci.commit"),
                "image": svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"],
                "updated_at": svc["UpdatedAt"],
                "version_index": svc["Version"]["Index"],
            }
        return out

    def volume_path(self, client) -> Path:
        return Path(client.volumes.get(f"{self.stack}_data").attrs["Mountpoint"])

    def port(self, client) -> int:
        svc = client.api.services(filters={"name": f"{self.stack}_app"})[0]
        ports = svc["Endpoint"].get("Ports") or svc["Spec"]["EndpointSpec"].get("Ports") or []
        return next(p["PublishedPort"] for p in ports if p["TargetPort"] == 80)

    def get(self, client, path: str) -> str:
        res = httpx.get(f"http://127.0.0.1:{self.port(client)}{path}", timeout=5)
        res.raise_for_status()
        return res.text


@pytest.fixture
def infra(tmp_path, unique, cleanup_stacks, docker_client):
    made: list[Infra] = []

    def make(recipe: str, name: str, stateful: bool, published: bool = True) -> Infra:
        item = Infra(tmp_path, recipe, name, unique, stateful, free_port() if published else None)
        cleanup_stacks.append(item.stack)
        made.append(item)
        return item

    yield make


def install(kv: Infra):
    res = kv.run()
    assert res.rc == 0, dump(res)
    assert res.result_status == "upgraded", dump(res)
    assert f"first install of {BASE}" in res.result_details
    return res


def write_marker(kv: Infra, client) -> bytes:
    marker = os.urandom(64).hex().encode() + b"\n"
    path = kv.volume_path(client) / "marker"
    path.write_bytes(marker)
    assert kv.get(client, "/data/marker").encode() == marker
    return marker


def held(kv: Infra, client, version: str, status: str) -> dict:
    """Install ``kv`` and mark its volume, offer ``version``: the run holds it as ``status``
    and no service moves. What was there before (marker, last_good bytes, services), the
    run's result and the new version's commit."""
    install(kv)
    was = {"marker": write_marker(kv, client),
           "last_good": (kv.state_dir / kv.name / "last_good").read_bytes(),
           "services": kv.services(client)}  # fmt: skip
    was["tag"] = kv.add(version)
    was["res"] = res = kv.run()
    assert res.rc == 0, dump(res)
    assert res.result_status == status, dump(res)
    # nothing moved: versions, images, UpdatedAt, spec versions, the record, the data
    assert kv.services(client) == was["services"]
    assert (kv.state_dir / kv.name / "last_good").read_bytes() == was["last_good"]
    assert not (kv.state_dir / kv.name / "snapshot").exists()
    assert (kv.volume_path(client) / "marker").read_bytes() == was["marker"]
    return was


# --- stateful ------------------------------------------------------------------------


@pytest.mark.slow
def test_healthy_newer_version_upgrades_and_keeps_the_data(infra, docker_client):
    kv = infra("warm-kv", "kv", stateful=True)
    install(kv)
    assert kv.last_good["version"] == BASE
    assert kv.last_good["attempt"] is None
    marker = write_marker(kv, docker_client)

    # Up to date: nothing to do, nothing touched.
    before = kv.services(docker_client)
    res = kv.run()
    assert res.rc == 0, dump(res)
    assert res.result_status == "noop-healthy", dump(res)
    assert f"{BASE} runs healthy" in res.result_details
    assert kv.services(docker_client) == before

    # A newer version: check mode says what would happen and changes nothing.
    tag = kv.add(HEALTHY)
    record = (kv.state_dir / "kv" / "last_good").read_bytes()
    res = kv.run(check=True)
    assert res.rc == 0, dump(res)
    assert res.result_status == "upgraded", dump(res)
    assert "check mode, nothing changed" in res.result_details
    assert f"upgrade {BASE} to {HEALTHY}" in res.result_details
    assert kv.services(docker_client) == before
    assert (kv.state_dir / "kv" / "last_good").read_bytes() == record
    assert not (kv.state_dir / "kv" / "snapshot").exists()
    assert not (kv.state_dir / "kv" / "lock").exists()
    assert kv.alerts() == []

    # The real run upgrades behind the gate and commits the last-good.
    res = kv.run()
    assert res.rc == 0, dump(res)
    assert res.result_status == "upgraded", dump(res)
    assert f"{BASE} -> {HEALTHY}" in res.result_details
    good = kv.last_good
    assert (good["version"], good["commit"]) == (HEALTHY, tag)
    assert good["previous"]["version"] == BASE
    assert good["attempt"] is None and good["failed"] is None
    (svc,) = kv.services(docker_client).values()
    assert (svc["version"], svc["commit"], svc["image"]) == (HEALTHY, tag, "ccci/web:2.1")
    assert kv.get(docker_client, "/health") == "ok 2.1\n"
    assert (kv.volume_path(docker_client) / "marker").read_bytes() == marker
    assert kv.get(docker_client, "/data/created-by") == "2.0\n"  # data from the first install
    manifest = json.loads((kv.state_dir / "kv" / "snapshot" / "manifest.json").read_text())
    assert manifest["version"] == BASE
    assert kv.alerts() == []
    assert not (kv.state_dir / "kv" / "lock").exists()


@pytest.mark.slow
def test_broken_newer_version_rolls_back_with_the_data_intact(infra, docker_client):
    kv = infra("warm-kv", "kv", stateful=True)
    install(kv)
    base_commit = kv.last_good["commit"]
    marker = write_marker(kv, docker_client)

    kv.add(BROKEN)
    res = kv.run()
    assert res.rc != 0, dump(res)
    assert res.result_status == "rolled-back", dump(res)
    assert f"{BROKEN} failed" in res.result_details
    assert "failed the health gate" in res.result_details
    assert f"rolled back to {BASE}" in res.result_details
    assert "healthy again" in res.result_details
    assert f"-e accept={BROKEN}" in res.result_details

    # Running and healthy on the prior version, with the data from before the upgrade.
    (svc,) = kv.services(docker_client).values()
    assert (svc["version"], svc["commit"], svc["image"]) == (BASE, base_commit, "ccci/web:2.0")
    assert kv.get(docker_client, "/health") == "ok 2.0\n"
    data = kv.volume_path(docker_client)
    assert (data / "marker").read_bytes() == marker
    assert not (data / "schema").exists()  # what the broken version wrote is gone

    good = kv.last_good
    assert (good["version"], good["commit"]) == (BASE, base_commit)
    assert good["attempt"] is None
    assert good["failed"]["version"] == BROKEN and good["failed"]["recovered"] is True

    (alert,) = kv.alerts("rollback")
    assert alert["target"] == "kv"
    assert alert["attempted"] == BROKEN
    assert alert["last_good"] == BASE
    assert alert["recovered"] is True
    assert "failed the health gate" in alert["notes"]
    assert "data restored from the snapshot" in alert["notes"]
    assert alert["snapshot_restored"] is True

    # The next run does not try the broken version again (no downtime every hour).
    before = kv.services(docker_client)
    res = kv.run()
    assert res.rc == 0, dump(res)
    assert res.result_status == "noop-healthy", dump(res)
    assert f"{BROKEN} rolled back at" in res.result_details
    assert f"-e accept={BROKEN}" in res.result_details
    assert kv.services(docker_client) == before


@pytest.mark.slow
def test_major_bump_is_held_and_nothing_is_touched(infra, docker_client):
    kv = infra("warm-kv", "kv", stateful=True)
    was = held(kv, docker_client, MAJOR, "held-major")
    assert f"{BASE} -> {MAJOR} held, nothing changed" in was["res"].result_details
    assert f"-e target=kv -e accept={MAJOR}" in was["res"].result_details

    (alert,) = kv.alerts()
    assert alert["kind"] == "held-major"
    assert (alert["attempted"], alert["last_good"]) == (MAJOR, BASE)
    assert "major" in json.dumps(alert["notes"])
    assert alert["way_out"].endswith(f"-e target=kv -e accept={MAJOR}")

    # Held again on the next run: no second alert while the first is unseen.
    res = kv.run()
    assert res.result_status == "held-major", dump(res)
    assert len(kv.alerts()) == 1
    assert kv.services(docker_client) == was["services"]


@pytest.mark.slow
def test_manual_migration_is_held_until_accepted(infra, docker_client):
    kv = infra("warm-kv", "kv", stateful=True)
    was = held(kv, docker_client, MIGRATION, "held-manual-migration")
    res, marker, tag = was["res"], was["marker"], was["tag"]
    assert "manual migration" in res.result_details
    (alert,) = kv.alerts()
    assert alert["kind"] == "held-manual-migration"
    assert alert["attempted"] == MIGRATION
    assert "Manual migration required: export the realms" in alert["notes"]

    # The operator did the migration and takes the version on purpose.
    res = kv.run(accept=MIGRATION)
    assert res.rc == 0, dump(res)
    assert res.result_status == "upgraded", dump(res)
    assert f"{BASE} -> {MIGRATION}" in res.result_details
    assert (kv.last_good["version"], kv.last_good["commit"]) == (MIGRATION, tag)
    (svc,) = kv.services(docker_client).values()
    assert (svc["version"], svc["image"]) == (MIGRATION, "ccci/web:2.2")
    assert (kv.volume_path(docker_client) / "marker").read_bytes() == marker


# --- stateless -----------------------------------------------------------------------


@pytest.mark.slow
def test_stateless_broken_version_rolls_back(infra, docker_client):
    # No fixed host port: the play learns the one the running service publishes.
    proxy = infra("warm-proxy", "proxy", stateful=False, published=False)
    install(proxy)
    base_commit = proxy.last_good["commit"]
    port = proxy.port(docker_client)

    proxy.add(BROKEN)
    res = proxy.run()
    assert res.rc != 0, dump(res)
    assert res.result_status == "rolled-back", dump(res)
    assert "No such image: ccci/web:9.99-doesnotexist" in res.result_details
    assert f"rolled back to {BASE}" in res.result_details

    (svc,) = proxy.services(docker_client).values()
    assert (svc["version"], svc["commit"], svc["image"]) == (BASE, base_commit, "ccci/web:2.0")
    assert proxy.port(docker_client) == port  # the URL did not move
    assert proxy.get(docker_client, "/health") == "ok 2.0\n"
    assert proxy.last_good["version"] == BASE
    (alert,) = proxy.alerts("rollback")
    assert (alert["attempted"], alert["last_good"], alert["recovered"]) == (BROKEN, BASE, True)
    assert alert["snapshot_restored"] is False
    assert not (proxy.state_dir / "proxy" / "snapshot").exists()


# --- refusals (nothing is deployed) --------------------------------------------------


def test_unknown_target_fails_with_one_result_line(infra, docker_client):
    kv = infra("warm-kv", "kv", stateful=True)
    res = kv.run(target="nosuch")
    assert res.rc != 0
    assert res.result_status == "failed"
    assert 'no warm infrastructure target "nosuch"' in res.result_details
    assert kv.services(docker_client) == {}


def test_corrupt_last_good_record_fails_and_touches_nothing(infra, docker_client):
    kv = infra("warm-kv", "kv", stateful=True)
    record = kv.state_dir / "kv" / "last_good"
    record.parent.mkdir(parents=True)
    record.write_text('{"version": "1.0.0+2.0", "comm')
    res = kv.run()
    assert res.rc != 0, dump(res)
    assert res.result_status == "failed", dump(res)
    assert f"the last-good record {record} is not a JSON object" in res.result_details
    assert "nothing was deployed or removed" in res.result_details
    assert record.read_text() == '{"version": "1.0.0+2.0", "comm'
    assert kv.services(docker_client) == {}
    assert not (kv.state_dir / "kv" / "lock").exists()


# --- an interrupted run --------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_upgrade_is_rolled_back_by_the_next_run(infra, docker_client):
    """A run that died after its snapshot and the deploy of a bad version: the next run
    restores the snapshot and the last-good version, with no manual reset."""
    kv = infra("warm-kv", "kv", stateful=True)
    install(kv)
    good = kv.last_good
    marker = write_marker(kv, docker_client)
    kv.add(BROKEN)

    # What the dead run did, step by step, with the same modules.
    common = {"domain": kv.domain}
    res = run_module("coopcloud.ci.recipe_app", {**common, "state": "undeployed"})
    assert res.rc == 0, dump(res)
    res = run_module(
        "coopcloud.ci.volume_snapshot",
        {**common, "recipe": "kv", "state": "present", "state_dir": str(kv.state_dir),
         "version": good["version"], "commit": good["commit"]},
    )  # fmt: skip
    assert res.rc == 0, dump(res)
    record = {**good, "attempt": {"version": BROKEN, "snapshot": True, "run_id": "dead00",
                                  "started_at": "2026-01-01T00:00:00Z"}}  # fmt: skip
    (kv.state_dir / "kv" / "last_good").write_text(json.dumps(record))
    res = run_module(
        "coopcloud.ci.recipe_app",
        {**common, "recipe": "warm-kv", "version": BROKEN, "recipes_dir": str(kv.recipes_dir),
         "fetch": False, "publish": {"service": "app", "port": 80,
                                     "published": kv.target["http"]["published"]}},
    )  # fmt: skip
    assert res.rc == 0, dump(res)
    assert (kv.volume_path(docker_client) / "marker").read_bytes() != marker  # "migrated"

    res = kv.run()
    assert res.rc != 0, dump(res)
    assert res.result_status == "rolled-back", dump(res)
    assert "run dead00" in res.result_details and "broke off" in res.result_details
    (svc,) = kv.services(docker_client).values()
    assert (svc["version"], svc["commit"]) == (BASE, good["commit"])
    assert (kv.volume_path(docker_client) / "marker").read_bytes() == marker
    assert kv.last_good["attempt"] is None
    (alert,) = kv.alerts("rollback")
    assert (alert["attempted"], alert["recovered"], alert["snapshot_restored"]) == (
        BROKEN,
        True,
        True,
    )


def test_all_targets_each_get_a_result_line(tmp_path):
    """target=all reconciles every target, one line each, even when the first one fails."""
    state_dir = init_state(tmp_path / "state")
    warm = {
        name: {"recipe": f"missing-{name}", "domain": f"{name}.{SUFFIX}", "stateful": False}
        for name in ("alpha", "beta")
    }
    res = run_playbook(
        "reconcile.yml",
        {"target": "all", "ccci_warm_infra": warm, "ccci_state_dir": str(state_dir),
         "ccci_recipes_dir": str(tmp_path / "recipes"), "ccci_fetch": False},
        private_dir=tmp_path,
    )  # fmt: skip
    assert res.rc != 0, dump(res)
    lines = RESULT.findall(res.stdout)
    assert [(status, details.split(":")[0]) for status, details in lines] == [
        ("failed", "alpha"),
        ("failed", "beta"),
    ], dump(res)
    assert all("nothing was deployed or removed" in details for _, details in lines)
    assert not (state_dir / "alpha" / "lock").exists()
