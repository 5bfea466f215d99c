"""The status page renderer (_status_html) and the filter coopcloud.ci.status_html: real state
files through _status.gather, hostile strings, empty state, ages. No Docker, no browser."""

from __future__ import annotations

import copy
import datetime
import html.parser
import re

import pytest
from ansible.errors import AnsibleFilterError
from support import status_state

from ansible_collections.coopcloud.ci.plugins.filter.status_html import FilterModule
from ansible_collections.coopcloud.ci.plugins.module_utils import _status, _status_html
from ansible_collections.coopcloud.ci.plugins.module_utils._status_html import (
    StatusPageError,
    age,
    human_duration,
    render_html,
    view,
)

NOW = "2026-01-01T12:00:00Z"


class Tree(html.parser.HTMLParser):
    """Every element with its attributes, and all text, of a page."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}


@pytest.fixture
def doc(state_dir, tmp_path):
    status_state.build(str(state_dir))
    return _status.gather(str(state_dir), docker_root=str(tmp_path), last_runs=10)


# ------------------------------------------------------------------------------ time


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (71, "1 min 11 s"),
        (7500, "2 h 05 min"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
        (None, "-"),
        (-1, "-"),
        (True, "-"),
        ("12", "-"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_age_counts_to_now_and_says_when_it_cannot():
    now = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
    assert age("2026-01-01T11:59:30Z", now) == "just now"
    assert age("2026-01-01T11:15:00Z", now) == "45 min ago"
    assert age("2026-01-01T08:58:00Z", now) == "3 h 02 min ago"
    assert age("2025-12-30T10:00:00+00:00", now) == "2 d 2 h ago"
    assert age("2026-01-01T13:00:00+01:00", now) == "just now"  # an offset is honoured
    assert age("2026-01-01T12:00:00", now) == "just now"  # naive is UTC
    assert age("2026-01-01T12:30:00Z", now) == "in the future"
    assert age("yesterday", now) == "?"
    assert age(None, now) == "?"
    assert age("2026-01-01T11:00:00Z", None) == "?"


# ------------------------------------------------------------------------------ view


def status_state_registry(doc, recipe):
    (row,) = [r for r in doc["recipes"] if r["recipe"] == recipe]
    return row


def test_view_of_a_real_state_dir(doc):
    v = view(doc, now=NOW)
    assert v["now"] == NOW
    html_row, notes_row = v["canonicals"]
    assert (html_row["recipe"], html_row["version"], html_row["status"]) == (
        "custom-html",
        "1.1.0+1.29",
        "idle",
    )
    assert html_row["commit_short"] == status_state.COMMIT[:12]
    assert html_row["commit"] == status_state.COMMIT
    assert html_row["promoted_by"] == "a0a001"
    seeded = _status_html.short_time(status_state_registry(doc, "custom-html")["seeded_at"])
    assert html_row["seeded"] == seeded
    assert html_row["status_detail"] == f"idle since {seeded} (run a0a001)"
    assert html_row["lock"] is None
    assert notes_row["lock"]["run_id"] == "a0a005"
    assert notes_row["lock"]["play"] == "quick.yml"
    assert notes_row["lock"]["stale"] is False

    lanes = {lane["recipe"]: lane for lane in v["timeline"]}
    runs = lanes["custom-html"]["runs"]
    # oldest first, the verdicts and modes of the records, durations from their timings
    assert [r["run_id"] for r in runs] == ["a0a001", "a0a002", "a0a003"]
    assert [r["verdict"] for r in runs] == ["PASS", "PASS", "FAIL"]
    assert [r["mode"] for r in runs] == ["cold", "quick", "quick"]
    assert [r["confidence"] for r in runs] == [
        "authoritative",
        "lower confidence",
        "lower confidence",
    ]
    assert [r["seconds"] for r in runs] == [370, 70, 100]
    assert [r["duration"] for r in runs] == ["6 min 10 s", "1 min 10 s", "1 min 40 s"]
    assert lanes["custom-html"]["total"] == 3
    notes_runs = lanes["notes"]["runs"]
    assert [r["verdict"] for r in notes_runs] == ["FAIL", "running"]
    assert notes_runs[1]["duration"] == "running, started 1 h 00 min ago"
    # bars: the longest run on the page (notes' 12 min cold run) is the full width
    assert notes_runs[0]["bar_percent"] == 100.0
    assert runs[0]["bar_percent"] == round(100 * 370 / 720, 1)
    assert notes_runs[1]["bar_percent"] == _status_html.BAR_MIN_PERCENT

    alerts = v["alerts"]
    assert alerts["unseen"] == 2 and alerts["more"] == 0
    by_kind = {a["kind"]: a for a in alerts["rows"]}
    assert by_kind["rollback"]["target"] == "keycloak"
    assert by_kind["rollback"]["attempted"] == "26.1.0+26.0.7"
    assert by_kind["rollback"]["last_good"] == "26.0.0+26.0.5"
    assert by_kind["rollback"]["recovered"] == "yes"
    assert by_kind["rollback"]["notes"] == status_state.HOSTILE_NOTES
    assert by_kind["held-major"]["recovered"] == "-"
    assert by_kind["held-major"]["notes"] == ""

    disk = {d["name"]: d for d in v["disk"]}
    assert disk["docker_root"]["error"] is None
    assert disk["state_dir"]["total"] > 0
    assert disk["state_dir"]["used_percent"] + disk["state_dir"]["free_percent"] == pytest.approx(
        100.0
    )


def test_gather_gives_the_page_durations_labels_and_alert_fields(doc):
    """The additions to _status the page reads: run seconds and label; alert last_good,
    recovered and notes."""
    (row,) = [r for r in doc["recipes"] if r["recipe"] == "custom-html"]
    assert row["last_runs"][0]["seconds"] == 100
    assert row["last_runs"][0]["label"] == "quick run: lower confidence, never gates merge"
    (notes,) = [r for r in doc["recipes"] if r["recipe"] == "notes"]
    assert notes["last_runs"][0]["seconds"] is None  # still running
    latest = {a["kind"]: a for a in doc["alerts"]["latest"]}
    assert latest["rollback"]["recovered"] is True
    assert latest["rollback"]["last_good"] == "26.0.0+26.0.5"
    assert latest["held-major"]["recovered"] is None


def test_disk_levels_and_an_unmeasured_disk():
    doc = {
        "recipes": [],
        "disk": {
            "docker_root": {"path": "/var/lib/docker", "free": 5, "total": 100},
            "state_dir": {"path": "/var/lib/ci-warm", "free": 15, "total": 100},
        },
    }
    disk = {d["name"]: d for d in view(doc)["disk"]}
    assert (disk["docker_root"]["level"], disk["docker_root"]["used_percent"]) == ("crit", 95.0)
    assert disk["state_dir"]["level"] == "warn"
    assert view(doc)["summary"]["disk_level"] == "crit"
    doc["disk"]["docker_root"] = {"path": None, "error": "no Docker engine"}
    doc["disk"]["state_dir"]["free"] = 60
    v = view(doc)
    assert v["disk"][0]["error"] == "no Docker engine"
    assert (v["disk"][1]["level"], v["summary"]["disk_level"]) == ("ok", "ok")


# ------------------------------------------------------------------------------ render


def test_page_is_deterministic_and_ages_follow_now(doc):
    first = render_html(doc, now=NOW)
    assert render_html(copy.deepcopy(doc), now=NOW) == first
    later = render_html(doc, now="2026-01-02T12:00:00Z")
    assert later != first
    assert "running, started 1 d 1 h ago" in later
    # the page's own default is the document's generated_at
    assert render_html(doc) == render_html(doc, now=doc["generated_at"])


def test_page_is_self_contained(doc):
    page = render_html(doc, now=NOW)
    tree = Tree(page)
    assert "script" not in tree.tags()
    assert not {"link", "img", "iframe", "object", "embed"} & tree.tags()
    assert not re.search(r"(?i)\b(src|href)\s*=", page)
    assert "url(" not in page and "@import" not in page
    (csp,) = [a for t, a in tree.elements if t == "meta" and a.get("http-equiv")]
    assert csp["content"].startswith("default-src 'none'")


def test_hostile_strings_are_escaped_everywhere():
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    doc = {
        "generated_at": "2026-01-01T12:00:00Z",
        "host": evil,
        "state_dir": evil,
        "catalog_dir": evil,
        "recipes": [
            {
                "recipe": evil,
                "enrolled": True,
                "canonical": True,
                "domain": evil,
                "version": evil,
                "commit": evil,
                "commit_short": evil,
                "status": evil,
                "status_detail": evil,
                "seeded_at": evil,
                "promoted_by": evil,
                "node": evil,
                "snapshot": {"exists": True, "bytes": 10, "taken_at": evil},
                "lock": {"run_id": evil, "pid": evil, "host": evil, "play": evil, "since": evil},
                "errors": [evil],
                "runs_total": 1,
                "last_runs": [
                    {
                        "run_id": evil,
                        "mode": evil,
                        "verdict": evil,
                        "version": evil,
                        "commit": evil,
                        "started_at": evil,
                    }
                ],
            }
        ],
        "alerts": {
            "unseen": 2,
            "seen": 0,
            "kinds": {evil: 1},
            "latest": [
                {
                    "file": "a.json",
                    "kind": evil,
                    "target": evil,
                    "attempted": evil,
                    "last_good": evil,
                    "recovered": evil,
                    "notes": {"why": evil},
                    "at": evil,
                },
                {"file": evil, "corrupt": True, "error": evil},
            ],
        },
        "disk": {"docker_root": {"path": evil, "error": evil}, "state_dir": {"path": evil}},
        "last_sweep": {"result": evil, "recipes": [{"recipe": evil, "verdict": evil}]},
        "locks": [{"recipe": evil, "run_id": evil}],
        "errors": [evil],
    }
    page = render_html(doc)
    tree = Tree(page)
    assert "script" not in tree.tags() and "img" not in tree.tags()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img" in page
    # every attribute value is whole: nothing broke out of a quoted attribute
    for _tag, attrs in tree.elements:
        assert not any(name.startswith("on") for name in attrs)
    recipe_rows = [a for t, a in tree.elements if t == "tr" and "data-recipe" in a]
    assert [a["data-recipe"] for a in recipe_rows] == [evil]
    assert "".join(tree.text).count(evil) >= 10  # shown as text, many times


def test_empty_state_dir_renders_a_calm_page(state_dir):
    doc = _status.gather(str(state_dir), client_error="no engine here")
    page = render_html(doc)
    tree = Tree(page)
    text = " ".join("".join(tree.text).split())
    assert "No recipes: nothing enrolled in the catalog and nothing in the state dir." in text
    assert "No runs recorded." in text
    assert "No unseen alerts." in text
    assert "None recorded." in text  # the last sweep
    assert "no engine here" in text  # the Docker root could not be measured
    assert "0 / 0canonicals seeded" in text
    ids = {a.get("id") for _t, a in tree.elements}
    assert {"canonicals", "runs", "alerts", "disk", "sweep", "no-recipes", "no-alerts"} <= ids
    assert "problems" in ids  # the engine error is listed


def test_bad_input_is_refused_in_one_sentence():
    with pytest.raises(StatusPageError, match="needs the status document"):
        render_html(["not", "a", "document"])
    with pytest.raises(StatusPageError, match="now 'soon' is not an ISO-8601 time"):
        render_html({"recipes": []}, now="soon")
    status_html = FilterModule().filters()["status_html"]
    with pytest.raises(AnsibleFilterError, match=r"^status_html: the status page needs"):
        status_html("text")
    assert status_html({"recipes": []}).startswith("<!DOCTYPE html>")
