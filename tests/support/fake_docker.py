"""A small in-memory stand-in for the Docker engine's low-level API (docker.APIClient).

Only what the disk guard and the cold-run finder call, with the engine's filter rules for
``label`` (``key`` or ``key=value``), ``status``, ``dangling`` and ``volume``, and the
shapes of the engine's list answers. Every removal is logged in ``calls`` in order.
"""

from __future__ import annotations

import datetime

NS = "com.docker.stack.namespace"


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


def _match_label(labels: dict[str, str], wanted: str | list[str] | None) -> bool:
    if wanted is None:
        return True
    for item in [wanted] if isinstance(wanted, str) else wanted:
        key, eq, value = item.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


class FakeAPI:
    def __init__(self, now: datetime.datetime | None = None, root: str = "/var/lib/docker"):
        self.now = now or datetime.datetime.now(datetime.UTC)
        self.root = root
        self._services: list[dict] = []
        self._volumes: list[dict] = []
        self._secrets: list[dict] = []
        self._configs: list[dict] = []
        self._networks: list[dict] = []
        self._containers: list[dict] = []
        self._images: list[dict] = []
        self.build_cache: list[dict] = []
        self.calls: list[tuple[str, str]] = []
        self.prune_answer = {"ImagesDeleted": [], "SpaceReclaimed": 0}
        self.in_use: dict[str, str] = {}  # volume -> error text while in use
        self._n = 0

    # -- building ----------------------------------------------------------------------

    def _id(self) -> str:
        self._n += 1
        return f"{self._n:064x}"

    def _ago(self, hours: float) -> datetime.datetime:
        return self.now - datetime.timedelta(hours=hours)

    def add_service(self, name, stack=None, hours=0.0):
        labels = {NS: stack} if stack else {}
        t = iso(self._ago(hours))
        self._services.append(
            {
                "ID": self._id(),
                "CreatedAt": t,
                "UpdatedAt": t,
                "Spec": {"Name": name, "Labels": labels},
            }
        )

    def add_volume(self, name, stack=None, hours=0.0, mountpoint="", labels=None):
        all_labels = dict(labels or {})
        if stack:
            all_labels[NS] = stack
        self._volumes.append(
            {
                "Name": name,
                "Driver": "local",
                "Labels": all_labels or None,
                "Mountpoint": mountpoint or f"{self.root}/volumes/{name}/_data",
                "CreatedAt": self._ago(hours).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def _swarm_object(self, name, stack, hours) -> dict:
        """A secret or config as the engine lists it."""
        t = iso(self._ago(hours))
        labels = {NS: stack} if stack else {}
        return {
            "ID": self._id(),
            "CreatedAt": t,
            "UpdatedAt": t,
            "Spec": {"Name": name, "Labels": labels},
        }

    def add_secret(self, name, stack=None, hours=0.0):
        self._secrets.append(self._swarm_object(name, stack, hours))

    def add_config(self, name, stack=None, hours=0.0):
        self._configs.append(self._swarm_object(name, stack, hours))

    def add_network(self, name, stack=None, hours=0.0):
        labels = {NS: stack} if stack else {}
        self._networks.append(
            {"Id": self._id(), "Name": name, "Created": iso(self._ago(hours)), "Labels": labels}
        )

    def add_container(
        self, name, stack=None, state="exited", hours=0.0, finished_hours=None, size=100, volumes=()
    ):
        labels = {NS: stack} if stack else {}
        ident = self._id()
        finished = self._ago(hours if finished_hours is None else finished_hours)
        self._containers.append(
            {
                "Id": ident,
                "Names": [f"/{name}"],
                "Labels": labels,
                "State": state,
                "Created": int(self._ago(hours).timestamp()),
                "SizeRw": size,
                "_finished": iso(finished) if state != "running" else "0001-01-01T00:00:00Z",
                "_volumes": list(volumes),
            }
        )
        return ident

    def add_image(self, ident, dangling=True, hours=48.0, size=1000):
        self._images.append(
            {
                "Id": ident,
                "RepoTags": None if dangling else [f"{ident}:latest"],
                "Created": int(self._ago(hours).timestamp()),
                "Size": size,
            }
        )

    # -- the API -------------------------------------------------------------------------

    def info(self):
        return {"DockerRootDir": self.root, "Name": "node-1"}

    @staticmethod
    def _by_spec_label(objects: list[dict], filters) -> list[dict]:
        """The services, secrets or configs whose ``Spec.Labels`` match the label filter."""
        want = (filters or {}).get("label")
        return [o for o in objects if _match_label(o["Spec"]["Labels"], want)]

    def services(self, filters=None):
        return self._by_spec_label(self._services, filters)

    def secrets(self, filters=None):
        return self._by_spec_label(self._secrets, filters)

    def configs(self, filters=None):
        return self._by_spec_label(self._configs, filters)

    def networks(self, filters=None):
        return [
            n for n in self._networks if _match_label(n["Labels"], (filters or {}).get("label"))
        ]

    def volumes(self, filters=None):
        found = [
            v
            for v in self._volumes
            if _match_label(v["Labels"] or {}, (filters or {}).get("label"))
        ]
        return {"Volumes": found or None, "Warnings": None}

    def containers(self, all=False, filters=None, size=False):
        filters = filters or {}
        out = []
        for c in self._containers:
            if not all and c["State"] != "running":
                continue
            if not _match_label(c["Labels"], filters.get("label")):
                continue
            status = filters.get("status")
            if status and c["State"] not in ([status] if isinstance(status, str) else status):
                continue
            if "volume" in filters and filters["volume"] not in c["_volumes"]:
                continue
            row = {k: v for k, v in c.items() if not k.startswith("_")}
            if not size:
                row.pop("SizeRw", None)
            out.append(row)
        return out

    def inspect_container(self, ident):
        for c in self._containers:
            if c["Id"] == ident:
                return {"Id": ident, "State": {"Status": c["State"], "FinishedAt": c["_finished"]}}
        raise RuntimeError(f"404 Client Error: No such container: {ident}")

    def images(self, filters=None):
        if (filters or {}).get("dangling"):
            return [i for i in self._images if i["RepoTags"] is None]
        return list(self._images)

    def df(self):
        return {"BuildCache": self.build_cache}

    # removals

    def remove_service(self, ident):
        self.calls.append(("service", ident))
        gone = [s for s in self._services if s["ID"] == ident]
        self._services = [s for s in self._services if s["ID"] != ident]
        # The engine removes the service's task containers a moment later: here at once.
        for svc in gone:
            stack = svc["Spec"]["Labels"].get(NS)
            self._containers = [
                c for c in self._containers if not (stack and c["Labels"].get(NS) == stack)
            ]
        return True

    def remove_container(self, ident, force=False):
        self.calls.append(("container", ident))
        self._containers = [c for c in self._containers if c["Id"] != ident]

    def remove_volume(self, name, force=False):
        if name in self.in_use:
            raise RuntimeError(self.in_use.pop(name))
        self.calls.append(("volume", name))
        self._volumes = [v for v in self._volumes if v["Name"] != name]

    def remove_secret(self, ident):
        self.calls.append(("secret", ident))
        self._secrets = [s for s in self._secrets if s["ID"] != ident]

    def remove_config(self, ident):
        self.calls.append(("config", ident))
        self._configs = [s for s in self._configs if s["ID"] != ident]

    def remove_network(self, ident):
        self.calls.append(("network", ident))
        self._networks = [n for n in self._networks if n["Id"] != ident]

    def prune_images(self, filters=None):
        self.calls.append(("prune_images", repr(sorted((filters or {}).items()))))
        return self.prune_answer

    # views for assertions

    def volume_names(self) -> list[str]:
        return sorted(v["Name"] for v in self._volumes)

    def removed(self, kind: str) -> list[str]:
        return [name for k, name in self.calls if k == kind]


class FakeClient:
    """What ``docker.from_env()`` returns, as far as the code under test goes."""

    def __init__(self, api: FakeAPI):
        self.api = api
