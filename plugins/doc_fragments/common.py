# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by several modules, each paired with a ``*_spec()`` of ``_common.py``.

``state_dir`` is ``coopcloud.ci.attributes.STATE_DIR`` (paired with ``state_dir_spec()``).
The ``elapsed`` result is written by ``_common.run_module(elapsed=True)``; Ansible merges
fragments into DOCUMENTATION only, so each module that returns it documents it in its
own RETURN ("Seconds the module spent on its work ..., measured with a monotonic clock").
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
"""

    # recipe_spec(required=True)
    RECIPE = r"""
options:
  recipe:
    description:
      - The recipe name, C(^[a-z0-9][a-z0-9-]{0,39}$).
    type: str
    required: true
"""

    # run_id_spec()
    RUN_ID = r"""
options:
  run_id:
    description:
      - The run, six lowercase hex digits (the playbook variable C(ccci_run_id)).
    type: str
"""

    # wait_timeout_spec(default=300)
    WAIT_TIMEOUT = r"""
options:
  wait_timeout:
    description:
      - Seconds to wait for the app to converge or to be gone.
    type: int
    default: 300
"""

    # driver_spec()
    DRIVER = r"""
options:
  driver:
    description:
      - V(stack) deploys with C(docker stack deploy) (the embedded default).
      - V(abra) runs the equivalent C(abra app deploy -C -c) command lines; C(abra) must
        be installed.
    type: str
    choices: [stack, abra]
    default: stack
"""
