"""The path from a pull request comment to a verdict on it, set up on this host.

Used by tests/integration/test_pr_path.py and scripts/demo-pr. One :class:`PrBed` holds:

- the forge double (Gitea API, every exchange checked against Gitea's OpenAPI document)
  with the recipe's repository ``coop/<recipe>`` (``alice`` may write), the Drone double,
  and the comment bridge (``bin/ccci bridge``, a real process) between them;
- the recipe as Co-op Cloud keeps it: a bare ``origin`` (what the forge serves) and the
  CI host's checkout, a clone of it, under an absolute recipes dir; a pull request's head
  is pushed to ``origin`` as ``refs/pull/<n>/head``, as Gitea does (and, for a fork, only
  there);
- ``docs/drone.example.yml`` as an operator pastes it, with only the values marked
  "adapt" changed (this checkout, an inventory, the state and recipes dirs, the forge);
- an inventory with the test settings (domain suffix, published access, a catalog with
  short health timeouts, see support.warmbed).

A build the Drone double recorded runs through :mod:`support.drone_exec`, the emulator
of drone-runner-exec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_collections.coopcloud.ci.plugins.module_utils._names import stack_name
from support import drone_exec
from support.ansible import ROOT, write_inventory
from support.bridge_process import BridgeProcess
from support.drone_double import DroneDouble
from support.forge_double import ForgeDouble
from support.recipes import commit, git
from support.warmbed import Bed

OWNER = "coop"
FORGE_TOKEN = "forge-token-" + os.urandom(8).hex()
DRONE_TOKEN = "drone-token-" + os.urandom(8).hex()
BRIDGE_SECRET = "hook-secret-" + os.urandom(8).hex()


@dataclass
class PrBed:
    tmp: Path
    recipe: str
    bed: Bed
    origin: Path
    work: Path
    forge: ForgeDouble
    drone: DroneDouble
    bridge: BridgeProcess
    pipeline: str
    inventory: Path
    builds: list[drone_exec.BuildResult] = field(default_factory=list)

    @classmethod
    def make(cls, tmp: Path, recipe_path: str, recipe: str, unique: str, stages) -> PrBed:
        """Copy the example recipe ``recipe_path`` behind a bare origin; start the doubles."""
        tmp.mkdir(parents=True, exist_ok=True)
        origin = tmp / "forge" / f"{recipe}.git"
        subprocess.run(["git", "clone", "-q", "--bare", recipe_path, str(origin)], check=True)
        recipes_dir = tmp / "recipes"
        recipes_dir.mkdir()
        subprocess.run(["git", "clone", "-q", str(origin), str(recipes_dir / recipe)], check=True)
        work = tmp / "contributor"
        subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
        bed = Bed.make(tmp, recipes_dir, unique, stages)
        forge = ForgeDouble(token=FORGE_TOKEN).start()
        forge.add_repo(OWNER, recipe)
        forge.set_permission(OWNER, recipe, "alice", "write")
        drone = DroneDouble(token=DRONE_TOKEN).start()
        drone.add_repo(OWNER, recipe)
        bridge = BridgeProcess(forge, drone, tmp / "bridge-state", secret=BRIDGE_SECRET).start()
        inventory = tmp / "inventory.yml"
        write_inventory(
            inventory,
            {
                "ccci_domain_suffix": bed.suffix,
                "ccci_catalog_dir": str(bed.catalog),
                "ccci_access": "published",
                "ccci_deploy_timeout": bed.deploy_timeout,
                "ccci_lock_poll": 0.5,
            },
        )
        pipeline = drone_exec.adapt(
            (ROOT / "docs" / "drone.example.yml").read_text(),
            {
                "CCCI_HOME": str(ROOT),
                "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
                "ANSIBLE_INVENTORY": str(inventory),
                "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
                "CCCI_STATE_DIR": str(bed.state_dir),
                "CCCI_RECIPES_DIR": str(recipes_dir),
                "CCCI_FORGE_URL": forge.base_url,
            },
        )
        return cls(tmp, recipe, bed, origin, work, forge, drone, bridge, pipeline, inventory)

    def close(self) -> None:
        self.bed.remove_all((self.recipe,))
        self.bridge.stop()
        self.drone.stop()
        self.forge.stop()

    # -- the contributor's side ---------------------------------------------------------

    def pull_request(
        self, *, at: str | None = None, change: dict[str, str] | None = None, fork: str = ""
    ) -> dict[str, Any]:
        """Open a pull request whose head is ``at`` or a new commit with ``change`` on the
        default branch; ``fork`` (``user/name``) makes it a fork's, whose commit then lives
        on the origin only under ``refs/pull/<n>/head``."""
        if change is not None:
            git(self.work, "checkout", "-q", "--detach", at or "HEAD")
            at = commit(self.work, "a change from the pull request", change)
        pr = self.forge.add_pull(
            OWNER,
            self.recipe,
            head_sha=at,
            head_ref="fix" if fork else f"pr-{at[:7]}",
            head_repo=fork or None,
        )
        pushes = [f"{at}:refs/pull/{pr['number']}/head"]
        if not fork:
            pushes.append(f"{at}:refs/heads/{pr['head']['ref']}")
        git(self.work, "push", "-q", str(self.origin), *pushes)
        return pr

    # -- the reviewer's and the bridge's side -----------------------------------------

    def comment(self, pr: dict[str, Any], text: str, commenter: str = "alice") -> dict[str, Any]:
        """``commenter`` comments ``text`` on the pull request; the forge delivers the signed
        webhook to the comment bridge, which creates the Drone build. The new build."""
        before = len(self.drone.builds)
        delivery = self.forge.deliver_comment(
            self.bridge.hook_url, BRIDGE_SECRET, OWNER, self.recipe, pr["number"], text,
            commenter=commenter,
        )  # fmt: skip
        assert delivery.response.status_code == 200, (delivery.response.text, self.bridge.log())
        assert len(self.drone.builds) == before + 1, self.bridge.log()
        return self.drone.builds_for(OWNER, self.recipe)[-1]

    # -- the runner's side --------------------------------------------------------------

    def run_build(self, build: dict[str, Any]) -> drone_exec.BuildResult:
        """The build as drone-runner-exec runs it, on this host's swarm."""
        result = drone_exec.run_build(
            self.pipeline,
            build,
            f"{OWNER}/{self.recipe}",
            link_base=self.drone.base_url,
            secret_values={"forge_token": FORGE_TOKEN},
            tmp_root=str(self.tmp),
        )
        self.builds.append(result)
        for record in self.records():  # a cold run's per-run stack, for the clean-up
            if record["mode"] == "cold" and record.get("domain"):
                stack = stack_name(record["domain"])
                if stack not in self.bed.cold_stacks:
                    self.bed.cold_stacks.append(stack)
        return result

    # -- reading ------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        runs = self.bed.state_dir / "runs"
        return (
            [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
            if runs.exists()
            else []
        )

    def record_of(self, commit_sha: str, mode: str) -> dict[str, Any]:
        found = [r for r in self.records() if r["commit"] == commit_sha and r["mode"] == mode]
        assert len(found) == 1, [(r["run_id"], r["mode"], r["commit"]) for r in self.records()]
        return found[0]

    def statuses(self, sha: str) -> list[dict[str, Any]]:
        return self.forge.statuses(OWNER, self.recipe, sha)

    def comments(self, number: int) -> list[dict[str, Any]]:
        return self.forge.comments(OWNER, self.recipe, number)
