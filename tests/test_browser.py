"""The app in a real browser: headless Chromium (Debian package) driven by Playwright.

Opens the page, starts a run on tiny models, steps three rounds, checks that the panels
change, checks that the page loads nothing from outside this machine (offline), and saves
screenshots (to ``$DSPARK_VIZ_ARTIFACTS`` when set, e.g. tests/artifacts, else a tmp dir).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import make_drafter

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="Debian chromium not installed (.ci/run installs it)")
pytest.importorskip("playwright")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def url(tiny_gemma):
    import app as appmod
    demo = appmod.build_app(tiny_gemma, make_drafter(tiny_gemma), drafter_label="untrained (random, test)")
    _, u, _ = appmod.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield u
    demo.close()


def _status(page) -> str:
    return page.locator("#dsv-status").inner_text()


def test_open_step_three_rounds_panels_change(url, shots):
    from playwright.sync_api import sync_playwright
    outside = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})

        def track(req):
            host = urlparse(req.url).hostname
            if req.url.startswith(("http://", "https://", "ws://", "wss://")) and \
                    host not in ("127.0.0.1", "localhost"):
                outside.append(req.url)
        page.on("request", track)
        page.goto(url, wait_until="load")
        page.locator("#dsv-start").wait_for(timeout=60_000)
        page.locator("#dsv-start").click()
        page.wait_for_function("document.querySelector('#dsv-status') && "
                               "document.querySelector('#dsv-status').innerText.includes('round 0/0')",
                               timeout=60_000)
        assert "untrained" in _status(page)
        page.screenshot(path=str(shots / "round-0.png"), full_page=True)
        texts, drafts, verifs = [], [], []
        for k in range(1, 4):
            page.locator("#dsv-step").click()
            page.wait_for_function(f"document.querySelector('#dsv-status').innerText.includes('round {k}/{k}')",
                                   timeout=60_000)
            page.locator("#dsv-draft .main-svg").first.wait_for(timeout=30_000)
            page.wait_for_function(f"document.querySelector('#dsv-draft').innerText.includes('round {k - 1} ')",
                                   timeout=30_000)
            texts.append(page.locator("#dsv-text").inner_html())
            drafts.append(page.locator("#dsv-draft").inner_text())
            verifs.append(page.locator("#dsv-verify").inner_text())
            page.screenshot(path=str(shots / f"round-{k}.png"), full_page=True)
        for a, b in zip(texts, texts[1:]):
            assert a != b
        for a, b in zip(drafts, drafts[1:]):
            assert a != b
        assert all(f"round {k}" in v for k, v in enumerate(verifs))  # titles follow the round
        assert page.locator('#dsv-text [data-fate="rejected"], #dsv-text [data-fate="accepted"]').count() > 0
        assert page.locator("#dsv-conf .main-svg").count() > 0 and page.locator("#dsv-tau .main-svg").count() > 0
        page.locator("#dsv-draft").screenshot(path=str(shots / "draft-block.png"))
        page.locator("#dsv-back").click()
        page.wait_for_function("document.querySelector('#dsv-status').innerText.includes('round 2/3')",
                               timeout=30_000)
        page.locator("#dsv-big input").check()
        page.wait_for_function("document.body.classList.contains('dsv-present')", timeout=30_000)
        page.screenshot(path=str(shots / "presentation.png"), full_page=False)
        browser.close()
    assert not outside, f"the page fetched from outside this machine: {outside[:3]}"
    assert len(list(shots.glob("*.png"))) >= 5
