# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

from ansible_collections.coopcloud.ci.plugins.plugin_utils.module_here import ModuleHere


class ActionModule(ModuleHere):
    """coopcloud.ci.catalog_entry: the module runs here when it can (plugin_utils/module_here)."""
