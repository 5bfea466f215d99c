"""The forge and Drone doubles answer as the real services do (Gitea's API document, Drone's handler)."""

from __future__ import annotations

import httpx
import pytest
from support.drone_double import DroneDouble
from support.forge_double import ForgeDouble, sign

SHA = "a" * 40


def test_forge_double_answers_as_gitea_document_says():
    with ForgeDouble(token="t") as forge:
        forge.add_repo("coop", "recipe")
        forge.set_permission("coop", "recipe", "alice", "write")
        forge.user("bob")
        pr = forge.add_pull("coop", "recipe", head_sha=SHA, head_ref="fix", head_repo="mal/recipe")
        api = httpx.Client(base_url=forge.api_url, headers={"Authorization": "token t"})
        got = api.get(f"/repos/coop/recipe/pulls/{pr['number']}").json()
        assert (got["head"]["sha"], got["head"]["ref"], got["head"]["repo"]["full_name"]) == (
            SHA,
            "fix",
            "mal/recipe",
        )
        perm = api.get("/repos/coop/recipe/collaborators/alice/permission").json()
        assert perm["permission"] == "write"
        assert (
            api.get("/repos/coop/recipe/collaborators/bob/permission").json()["permission"]
            == "read"
        )
        assert api.get("/repos/coop/recipe/collaborators/nobody/permission").status_code == 404
        made = api.post(f"/repos/coop/recipe/issues/{pr['number']}/comments", json={"body": "hi"})
        assert made.status_code == 201 and made.json()["user"]["login"] == "ci-bot"
        listed = api.get(f"/repos/coop/recipe/issues/{pr['number']}/comments").json()
        assert [c["body"] for c in listed] == ["hi"]
        st = api.post(
            f"/repos/coop/recipe/statuses/{SHA}", json={"state": "pending", "context": "ccci/cold"}
        )
        assert st.status_code == 201
        assert [s["status"] for s in forge.statuses("coop", "recipe", SHA)] == ["pending"]
        assert api.get(f"/repos/coop/recipe/statuses/{SHA}").json()[0]["context"] == "ccci/cold"
        assert httpx.get(f"{forge.api_url}/repos/coop/recipe/pulls/1").status_code == 401
        assert forge.violations and all("-> 401" in v for v in forge.violations)
        forge.violations.clear()  # the request without a token, on purpose
        forge.check()
        # A request the real forge would reject is a finding, and check() fails the test.
        api.post(f"/repos/coop/recipe/issues/{pr['number']}/comments", json={"text": "x"})
        with pytest.raises(AssertionError, match="body"):
            forge.check()


def test_forge_double_signs_its_webhooks_like_gitea():
    with ForgeDouble() as forge, DroneDouble() as sink:  # any HTTP server will do as receiver
        forge.add_repo("coop", "recipe")
        pr = forge.add_pull("coop", "recipe", head_sha=SHA)
        d = forge.deliver_comment(
            f"{sink.base_url}/hook", "s3cret", "coop", "recipe", pr["number"], "!testme"
        )
        got = sink.exchanges[-1]
        assert got.headers["x-gitea-signature"] == sign("s3cret", got.body)
        assert got.headers["x-gitea-event"] == "issue_comment"
        assert got.headers["x-gitea-event-type"] == "pull_request_comment"
        assert got.headers["x-gitea-delivery"] == d.delivery_id
        assert d.payload["is_pull"] and d.payload["comment"]["body"] == "!testme"
        assert [c["body"] for c in forge.comments("coop", "recipe", pr["number"])] == ["!testme"]


def test_drone_double_turns_extra_query_parameters_into_build_params():
    with DroneDouble(token="d") as drone:
        drone.add_repo("coop", "recipe")
        api = httpx.Client(base_url=drone.base_url, headers={"Authorization": "Bearer d"})
        made = api.post(
            "/api/repos/coop/recipe/builds",
            params=[
                ("commit", SHA),
                ("branch", "fix"),
                ("CCCI_MODE", "quick"),
                ("CCCI_MODE", "x"),
                ("access_token", "d"),
            ],
        )
        assert made.status_code == 200
        build = made.json()
        assert (build["after"], build["ref"], build["event"], build["number"]) == (
            SHA,
            "refs/heads/fix",
            "custom",
            1,
        )
        assert build["params"] == {"CCCI_MODE": "quick"}
        assert api.get("/api/repos/coop/recipe/builds/1").json()["params"] == {"CCCI_MODE": "quick"}
        assert api.get("/api/repos/coop/recipe/builds/2").status_code == 404
        assert (
            httpx.post(f"{drone.base_url}/api/repos/coop/recipe/builds?commit={SHA}").status_code
            == 401
        )
        assert api.post("/api/repos/coop/other/builds", params={"commit": SHA}).status_code == 404
        assert len(drone.builds) == 1
