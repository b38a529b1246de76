"""`launch/app.py` driven in a real headless Chromium (Playwright pointed at the system's
Debian `chromium`; `.ci/run` installs it): a prompt generates playable clips and their
spectrograms, bad input shows its message on the page, and the page fetches nothing from
outside localhost. With `SAJAX_APP_SCREENSHOT=<path>` the page after a generation is saved
there (the README's `docs/app.png` was made so)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlparse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
]
START_SECONDS = 240  # loading the model and starting Gradio, on 2 busy cores
RUN_SECONDS = 240  # the first generation compiles the sampler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(converted, tmp_path_factory):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device: the app's default mesh
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    log = open(tmp_path_factory.mktemp("app_log") / "app.log", "w+")
    args = [f"--pretrained={converted}", f"--port={port}", f"--output_dir={tmp_path_factory.mktemp('app_out')}"]
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "launch", "app.py"), *args], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + START_SECONDS
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                log.seek(0)
                process.kill()
                pytest.fail(f"the app did not start (exit {process.poll()}):\n{log.read()[-3000:]}")
            time.sleep(1)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        outside = []
        page.on(
            "request", lambda r: outside.append(r.url) if urlparse(r.url).hostname not in ("127.0.0.1", None) else None
        )
        page.goto(app_url)
        page.locator("#generate").wait_for(timeout=60_000)
        yield page
        assert not [u for u in outside if not u.startswith(("data:", "blob:"))], f"fetched from outside: {outside}"
        browser.close()


def _fill(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    field.fill(value)
    field.press("Tab")  # Gradio commits a number field's value on change


def test_prompt_generates_playable_clips_and_spectrograms(page):
    _fill(page, "prompt", "solo piano, slow waltz")
    _fill(page, "steps", "4")
    _fill(page, "seed", "7")
    page.locator("#generate").click()
    status = page.locator("#status")
    status.get_by_text("Generated 1 clip(s)").wait_for(timeout=RUN_SECONDS * 1000)
    assert "compiled the sampler" in status.inner_text()  # the first request says it compiled
    # The player's file is served (a WAV), and the browser decodes it as audio.
    link = page.locator("#clip_0 a.download-link").first
    link.wait_for(state="attached", timeout=30_000)
    href = link.get_attribute("href")
    with urllib.request.urlopen(href, timeout=30) as response:
        assert response.status == 200 and response.read(4) == b"RIFF"
    duration = page.evaluate(
        "async (url) => { const data = await (await fetch(url)).arrayBuffer();"
        " return (await new OfflineAudioContext(1, 1, 44100).decodeAudioData(data)).duration; }",
        href,
    )
    assert 0 < duration < 1.0  # the fixture's 0.19 s window
    page.locator("#spectrograms img").first.wait_for(timeout=30_000)
    assert "solo piano, slow waltz" in page.locator("#settings").inner_text()
    screenshot = os.environ.get("SAJAX_APP_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)


def test_bad_input_shows_a_message(page, tmp_path):
    _fill(page, "steps", "0")
    page.locator("#generate").click()
    page.locator("#status").get_by_text("steps must be a whole number >= 1").wait_for(timeout=60_000)
    _fill(page, "steps", "4")
    _fill(page, "duration", "999")
    page.locator("#generate").click()
    page.locator("#status").get_by_text("is outside (0,").wait_for(timeout=60_000)
    _fill(page, "duration", "0.1")
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio")
    page.get_by_text("Edit audio").click()
    page.locator("#mode").get_by_text("inpaint").click()
    page.locator("#audio_upload input[type=file]").set_input_files(str(notes))
    page.locator("#audio_upload").get_by_text("notes.txt").wait_for(timeout=60_000)
    page.locator("#generate").click()
    page.locator("#status").get_by_text("notes.txt: not an audio file").wait_for(timeout=60_000)
    assert not page.locator("#clip_0").is_visible()  # no result of an earlier request is shown
