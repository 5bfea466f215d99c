"""The release safety gate (SPEC WC1.2) as pure logic: majors, notes, phrases, accept."""

from __future__ import annotations

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils._release import (
    HELD_MAJOR,
    HELD_MANUAL,
    NOOP,
    PHRASES,
    PROCEED,
    decide,
    find_phrases,
)

TAGS = ["1.0.0+1.28", "1.1.0+1.29", "1.2.0+1.30", "2.0.0+1.30", "latest", "test-branch"]


def notes(mapping: dict[str, str]):
    """notes_for over a dict, recording every version asked for."""
    asked: list[str] = []

    def notes_for(version: str) -> str | None:
        asked.append(version)
        return mapping.get(version)

    notes_for.asked = asked
    return notes_for


# --- verdicts -----------------------------------------------------------------------


def test_minor_upgrade_without_notes_proceeds():
    d = decide("1.0.0+1.28", "1.1.0+1.29", notes({}), TAGS)
    assert d.verdict == PROCEED
    assert d.reasons == []
    assert d.notes == {} and d.matched_phrases == {}
    assert d.versions_checked == ["1.1.0+1.29"]
    assert not d.held


@pytest.mark.parametrize(
    ("current", "candidate", "why"),
    [
        ("1.2.0+1.30", "2.0.0+1.30", "recipe major 1 -> 2"),
        ("1.1.0+1.29", "1.2.0+2.0", "app major 1 -> 2"),
        ("1.1.0+25.0.6", "1.2.0+26.0.0", "app major 25 -> 26"),
        # suffix app versions: only the leading numbers count
        ("2.0.1+1.0.6-social-amd64", "2.1.0+2.0.0-social-amd64", "app major 1 -> 2"),
        # old v-tags without an app part
        ("v2.4.8", "v3.0.0", "recipe major 2 -> 3"),
    ],
)
def test_major_bump_of_either_part_holds(current, candidate, why):
    d = decide(current, candidate, notes({}), [current, candidate])
    assert d.verdict == HELD_MAJOR
    assert len(d.reasons) == 1 and why in d.reasons[0]
    assert d.held


def test_both_majors_are_named():
    d = decide("1.0.0+1.28", "2.0.0+2.0", notes({}), [])
    assert d.verdict == HELD_MAJOR
    assert "recipe major 1 -> 2" in d.reasons[0] and "app major 1 -> 2" in d.reasons[0]


def test_suffix_app_versions_minor_bump_proceeds():
    d = decide("2.0.1+1.0.6-social-amd64", "2.0.2+1.0.7-social-amd64", notes({}), [])
    assert d.verdict == PROCEED


def test_v_tags_minor_bump_proceeds_and_reads_between():
    tags = ["v2.4.8", "v2.5.0", "v2.6.0", "v2.7.0"]
    n = notes({})
    d = decide("v2.4.8", "v2.6.0", n, tags)
    assert d.verdict == PROCEED
    assert n.asked == ["v2.5.0", "v2.6.0"]


@pytest.mark.parametrize(
    ("current", "candidate"),
    [("1.1.0+1.29", "1.1.0+1.29"), ("1.1.0+1.29", "1.0.0+1.28"), ("v1.0.0", "1.0.0")],
)
def test_same_or_older_candidate_is_noop(current, candidate):
    n = notes({"1.0.0+1.28": "manual migration"})
    d = decide(current, candidate, n, TAGS)
    assert d.verdict == NOOP
    assert n.asked == []  # nothing is read for a noop
    assert d.reasons and ("nothing to do" in d.reasons[0] or "never downgrades" in d.reasons[0])


def test_manual_migration_notes_hold_and_carry_the_text():
    text = "# 1.2.0\n\nThis release needs a manual migration: run `migrate.sh` first.\n"
    d = decide("1.0.0+1.28", "1.2.0+1.30", notes({"1.2.0+1.30": text}), TAGS)
    assert d.verdict == HELD_MANUAL
    assert d.notes == {"1.2.0+1.30": text}
    assert d.matched_phrases == {"1.2.0+1.30": ["manual migration"]}
    assert "1.2.0+1.30" in d.reasons[0] and "'manual migration'" in d.reasons[0]
    assert "## 1.2.0+1.30" in d.notes_text() and "migrate.sh" in d.notes_text()


def test_notes_of_every_version_between_are_read_and_an_intermediate_one_holds():
    tags = ["1.0.0+1.0", "1.1.0+1.1", "1.2.0+1.2", "1.3.0+1.3", "1.4.0+1.4"]
    n = notes(
        {
            "1.2.0+1.2": "Before upgrading, stop the app and back up the volume.",
            "1.3.0+1.3": "Nothing special.",
        }
    )
    d = decide("1.0.0+1.0", "1.3.0+1.3", n, tags)
    assert n.asked == ["1.1.0+1.1", "1.2.0+1.2", "1.3.0+1.3"]  # not 1.0.0 (current), not 1.4.0
    assert d.versions_checked == n.asked
    assert d.verdict == HELD_MANUAL
    assert list(d.notes) == ["1.2.0+1.2"]
    assert d.matched_phrases["1.2.0+1.2"] == ["before upgrading"]


def test_candidate_missing_from_tags_is_still_read():
    n = notes({"1.5.0+1.5": "Breaking change: the config key moved."})
    d = decide("1.0.0+1.0", "1.5.0+1.5", n, ["1.0.0+1.0"])
    assert n.asked == ["1.5.0+1.5"]
    assert d.verdict == HELD_MANUAL


def test_major_and_manual_together_verdict_major_with_all_reasons():
    n = notes({"2.0.0+1.30": "Manual intervention required."})
    d = decide("1.2.0+1.30", "2.0.0+1.30", n, TAGS)
    assert d.verdict == HELD_MAJOR
    assert len(d.reasons) == 2
    assert d.notes == {"2.0.0+1.30": "Manual intervention required."}


def test_accept_exact_candidate_turns_a_hold_into_proceed():
    n = notes({"2.0.0+1.30": "manual migration"})
    d = decide("1.2.0+1.30", "2.0.0+1.30", n, TAGS, accept="2.0.0+1.30")
    assert d.verdict == PROCEED
    assert d.accepted
    assert d.reasons and all(r.startswith("accepted by the operator: ") for r in d.reasons)
    assert d.notes  # the notes are still reported


def test_accept_other_version_is_not_applied_and_says_so():
    d = decide("1.2.0+1.30", "2.0.0+1.30", notes({}), TAGS, accept="1.9.0+1.30")
    assert d.verdict == HELD_MAJOR
    assert not d.accepted
    assert "accept=1.9.0+1.30 does not name the candidate 2.0.0+1.30" in d.reasons[-1]


def test_accept_without_hold_proceeds_not_marked_accepted():
    d = decide("1.0.0+1.28", "1.1.0+1.29", notes({}), TAGS, accept="1.1.0+1.29")
    assert d.verdict == PROCEED and not d.accepted and d.reasons == []


def test_accept_does_not_turn_noop_into_anything_else():
    d = decide("1.1.0+1.29", "1.1.0+1.29", notes({}), TAGS, accept="1.1.0+1.29")
    assert d.verdict == NOOP


@pytest.mark.parametrize(("current", "candidate"), [("latest", "1.0.0"), ("1.0.0", "main")])
def test_non_versions_are_refused(current, candidate):
    with pytest.raises(ValueError, match="is not a recipe version"):
        decide(current, candidate, notes({}), [])


def test_as_dict_is_plain_data():
    d = decide("1.0.0+1.28", "1.2.0+1.30", notes({"1.2.0+1.30": "manual step"}), TAGS)
    out = d.as_dict()
    assert out["verdict"] == HELD_MANUAL
    assert out["matched_phrases"] == {"1.2.0+1.30": ["manual step"]}
    assert out["notes_text"].startswith("## 1.2.0+1.30")
    assert out["versions_checked"] == ["1.1.0+1.29", "1.2.0+1.30"]


# --- phrases ------------------------------------------------------------------------

MATCHES = [
    ("This release requires a manual migration of the database.", "manual migration"),
    ("MANUAL MIGRATION needed", "manual migration"),
    ("a manual database migration", "manual migration"),
    ("Manual\n  migration: see below", "manual migration"),
    ("You must migrate your data manually.", "migrate manually"),
    ("Please manually migrate the config.", "manually migrate"),
    ("Manual intervention required.", "manual intervention"),
    ("There are manual upgrade steps.", "manual step"),
    ("One manual step remains.", "manual step"),
    ("Do not skip the manual step.", "manual step"),
    ("A manual upgrade is needed from 24.x.", "manual upgrade"),
    ("manual actions are described below", "manual action"),
    ("Action required: rotate the secret.", "action required"),
    ("This requires manual changes to the env file.", "requires manual"),
    ("Breaking change: APP_URL renamed.", "breaking change"),
    ("## BREAKING CHANGES\n\n- renamed FOO", "breaking change"),
    ("This version is backwards-incompatible.", "backwards incompatible"),
    ("It is not backward compatible with 1.x data.", "not backwards compatible"),
    ("Incompatible changes in the API.", "incompatible change"),
    ("Back up your volumes before upgrading!", "before upgrading"),
    ("Read this before you upgrade.", "before upgrading"),
    ("Follow the migration guide at https://example.org.", "migration guide"),
    ("See the upgrade instructions.", "upgrade guide"),
    ("No breaking changes. Before upgrading, stop the app.", "before upgrading"),
]

NEAR_MISSES = [
    "See the manual for details.",
    "Manually triggered builds are now faster.",
    "Database migrations run automatically on start.",
    "Automatic migration of the config.",
    "No breaking changes.",
    "No breaking changes in this release, only fixes.",
    "## Breaking changes\n\nNone.",
    "Breaking changes: none",
    "Breaking changes: N/A",
    "No manual migration needed.",
    "A manual migration is not required.",
    "Manual steps are no longer needed.",
    "This does not require manual intervention.",
    "without any manual steps",
    "There is no need for a manual migration.",
    "This is not a breaking change.",
    "No action required.",
    "No action needed before upgrading.",
    "unbreaking changes",
    "manualmigration",
    "We are breaking up the changelog.",
    "Upgrading is smooth.",
    "Intervention is never needed.",
    "",
]


@pytest.mark.parametrize(("text", "phrase"), MATCHES)
def test_phrase_matches(text, phrase):
    assert phrase in find_phrases(text)


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_phrase_near_misses_do_not_match(text):
    assert find_phrases(text) == []


def test_every_documented_phrase_has_a_matching_case():
    covered = {phrase for _, phrase in MATCHES}
    assert covered == {name for name, _ in PHRASES}


def test_negated_and_real_mention_in_one_text_still_holds():
    text = "No manual migration for SQLite.\n\nPostgres users: manual migration required."
    assert find_phrases(text) == ["manual migration"]


def test_none_notes_is_no_phrase():
    assert find_phrases(None) == []


def test_major_hold_carries_the_full_notes_of_every_crossed_version():
    texts = {
        "1.3.0+1.30": "Adds a setting.\n\nNothing else changes.",
        "2.0.0+1.30": "The database moves to a new major version.",
    }
    d = decide("1.2.0+1.30", "2.0.0+1.30", notes(texts), [*TAGS, "1.3.0+1.30"])
    assert d.verdict == HELD_MAJOR
    assert d.matched_phrases == {}  # no phrase matched: the notes are kept all the same
    assert d.notes == texts
    assert all(text in d.notes_text() for text in texts.values())
    # without a major crossing, notes that ask for nothing do not hold
    d = decide("1.2.0+1.30", "1.3.0+1.30", notes(texts), [*TAGS, "1.3.0+1.30"])
    assert d.verdict == PROCEED and d.notes == {}
