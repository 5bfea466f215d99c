"""A small but complete warm state directory for the status page tests, made with the
collection's own stores (registry, run records, alerts, lock): what the page must show."""

from __future__ import annotations

import os
from pathlib import Path

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertStore
from ansible_collections.coopcloud.ci.plugins.module_utils._lock import AppLock
from ansible_collections.coopcloud.ci.plugins.module_utils._registry import Registry
from ansible_collections.coopcloud.ci.plugins.module_utils._runs import RunRecord

COMMIT = "2a927ef4fd1d5b0c7a3e9f6d1c2b3a4f5e6d7c8b"
NOTES_COMMIT = "9c1e0b7a55d2e4f60718293a4b5c6d7e8f901234"
HOSTILE_NOTES = 'health gate failed: <script>alert("x")</script> {{ 7 * 7 }} & "quoted"'

#: (run_id, mode, recipe, started_at, finished_at, stage result), oldest first.
RUNS = (
    ("a0a001", "cold", "custom-html", "2026-01-01T02:00:00Z", "2026-01-01T02:06:10Z", "pass"),
    ("a0a002", "quick", "custom-html", "2026-01-01T09:00:00Z", "2026-01-01T09:01:10Z", "pass"),
    ("a0a003", "quick", "custom-html", "2026-01-01T10:00:00Z", "2026-01-01T10:01:40Z", "fail"),
    ("a0a004", "cold", "notes", "2026-01-01T03:00:00Z", "2026-01-01T03:12:00Z", "fail"),
)
RUNNING = ("a0a005", "quick", "notes", "2026-01-01T11:00:00Z")


def catalog(tmp_path: Path, recipes: dict[str, bool]) -> Path:
    """A catalog under ``tmp_path`` with one ``recipe.yml`` a recipe, ``{name: enrolled}``."""
    root = tmp_path / "catalog"
    for name, enrolled in recipes.items():
        (root / name).mkdir(parents=True)
        (root / name / "recipe.yml").write_text(
            f"recipe: {name}\nwarm_canonical: {'true' if enrolled else 'false'}\n"
        )
    return root


def build(state_dir: str) -> dict:
    """Two canonicals (custom-html idle, notes locked by a running quick run), five runs,
    two unseen alerts (one with hostile notes). Returns what was written, for asserts."""
    os.makedirs(state_dir, exist_ok=True)
    html = Registry(state_dir, "custom-html").seed(
        "warm-custom-html.ci.test", "1.1.0+1.29", COMMIT, "a0a001", "sha256-aaaa"
    )
    notes = Registry(state_dir, "notes").seed(
        "warm-notes.ci.test", "1.1.0+2.1", NOTES_COMMIT, "c0ffee", "sha256-bbbb"
    )
    for run_id, mode, recipe, start, end, result in RUNS:
        record = RunRecord.start(
            state_dir,
            run_id,
            mode,
            recipe,
            "main",
            version="1.1.0+1.29",
            commit=COMMIT,
            started_at=start,
        )
        record.stage("install", result, finished_at=end)
        record.finish(finished_at=end)
    run_id, mode, recipe, start = RUNNING
    RunRecord.start(state_dir, run_id, mode, recipe, "main", started_at=start)
    alerts = AlertStore(state_dir)
    rollback = alerts.write(
        "rollback",
        "keycloak",
        attempted="26.1.0+26.0.7",
        last_good="26.0.0+26.0.5",
        recovered=True,
        notes=HOSTILE_NOTES,
    )
    held = alerts.write("held-major", "traefik", attempted="3.0.0+3.0", last_good="2.1.0+2.11")
    lock = AppLock(state_dir, "notes").acquire(
        RUNNING[0], timeout=0, owner_pid=os.getpid(), play="quick.yml"
    )
    return {
        "registries": {"custom-html": html, "notes": notes},
        "alerts": [rollback, held],
        "lock": lock,
    }
