"""The app in a real browser: headless Chromium (Debian package) driven by Playwright.

Opens the page, starts a run on tiny models, steps three rounds, checks that the panels
change, checks that the page loads nothing from outside this machine (offline), and saves
screenshots (to ``$DSPARK_VIZ_ARTIFACTS`` when set, e.g. tests/artifacts, else a tmp dir).
Walks the guided tour in presentation mode at 1920×1080 on a shipped demo trace (no model),
measuring that every panel of each step and the status line lie inside the viewport; the
keyboard shortcuts, Enter in the round box and a page reload keep one round numbering.
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
                               "document.querySelector('#dsv-status').innerText.includes('after prefill')",
                               timeout=60_000)
        assert "untrained" in _status(page)
        page.screenshot(path=str(shots / "round-0.png"), full_page=True)
        texts, drafts, verifs = [], [], []
        for k in range(1, 4):
            page.locator("#dsv-step").click()
            page.wait_for_function(f"document.querySelector('#dsv-status').innerText.includes('round {k} of {k}')",
                                   timeout=60_000)
            page.locator("#dsv-draft .main-svg").first.wait_for(timeout=30_000)
            page.wait_for_function(f"document.querySelector('#dsv-draft').innerText.includes('round {k} ')",
                                   timeout=30_000)
            texts.append(page.locator("#dsv-text").inner_html())
            drafts.append(page.locator("#dsv-draft").inner_text())
            verifs.append(page.locator("#dsv-verify").inner_text())
            page.screenshot(path=str(shots / f"round-{k}.png"), full_page=True)
        for a, b in zip(texts, texts[1:]):
            assert a != b
        for a, b in zip(drafts, drafts[1:]):
            assert a != b
        assert all(f"round {k}" in v for k, v in enumerate(verifs, 1))  # titles follow the round
        assert page.locator('#dsv-text [data-fate="accepted"], #dsv-text [data-fate="correction"]').count() > 0
        assert page.locator('#dsv-text .dsv-clean [data-fate="rejected"]').count() == 0  # never inline
        assert page.locator("#dsv-conf .main-svg").count() > 0 and page.locator("#dsv-tau .main-svg").count() > 0
        page.locator("#dsv-draft").screenshot(path=str(shots / "draft-block.png"))
        page.locator("#dsv-back").click()
        page.wait_for_function("document.querySelector('#dsv-status').innerText.includes('round 2 of 3')",
                               timeout=30_000)
        page.locator("#dsv-big input").check()
        page.wait_for_function("document.body.classList.contains('dsv-present')", timeout=30_000)
        page.screenshot(path=str(shots / "presentation.png"), full_page=False)
        browser.close()
    assert not outside, f"the page fetched from outside this machine: {outside[:3]}"
    assert len(list(shots.glob("*.png"))) >= 5


def _box(page, sel: str) -> dict:
    return page.evaluate("(s) => { const r = document.querySelector(s).getBoundingClientRect();"
                         " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
                         " h: r.height}; }", sel)


def _inside(page, sel: str, vw: int, vh: int, below: float = 0.0) -> dict:
    b = _box(page, sel)
    assert b["h"] > 20, (sel, b)  # drawn, not collapsed
    assert b["top"] >= below - 1 and b["bottom"] <= vh + 1 and b["left"] >= -1 and b["right"] <= vw + 1, \
        f"{sel} outside the {vw}×{vh} viewport (or under the top bar at {below:.0f}): {b}"
    return b


SCREEN = ("#dsv-text", "#dsv-draft", "#dsv-conf", "#dsv-sched")  # one projector screen


def _wait_round(page, k: int, n: int) -> None:
    page.wait_for_function(f"document.querySelector('#dsv-status').innerText.includes('round {k} of {n}')",
                           timeout=60_000)


def test_tour_in_presentation_mode_fits_a_projector_screen(url, shots):
    import app as appmod
    from playwright.sync_api import sync_playwright
    entry = next(e for e in appmod.DEMO_MENU if e.startswith("code-hardware-R64"))
    n = len(appmod.load_shipped(entry).rounds)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for vw, vh in ((1400, 900), (1920, 1080)):
            page = browser.new_page(viewport={"width": vw, "height": vh})
            page.goto(url, wait_until="load")
            page.locator("#dsv-start").wait_for(timeout=60_000)
            page.get_by_role("radio", name=appmod.DEMO).check()
            page.locator("#dsv-start").click()  # the preselected shipped trace: no model needed
            page.wait_for_function("document.querySelector('#dsv-status').innerText.includes('"
                                   f"{n} rounds recorded')", timeout=60_000)
            page.keyboard.press("ArrowRight")  # → steps (the page has the focus, not an input)
            _wait_round(page, 1, n)
            page.keyboard.press("ArrowRight")
            _wait_round(page, 2, n)
            page.keyboard.press("ArrowLeft")
            _wait_round(page, 1, n)
            box = page.locator("#dsv-round input")
            box.fill("3")
            box.press("Enter")  # Enter in the round box seeks
            _wait_round(page, 3, n)
            page.wait_for_function("document.querySelector('#dsv-draft').innerText.includes('round 3 ')",
                                   timeout=30_000)
            page.screenshot(path=str(shots / f"normal-{vw}x{vh}.png"))
            if vw < 1700:  # the narrowest columns: each figure by eye
                for sel in ("conf", "sched", "verify"):
                    page.locator(f"#dsv-{sel}").screenshot(path=str(shots / f"normal-{sel}-{vw}x{vh}.png"))
                page.evaluate("window.scrollTo(0, 0)")
            page.locator("#dsv-big input").check()
            page.wait_for_function("document.body.classList.contains('dsv-present')", timeout=30_000)
            page.wait_for_timeout(1500)  # the sidebar closes, the figures redraw at their sizes
            page.screenshot(path=str(shots / f"presentation-{vw}x{vh}.png"))
            if vw < 1700:  # narrower than a projector: confidence and scheduler move under the
                # draft block, which keeps the width its cells need, and sit side by side
                assert _box(page, "#dsv-draft")["right"] - _box(page, "#dsv-draft")["left"] > 800
                conf, sched = _box(page, "#dsv-conf"), _box(page, "#dsv-sched")
                assert conf["top"] > _box(page, "#dsv-draft")["top"] and abs(conf["top"] - sched["top"]) < 2
                for sel in ("conf", "sched"):
                    page.locator(f"#dsv-{sel}").screenshot(path=str(shots / f"panel-{sel}-{vw}x{vh}.png"))
                page.evaluate("window.scrollTo(0, 0)")
            if (vw, vh) == (1920, 1080):
                for sel in ("#dsv-bar", "#dsv-status", *SCREEN):
                    _inside(page, sel, vw, vh)
                for k, (title, _) in enumerate(appmod.TOUR):
                    page.locator("#dsv-tour").click()
                    page.wait_for_function(f"document.querySelector('#dsv-tour-text').innerText"
                                           f".includes('Tour {k + 1}/')", timeout=30_000)
                    page.wait_for_timeout(600)
                    bar = _inside(page, "#dsv-bar", vw, vh)
                    _inside(page, "#dsv-status", vw, vh)
                    panel = "#" + appmod.TOUR_PANELS[title]
                    _inside(page, panel, vw, vh, below=bar["bottom"])
                    if panel in SCREEN:  # the first steps: the whole projector screen at once
                        for sel in SCREEN:
                            _inside(page, sel, vw, vh, below=bar["bottom"])
                    page.screenshot(path=str(shots / f"tour-{k + 1}-{vw}x{vh}.png"))
                for sel in ("verify", "draft", "sched", "conf"):  # each figure at projector size
                    page.locator(f"#dsv-{sel}").screenshot(path=str(shots / f"panel-{sel}-{vw}x{vh}.png"))
                page.reload(wait_until="load")  # the run survives a reload
                page.wait_for_function("document.querySelector('#dsv-status') && document.querySelector("
                                       f"'#dsv-status').innerText.includes('round 3 of {n}')", timeout=60_000)
            page.close()
        browser.close()


def test_bad_input_error_is_visible_without_scrolling(url, shots):
    """An empty prompt: Start answers with a one-line error in the status line of the top bar,
    inside the viewport at 1400×900 and at 1920×1080 in presentation mode (the sidebar closed)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for vw, vh, present in ((1400, 900, False), (1920, 1080, True)):
            page = browser.new_page(viewport={"width": vw, "height": vh})
            page.goto(url, wait_until="load")
            page.locator("#dsv-start").wait_for(timeout=60_000)
            page.locator("#dsv-prompt textarea").fill("")
            if present:
                page.locator("#dsv-big input").check()
                page.wait_for_function("document.body.classList.contains('dsv-present')", timeout=30_000)
            page.wait_for_timeout(800)  # the sidebar closes, the page settles
            page.evaluate("window.scrollTo(0, 0)")
            _inside(page, "#dsv-start", vw, vh)  # Start on the first screen, not below the fold
            page.locator("#dsv-start").click()
            page.wait_for_function("document.querySelector('#dsv-status').innerText.includes('prompt is empty')",
                                   timeout=60_000)
            _inside(page, "#dsv-status", vw, vh)  # where the user looks, nothing to scroll
            page.screenshot(path=str(shots / f"error-{vw}x{vh}{'-presentation' if present else ''}.png"))
            page.close()
        browser.close()
