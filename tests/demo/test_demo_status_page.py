"""The status page in a real headless Chromium: it loads, runs its script, shows
three nodes and names the leader; a screenshot is kept as a test artifact."""

from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path

import pytest

from demo.testing import DemoCluster, request

from .conftest import artifacts_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (Debian package `chromium`; "
                             "scripts/setup.sh installs it)")


class _Rows(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.nodes: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "tr" and "data-node" in a:
            self.nodes.append(a)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


def test_status_page_shows_three_nodes_and_the_leader(demo3: DemoCluster, tmp_path: Path
                                                      ) -> None:
    leader = demo3.wait_leader()
    for i, (k, v) in enumerate((("config/color", b"blue"), ("my-key", b"my-value"))):
        assert request("PUT", f"{demo3.nodes[i].url}/{k}", v)[0] in (200, 201)
    page = demo3.nodes[(leader + 1) % 3].url + "/"
    dom = _chromium(["--virtual-time-budget=10000", "--dump-dom", page], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = _Rows()
    rows.feed(dom.stdout)
    assert rows.body.get("data-state") == "ready", dom.stdout[:2000]
    assert len(rows.nodes) == 3
    assert {r["data-node"] for r in rows.nodes} == {n.db for n in demo3.nodes}
    leaders = [r for r in rows.nodes if "leader" in (r.get("class") or "").split()]
    assert [r["data-node"] for r in leaders] == [demo3.nodes[leader].db]
    assert rows.body.get("data-leader") == demo3.nodes[leader].db
    assert "LEADER" in dom.stdout
    assert "config/color" in dom.stdout      # recent writes

    shot = artifacts_dir(tmp_path) / "status-page.png"
    res = _chromium(["--virtual-time-budget=10000", "--window-size=1200,800",
                     f"--screenshot={shot}", page], tmp_path / "p2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    print(f"status page screenshot: {shot}")
