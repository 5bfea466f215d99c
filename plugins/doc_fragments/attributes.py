# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attribute descriptions shared by every module of the collection."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second
        invocation indicates no change.
"""

    # Modules that read and never write.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
"""

    STATE_DIR = r"""
options:
  state_dir:
    description:
      - The warm state root. Per-recipe state lives in C(<state_dir>/<recipe>/).
      - Must be an absolute path other than V(/).
      - It must have been made on purpose (C(bin/ccci init-state) writes its marker
        C(<state_dir>/.ccci-state)); a state dir without the marker is refused, naming the
        path and that command, and nothing is created - not even in check mode.
    type: path
    default: /var/lib/ci-warm
"""
