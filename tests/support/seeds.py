"""Seeded canonicals, one green cold run per recipe for the whole session.

Several reliability modules need a canonical of custom-html or notes at its known-good
in a state dir of their own (the crash lanes, the kills, the overlay crashes). A green
cold run of the latest tag seeds one (the promotion: snapshot of the cold app, then
``warm_canonical state=seeded``) and costs a deploy, a health gate, an undeploy and a
snapshot. :class:`Seeds` pays it once per recipe and examples commit, for every xdist
worker of the run (a folder beside the workers' base temps, under a file lock), and keeps
what the promotion left in the recipe's folder: the snapshot slot and the secrets key.
:meth:`Seeds.adopt` gives a bed its own canonical from that template the way the
promotion's last step does it - a copy of the slot and key in the bed's state dir, then
``warm_canonical state=seeded`` with the bed's domain suffix, which creates the bed's own
volumes and registry. Beds share no state dir, lock, volume or stack.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry
from ansible_collections.coopcloud.ci.plugins.module_utils._state import RecipePaths
from support.ansible import run_module
from support.warmbed import Bed

#: What a promotion leaves in ``<state_dir>/<recipe>/`` that a copy carries.
CARRIED = ("snapshot", "secrets")


class Seeds:
    def __init__(self, root: Path, examples: dict, examples_root: Path) -> None:
        self.root = root
        self.examples = examples
        self.examples_root = examples_root

    def template(self, recipe: str) -> dict[str, Any]:
        """The seeded template of ``recipe``: its state dir, the seeding run and version."""
        tag = self.examples[recipe]["latest"]
        commit = subprocess.run(
            ["git", "-C", self.examples[recipe]["path"], "rev-parse", f"{tag}^{{commit}}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        where = self.root / f"{recipe}-{commit[:12]}"
        done = where / "seeded.json"
        with open(self.root / f"{where.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait for the one seeding
            if not done.exists():
                shutil.rmtree(where, ignore_errors=True)  # a seeding that failed before
                self._seed(recipe, tag, commit, where)
        return json.loads(done.read_text())

    def _seed(self, recipe: str, tag: str, commit: str, where: Path) -> None:
        bed = Bed.make(where, self.examples_root, f"t{os.urandom(3).hex()}", ["install"])
        try:
            registry = bed.seed(recipe, tag)
        finally:
            bed.remove_all((recipe,))  # only the slot and the key are kept
        assert registry["commit"] == commit, registry
        seeded = {"state_dir": str(bed.state_dir), "run_id": registry["promoted_by"],
                  "version": tag, "commit": commit}  # fmt: skip
        (where / "seeded.json").write_text(json.dumps(seeded))

    def adopt(self, recipe: str, state_dir: Path, suffix: str, *, overlay: bool) -> dict:
        """A canonical of ``recipe`` of its own in ``state_dir`` (domain suffix ``suffix``),
        seeded from the template; its registry."""
        seed = self.template(recipe)
        source = RecipePaths.of(seed["state_dir"], recipe)
        target = RecipePaths.of(str(state_dir), recipe)
        os.makedirs(target.directory, exist_ok=True)
        for name in CARRIED:
            shutil.copytree(getattr(source, name), getattr(target, name))
        res = run_module(
            "coopcloud.ci.warm_canonical",
            {"recipe": recipe, "state": "seeded", "run_id": seed["run_id"],
             "state_dir": str(state_dir), "domain_suffix": suffix, "overlay": overlay},
        )  # fmt: skip
        assert res.rc == 0, res.stdout[-6000:]
        registry = Registry(str(state_dir), recipe).load()
        want = (seed["version"], seed["commit"], seed["run_id"], "idle")
        got = (registry["version"], registry["commit"], registry["promoted_by"], registry["status"])
        assert got == want, registry
        return registry

    def adopt_into(self, bed: Bed, recipe: str) -> dict[str, Any]:
        """:meth:`adopt` into a test bed (its state dir, suffix and overlay choice)."""
        return self.adopt(recipe, bed.state_dir, bed.suffix, overlay=bed.overlay)


@pytest.fixture(scope="session")
def seeds(examples, examples_root, tmp_path_factory) -> Seeds:
    """The session's seeded templates (shared by the xdist workers of one run)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "seeded"
    root.mkdir(exist_ok=True)
    return Seeds(root, examples, examples_root)
