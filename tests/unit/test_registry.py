"""The canonical registry: seeding, the status life cycle, atomic writes, corrupt files."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _registry as registry_mod
from ansible_collections.coopcloud.ci.plugins.module_utils import _state
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import (
    HISTORY_LIMIT,
    STATUSES,
    Registry,
    TransitionError,
    describe_status,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import StateError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
SEED = {
    "domain": "warm-custom-html.ci.example",
    "version": "1.1.0+1.29",
    "commit": COMMIT,
    "promoted_by": "a1b2c3",
    "snapshot_digest": DIGEST,
}

# The life cycle, written out here independently of the module's table.
ALLOWED = {
    ("idle", "deployed"),
    ("idle", "quick"),
    ("idle", "restoring"),
    ("idle", "seeding"),
    ("deployed", "idle"),
    ("deployed", "restoring"),
    ("deployed", "seeding"),
    ("quick", "restoring"),
    ("quick", "seeding"),
    ("restoring", "idle"),
    ("restoring", "restoring"),
    ("restoring", "seeding"),
    ("seeding", "idle"),
    ("seeding", "restoring"),
    ("seeding", "seeding"),
}
# How to bring a fresh (idle) registry into each status.
PATH_TO = {
    "idle": [],
    "deployed": ["deployed"],
    "quick": ["quick"],
    "restoring": ["restoring"],
    "seeding": ["seeding"],
}


@pytest.fixture
def reg(state_dir) -> Registry:
    return Registry(str(state_dir), "custom-html")


def seeded(reg: Registry, **overrides) -> dict:
    return reg.seed(**{**SEED, **overrides})


def test_no_registry(reg):
    assert reg.exists() is False
    assert reg.load() is None
    assert reg.at_rest() is False
    with pytest.raises(
        StateError, match=r"there is no canonical for custom-html: .* does not exist"
    ):
        reg.set_status("quick", "b2c3d4")
    assert describe_status(None) == "no canonical"


def test_first_seed_writes_every_field(reg):
    data = seeded(reg, node="node-1")
    on_disk = json.loads(Path(reg.path).read_text())
    assert on_disk == data
    assert reg.load() == data
    assert Path(reg.path).read_bytes() == _state.dumps(data)  # the one state-file form
    for key in (
        "recipe",
        "domain",
        "version",
        "commit",
        "status",
        "seeded_at",
        "promoted_by",
        "snapshot_digest",
        "updated_at",
        "history",
        "node",
    ):
        assert key in data, key
    assert data["recipe"] == "custom-html"
    assert data["domain"] == "warm-custom-html.ci.example"
    assert data["version"] == "1.1.0+1.29"
    assert data["commit"] == COMMIT
    assert data["status"] == "idle"
    assert data["promoted_by"] == "a1b2c3"
    assert data["snapshot_digest"] == DIGEST
    assert data["node"] == "node-1"
    assert data["first_seeded_at"] == data["seeded_at"] == data["updated_at"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", data["seeded_at"])
    assert data["history"] == [
        {
            "event": "seeded",
            "from": None,
            "to": "idle",
            "run_id": "a1b2c3",
            "version": "1.1.0+1.29",
            "commit": COMMIT,
            "at": data["seeded_at"],
        }
    ]
    assert reg.exists() and reg.at_rest()
    assert os.listdir(reg.directory) == ["canonical.json"]


def test_reseed_keeps_history_and_first_seed(reg, monkeypatch):
    monkeypatch.setattr(registry_mod, "stamp", lambda: "2026-01-01T00:00:00Z")
    seeded(reg)
    reg.set_status("seeding", "c3d4e5")
    monkeypatch.setattr(registry_mod, "stamp", lambda: "2026-02-01T00:00:00Z")
    data = seeded(
        reg,
        version="1.2.0+1.30",
        commit="fedcba9",
        promoted_by="c3d4e5",
        snapshot_digest="sha256:" + "cd" * 32,
    )
    assert data["version"] == "1.2.0+1.30"
    assert data["commit"] == "fedcba9"
    assert data["promoted_by"] == "c3d4e5"
    assert data["status"] == "idle"
    assert data["first_seeded_at"] == "2026-01-01T00:00:00Z"
    assert data["seeded_at"] == "2026-02-01T00:00:00Z"
    assert data["node"] is None
    assert [(h["event"], h["from"], h["to"], h["run_id"]) for h in data["history"]] == [
        ("seeded", None, "idle", "a1b2c3"),
        ("status", "idle", "seeding", "c3d4e5"),
        ("reseeded", "seeding", "idle", "c3d4e5"),
    ]


@pytest.mark.parametrize(("current", "target"), list(itertools.product(STATUSES, STATUSES)))
def test_every_transition(reg, current, target):
    seeded(reg)
    for step in PATH_TO[current]:
        reg.set_status(step, "b2c3d4")
    before = Path(reg.path).read_bytes()
    if current == target:
        # The same status: a no-op for idle/deployed whoever sets it, and for the same run.
        assert reg.set_status(target, "b2c3d4") is False
        assert Path(reg.path).read_bytes() == before
    if (current, target) in ALLOWED:
        changed = reg.set_status(target, "e5f6a7")
        data = reg.load()
        assert data["status"] == target
        if current == target and target in ("idle", "deployed"):
            assert changed is False
            assert Path(reg.path).read_bytes() == before
        else:
            assert changed is True
            assert data["status_by"] == "e5f6a7"
            assert data["history"][-1]["from"] == current
            assert data["history"][-1]["to"] == target
            assert data["history"][-1]["run_id"] == "e5f6a7"
        assert reg.at_rest() is (target == "idle")
    elif current != target or target not in ("idle", "deployed"):
        with pytest.raises(TransitionError, match=f"cannot go from {current} to {target}"):
            reg.set_status(target, "e5f6a7")
        assert Path(reg.path).read_bytes() == before


def test_quick_must_restore_before_idle_and_the_message_says_who_left_it(reg):
    seeded(reg)
    reg.set_status("quick", "b2c3d4")
    data = reg.load()
    assert describe_status(data) == f"quick since {data['updated_at']} (run b2c3d4)"
    with pytest.raises(TransitionError) as caught:
        reg.set_status("idle", "b2c3d4")
    assert str(caught.value) == (
        f"the canonical of custom-html cannot go from quick to idle (it is quick since "
        f"{data['updated_at']} (run b2c3d4)); from quick it may go to: restoring, seeding"
    )
    assert reg.set_status("restoring", "c3d4e5") is True
    assert reg.set_status("idle", "c3d4e5") is True
    assert reg.at_rest()


def test_a_crash_mid_run_is_visible_to_the_next_run(state_dir):
    first = Registry(str(state_dir), "custom-html")
    seeded(first)
    first.set_status("quick", "b2c3d4")
    # The run dies here. The next run, another process, reads the file afresh.
    nxt = Registry(str(state_dir), "custom-html")
    data = nxt.load()
    assert nxt.at_rest() is False
    assert data["status"] == "quick" and data["status_by"] == "b2c3d4"
    assert data["history"][-1]["run_id"] == "b2c3d4"
    assert nxt.set_status("restoring", "c3d4e5") is True


def test_unknown_status_and_bad_run_id_are_refused(reg):
    seeded(reg)
    before = Path(reg.path).read_bytes()
    with pytest.raises(TransitionError, match="status 'promoted' is unknown"):
        reg.set_status("promoted", "b2c3d4")
    with pytest.raises(ValidationError, match="run id 'XYZ' is invalid"):
        reg.set_status("quick", "XYZ")
    assert Path(reg.path).read_bytes() == before


def test_history_is_bounded(reg):
    seeded(reg)
    for i in range(HISTORY_LIMIT):
        reg.set_status("deployed", f"{i:06x}")
        reg.set_status("idle", f"{i:06x}")
    data = reg.load()
    assert len(data["history"]) == HISTORY_LIMIT
    assert data["history"][-1]["to"] == "idle"
    assert data["history"][-1]["run_id"] == f"{HISTORY_LIMIT - 1:06x}"


def test_a_failed_write_keeps_the_old_file(reg, monkeypatch):
    seeded(reg)
    before = Path(reg.path).read_bytes()

    def boom(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space left"):
        reg.set_status("quick", "b2c3d4")
    with pytest.raises(OSError, match="No space left"):
        seeded(reg, version="9.9.9+9")
    monkeypatch.undo()
    assert Path(reg.path).read_bytes() == before
    assert os.listdir(reg.directory) == ["canonical.json"]  # no temporary left
    assert reg.load()["status"] == "idle"


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (b'{"recipe": "custom-ht', "is not valid JSON"),
        (b"", "is not valid JSON"),
        (b"null", "does not hold a JSON object"),
        (b"[]", "does not hold a JSON object"),
        (b'{"recipe": "custom-html"}', "lacks domain, version, commit"),
    ],
)
def test_a_corrupt_registry_is_named_and_never_replaced(reg, content, complaint):
    os.makedirs(reg.directory)
    Path(reg.path).write_bytes(content)
    for call in (
        reg.load,
        reg.at_rest,
        lambda: reg.set_status("quick", "b2c3d4"),
        lambda: seeded(reg),
        lambda: reg.set_node("node-1", "b2c3d4"),
    ):
        with pytest.raises(StateError) as caught:
            call()
        assert reg.path in str(caught.value)
        assert complaint in str(caught.value)
    assert Path(reg.path).read_bytes() == content
    assert reg.exists()


def test_a_registry_of_another_recipe_or_status_is_refused(reg):
    data = seeded(reg)
    Path(reg.path).write_text(json.dumps({**data, "recipe": "notes"}))
    with pytest.raises(StateError, match="is the registry of recipe 'notes', not 'custom-html'"):
        reg.load()
    Path(reg.path).write_text(json.dumps({**data, "status": "promoted"}))
    with pytest.raises(StateError, match="unknown status 'promoted'"):
        reg.load()


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("domain", "Not A Domain", "domain 'Not A Domain' is invalid"),
        ("version", "", "version '' is invalid"),
        ("version", "1.0 0", "version '1.0 0' is invalid"),
        ("commit", "main", "commit 'main' is invalid"),
        ("commit", "ABCDEF1", "commit 'ABCDEF1' is invalid"),
        ("promoted_by", "run-1", "run id 'run-1' is invalid"),
        ("snapshot_digest", "", "snapshot digest '' is invalid"),
        ("node", "", "node '' is invalid"),
    ],
)
def test_bad_seed_values_are_refused_before_writing(reg, field, value, complaint):
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        seeded(reg, **{field: value})
    assert not reg.exists()


def test_set_node(reg):
    seeded(reg)
    assert reg.set_node("node-2", "b2c3d4") is True
    assert reg.load()["node"] == "node-2"
    assert reg.set_node("node-2", "b2c3d4") is False
    assert reg.set_node(None, "b2c3d4") is True
    data = reg.load()
    assert data["node"] is None
    assert data["status"] == "idle"
    assert data["history"][-1]["event"] == "node"
    # A node change does not hide who set the status.
    assert describe_status(data) == f"idle since {data['history'][0]['at']} (run a1b2c3)"


def test_remove_needs_an_explicit_confirmation(reg):
    seeded(reg)
    for confirm in (False, None, "yes", 1):
        with pytest.raises(
            StateError, match=r"refusing to remove .* without an explicit confirmation"
        ):
            reg.remove(confirm=confirm)
        assert reg.exists()
    assert reg.remove(confirm=True) is True
    assert not reg.exists()
    assert reg.load() is None
    assert reg.remove(confirm=True) is False


def test_bad_state_dir_or_recipe(state_dir):
    with pytest.raises(ValidationError, match="relative"):
        Registry("var/lib/ci-warm", "custom-html")
    with pytest.raises(ValidationError, match=re.escape("recipe name '../x' is invalid")):
        Registry(str(state_dir), "../x")
