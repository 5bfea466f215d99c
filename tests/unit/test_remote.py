"""_remote: the node engines setting and the pinned node's checks (the manager's answers
are the boundary: a fake of the Docker API's node inspection, with the API's own shapes).
The data path itself runs on the real two-node bed: tests/integration/test_multinode.py."""

from __future__ import annotations

import json

import docker.errors
import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._remote import (
    ENGINES_ENV,
    NodeError,
    engines,
    node_by_hostname,
    node_client,
    pinned_node,
)


class FakeAPI:
    """``inspect_node`` and ``nodes`` as the Docker Engine API answers them."""

    def __init__(self, nodes):
        self._nodes = nodes

    def inspect_node(self, node_id):
        for raw in self._nodes:
            if raw["ID"] == node_id:
                return raw
        raise docker.errors.NotFound(f"node {node_id} not found")

    def nodes(self, filters=None):
        return list(self._nodes)


class FakeManager:
    def __init__(self, *nodes):
        self.api = FakeAPI(list(nodes))


def node(node_id, host, state="ready", availability="active"):
    return {
        "ID": node_id,
        "Description": {"Hostname": host},
        "Status": {"State": state},
        "Spec": {"Availability": availability},
    }


def test_engines_reads_a_json_object_and_refuses_anything_else():
    assert engines({}) == {}
    assert engines({ENGINES_ENV: ' {"w1": "ssh://root@w1"} '}) == {"w1": "ssh://root@w1"}
    with pytest.raises(NodeError, match="is not JSON"):
        engines({ENGINES_ENV: "{w1: x}"})
    for bad in ('["w1"]', '{"w1": ""}', '{"w1": 3}'):
        with pytest.raises(NodeError, match="node hostname -> engine URL"):
            engines({ENGINES_ENV: bad})


def test_a_ready_active_node_is_returned_with_its_hostname():
    manager = FakeManager(node("abc123", "worker-1"))
    assert pinned_node(manager, "abc123", "notes") == {"id": "abc123", "hostname": "worker-1"}
    assert node_by_hostname(manager, "worker-1", "notes") == "abc123"


@pytest.mark.parametrize(
    ("state", "availability", "why"),
    [
        ("ready", "drain", "which is drained"),
        ("ready", "pause", "which is pause"),
        ("down", "active", "which is down (its engine does not answer the swarm)"),
    ],
)
def test_a_drained_or_down_node_is_refused_naming_it_and_the_way_back(state, availability, why):
    manager = FakeManager(node("abc123", "worker-1", state, availability))
    with pytest.raises(NodeError) as err:
        pinned_node(manager, "abc123", "notes")
    text = str(err.value)
    assert "the canonical of notes is pinned to swarm node worker-1 (abc123)" in text
    assert why in text
    assert "no copy is made elsewhere" in text
    assert "docker node update --availability active worker-1" in text
    assert "warm_canonical state=absent confirm=true for notes" in text


def test_a_node_gone_from_the_swarm_is_refused():
    with pytest.raises(
        NodeError, match="pinned to swarm node gone42, which is gone from the swarm"
    ):
        pinned_node(FakeManager(), "gone42", "notes")
    with pytest.raises(NodeError, match="taken on node nowhere, which is not in this swarm"):
        node_by_hostname(FakeManager(node("a", "b")), "nowhere", "notes")


def test_a_node_without_a_known_engine_names_the_setting(monkeypatch):
    monkeypatch.setenv(ENGINES_ENV, '{"other": "unix:///nonexistent.sock"}')
    with pytest.raises(NodeError, match=f"add it to {ENGINES_ENV}"):
        node_client("worker-1", "notes")


def test_an_engine_that_does_not_answer_is_named_in_one_sentence(tmp_path, monkeypatch):
    """A real SDK client on a socket nobody serves: the node's engine stopped or restarting."""
    from ansible_collections.coopcloud.ci.plugins.module_utils._remote import RemoteAppSnapshot
    from ansible_collections.coopcloud.ci.plugins.module_utils._snapshot import SnapshotStore

    url = f"unix://{tmp_path}/gone.sock"
    monkeypatch.setenv(ENGINES_ENV, json.dumps({"w-1": url}))
    engine = docker.DockerClient(base_url=url, version="1.41")
    app = RemoteAppSnapshot(
        FakeManager(), engine, SnapshotStore(str(tmp_path), "notes"), "warm-notes.x.test", "w-1"
    )
    with pytest.raises(NodeError) as err:
        app.equal("warm-notes_x_test_data", {"tree_digest": "0" * 64})
    text = str(err.value)
    assert text.startswith(f"the Docker engine of node w-1 ({url}) failed while reading")
    assert "failed while reading a volume's tree" in text
    assert "the next run restores its known-good before use" in text
    with pytest.raises(NodeError, match="failed while creating a volume"):
        app.create_volume("data")
