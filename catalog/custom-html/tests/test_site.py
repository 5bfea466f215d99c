"""Custom stage of custom-html: the site answers with its own domain and was initialised.

Runs with the environment documented in catalog/README.md (DOMAIN, CCCI_BASE_URL, ...).
"""

from __future__ import annotations

import os
import re

import httpx


def _env(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: the custom stage must export it (see catalog/README.md)"
    return value


def test_front_page_names_the_domain():
    base, domain = _env("CCCI_BASE_URL"), _env("DOMAIN")
    response = httpx.get(base.rstrip("/") + "/", timeout=10)
    assert response.status_code == 200, f"GET / answered {response.status_code}: {response.text!r}"
    heading = re.search(r"<h1>(.*?)</h1>", response.text, re.S)
    assert heading, f"no <h1> on the front page: {response.text!r}"
    named = heading.group(1).strip()
    if os.environ.get("CCCI_MODE") == "quick":
        # A quick run tests the canonical, whose data was initialised by the green cold run
        # that seeded it: the page names that run's domain, under the same suffix.
        suffix = domain.split(".", 1)[1]
        assert named.endswith("." + suffix), f"<h1> is {named!r}, not a domain under {suffix!r}"
    else:
        assert named == domain, f"<h1> is {named!r}, not {domain!r}"


def test_first_boot_initialised_the_volume():
    response = httpx.get(_env("CCCI_BASE_URL").rstrip("/") + "/.initialised", timeout=10)
    assert response.status_code == 200, f"GET /.initialised answered {response.status_code}"
    assert response.text.startswith("initialised "), f"unexpected marker: {response.text!r}"
