"""catalog_entry's main(): one entry, the listing, missing entries, errors, check mode."""

from __future__ import annotations

from pathlib import Path

from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.modules import catalog_entry

SHIPPED = Path(__file__).resolve().parents[2] / "catalog"


def run(args: dict, capsys) -> tuple[int, dict]:
    return run_main(catalog_entry, args, capsys)


def write_entry(catalog: Path, recipe: str, text: str) -> None:
    (catalog / recipe).mkdir(parents=True, exist_ok=True)
    (catalog / recipe / "recipe.yml").write_text(text)


def test_one_entry_from_the_default_catalog(capsys, monkeypatch):
    monkeypatch.delenv("CCCI_CATALOG_DIR", raising=False)
    rc, out = run({"recipe": "notes"}, capsys)
    assert rc == 0, out
    assert out["changed"] is False
    assert Path(out["catalog_dir"]).resolve() == SHIPPED.resolve()
    entry = out["entry"]
    assert entry["recipe"] == "notes" and entry["found"] is True
    assert entry["overlays"] == [{"file": "db/compose.db-tune.yml", "env": {"DB_CACHE_MB": "256"}}]
    assert entry["tests"] == ["test_notes.py"]
    assert out["enrolled"] == ["custom-html", "notes"]


def test_listing_reports_invalid_entries_as_warnings(tmp_path, capsys):
    write_entry(tmp_path, "alpha", "recipe: alpha\nwarm_canonical: true\n")
    write_entry(tmp_path, "beta", "recipe: beta\n")
    write_entry(tmp_path, "pad", "recipe: pad\nwarm_canonicl: true\n")
    rc, out = run({"catalog_dir": str(tmp_path)}, capsys)
    assert rc == 0, out
    assert out["enrolled"] == ["alpha"]
    assert out["recipes"] == ["alpha", "beta"]
    assert sorted(out["entries"]) == ["alpha", "beta"]
    assert out["entries"]["beta"]["warm_canonical"] is False
    assert len(out["errors"]) == 1 and "unknown key 'warm_canonicl'" in out["errors"][0]
    # 2.19 wraps warnings in WarningSummary objects: compare their messages.
    assert [w["event"]["msg"] for w in out["warnings"]] == out["errors"]


def test_invalid_entry_fails_with_the_file_and_key(tmp_path, capsys):
    write_entry(tmp_path, "pad", "recipe: pad\noverlays: ['../escape.yml']\n")
    rc, out = run({"catalog_dir": str(tmp_path), "recipe": "pad"}, capsys)
    assert rc == 1
    assert out["failed"] is True
    assert out["msg"] == (
        f"{tmp_path}/pad/recipe.yml: key 'overlays[0]' must stay inside the recipe "
        "('..' is refused): '../escape.yml'"
    )


def test_missing_entry_fails_unless_missing_ok(tmp_path, capsys):
    rc, out = run({"catalog_dir": str(tmp_path), "recipe": "plain"}, capsys)
    assert rc == 1 and "no entry for recipe 'plain'" in out["msg"]
    rc, out = run({"catalog_dir": str(tmp_path), "recipe": "plain", "missing_ok": True}, capsys)
    assert rc == 0, out
    assert out["entry"]["found"] is False and out["entry"]["path"] is None
    assert out["entry"]["stages"] == ["install", "upgrade", "serving", "overlay", "custom"]


def test_missing_catalog_dir_fails_clearly(tmp_path, capsys):
    rc, out = run({"catalog_dir": str(tmp_path / "nope")}, capsys)
    assert rc == 1
    assert (
        out["msg"] == f"catalog directory {tmp_path / 'nope'} does not exist or is not a directory"
    )


def test_check_mode_reads_the_same(tmp_path, capsys):
    write_entry(tmp_path, "alpha", "recipe: alpha\nwarm_canonical: true\n")
    _rc, real = run({"catalog_dir": str(tmp_path), "recipe": "alpha"}, capsys)
    _rc, checked = run(
        {"catalog_dir": str(tmp_path), "recipe": "alpha", "_ansible_check_mode": True}, capsys
    )
    assert checked["changed"] is False and checked["entry"] == real["entry"]


def test_environment_override_of_the_default(tmp_path, capsys, monkeypatch):
    write_entry(tmp_path, "only", "recipe: only\nwarm_canonical: true\n")
    monkeypatch.setenv("CCCI_CATALOG_DIR", str(tmp_path))
    rc, out = run({}, capsys)
    assert rc == 0 and out["catalog_dir"] == str(tmp_path) and out["enrolled"] == ["only"]
