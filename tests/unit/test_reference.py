"""scripts/gen-reference: the Markdown renderer, its checks, and --check on stale pages."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gen-reference"


def _load():
    loader = importlib.machinery.SourceFileLoader("gen_reference", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gen_reference", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


gen = _load()

FAKE_ENTRY = {
    "doc": {
        "module": "fake_thing",
        "short_description": "Do a B(fake) thing",
        "description": [
            "Sets O(name) to O(state=present) and answers RV(result.id); see M(coopcloud.ci.other).",
            "Paths like C(<dir>/x_y) and I(emphasis), env E(HOME), value V(a\\)b), U(https://x.test).",
            "Plain text with <angle>, *stars*, _leading and a|pipe; L(the docs,https://d.test).",
        ],
        "requirements": ["docker >= 20.10"],
        "notes": ["A note on O(other.child)."],
        "version_added": "0.1.0",
        "version_added_collection": "coopcloud.ci",
        "author": ["coopcloud.ci developers"],
        "attributes": {
            "idempotent": {"support": "full", "description": "Twice is once."},
            "check_mode": {
                "support": "partial",
                "description": "Predicts.",
                "details": ["Not the pull."],
            },
        },
        "options": {
            "state": {
                "description": "What to do.",
                "type": "str",
                "choices": ["present", "absent"],
                "default": "present",
            },
            "name": {"description": "The name, C(a|b).", "type": "str", "required": True},
            "other": {
                "description": "A dict.",
                "type": "dict",
                "suboptions": {"child": {"description": "Inner.", "type": "int", "default": 3}},
            },
            "tags": {"description": "Tags.", "type": "list", "elements": "str", "default": []},
        },
        "filename": "/somewhere/plugins/modules/fake_thing.py",
    },
    "examples": "\n- name: Do it\n  coopcloud.ci.fake_thing:\n    name: x\n",
    "return": {
        "result": {
            "description": "The result.",
            "returned": "success",
            "type": "dict",
            "sample": {"id": 7, "b": [1]},
            "contains": {"id": {"description": "The id.", "type": "int", "sample": 7}},
        },
    },
}
PAGES = {"coopcloud.ci.other": "other.md", "coopcloud.ci.fake_thing": "fake_thing.md"}


def render():
    return gen.render_page(
        "coopcloud.ci.fake_thing", "module", FAKE_ENTRY, "plugins/modules/fake_thing.py", PAGES
    )


# --------------------------------------------------------------------------- markup


def test_markup_turns_ansible_markup_into_markdown():
    ctx = gen.context_for(FAKE_ENTRY, PAGES)
    doc = FAKE_ENTRY["doc"]["description"]
    assert gen.markup(doc[0], ctx) == (
        "Sets [`name`](#parameter-name) to [`state=present`](#parameter-state) and answers "
        "[`result.id`](#return-result-id); see [`coopcloud.ci.other`](other.md)."
    )
    assert gen.markup(doc[1], ctx) == (
        "Paths like `<dir>/x_y` and *emphasis*, env `HOME`, value `a)b`, <https://x.test>."
    )
    assert gen.markup(doc[2], ctx) == (
        r"Plain text with &lt;angle>, \*stars\*, \_leading and a|pipe; [the docs](https://d.test)."
    )


def test_markup_leaves_unknown_references_unlinked_and_words_alone():
    ctx = gen.Context(options={"a"})
    assert gen.markup("O(b) O(a) RV(c) M(ns.col.x) P(ns.col.y#filter)", ctx) == (
        "`b` [`a`](#parameter-a) `c` `ns.col.x` `ns.col.y`"
    )
    # A command glued to a word is not markup; snake_case stays readable.
    assert gen.markup("ABC(x) recipes_dir", ctx) == "ABC(x) recipes_dir"
    assert gen.markup("B(bold) HORIZONTALLINE I(x)") == "**bold**  ---  *x*"


def test_code_span_survives_back_ticks_and_empty_strings():
    assert gen.code("a`b") == "``a`b``"
    assert gen.code("`x`") == "`` `x` ``"
    assert gen.code("") == '`""`'
    assert gen.value_text(True) == "`true`"
    assert gen.value_text(None) == "`null`"
    assert gen.value_text({"b": 1, "a": [2]}) == '`{"a": [2], "b": 1}`'
    assert gen.value_text("two\nlines") == '`"two\\nlines"`'


# --------------------------------------------------------------------------- pages


def test_page_sections_and_tables():
    page = render()
    lines = page.splitlines()
    assert lines[0].startswith(gen.MARKER)
    assert lines[2] == "# coopcloud.ci.fake_thing"
    assert lines[4] == "Do a **fake** thing"
    assert "## Requirements\n\n- docker >= 20.10\n" in page
    header = "| Parameter | Type | Required | Default | Choices | Description |"
    rows = lines[lines.index(header) + 2 : lines.index(header) + 7]
    assert rows == [
        '| <a id="parameter-name"></a>`name` | str | **yes** |  |  | The name, `a\\|b`. |',
        '| <a id="parameter-other"></a>`other` | dict | no |  |  | A dict. |',
        '| <a id="parameter-other-child"></a>`other.child` | int | no | `3` |  | Inner. |',
        '| <a id="parameter-state"></a>`state` | str | no | `present` | `present`<br>`absent` '
        "| What to do. |",
        '| <a id="parameter-tags"></a>`tags` | list of str | no | `[]` |  | Tags. |',
    ]
    assert "| `check_mode` | **partial** | Predicts.<br><br>Not the pull. |" in lines
    assert "| `idempotent` | **full** | Twice is once. |" in lines
    assert lines.index("| `check_mode` | **partial** | Predicts.<br><br>Not the pull. |") < (
        lines.index("| `idempotent` | **full** | Twice is once. |")
    )
    assert "## Notes\n\n- A note on [`other.child`](#parameter-other-child).\n" in page
    assert (
        "## Examples\n\n```yaml\n- name: Do it\n  coopcloud.ci.fake_thing:\n    name: x\n```\n"
        in (page)
    )
    assert (
        '| <a id="return-result"></a>`result` | dict | success | The result. | `{"b": [1], "id": 7}` |'
        in lines
    )
    assert '| <a id="return-result-id"></a>`result.id` | int |  | The id. | `7` |' in lines
    assert "/somewhere" not in page  # no absolute path of the machine that generated it
    assert page.endswith("- coopcloud.ci developers\n")


def test_render_is_deterministic_whatever_the_key_order():
    import copy

    shuffled = copy.deepcopy(FAKE_ENTRY)
    shuffled["doc"]["options"] = dict(reversed(list(shuffled["doc"]["options"].items())))
    shuffled["doc"]["attributes"] = dict(reversed(list(shuffled["doc"]["attributes"].items())))
    again = gen.render_page(
        "coopcloud.ci.fake_thing", "module", shuffled, "plugins/modules/fake_thing.py", PAGES
    )
    assert render().encode() == render().encode() == again.encode()


def test_filter_page_puts_input_first_and_index_links_pages():
    entry = {
        "doc": {
            "name": "fake_stack",
            "short_description": "Stack of C(x)",
            "description": "Dots become underscores.",
            "positional": "suffix, run_id",
            "options": {
                "suffix": {"description": "S.", "type": "str"},
                "run_id": {"description": "R.", "type": "str"},
                "_input": {"description": "The domain.", "type": "str", "required": True},
            },
        },
        "examples": "- debug: msg={{ 'a.b' | coopcloud.ci.fake_stack }}\n",
        "return": {"_value": {"description": "The name.", "type": "str"}},
    }
    page = gen.render_page("coopcloud.ci.fake_stack", "filter", entry, "plugins/filter/x.yml")
    assert "## Input and arguments" in page and "## Return value\n" in page
    # The input, then the positional arguments in call order (not alphabetical).
    assert page.index("`_input`") < page.index("`suffix`") < page.index("`run_id`")
    index = gen.render_index(
        {
            "filter": {"coopcloud.ci.fake_stack": ("fake_stack.md", "Stack of `x`")},
            "module": {"coopcloud.ci.b": ("b.md", "B"), "coopcloud.ci.a": ("a.md", "A")},
        }
    )
    assert index.index("## Modules") < index.index("## Filters")
    assert "| [`coopcloud.ci.a`](a.md) | A |\n| [`coopcloud.ci.b`](b.md) | B |" in index
    assert "| [`coopcloud.ci.fake_stack`](fake_stack.md) | Stack of `x` |" in index


def test_validate_catches_options_indented_one_level_too_little(tmp_path):
    # The YAML mistake ansible-doc accepts silently: `options:` empty, options beside it.
    entry = {
        "doc": {
            "name": "fake_stack",
            "short_description": "S",
            "description": ["D"],
            "options": None,
            "_input": {"description": "The domain.", "type": "str"},
            "filename": str(tmp_path / "plugins" / "filter" / "fake_stack.yml"),
        },
        "examples": "- debug: msg={{ 'a' | coopcloud.ci.fake_stack }}",
        "return": {"_value": {"description": "N.", "type": "str"}},
    }
    errors = gen.validate("coopcloud.ci.fake_stack", "filter", entry, tmp_path)
    assert errors == [
        "unknown DOCUMENTATION key '_input' (an option indented one level too little?)",
        "'options:' has nothing under it (are the options indented below it?)",
        "a filter documents its input as the option '_input'",
    ]
    assert gen.validate("coopcloud.ci.fake_thing", "module", FAKE_ENTRY, Path("/somewhere")) == []
    broken = {**FAKE_ENTRY, "examples": "- fake_thing: {}", "return": {"x": {"type": "str"}}}
    assert gen.validate("coopcloud.ci.fake_thing", "module", broken, Path("/somewhere")) == [
        "EXAMPLES never use the FQCN coopcloud.ci.fake_thing",
        "return value 'x' has no description",
        "return value 'x' does not say when it is 'returned'",
    ]


# --------------------------------------------------------------------------- the script

MODULE_SRC = '''\
#!/usr/bin/python
from __future__ import annotations

DOCUMENTATION = r"""
module: {name}
short_description: The {name} module
version_added: 0.1.0
author:
  - coopcloud.ci developers
description:
  - Does O(path) things.
extends_documentation_fragment:
  - coopcloud.ci.attributes
  - coopcloud.ci.attributes.INFO_MODULE
options:
  path:
    description: A path.
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Use it
  coopcloud.ci.{name}:
    path: /tmp
"""

RETURN = r"""
path:
  description: The path.
  returned: always
  type: str
  sample: /tmp
"""


def main():
    pass
'''

FILTER_PY = """\
from __future__ import annotations


class FilterModule:
    def filters(self):
        return {names}
"""

FILTER_YML = """\
DOCUMENTATION:
  name: {name}
  short_description: The {name} filter
  version_added: 0.1.0
  author:
    - coopcloud.ci developers
  description:
    - Turns C(.) into C(_).
  options:
    _input:
      description: The domain.
      type: str
      required: true

EXAMPLES: |
  - ansible.builtin.debug:
      msg: "{{{{ 'a.b' | coopcloud.ci.{name} }}}}"

RETURN:
  _value:
    description: The name.
    type: str
"""


@pytest.fixture
def fake(tmp_path):
    """A tiny collection coopcloud.ci: one module, one filter; and an output folder."""
    collections = tmp_path / "collections"
    root = collections / "ansible_collections" / "coopcloud" / "ci"
    (root / "plugins" / "modules").mkdir(parents=True)
    (root / "plugins" / "filter").mkdir(parents=True)
    (root / "plugins" / "doc_fragments").mkdir(parents=True)
    shutil.copy(
        REPO / "plugins" / "doc_fragments" / "attributes.py", root / "plugins/doc_fragments"
    )
    (root / "galaxy.yml").write_text("namespace: coopcloud\nname: ci\nversion: 0.1.0\n")
    (root / "plugins/modules/alpha.py").write_text(MODULE_SRC.format(name="alpha"))
    (root / "plugins/filter/dots.py").write_text(FILTER_PY.format(names='{"dots": str}'))
    (root / "plugins/filter/dots.yml").write_text(FILTER_YML.format(name="dots"))
    return collections, root, tmp_path / "out"


def run(collections, out, *extra):
    cmd = [sys.executable, str(SCRIPT), "--collections-path", str(collections), "--out", str(out)]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # runs ansible-doc over the plugins (make lint's --check does too)
def test_generate_then_check_is_clean_and_byte_identical(fake):
    collections, root, out = fake
    first = run(collections, out)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "alpha.md", "dots.md"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    alpha = before["alpha.md"].decode()
    assert '| <a id="parameter-path"></a>`path` | path | **yes** |  |  | A path. |' in alpha
    assert "- Does [`path`](#parameter-path) things." in alpha
    assert "| `check_mode` | **full** |" in alpha
    assert "| [`coopcloud.ci.dots`](dots.md) | The dots filter |" in before["README.md"].decode()
    second = run(collections, out)
    assert second.returncode == 0 and second.stdout == ""  # nothing to rewrite
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    check = run(collections, out, "--check")
    assert (check.returncode, check.stderr) == (0, "")
    # a plugin whose DOCUMENTATION does not load: the error, and every page stays as it was
    (root / "plugins/modules/broken.py").write_text('DOCUMENTATION = """\nmodule: [\n"""\n')
    broken = run(collections, out)
    assert broken.returncode == 1, broken.stdout
    assert f"nothing written to {out}: fix the errors above" in broken.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["collections", "out"]


@pytest.mark.slow  # runs ansible-doc over the plugins (make lint's --check does too)
def test_check_names_the_stale_page_and_says_what_to_run(fake):
    collections, _root, out = fake
    assert run(collections, out).returncode == 0
    page = out / "alpha.md"
    page.write_text(page.read_text().replace("A path.", "A hand edit."))
    check = run(collections, out, "--check")
    assert check.returncode == 1
    assert f"gen-reference: stale: {page}" in check.stderr.splitlines()
    assert "run scripts/gen-reference" in check.stderr
    assert "A hand edit." in page.read_text()  # --check changes nothing
    assert run(collections, out).returncode == 0
    assert run(collections, out, "--check").returncode == 0


@pytest.mark.slow  # runs ansible-doc over the plugins (make lint's --check does too)
def test_check_fails_for_a_plugin_added_or_removed_without_regenerating(fake):
    collections, root, out = fake
    assert run(collections, out).returncode == 0
    (root / "plugins/modules/beta.py").write_text(MODULE_SRC.format(name="beta"))
    check = run(collections, out, "--check")
    assert check.returncode == 1
    lines = check.stderr.splitlines()
    assert f"gen-reference: missing: {out / 'beta.md'}" in lines
    assert f"gen-reference: stale: {out / 'README.md'}" in lines
    (root / "plugins/modules/alpha.py").unlink()
    check = run(collections, out, "--check")
    assert f"gen-reference: extra (no such plugin any more): {out / 'alpha.md'}" in (
        check.stderr.splitlines()
    )
    # Regenerating removes the generated page of the gone module, never a hand-written file.
    (out / "notes.md").write_text("# mine\n")
    assert run(collections, out).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "beta.md", "dots.md", "notes.md"]


@pytest.mark.slow  # runs ansible-doc over the plugins (make lint's --check does too)
def test_undocumented_and_misindented_filters_fail_with_the_file_named(fake):
    collections, root, out = fake
    (root / "plugins/filter/dots.py").write_text(FILTER_PY.format(names='{"dots": str, "x": str}'))
    bad = FILTER_YML.format(name="dots").replace("    _input:", "  _input:")
    bad = bad.replace("      description: The domain.", "    description: The domain.")
    bad = bad.replace("      type: str\n      required", "    type: str\n    required")
    (root / "plugins/filter/dots.yml").write_text(bad)
    result = run(collections, out)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert errors == [
        "gen-reference: ERROR plugins/filter/dots.py: filter coopcloud.ci.x has no "
        "documentation; add plugins/filter/x.yml (DOCUMENTATION, EXAMPLES, RETURN)",
        "gen-reference: ERROR plugins/filter/dots.yml: unknown DOCUMENTATION key '_input' "
        "(an option indented one level too little?)",
        "gen-reference: ERROR plugins/filter/dots.yml: 'options:' has nothing under it "
        "(are the options indented below it?)",
        "gen-reference: ERROR plugins/filter/dots.yml: a filter documents its input as the "
        "option '_input'",
    ]
    assert run(collections, out, "--check").returncode == 1  # errors fail the check too


@pytest.mark.slow  # runs ansible-doc over the plugins (make lint's --check does too)
def test_check_on_a_copy_of_the_committed_reference_finds_a_stale_page(tmp_path):
    out = tmp_path / "reference"
    shutil.copytree(REPO / "docs" / "reference", out)
    page = out / "recipe_ref.md"
    page.write_text(page.read_text().replace("## Synopsis", "## Synopsis (edited)"))
    check = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 1
    assert f"gen-reference: stale: {page}" in check.stderr.splitlines()
    assert (
        textwrap.dedent("""\
        gen-reference: the reference is out of date: run scripts/gen-reference""")
        in check.stderr
    )
