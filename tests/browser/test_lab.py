"""The instructor's view in a real browser: JupyterLab in headless Chromium, driven the way a person would.

The widget tests (test_chat.py) call the callbacks directly; only a browser shows that the front end renders the
widgets, that a click reaches the kernel and that the streamed updates come back. Everything runs under the
``tiny`` profile (random-weight models of a few MB), so the kernels spend their time on JupyterLab, not on models.

The notebooks are *copies* in a temporary folder: JupyterLab saves notebooks it runs, and the course's committed
notebooks (with their checked outputs) must not be rewritten with tiny-profile outputs by a test.
Screenshots land in tests/browser/out/ (ignored by git).
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).parent / "out"
CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: CI runs as root. The rest keeps Chromium from calling home (there is no internet here).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP = "no browser for the JupyterLab test: install Debian's chromium and `pip install playwright`"
# JupyterLab user settings: every cell in the DOM (so cells can be found by their text), no autosave, no news.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": '{"autosave": false}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": '{"fetchNews": "false"}',
}
CELL_TIMEOUT_MS = 180_000  # the cells above a widget, on 2 busy CPU cores

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below says what to install
    sync_playwright = None

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, request):
    """A JupyterLab server on a free port with a token, over copies of notebooks 01 and 06 (in the folder where
    notebook 05 ran under the tiny profile: 06 loads its model): yields its base URL."""
    if sync_playwright is None or not CHROMIUM.exists():
        pytest.skip(SKIP)
    notebooks, _ = request.getfixturevalue("tiny_course")  # only once the skip above has not happened
    home = tmp_path_factory.mktemp("lab")
    for path, text in LAB_SETTINGS.items():
        (home / "settings" / path).parent.mkdir(parents=True, exist_ok=True)
        (home / "settings" / path).write_text(text)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, FTLIB_PROFILE="tiny", HF_HUB_OFFLINE="1",  # the kernels inherit both
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    log = (home / "lab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={notebooks}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # own group: kernels die with it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{(home / 'lab.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in 120 s:\n{(home / 'lab.log').read_text()}")
                time.sleep(0.5)
        yield url, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture()
def page(lab):
    OUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


def _open_and_run_to(page: Page, lab, notebook: str, cell_text: str):
    """Open a notebook, run every cell above the one containing ``cell_text`` (Run menu), then that cell
    (Shift+Enter), as an instructor would. Returns the cell."""
    url, token = lab
    page.goto(f"{url}/lab/tree/{notebook}?reset&token={token}")  # reset: only this notebook open
    cell = page.locator(".jp-Notebook .jp-CodeCell").filter(has_text=cell_text)
    expect(cell).to_have_count(1, timeout=60_000)
    panel = page.locator(".jp-NotebookPanel").filter(has=cell)
    expect(panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_visible(timeout=60_000)
    _no_dialog(page, f"opening {notebook}")
    cell.locator(".jp-InputArea-editor").click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Above Selected Cell").click()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell


def _no_dialog(page: Page, when: str) -> None:
    """Fail with the dialog's own words (and a screenshot) if JupyterLab shows one: it would swallow the clicks."""
    dialog = page.locator(".jp-Dialog")
    page.wait_for_timeout(500)  # a dialog opened by the kernel's start-up shows within this
    if dialog.count():
        page.screenshot(path=OUT / "dialog.png", full_page=True)
        pytest.fail(f"JupyterLab showed a dialog after {when} (screenshot in {OUT / 'dialog.png'}):\n"
                    + "\n".join(dialog.all_inner_texts())[:2000])


def _explain(page: Page) -> str:
    """The tracebacks on the page, for a failure message that says which cell broke."""
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    return "\n".join(errors.all_inner_texts())[-3000:] or "(no error output on the page)"


def _wait_visible(page: Page, locator, what: str) -> None:
    try:
        expect(locator).to_be_visible(timeout=CELL_TIMEOUT_MS)
    except AssertionError:
        page.screenshot(path=OUT / "failure.png", full_page=True)
        pytest.fail(f"{what} did not appear; screenshot in {OUT / 'failure.png'}; errors on the page:\n"
                    f"{_explain(page)}")


def _reply_done(page: Page, cell, earlier: list[str]) -> str:
    """Wait for the status line's "N prompt tokens", set once a reply is complete. N grows with the history,
    so a value seen after an earlier turn is the old status, not this turn's."""
    status = cell.get_by_text(re.compile(r"^\d+ prompt tokens$"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if status.count() == 1 and (text := status.inner_text()) not in earlier:
            return text
        page.wait_for_timeout(200)
    page.screenshot(path=OUT / "failure.png", full_page=True)
    pytest.fail(f"no new 'N prompt tokens' status in 60 s (earlier turns: {earlier}); errors:\n{_explain(page)}")


# Collects every distinct text the transcript shows, so the test can see the reply grow token by token.
_RECORD = """el => { window.__seen = [el.innerText];
  new MutationObserver(() => { const t = el.innerText; if (t !== window.__seen.at(-1)) window.__seen.push(t); })
    .observe(el, {subtree: true, childList: true, characterData: true}); }"""


def test_chat_widget_streams_replies_and_keeps_the_history(page, lab):
    cell = _open_and_run_to(page, lab, "06_chat.ipynb", "display(chat.view)")
    box = cell.get_by_placeholder("Type a message and press Send")
    _wait_visible(page, box, "notebook 06's chat widget")
    transcript = cell.locator(".widget-html-content").first
    messages = ["Hi! Who are you?", "What is the capital of Japan?"]
    seen, finished = [], []
    for i, message in enumerate(messages, 1):
        box.click()
        box.press_sequentially(message)
        transcript.evaluate(_RECORD)
        cell.get_by_role("button", name="Send", exact=True).click()
        finished.append(_reply_done(page, cell, finished))
        expect(transcript).to_contain_text(f"You: {message}")
        expect(box).to_have_value("")
        seen = page.evaluate("window.__seen")
        page.screenshot(path=OUT / f"06_chat_turn{i}.png", full_page=True)
    cell.screenshot(path=OUT / "06_chat_widget.png")

    # The history: both turns, in order, each answered.
    text = transcript.inner_text()
    first, second = text.index(f"You: {messages[0]}"), text.index(f"You: {messages[1]}")
    assert first < text.index("Assistant:", first) < second < text.index("Assistant:", second), text
    # Streamed: during the second turn the assistant's part of the transcript grew through several lengths.
    partial = [t[t.index("Assistant:", second):] for t in seen if "Assistant:" in t[second:]]
    assert len({len(p) for p in partial}) >= 3, f"the reply did not stream; transcript states seen: {seen}"


def test_temperature_slider_redraws_the_plot(page, lab):
    cell = _open_and_run_to(page, lab, "01_generation.ipynb", "widgets.interactive(")
    slider = cell.locator(".widget-slider").filter(has=page.locator("label", has_text="temperature"))
    plot = cell.locator(".widget-interact img")
    _wait_visible(page, plot, "notebook 01's interactive plot")
    readout = slider.locator(".widget-readout")
    before_value, before_src = readout.inner_text(), plot.get_attribute("src")
    cell.screenshot(path=OUT / "01_temperature_before.png")

    handle = slider.locator(".noUi-handle")  # drag the handle a quarter of the track to the right
    track = slider.locator(".noUi-target").bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + track["width"] / 4, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()

    expect(readout).not_to_have_text(before_value)
    expect(plot).not_to_have_attribute("src", before_src, timeout=60_000)
    after_value = float(readout.inner_text())
    assert after_value > float(before_value), (before_value, after_value)
    page.wait_for_timeout(1000)  # let the redraws of the intermediate slider positions settle
    cell.screenshot(path=OUT / "01_temperature_after.png")
