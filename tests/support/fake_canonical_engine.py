"""A stand-in engine and driver for unit tests of the canonical (tests/unit/test_canonical*.py,
test_warm_canonical_module.py) and of volume_snapshot (its engine only).

Only the engine is fake: volumes are real directories under a tmp root, snapshots are real
archives written by the real store, and the stack state is read by the real
``_swarm.read_stack`` from this engine's answers. ``FakeDriver`` is the real
``_driver.Driver`` with deploy/undeploy/remove acting on the fake engine.
"""

from __future__ import annotations

from pathlib import Path

from ansible_collections.coopcloud.ci.plugins.module_utils._driver import Driver
from ansible_collections.coopcloud.ci.plugins.module_utils._swarm import (
    COMMIT_LABEL,
    NAMESPACE_LABEL,
    VERSION_LABEL,
)

NODE_ID = "node1id0000000000000000"


def _labels_match(labels: dict, filters: dict | None) -> bool:
    want = (filters or {}).get("label")
    if not want:
        return True
    key, _, value = want.partition("=")
    return labels.get(key) == value


def corrupt_snapshot(state_dir: Path, recipe: str, volume: str = "content") -> Path:
    """Flip one bit inside the archive of ``volume`` in ``recipe``'s snapshot; its path."""
    archive = Path(state_dir) / recipe / "snapshot" / f"{volume}.tar"
    data = bytearray(archive.read_bytes())
    data[600] ^= 0x01
    archive.write_bytes(bytes(data))
    return archive


class FakeVolume:
    def __init__(self, attrs: dict) -> None:
        self.attrs = attrs
        self.name = attrs["Name"]


class FakeSecret:
    def __init__(self, name: str) -> None:
        self.name = name


def swarm_node(node_id: str, host: str, state: str = "ready", availability: str = "active") -> dict:
    """A node as the Docker Engine API describes it (the keys the canonical reads)."""
    return {
        "ID": node_id,
        "Description": {"Hostname": host},
        "Status": {"State": state},
        "Spec": {"Availability": availability},
    }


class FakeAPI:
    def __init__(self) -> None:
        self.volume_list: dict[str, dict] = {}
        self.service_list: list[dict] = []
        self.task_list: dict[str, list[dict]] = {}
        #: volume name -> ids of the (stopped) containers that mount it
        self.containers_by_volume: dict[str, list[str]] = {}
        #: the swarm's nodes as ``GET /nodes/{id}`` answers (this engine's own by default)
        self.node_list: dict[str, dict] = {NODE_ID: swarm_node(NODE_ID, "node-1")}

    def inspect_node(self, node_id):
        import docker.errors

        if node_id not in self.node_list:
            raise docker.errors.NotFound(f"node {node_id} not found")
        return self.node_list[node_id]

    def nodes(self, filters=None):
        return list(self.node_list.values())

    def services(self, filters=None):
        return [s for s in self.service_list if _labels_match(s["Spec"]["Labels"], filters)]

    def tasks(self, filters=None):
        return self.task_list.get((filters or {}).get("service"), [])

    def networks(self, filters=None):
        return []

    def secrets(self, filters=None):
        return []

    def configs(self, filters=None):
        return []

    def containers(self, all=False, filters=None):
        if filters and "volume" in filters:
            return [{"Id": c} for c in self.containers_by_volume.get(filters["volume"], [])]
        return []

    def volumes(self, filters=None):
        found = [v for v in self.volume_list.values() if _labels_match(v["Labels"], filters)]
        return {"Volumes": found}


class FakeSecrets:
    def __init__(self) -> None:
        self.names: list[str] = []

    def list(self, filters=None):
        return [FakeSecret(n) for n in self.names]


class FakeEngine:
    """``docker.DockerClient`` as far as the canonical uses it."""

    def __init__(self, root: Path, node_id: str = NODE_ID) -> None:
        self.root = root
        self.node_id = node_id
        self.api = FakeAPI()
        self.volumes = self
        self.secrets = FakeSecrets()

    def info(self):
        return {"Name": "node-1", "Swarm": {"NodeID": self.node_id}}

    def create(self, name, driver, labels):
        assert driver == "local"
        mount = self.root / name / "_data"
        mount.mkdir(parents=True)
        self.add_volume(name, mount, labels)
        return FakeVolume(self.api.volume_list[name])

    def add_volume(self, name: str, mount: Path, labels: dict) -> None:
        self.api.volume_list[name] = {
            "Name": name, "Mountpoint": str(mount), "Driver": "local", "Labels": dict(labels),
        }  # fmt: skip

    def run_stack(self, stack: str, labels: dict, image: str = "ccci/web:1.29") -> None:
        """Put one converged service ``<stack>_app`` on the engine."""
        name = f"{stack}_app"
        spec = {
            "Name": name,
            "Labels": {NAMESPACE_LABEL: stack, **labels},
            "TaskTemplate": {"ContainerSpec": {"Image": image}},
            "Mode": {"Replicated": {"Replicas": 1}},
        }
        self.api.service_list = [s for s in self.api.service_list if s["Spec"]["Name"] != name]
        self.api.service_list.append({"ID": name, "Spec": spec})
        self.api.task_list[name] = [
            {
                "ID": f"task-{name}",
                "Slot": 1,
                "DesiredState": "running",
                "Status": {"State": "running"},
                "Spec": {"ContainerSpec": {"Image": image}},
            }
        ]


class FakeDriver(Driver):
    """The real driver interface over :class:`FakeEngine`; every call is logged."""

    name = "fake"

    def __init__(self, engine: FakeEngine) -> None:
        super().__init__(client=engine)
        self.engine = engine
        self.calls: list[tuple] = []

    def deploy(self, stack, workdir, compose_files, env, secrets=None, version=None,
               commit=None, timeout=300, labels=None, publish=None, constraints=None):  # fmt: skip
        self.calls.append(("deploy", stack, version, commit, tuple(constraints or ()), publish))
        self.engine.secrets.names.extend(sorted(secrets or {}))
        self.engine.run_stack(
            stack, {**(labels or {}), COMMIT_LABEL: commit, VERSION_LABEL: version}
        )
        return {"changed": True, "secrets_created": sorted(secrets or {}), "elapsed": 0.1}

    def undeploy(self, stack, timeout=120):
        self.calls.append(("undeploy", stack))
        before = len(self.engine.api.service_list)
        self.engine.api.service_list = [
            s for s in self.engine.api.service_list
            if s["Spec"]["Labels"].get(NAMESPACE_LABEL) != stack
        ]  # fmt: skip
        return {"changed": before != len(self.engine.api.service_list), "removed": {}}

    def remove(self, stack, timeout=120):
        self.undeploy(stack)
        self.calls[-1] = ("remove", stack)
        gone = sorted(
            name for name, v in self.engine.api.volume_list.items()
            if v["Labels"].get(NAMESPACE_LABEL) == stack
        )  # fmt: skip
        for name in gone:
            del self.engine.api.volume_list[name]
        return {"changed": True, "removed": {"volumes": gone, "secrets": []}}

    def published_port(self, stack, service, port):
        return None
