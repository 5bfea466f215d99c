from __future__ import annotations

import pytest

from ansible_collections.coopcloud.ci.plugins.module_utils import _names as names
from ansible_collections.coopcloud.ci.plugins.module_utils._names import ValidationError


@pytest.mark.parametrize("good", ["a", "custom-html", "keycloak", "x" * 40, "0ad", "a-b-c"])
def test_recipe_names_accepted(good):
    assert names.validate_recipe(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "-lead",
        "Caps",
        "has space",
        "a/b",
        "..",
        "../etc",
        "a.b",
        "x" * 41,
        "x" * 200,
        "ümlaut",
        "a_b",
        None,
        7,
    ],
)
def test_recipe_names_refused_with_one_sentence(bad):
    with pytest.raises(ValidationError, match=r"recipe name .* is invalid"):
        names.validate_recipe(bad)


def test_domain_to_stack_and_volume():
    assert names.stack_name("warm-custom-html.ci.example.org") == "warm-custom-html_ci_example_org"
    assert names.volume_name("app_example_org", "content") == "app_example_org_content"


@pytest.mark.parametrize(
    "bad",
    [
        "localhost",
        "UPPER.example.org",
        "a..b",
        "-a.example.org",
        "a-.example.org",
        "a_b.example.org",
        "a.example.org/x",
        "",
        " a.example.org",
        "x" * 60 + ".example.org",
    ],
)
def test_domains_refused(bad):
    with pytest.raises(ValidationError):
        names.validate_domain(bad)


def test_volume_short_names_refused():
    for bad in ["", "../x", "a/b", "-x"]:
        with pytest.raises(ValidationError):
            names.volume_name("s", bad)


@pytest.mark.parametrize(
    "good",
    [
        "1.1.0+1.29",
        "main",
        "feature/x",
        "0f42faf",
        "0f42faf170a10445ed7c2153ca150898fab3560f",
        "v2.4.8",
        "2.0.1+1.0.6-social-amd64",
    ],
)
def test_refs_accepted(good):
    assert names.validate_ref(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "--upload-pack=touch /tmp/x",
        "-x",
        ";rm -rf /",
        "a..b",
        "HEAD@{1}",
        "a b",
        "$(id)",
        "`id`",
        "a:b",
        "main^",
        "main~1",
        "",
        "/abs",
        "x/",
        "x.lock",
        ".hidden",
        "a//b",
        "x" * 201,
    ],
)
def test_refs_that_git_could_misread_are_refused(bad):
    with pytest.raises(ValidationError):
        names.validate_ref(bad)


def test_is_commit():
    assert names.is_commit("0f42faf")
    assert not names.is_commit("0f42fa")
    assert not names.is_commit("1.1.0+1.29")


def test_realm_names_round_trip_and_never_match_master():
    assert names.realm_name("custom-html", "a1b2c3") == "custom-html-a1b2c3"
    assert names.parse_realm_name("custom-html-a1b2c3") == ("custom-html", "a1b2c3")
    for other in ["master", "custom-html", "custom-html-A1B2C3", "custom-html-a1b2c", "prod-realm"]:
        assert names.parse_realm_name(other) is None
    with pytest.raises(ValidationError):
        names.realm_name("custom-html", "zzzzzz")


def test_lane_domains():
    assert (
        names.canonical_domain("custom-html", "ci.example.org") == "warm-custom-html.ci.example.org"
    )
    assert (
        names.cold_domain("custom-html", "a1b2c3", "ci.example.org") == "cust-a1b2c3.ci.example.org"
    )


def test_run_ids():
    rid = names.new_run_id()
    assert names.validate_run_id(rid) == rid
    with pytest.raises(ValidationError):
        names.validate_run_id("ABCDEF")


def test_state_dir_rules(tmp_path):
    assert names.validate_state_dir(str(tmp_path) + "/") == str(tmp_path)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for bad, why in [
        ("relative/dir", "relative"),
        ("/", "refused"),
        (str(a_file), "not a directory"),
        ("", "invalid"),
    ]:
        with pytest.raises(ValidationError, match=why):
            names.validate_state_dir(bad)


def test_matching_returns_the_value_or_raises_one_sentence_of_the_given_kind():
    import re

    from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import AlertError

    pattern = re.compile(r"^[a-z]{2}$")
    assert names.matching("ab", pattern, "code", "use two letters") == "ab"
    for bad in ("abc", None, 12):
        with pytest.raises(ValidationError) as caught:
            names.matching(bad, pattern, "code", "use two letters")
        assert str(caught.value) == f"code {bad!r} is invalid: use two letters"
    with pytest.raises(AlertError, match=r"^code 'x' is invalid: use two letters$"):
        names.matching("x", pattern, "code", "use two letters", AlertError)
