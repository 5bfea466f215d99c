"""recipe_ref over the real example repositories: commit, version, latest, previous."""

from __future__ import annotations

import pytest
from support.modules import run_main

from ansible_collections.coopcloud.ci.plugins.modules import recipe_ref


def run(args: dict, capsys, check: bool = False) -> tuple[int, dict]:
    return run_main(recipe_ref, args, capsys, check=check)


def base(examples_root, **extra):
    return {"recipe": "custom-html", "recipes_dir": str(examples_root), "fetch": False, **extra}


def test_latest_by_default(examples, examples_root, capsys):
    html = examples["custom-html"]
    rc, out = run(base(examples_root), capsys)
    assert rc == 0, out
    assert out["version"] == out["latest"] == "1.1.0+1.29"
    assert out["commit"] == html["tags"]["1.1.0+1.29"] and out["is_latest"] is True
    assert out["previous"] == "1.0.0+1.28"
    assert out["previous_commit"] == html["tags"]["1.0.0+1.28"]
    assert out["changed"] is False


def test_older_tag_is_not_latest_and_has_no_previous(examples, examples_root, capsys):
    rc, out = run(base(examples_root, ref="1.0.0+1.28"), capsys)
    assert rc == 0, out
    assert out["version"] == "1.0.0+1.28" and out["is_latest"] is False
    assert out["previous"] is None


def test_untagged_head_upgrades_from_the_latest_release(examples, examples_root, capsys):
    html = examples["custom-html"]
    rc, out = run(base(examples_root, ref=html["broken_ref"][:9]), capsys)
    assert rc == 0, out
    assert out["commit"] == html["broken_ref"] and out["version"] is None
    assert out["previous"] == "1.1.0+1.29" and out["is_latest"] is False


def test_explicit_upgrade_from_must_be_a_version(examples, examples_root, capsys):
    rc, out = run(base(examples_root, upgrade_from="1.0.0+1.28"), capsys)
    assert rc == 0 and out["previous"] == "1.0.0+1.28"
    rc, out = run(base(examples_root, upgrade_from="9.9.9+9"), capsys)
    assert rc == 1 and "is not a version tag of recipe 'custom-html'" in out["msg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"ref": "--upload-pack=touch /tmp/pwned"},
            "ref '--upload-pack=touch /tmp/pwned' is invalid",
        ),
        ({"ref": "nope-branch"}, "ref 'nope-branch' not found in recipe 'custom-html'"),
        ({"recipe": "Bad/Name"}, "recipe name 'Bad/Name' is invalid"),
        ({"recipe": "absent-recipe"}, "recipe 'absent-recipe' has no checkout"),
    ],
)
def test_bad_input_is_one_sentence(examples, examples_root, capsys, args, message):
    rc, out = run(base(examples_root, **args), capsys)
    assert rc == 1
    assert message in out["msg"]
