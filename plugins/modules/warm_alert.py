#!/usr/bin/python
# Copyright: coopcloud.ci developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: warm_alert
short_description: Write, relay and list the alert files of the warm state
version_added: 0.1.0
description:
  - Alerts are JSON files under C(<state_dir>/alerts/) (SPEC ALR). Each carries C(kind),
    C(target), C(attempted), C(last_good), C(recovered), C(notes) and C(at) (UTC
    ISO-8601), plus any O(extra) fields. The file name is
    C(<UTC stamp>-<kind>-<target>-<6 hex>.json), so a listing is oldest first.
  - O(state=present) writes one alert atomically (temporary file, fsync, rename).
    B(Deduplication) - when an alert with the same O(kind), O(target) and O(attempted) is
    still unseen, nothing is written and the task is V(ok) (RV(deduplicated=true)); the
    same open condition met by every reconcile run does not pile up one file per run.
    Once that alert has been relayed the condition alerts again the next time it is met
    (a reminder per relay cycle), unless O(quiet_for) says how long a relayed alert
    still stands for it.
  - O(state=relayed) delivers every unseen alert, oldest first, to every URL of O(urls)
    through L(apprise,https://github.com/caronc/apprise), and moves each alert to
    C(alerts/seen/) (a rename) only after every URL took it. A failed delivery leaves the
    alert unseen and the task fails saying which alert, which URL (scheme and host only)
    and what the receiver answered; the next run retries. A URL that took an alert is
    recorded in it (as a hash, C(relayed_to)) and is not sent it again on the retry. A
    URL that failed is not tried again for later alerts in the same run. Relays of one
    state directory are serialized by a lock file.
  - A corrupt alert file (not JSON, not an object, no C(kind)/C(target)) is named in the
    failure and left in place, never deleted; the other alerts are still delivered. Repair
    the file, or move it out of C(alerts/), to clear the failure.
  - O(state=info) counts unseen and seen alerts and lists the unseen ones.
extends_documentation_fragment: [coopcloud.ci.attributes, coopcloud.ci.attributes.STATE_DIR]
options:
  state:
    description:
      - V(present) writes an alert, V(relayed) delivers and archives the unseen ones,
        V(info) only reads.
    type: str
    choices: [present, relayed, info]
    default: present
  kind:
    description:
      - The kind of alert. The collection raises V(rollback), V(held-major),
        V(held-manual-migration), V(quick-rollback), V(disk-low), V(unit-failed),
        V(sweep-red), V(known-good-tree-differed) and V(known-good-unverified); any other kind of
        2-40 characters of C(a-z), C(0-9) and C(-) starting with a letter is accepted.
      - Required with O(state=present).
    type: str
  target:
    description:
      - What the alert is about (warm infrastructure name, recipe, disk), 1-63 letters,
        digits, C(.), C(_) and C(-).
      - Required with O(state=present).
    type: str
  attempted:
    description: The version that was attempted (or held), if any.
    type: str
  last_good:
    description: The last known-good version, if any.
    type: str
  recovered:
    description: Whether the target is running and healthy again (for rollbacks).
    type: bool
  notes:
    description:
      - Free text, or a dictionary (for example version to release notes), carried in the
        alert and shown in the message.
    type: raw
  extra:
    description:
      - More fields for the alert file. They may not replace the fixed fields.
    type: dict
    default: {}
  quiet_for:
    description:
      - With O(state=present), seconds during which an alert with the same kind, target
        and attempted version that was already relayed still stands for a new one (no
        new file). V(0) deduplicates against unseen alerts only.
    type: int
    default: 0
  urls:
    description:
      - With O(state=relayed), the apprise URLs to deliver to, for example
        C(json://alerts.example.org:8080/hook), C(matrixs://bot:password@matrix.example.org/!room:example.org),
        C(slack://TokenA/TokenB/TokenC/#ops), C(mailtos://user:password@mail.example.org?to=ops@example.org).
      - They usually carry tokens, so they are never logged; failures name only the
        scheme and host.
      - With no URL and unseen alerts waiting, the task fails (nobody would be told).
      - When not given, the comma-separated list in the environment variable
        E(CCCI_ALERT_URLS) is used, which is how the systemd timer hands them over
        (C(bin/ccci) keeps such variables out of ansible-runner's artifacts).
    type: list
    elements: str
attributes:
  check_mode:
    support: full
    details:
      - O(state=present) predicts whether a file would be written (the deduplication
        rule applies). O(state=relayed) reports the alerts it would deliver and sends
        nothing.
  diff_mode:
    support: full
    details:
      - O(state=present) shows the alert record that is written.
  idempotent:
    support: full
    details:
      - O(state=present) is idempotent through the deduplication rule; a second
        O(state=relayed) finds nothing unseen.
requirements:
  - apprise (for O(state=relayed))
author:
  - coopcloud.ci developers
notes:
  - The relay play is C(playbooks/alerts.yml); C(docs/alerts.md) shows how to configure
    the URLs.
seealso:
  - module: coopcloud.ci.release_gate
"""

EXAMPLES = r"""
- name: Raise a rollback alert
  coopcloud.ci.warm_alert:
    state: present
    state_dir: /var/lib/ci-warm
    kind: rollback
    target: keycloak
    attempted: 2.1.0+26.1.0
    last_good: 2.0.0+26.0.0
    recovered: true
    notes: The health gate failed after the upgrade; the snapshot was restored.

- name: Deliver every unseen alert and archive it
  coopcloud.ci.warm_alert:
    state: relayed
    state_dir: /var/lib/ci-warm
    urls:
      - json://alerts.example.org:8080/hook
      - "mailtos://ci:{{ vault_mail_password }}@mail.example.org?to=ops@example.org"

- name: How many alerts wait
  coopcloud.ci.warm_alert:
    state: info
  register: alerts
"""

RETURN = r"""
path:
  description:
    - The alert file written, or the existing one that made writing redundant. In check
      mode, V(null) when a file would be written.
  returned: state is present
  type: str
  sample: /var/lib/ci-warm/alerts/20260101T120000.123456Z-rollback-keycloak-a1b2c3.json
alert:
  description: The alert record written (or that would be written, or the existing one).
  returned: state is present
  type: dict
  sample:
    kind: rollback
    target: keycloak
    attempted: 2.1.0+26.1.0
    last_good: 2.0.0+26.0.0
    recovered: true
    notes: The health gate failed after the upgrade; the snapshot was restored.
    at: "2026-01-01T12:00:00Z"
deduplicated:
  description: V(true) when an alert already standing for this condition was found.
  returned: state is present
  type: bool
  sample: false
delivered:
  description: File names of the alerts delivered to every URL (in check mode, to deliver).
  returned: state is relayed
  type: list
  elements: str
  sample: [20260101T120000.123456Z-rollback-keycloak-a1b2c3.json]
archived:
  description: Paths the delivered alerts were moved to under C(alerts/seen/).
  returned: state is relayed
  type: list
  elements: str
  sample: [/var/lib/ci-warm/alerts/seen/20260101T120000.123456Z-rollback-keycloak-a1b2c3.json]
failures:
  description: One entry per failed delivery, with the alert C(file), the C(url) (scheme and
    host only) and the C(error).
  returned: state is relayed
  type: list
  elements: dict
  sample:
    - file: 20260101T120000.123456Z-rollback-keycloak-a1b2c3.json
      url: json://alerts.example.org:8080
      error: "json://alerts.example.org:8080: delivery failed: Failed to send JSON POST notification: Internal Server Error, error=500."
corrupt:
  description: Alert files that cannot be read, with C(file) and C(error); they stay in place.
  returned: state is relayed or info
  type: list
  elements: dict
  sample: []
unseen:
  description: Summaries (file, kind, target, attempted, at) of the unseen alerts, oldest first.
  returned: state is info
  type: list
  elements: dict
  sample:
    - file: 20260101T120000.123456Z-rollback-keycloak-a1b2c3.json
      kind: rollback
      target: keycloak
      attempted: 2.1.0+26.1.0
      at: "2026-01-01T12:00:00Z"
unseen_count:
  description: How many alerts wait in C(alerts/) (corrupt ones included).
  returned: always
  type: int
  sample: 1
seen_count:
  description: How many alerts are archived in C(alerts/seen/).
  returned: always
  type: int
  sample: 12
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.coopcloud.ci.plugins.module_utils._alerts import (
    CORE_KEYS,
    AlertError,
    AlertStore,
    relay,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._common import (
    plain_specs,
    run_module,
    state_dir_spec,
    state_spec,
)
from ansible_collections.coopcloud.ci.plugins.module_utils._state import require_state_dir


def _counts(store: AlertStore) -> dict:
    unseen = store.list_unseen()
    return {"unseen_count": len(unseen), "seen_count": store.count_seen()}


def present(module: AnsibleModule, store: AlertStore) -> dict:
    p = module.params
    fields = {
        "kind": p["kind"],
        "target": p["target"],
        "attempted": p["attempted"],
        "last_good": p["last_good"],
        "recovered": p["recovered"],
        "notes": p["notes"],
    }
    clash = sorted(set(p["extra"]) & set(CORE_KEYS))
    if clash:
        raise AlertError(f"extra alert fields {clash} clash with the fixed fields")
    record = store.build(**fields, **p["extra"])
    existing = store.find_open(p["kind"], p["target"], p["attempted"], p["quiet_for"])
    if existing is not None:
        return {
            "changed": False,
            "path": existing.path,
            "alert": existing.data,
            "deduplicated": True,
            **_counts(store),
        }
    result = {
        "changed": True,
        "deduplicated": False,
        "alert": record,
        "path": None,
        "diff": {"before": {}, "after": record, "after_header": "new alert"},
    }
    if not module.check_mode:
        result["path"] = store.write(**fields, quiet_for=p["quiet_for"], **p["extra"])
        result["alert"] = store.load(result["path"]).data
    result.update(_counts(store))
    return result


def relayed(module: AnsibleModule, store: AlertStore) -> dict:
    urls = module.params["urls"] or []
    unseen = store.list_unseen()
    pending = [a for a in unseen if not a.corrupt]
    corrupt = [{"file": a.name, "error": a.error} for a in unseen if a.corrupt]
    if pending and not urls:
        raise AlertError(
            f"{len(pending)} alert(s) wait in {store.alerts_dir} but no alert URL is "
            "configured: set urls (ccci_alert_urls in the plays); the alerts stay unseen",
            delivered=[],
            archived=[],
            failures=[],
            corrupt=corrupt,
            **_counts(store),
        )
    if module.check_mode:
        result = {
            "changed": bool(pending),
            "delivered": [a.name for a in pending],
            "archived": [],
            "failures": [],
            "corrupt": corrupt,
        }
        if corrupt:
            raise AlertError(
                f"{len(corrupt)} alert file(s) cannot be read and are left in place "
                f"(repair them or move them out of the alerts folder): "
                + ", ".join(c["error"] for c in corrupt),
                **result,
                **_counts(store),
            )
        return {**result, **_counts(store)}
    report = relay(store, urls)
    result = {
        "changed": bool(report.archived or report.partial),
        "delivered": report.delivered,
        "archived": report.archived,
        "failures": report.failed,
        "corrupt": report.corrupt,
        **_counts(store),
    }
    if not report.ok:
        raise AlertError(report.message(), **result)
    return result


def info(module: AnsibleModule, store: AlertStore) -> dict:
    unseen = store.list_unseen()
    return {
        "changed": False,
        "unseen": [a.summary() for a in unseen if not a.corrupt],
        "corrupt": [{"file": a.name, "error": a.error} for a in unseen if a.corrupt],
        "unseen_count": len(unseen),
        "seen_count": store.count_seen(),
    }


def alert(module: AnsibleModule) -> dict:
    store = AlertStore(require_state_dir(module.params["state_dir"]))
    handler = {"present": present, "relayed": relayed, "info": info}[module.params["state"]]
    return handler(module, store)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **state_spec(["present", "relayed", "info"], "present"),
            **state_dir_spec(),
            **plain_specs("str", "kind", "target", "attempted", "last_good"),
            "recovered": {"type": "bool"},
            "notes": {"type": "raw"},
            "extra": {"type": "dict", "default": {}},
            "quiet_for": {"type": "int", "default": 0},
            "urls": {
                "type": "list",
                "elements": "str",
                "no_log": True,
                "fallback": (env_fallback, ["CCCI_ALERT_URLS"]),
            },
        },
        required_if=[("state", "present", ("kind", "target"))],
        supports_check_mode=True,
    )
    run_module(module, lambda: alert(module), diff_when_asked=True)


if __name__ == "__main__":
    main()
