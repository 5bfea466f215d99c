"""Shared fixtures for every test.

The collection is imported the way Ansible imports it, as
``ansible_collections.coopcloud.ci``: ``collections/`` at the repository root holds the
committed symlink ``ansible_collections/coopcloud/ci`` -> the root.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))

pytest_plugins = ["support.fixtures", "support.schedule", "support.seeds"]
