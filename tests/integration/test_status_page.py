"""status.yml -e format=html through the real play, opened in headless Chromium (Debian's
`chromium`): the DOM the browser built, and a screenshot.

No Docker engine is needed beyond what warm_status asks for the disk; the state is made
in a tmp dir with the collection's own stores (tests/support/status_state.py).
"""

from __future__ import annotations

import html.parser
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from support import status_state
from support.ansible import dump, run_playbook
from support.status_state import catalog

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VOID = {"meta", "link", "br", "hr", "img", "input", "source", "wbr", "col", "area", "base"}


# ------------------------------------------------------------------------------ helpers


class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[Node]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag)
            and (cls is None or cls in n.classes)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]


class DomBuilder(html.parser.HTMLParser):
    """The DOM Chromium serialised (--dump-dom) as a tree of Nodes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse_dom(text: str) -> Node:
    builder = DomBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    assert exe, "headless Chromium is missing: install Debian's chromium (scripts/setup-host)"
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=False,
        timeout=180,
        cwd=tmp_path,
        check=False,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "PNG without IHDR"
    width, height, depth, colour, _c, _f, interlace = header
    assert (depth, interlace) == (8, 0) and colour in (2, 6), f"unexpected PNG header {header}"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i : i + 3]) for r in rows for i in range(0, stride, bpp)]


# ------------------------------------------------------------------------------ test


def test_status_page_in_headless_chromium(state_dir, tmp_path):
    status_state.build(str(state_dir))
    cat = catalog(tmp_path, {"custom-html": True, "notes": True})
    page = tmp_path / "out" / "status.html"
    page.parent.mkdir()
    for runner_dir in ("runner", "runner-json"):
        (tmp_path / runner_dir).mkdir()
    res = run_playbook(
        "status.yml",
        {
            "ccci_state_dir": str(state_dir),
            "ccci_catalog_dir": str(cat),
            "format": "html",
            "dest": str(page),
        },
        private_dir=tmp_path / "runner",
    )
    assert res.rc == 0, dump(res)
    assert res.task("Write the status page")["changed"] is True
    assert res.task("Say where the page is")["msg"] == f"status page: file://{page}"
    source = page.read_text(encoding="utf-8")
    assert source.startswith("<!DOCTYPE html>")
    assert "<script" not in source  # the hostile alert notes are text, not markup

    # (a) the DOM Chromium built from it
    out = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    dom = parse_dom(out.stdout.decode("utf-8"))
    assert dom.one("title").text().startswith("coopcloud.ci status: ")
    assert not dom.find_all("script") and not dom.find_all("img")
    assert dom.one("time", id="generated-at").attrs["datetime"].endswith("Z")

    # canonicals: one row per recipe, with version, short commit, age, status and lock
    rows = {r.attrs["data-recipe"]: r for r in dom.find_all("tr", "canonical")}
    assert sorted(rows) == ["custom-html", "notes"]
    html_row = rows["custom-html"]
    assert html_row.one("td", "version").text() == "1.1.0+1.29"
    assert html_row.one("td", "commit").text() == status_state.COMMIT[:12]
    assert html_row.one("td", "commit").attrs["title"] == status_state.COMMIT
    assert html_row.one("td", "status").one("span", "badge").text() == "idle"
    age = html_row.one("td", "age").text()
    assert "seeded" in age and "by run a0a001" in age
    assert html_row.one("td", "lock").text() == "free"
    notes_lock = rows["notes"].one("td", "lock").text()
    assert "run a0a005" in notes_lock and "quick.yml" in notes_lock

    # the timeline: the runs of each recipe, oldest first, verdicts, quick = lower confidence
    lanes = {lane.attrs["data-recipe"]: lane for lane in dom.find_all("div", "lane")}
    runs = lanes["custom-html"].find_all("li", "run")
    assert [r.attrs["data-run-id"] for r in runs] == ["a0a001", "a0a002", "a0a003"]
    assert [r.attrs["data-verdict"] for r in runs] == ["PASS", "PASS", "FAIL"]
    assert [r.one(cls="verdict").text() for r in runs] == ["PASS", "PASS", "FAIL"]
    assert [r.attrs["data-mode"] for r in runs] == ["cold", "quick", "quick"]
    assert [r.one(cls="confidence").text() for r in runs] == [
        "authoritative",
        "lower confidence",
        "lower confidence",
    ]
    assert [r.one(cls="duration").text() for r in runs] == [
        "6 min 10 s",
        "1 min 10 s",
        "1 min 40 s",
    ]
    assert "quick" in runs[1].classes and "quick" not in runs[0].classes
    notes_runs = lanes["notes"].find_all("li", "run")
    assert [r.attrs["data-verdict"] for r in notes_runs] == ["FAIL", "running"]
    assert len(dom.find_all("li", "run")) == len(status_state.RUNS) + 1

    # the alerts: the rollback row with every field; its hostile notes are plain text
    alerts = {a.attrs["data-kind"]: a for a in dom.find_all("tr", "alert")}
    assert sorted(alerts) == ["held-major", "rollback"]
    rollback = alerts["rollback"]
    assert rollback.one("td", "target").text() == "keycloak"
    assert rollback.one("td", "attempted").text() == "26.1.0+26.0.7"
    assert rollback.one("td", "last-good").text() == "26.0.0+26.0.5"
    assert rollback.one("td", "recovered").text() == "yes"
    assert rollback.one("pre", "notes").text() == " ".join(status_state.HOSTILE_NOTES.split())
    assert rollback.one("td", "when").text().startswith("just now ")  # written moments ago

    # the disk: a bar per path whose width is the used share the document measured
    res = run_playbook(
        "status.yml",
        {"ccci_state_dir": str(state_dir), "ccci_catalog_dir": str(cat), "format": "json"},
        private_dir=tmp_path / "runner-json",
    )
    assert res.rc == 0, dump(res)
    doc = res.task("Print the status document")["msg"]
    for name in ("docker_root", "state_dir"):
        block = dom.one("div", "disk", data_disk=name)
        bar = block.one("div", "bar").one("span")
        part = doc["disk"][name]
        used = 100.0 * (part["total"] - part["free"]) / part["total"]
        width = float(bar.attrs["style"].split("width:")[1].strip().rstrip("%;"))
        assert abs(width - used) < 1.0, (name, width, used)
        assert f"{part['free_human']} free" in block.one("div", "disk-text").text()

    # (b) a screenshot: the size asked for, and a page that is not one colour
    shot = tmp_path / "status.png"
    out = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    data = shot.read_bytes()
    assert len(data) > 20_000
    width, height, pixels = png_pixels(data)
    assert (width, height) == (1280, 900)
    colours = set(pixels)
    assert len(colours) > 50
    assert pixels[10 * width + 10] == bytes.fromhex("24292f")  # the dark header
    assert pixels[899 * width + 640] != bytes.fromhex("24292f")  # and it is only a header
    # the verdict colours of the timeline are painted (PASS green, FAIL red tops)
    assert bytes.fromhex("1a7f37") in colours
    assert bytes.fromhex("cf222e") in colours


def test_html_without_a_destination_is_refused_in_one_sentence(state_dir, tmp_path):
    (tmp_path / "runner").mkdir()
    res = run_playbook(
        "status.yml",
        {"ccci_state_dir": str(state_dir), "format": "html"},
        private_dir=tmp_path / "runner",
    )
    assert res.rc != 0
    assert "format=html writes a page: give its path, e.g. -e dest=/tmp/status.html" in (res.stdout)
    assert "Gather the status" not in {t["task"] for t in res.tasks}
    assert [p.name for p in state_dir.iterdir()] == [".ccci-state"]  # nothing written
