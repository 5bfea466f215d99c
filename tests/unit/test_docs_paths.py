"""The docs a stranger follows carry placeholders, not the paths of the machine they were
written on, and the error for a missing recipe checkout points at a page that exists."""

from __future__ import annotations

import re
from pathlib import Path

from ansible_collections.coopcloud.ci.plugins.module_utils._recipe import CHECKOUT_HINT

ROOT = Path(__file__).resolve().parents[2]
# The workspace and the rehearsal host: /work/<checkout>, the guide's /var/tmp/ccci-guide,
# home folders. Literal /tmp/... payloads of the hostile-input tables are not paths of ours.
WORKSPACE = re.compile(r"/work/|/var/tmp/|ccci-guide|/root/|/home/\w")


def test_docs_and_readme_name_no_workspace_path():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    pages += sorted((ROOT / "docs").rglob("*.yml"))
    hits = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in pages
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if WORKSPACE.search(line)
    ]
    assert len(pages) > 20
    assert hits == [], "\n".join(hits)


def test_the_missing_checkout_error_names_a_page_that_exists_and_is_linked():
    (page,) = re.findall(r"docs/\S+\.md", CHECKOUT_HINT)
    assert (ROOT / page).is_file()
    assert "guide/first-recipe.md" in (ROOT / "docs" / "README.md").read_text()
    text = (ROOT / page).read_text()
    assert "abra recipe fetch" in text and "git clone" in text
