"""_canonical's decisions with the real snapshot store and registry on tmp dirs.

Only the Docker engine is a stand-in (tests/support/fake_canonical_engine.py); volumes
are real directories, snapshots real archives, the registry a real file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from support.fake_canonical_engine import (
    NODE_ID,
    FakeDriver,
    FakeEngine,
    corrupt_snapshot,
    swarm_node,
)

from ansible_collections.coopcloud.ci.plugins.module_utils import _driver
from ansible_collections.coopcloud.ci.plugins.module_utils._canonical import (
    Canonical,
    CanonicalError,
    placement,
    status_change,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import (
    Registry,
    TransitionError,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import (
    CorruptSnapshotError,
    SnapshotStore,
    tree_digest,
)

RECIPE = "custom-html"
SUFFIX = "example.org"
STACK = "warm-custom-html_example_org"
VOLUME = f"{STACK}_content"
VERSION = "1.1.0+1.29"
COMMIT = "a" * 40


@pytest.fixture
def engine(tmp_path) -> FakeEngine:
    return FakeEngine(tmp_path / "volumes")


@pytest.fixture
def driver(engine) -> FakeDriver:
    return FakeDriver(engine)


@pytest.fixture
def canonical(state_dir, driver) -> Canonical:
    return Canonical(str(state_dir), RECIPE, domain_suffix=SUFFIX, driver=driver)


def take(state_dir: Path, tmp_path: Path, text: str, version=VERSION, commit=COMMIT) -> dict:
    """A snapshot of a 'cold app' volume holding ``text``, as promote takes it."""
    src = tmp_path / f"src-{os.urandom(3).hex()}"
    (src / "sub").mkdir(parents=True)
    (src / "index.html").write_text(text)
    (src / "sub" / "data").write_bytes(os.urandom(256))
    return SnapshotStore(str(state_dir), RECIPE).take(
        {"content": str(src)}, version=version, commit=commit, domain="cold.example.org",
        stack="cold_example_org",
    )  # fmt: skip


def mount_of(engine: FakeEngine) -> Path:
    return Path(engine.api.volume_list[VOLUME]["Mountpoint"])


def registry_bytes(state_dir: Path) -> bytes:
    return (state_dir / RECIPE / "canonical.json").read_bytes()


@pytest.fixture
def seeded(canonical, state_dir, tmp_path, engine) -> dict:
    manifest = take(state_dir, tmp_path, "<h1>known good</h1>\n")
    canonical.seeded("aaaaaa")
    return manifest


# -- small predicates -----------------------------------------------------------------------


def test_placement_pins_to_the_node_or_nothing():
    assert placement(None) == []
    assert placement("n1") == ["node.id == n1"]


def test_status_change_mirrors_the_registry_rules():
    reg = {"recipe": RECIPE, "status": "idle", "status_by": "aaaaaa", "history": []}
    assert status_change(reg, "idle", "bbbbbb") is False
    assert status_change(reg, "quick", "bbbbbb") is True
    quick = {**reg, "status": "quick"}
    assert status_change(quick, "quick", "aaaaaa") is False
    with pytest.raises(TransitionError, match="cannot go from quick to quick"):
        status_change(quick, "quick", "bbbbbb")  # another run cannot take a quick canonical
    with pytest.raises(TransitionError, match="cannot go from quick to deployed"):
        status_change(quick, "deployed", "bbbbbb")
    with pytest.raises(TransitionError, match="cannot go from quick to idle"):
        status_change(quick, "idle", "aaaaaa")


def test_labels_overlay_adds_placement_constraints_to_every_service():
    doc = yaml.safe_load(
        _driver.labels_overlay(["app", "db"], "3.8", {"k": "v"}, None, ["node.id == n1"])
    )
    for name in ("app", "db"):
        assert doc["services"][name]["deploy"]["placement"] == {"constraints": ["node.id == n1"]}
        assert doc["services"][name]["deploy"]["labels"] == {"k": "v"}
    without = yaml.safe_load(_driver.labels_overlay(["app"], "3.8", {"k": "v"}))
    assert "placement" not in without["services"]["app"]["deploy"]


def test_env_digest_changes_with_constraints_only_when_given():
    base = _driver.env_digest({"A": "1"}, ["compose.yml"])
    assert _driver.env_digest({"A": "1"}, ["compose.yml"], None, []) == base
    assert _driver.env_digest({"A": "1"}, ["compose.yml"], None, ["node.id == x"]) != base


# -- info -----------------------------------------------------------------------------------


def test_info_without_a_canonical(canonical):
    info = canonical.info()
    assert info["exists"] is False and info["registry"] is None and info["at_rest"] is False
    assert info["domain"] == f"warm-{RECIPE}.{SUFFIX}" and info["stack"] == STACK
    assert info["snapshot"]["present"] is False and info["consistent"] is False


def test_info_without_suffix_or_registry_names_no_domain(state_dir, driver):
    info = Canonical(str(state_dir), RECIPE, driver=driver).info()
    assert info["exists"] is False and info["domain"] is None and info["stack"] is None


# -- seeded ---------------------------------------------------------------------------------


def test_seeded_installs_the_snapshot_into_new_volumes(canonical, state_dir, tmp_path, engine):
    manifest = take(state_dir, tmp_path, "<h1>known good</h1>\n")
    predicted = canonical.seeded("aaaaaa", check=True)
    assert predicted["changed"] is True and predicted["restored"] == ["content"]
    assert predicted["registry"]["version"] == VERSION
    assert not (state_dir / RECIPE / "canonical.json").exists()
    assert VOLUME not in engine.api.volume_list

    out = canonical.seeded("aaaaaa")
    assert out["changed"] is True and out["created_volumes"] == [VOLUME]
    reg = json.loads(registry_bytes(state_dir))
    store = SnapshotStore(str(state_dir), RECIPE)
    assert reg["version"] == VERSION and reg["commit"] == COMMIT
    assert reg["promoted_by"] == "aaaaaa" and reg["status"] == "idle"
    assert reg["snapshot_digest"] == store.manifest_digest()
    assert reg["node"] == NODE_ID and reg["domain"] == f"warm-{RECIPE}.{SUFFIX}"
    volume = engine.api.volume_list[VOLUME]
    assert volume["Labels"] == {"com.docker.stack.namespace": STACK}
    assert tree_digest(volume["Mountpoint"]) == manifest["volumes"]["content"]["tree_digest"]

    before = registry_bytes(state_dir)
    for check in (True, False):
        again = canonical.seeded("bbbbbb", check=check)
        assert again["changed"] is False
    assert registry_bytes(state_dir) == before


def test_seeding_from_a_corrupt_snapshot_creates_no_volume(canonical, state_dir, tmp_path, engine):
    take(state_dir, tmp_path, "<h1>known good</h1>\n")
    archive = corrupt_snapshot(state_dir, RECIPE)
    with pytest.raises(CorruptSnapshotError, match=str(archive)):
        canonical.seeded("aaaaaa")
    # Verified before anything is created: no empty volume is left behind.
    assert VOLUME not in engine.api.volume_list


def test_seeded_needs_a_snapshot_with_version_and_commit(canonical, state_dir, tmp_path):
    with pytest.raises(CanonicalError, match="no snapshot to seed the canonical"):
        canonical.seeded("aaaaaa")
    take(state_dir, tmp_path, "x", version=None)
    with pytest.raises(CanonicalError, match="records no version"):
        canonical.seeded("aaaaaa")
    assert not (state_dir / RECIPE / "canonical.json").exists()


def test_seeded_without_registry_needs_a_suffix(state_dir, tmp_path, driver):
    take(state_dir, tmp_path, "x")
    with pytest.raises(CanonicalError, match="domain_suffix is required"):
        Canonical(str(state_dir), RECIPE, driver=driver).seeded("aaaaaa")


def test_reseed_undeploys_a_running_canonical_first(canonical, seeded, state_dir, tmp_path,
                                                    engine, driver):  # fmt: skip
    engine.run_stack(STACK, {})
    Registry(str(state_dir), RECIPE).set_status("deployed", "cccccc")
    manifest = take(state_dir, tmp_path, "<h1>newer</h1>\n", commit="b" * 40)
    predicted = canonical.seeded("dddddd", check=True)
    assert predicted["undeployed"] is True and predicted["volume_states"] == {"content": "unknown"}
    out = canonical.seeded("dddddd")
    assert ("undeploy", STACK) in driver.calls and not engine.api.service_list
    assert out["registry"]["commit"] == "b" * 40 and out["registry"]["promoted_by"] == "dddddd"
    assert tree_digest(str(mount_of(engine))) == manifest["volumes"]["content"]["tree_digest"]
    moves = [(h["from"], h["to"]) for h in out["registry"]["history"][-2:]]
    assert moves == [("deployed", "seeding"), ("seeding", "idle")]


def test_seeding_left_by_a_crash_is_completed_by_idle_from_the_manifest(
    canonical, seeded, state_dir, tmp_path, engine
):
    # a promotion took its snapshot and set seeding, then died
    manifest = take(state_dir, tmp_path, "<h1>promoted</h1>\n", version="1.2.0+1.30",
                    commit="c" * 40)  # fmt: skip
    Registry(str(state_dir), RECIPE).set_status("seeding", "eeeeee")
    out = canonical.idle("ffffff", restore=False)
    assert out["completed_seeding"] is True and out["registry"]["status"] == "idle"
    reg = json.loads(registry_bytes(state_dir))
    assert reg["status"] == "idle" and reg["version"] == "1.2.0+1.30"
    assert reg["promoted_by"] == "eeeeee"  # the run that started the seeding
    assert reg["snapshot_digest"] == SnapshotStore(str(state_dir), RECIPE).manifest_digest()
    assert tree_digest(str(mount_of(engine))) == manifest["volumes"]["content"]["tree_digest"]


# -- idle -----------------------------------------------------------------------------------


def test_idle_restores_changed_data_and_is_then_at_rest(canonical, seeded, state_dir, engine):
    mount = mount_of(engine)
    (mount / "index.html").write_text("changed\n")
    (mount / "extra").write_text("new file\n")
    before = registry_bytes(state_dir)
    predicted = canonical.idle("aaaaab", check=True)
    assert predicted["changed"] is True and predicted["restored"] == ["content"]
    assert registry_bytes(state_dir) == before and (mount / "extra").exists()

    out = canonical.idle("aaaaab")
    assert out["restored"] == ["content"] and out["registry"]["status"] == "idle"
    assert tree_digest(str(mount)) == seeded["volumes"]["content"]["tree_digest"]
    moves = [(h["from"], h["to"]) for h in out["registry"]["history"][-2:]]
    assert moves == [("idle", "restoring"), ("restoring", "idle")]
    for check in (True, False):
        assert canonical.idle("aaaaac", check=check)["changed"] is False


def test_idle_without_restore_keeps_an_operators_data(canonical, seeded, state_dir, engine):
    engine.run_stack(STACK, {})
    Registry(str(state_dir), RECIPE).set_status("deployed", "aaaaab")
    (mount_of(engine) / "marker").write_text("kept\n")
    out = canonical.idle("aaaaab", restore=False)
    assert out["undeployed"] is True and out["restored"] == []
    assert out["registry"]["status"] == "idle"
    assert (mount_of(engine) / "marker").read_text() == "kept\n"


def test_idle_refuses_a_slot_that_is_not_the_known_good(canonical, seeded, state_dir, tmp_path):
    take(state_dir, tmp_path, "<h1>someone else's</h1>\n", commit="d" * 40)
    before = registry_bytes(state_dir)
    with pytest.raises(CanonicalError, match="promotion was interrupted"):
        canonical.idle("aaaaab")
    assert registry_bytes(state_dir) == before


def test_corrupt_archive_leaves_status_restoring_and_data_untouched(
    canonical, seeded, state_dir, engine
):
    mount = mount_of(engine)
    (mount / "index.html").write_text("changed\n")
    archive = corrupt_snapshot(state_dir, RECIPE)
    with pytest.raises(CorruptSnapshotError, match=str(archive)):
        canonical.idle("aaaaab")
    assert (mount / "index.html").read_text() == "changed\n"
    assert json.loads(registry_bytes(state_dir))["status"] == "restoring"
    with pytest.raises(CanonicalError, match="not at rest"):
        canonical.deployed("aaaaac")


def test_a_canonical_pinned_to_another_node_is_not_touched_here(
    canonical, seeded, state_dir, engine
):
    Registry(str(state_dir), RECIPE).set_node("othernode", "aaaaab")
    (mount_of(engine) / "index.html").write_text("changed\n")
    # not in the swarm (any more): refused, its data is not copied here
    with pytest.raises(CanonicalError, match=r"pinned to swarm node othernode, which is gone"):
        canonical.idle("aaaaab")
    # in the swarm but drained, then active with no engine known for it
    engine.api.node_list["othernode"] = swarm_node("othernode", "node-2", availability="drain")
    with pytest.raises(CanonicalError, match=r"node-2 \(othernode\), which is drained"):
        canonical.idle("aaaaab")
    with pytest.raises(CanonicalError, match=r"node-2 \(othernode\), which is drained"):
        canonical.deployed("aaaaab", fetch=False)
    engine.api.node_list["othernode"] = swarm_node("othernode", "node-2")
    with pytest.raises(CanonicalError, match=r"reach that node's engine: add it to CCCI_NODE"):
        canonical.idle("aaaaab")
    assert (mount_of(engine) / "index.html").read_text() == "changed\n"
    assert Registry(str(state_dir), RECIPE).load()["status"] == "idle"


def test_another_suffix_is_refused_once_a_registry_names_the_domain(seeded, state_dir, driver):
    other = Canonical(str(state_dir), RECIPE, domain_suffix="other.org", driver=driver)
    with pytest.raises(CanonicalError, match=r"lives at warm-custom-html\.example\.org"):
        other.idle("aaaaab")
    assert other.info()["domain"] == f"warm-{RECIPE}.{SUFFIX}"  # info reports, never refuses


def test_no_canonical_sentence(canonical, state_dir):
    with pytest.raises(CanonicalError) as exc:
        canonical.idle("aaaaab")
    assert str(exc.value) == (
        f"recipe {RECIPE} has no canonical (no {state_dir}/{RECIPE}/canonical.json): a green "
        "cold run of its latest version seeds it"
    )


# -- deployed -------------------------------------------------------------------------------


@pytest.fixture
def real_seed(state_dir, tmp_path, driver, examples, examples_root) -> Canonical:
    """A canonical whose registry names a real commit of the example recipe."""
    latest = examples[RECIPE]["latest"]
    take(state_dir, tmp_path, "<h1>x</h1>\n", version=latest,
         commit=examples[RECIPE]["tags"][latest])  # fmt: skip
    can = Canonical(str(state_dir), RECIPE, domain_suffix=SUFFIX, driver=driver)
    can.seeded("aaaaaa")
    return can


def test_deployed_reattaches_at_the_known_good_pinned_to_its_node(
    real_seed, state_dir, driver, engine, examples, examples_root
):
    latest = examples[RECIPE]["latest"]
    args = {"recipes_dir": str(examples_root), "fetch": False}
    predicted = real_seed.deployed("bbbbbb", purpose="quick", check=True, **args)
    assert predicted["changed"] is True and predicted["deploy"] is True
    assert predicted["registry"]["status"] == "quick"
    assert not engine.api.service_list and json.loads(registry_bytes(state_dir))["status"] == "idle"

    out = real_seed.deployed("bbbbbb", purpose="quick", **args)
    commit = examples[RECIPE]["tags"][latest]
    assert driver.calls[-1] == ("deploy", STACK, latest, commit, (f"node.id == {NODE_ID}",), None)
    assert out["registry"]["status"] == "quick" and out["commit"] == commit
    assert out["placement"] == [f"node.id == {NODE_ID}"]
    deploys = len([c for c in driver.calls if c[0] == "deploy"])
    again = real_seed.deployed("bbbbbb", purpose="quick", **args)
    assert again["changed"] is False
    assert len([c for c in driver.calls if c[0] == "deploy"]) == deploys


def test_deployed_from_deployed_to_quick_is_refused(real_seed, examples_root):
    args = {"recipes_dir": str(examples_root), "fetch": False}
    real_seed.deployed("bbbbbb", **args)
    with pytest.raises(TransitionError, match="cannot go from deployed to quick"):
        real_seed.deployed("cccccc", purpose="quick", **args)


# -- absent ---------------------------------------------------------------------------------


def test_absent_needs_confirm_then_removes_everything(canonical, seeded, state_dir, engine,
                                                      driver):  # fmt: skip
    with pytest.raises(CanonicalError, match="without confirm=true"):
        canonical.absent()
    canonical.secret_key().load()  # the recipe's secrets key, as a deploy makes it
    predicted = canonical.absent(confirm=True, check=True)
    assert predicted["changed"] is True
    assert predicted["removed"] == {"app": True, "snapshot": True, "registry": True,
                                    "secrets_key": True}  # fmt: skip
    assert (state_dir / RECIPE / "canonical.json").exists() and VOLUME in engine.api.volume_list
    assert (state_dir / RECIPE / "secrets" / "key").exists()
    out = canonical.absent(confirm=True)
    assert out["removed"]["volumes"] == [VOLUME]
    assert out["removed"]["snapshot"] is True and out["removed"]["registry"] is True
    assert out["removed"]["secrets_key"] is True
    assert not (state_dir / RECIPE / "secrets").exists()
    assert not (state_dir / RECIPE / "canonical.json").exists()
    assert not (state_dir / RECIPE / "snapshot").exists()
    assert canonical.absent(confirm=True)["changed"] is False


def test_absent_removes_an_unreadable_registry(canonical, seeded, state_dir):
    path = state_dir / RECIPE / "canonical.json"
    path.write_text('{"truncated": ')
    out = canonical.absent(confirm=True)
    assert out["removed"]["registry"] is True and not path.exists()
