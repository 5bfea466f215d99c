"""Custom stage of notes: the web front answers over HTTP and routes by path.

The `content` volume is empty until someone writes a note, so `/` may answer 404; a
path that cannot exist must answer 404 too, and the server must speak HTTP/1.x.
"""

from __future__ import annotations

import os
import secrets

import httpx


def _base() -> str:
    base = os.environ.get("CCCI_BASE_URL")
    assert base, "CCCI_BASE_URL is not set: the custom stage must export it (catalog/README.md)"
    return base.rstrip("/")


def test_front_answers():
    response = httpx.get(_base() + "/", timeout=10)
    assert response.status_code in (200, 404), (
        f"GET / answered {response.status_code}: {response.text[:200]!r}"
    )
    assert response.http_version.startswith("HTTP/1"), response.http_version


def test_unknown_path_is_not_found():
    response = httpx.get(f"{_base()}/ccci-absent-{secrets.token_hex(4)}.txt", timeout=10)
    assert response.status_code == 404, f"a missing file answered {response.status_code}"
