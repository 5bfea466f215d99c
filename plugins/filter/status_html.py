# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The filter ``coopcloud.ci.status_html``: the status document -> one static HTML page."""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.coopcloud.ci.plugins.module_utils._status_html import (
    StatusPageError,
    render_html,
)

DOCUMENTATION = r"""
name: status_html
short_description: Render the status of the warm layer as one static HTML page
version_added: 0.1.0
author:
  - coopcloud.ci developers
description:
  - Turns the status document of M(coopcloud.ci.warm_status) (its C(status)) into one
    self-contained HTML page; C(playbooks/status.yml -e format=html -e dest=<file>)
    writes it.
  - The page shows the canonicals (known-good version, short commit, how long ago and by
    which run they were seeded, status, lock holder, snapshot size), the last runs per
    recipe as a small timeline (mode, verdict, duration; quick runs marked C(lower
    confidence)), the unseen alerts (kind, target, attempted, last good, recovered, when,
    notes), the disk use of the Docker root and the state directory as bars, the last
    sweep, and the problems met while reading the state.
  - Everything is inline (CSS, no images, no script, no fonts), so the page loads nothing
    and needs no server. Its Content-Security-Policy forbids scripts and remote loads.
  - Every value is HTML-escaped. The output is deterministic - the same document and
    O(now) give the same bytes.
options:
  _input:
    description: The status document (C(status) as returned by M(coopcloud.ci.warm_status)).
    type: dict
    required: true
  now:
    description:
      - The moment ages (C(3 h 02 min ago)) are counted to, as ISO-8601 UTC text.
      - Default is the document's own C(generated_at).
    type: str
"""

EXAMPLES = r"""
- name: Gather the status
  coopcloud.ci.warm_status:
    state_dir: /var/lib/ci-warm
  register: warm

- name: Write the status page
  ansible.builtin.copy:
    dest: /var/www/ci-status/index.html
    content: "{{ warm.status | coopcloud.ci.status_html }}"
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The page, one HTML5 document (UTF-8 text).
  type: str
  sample: "<!DOCTYPE html>\n<html lang=\"en\">\n<head>..."
"""


def status_html(doc: Any, now: Any = None) -> str:
    """The status page of ``doc``; a filter error in one sentence when it is not a document."""
    try:
        return render_html(doc, now=now)
    except StatusPageError as exc:
        raise AnsibleFilterError(f"status_html: {exc}") from None


class FilterModule:
    """coopcloud.ci status page filter."""

    def filters(self) -> dict[str, Any]:
        return {"status_html": status_html}
