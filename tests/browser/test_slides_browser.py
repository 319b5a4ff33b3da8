"""A reveal.js deck from `make slides` (tools/slides.py render) in headless Chromium with the network off: it
shows its slides, the first heading is visible, and the next slide comes up. Every request the page makes is
recorded; only file:// ones may be among them (no CDN)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--allow-file-access-from-files"]  # require.js loads reveal.js from the deck's folder
sys.path.insert(0, str(ROOT / "tools"))

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def deck(tmp_path_factory) -> Path:
    if sync_playwright is None or not CHROMIUM.exists():
        pytest.skip("no browser for the slides test: install Debian's chromium and `pip install playwright`")
    if shutil.which("npm") is None:
        pytest.skip("no npm: make slides fetches reveal.js with it")
    import slides

    out = tmp_path_factory.mktemp("slides")
    [path] = slides.render([ROOT / "notebooks" / "05_sft.ipynb"], out, {"# 05": "Start the run, then talk."})
    return path


def test_deck_shows_its_slides_offline(deck):
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(deck.as_uri())
        page.wait_for_selector(".reveal.ready", timeout=30_000)  # reveal.js added it: initialised
        sections = page.locator(".reveal .slides section").count()
        title = page.locator(".reveal .slides section.present h1").first
        assert sections > 5 and title.is_visible() and title.inner_text().startswith("05 ·")
        index = ("Array.from(document.querySelectorAll('.reveal .slides > section'))"
                 ".findIndex(s => s.classList.contains('present'))")
        assert page.evaluate(index) == 0
        page.keyboard.press("ArrowRight")  # the key shows the title slide's first fragment (its first code cell)
        page.wait_for_selector(".reveal .slides section.present .fragment.visible", timeout=5_000)
        page.click(".reveal .controls .navigate-right")  # the arrow control: the next slide
        page.wait_for_function(f"{index} === 1", timeout=5_000)
        present = page.locator(".reveal .slides > section.present").first
        assert present.is_visible() and not title.is_visible()
        out = ROOT / "tests" / "browser" / "out"
        out.mkdir(exist_ok=True)
        page.wait_for_timeout(1000)  # the slide transition
        page.screenshot(path=str(out / "slides-05.png"))
        browser.close()
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), \
        [u for u in requests if not u.startswith(("file://", "data:"))]
    assert not errors, errors
