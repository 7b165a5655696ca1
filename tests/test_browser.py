"""The web page end to end: uvicorn on a free loopback port, Debian's headless Chromium driven by Playwright,
a real MVSA image and its text uploaded, and the label the page renders checked against the Predictor's.

Chromium comes from Debian (`apt-get install chromium`, done here when missing), never from a Playwright browser
download; the test skips, saying why, where neither is possible."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import REAL_MVSA, TinyModels
from test_predict import make_checkpoint

from fusent.data.text import decode_text
from fusent.predict import Predictor

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def ensure_chromium() -> None:
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None:
        pytest.skip("no /usr/bin/chromium and no apt-get to install Debian's chromium package")
    try:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                timeout=600,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot install Debian's chromium package: {exc}")
    if not CHROMIUM.exists():
        pytest.skip("apt-get installed chromium but /usr/bin/chromium is missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models: TinyModels):
    ckpt = make_checkpoint(tmp_path_factory.mktemp("browser_ckpt"), tiny_models, "native_combine")
    yield from serving(Predictor.from_pretrained(ckpt, use_cache=False, device="cpu"))


def serving(predictor: Predictor):
    """uvicorn serving ``predictor`` in a thread until the module's tests are done."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from fusent.serve import create_app

    port = free_port()
    config = uvicorn.Config(create_app(predictor), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/", predictor
    server.should_exit = True
    thread.join(10)


def test_page_predicts_a_real_mvsa_post(server, tmp_path: Path):
    if not (REAL_MVSA / "data").is_dir():
        pytest.skip(f"real MVSA data not found at {REAL_MVSA}")
    sync_api = pytest.importorskip("playwright.sync_api")
    ensure_chromium()
    url, predictor = server
    image = sorted((REAL_MVSA / "data").glob("*.jpg"))[0]
    text = decode_text(image.with_suffix(".txt").read_bytes())[0]
    expected = predictor.predict(text=text, image=image)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.includes('head over')")
            assert page.is_disabled("#audio")  # the tiny model has no audio modality
            page.fill("#text", text)
            page.set_input_files("#image", str(image))
            page.click("#submit")
            page.wait_for_selector("#result[data-state=done]", timeout=30_000)
            assert page.inner_text("#label") == expected.label
            bars = page.query_selector_all("#scores .bar")
            assert [b.query_selector("span").inner_text() for b in bars] == [r["label"] for r in expected]
            rows = page.query_selector_all("#contributions .bar")
            assert sorted(r.query_selector("span").inner_text() for r in rows) == ["image", "text"]
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.fill("#text", "")
            page.set_input_files("#image", [])
            page.click("#submit")  # nothing given: the service's 422 message is shown, not a result
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "at least one of" in page.inner_text("#error")
        finally:
            browser.close()


class Heard:
    """A stand-in for Whisper (the page's plumbing is under test, not speech recognition)."""

    max_seconds = 120.0

    def key(self) -> str:
        return "asr-heard"

    def transcribe(self, wave) -> str:
        return f"heard {len(wave) / 16_000:.1f} seconds"


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory, tiny_models: TinyModels):
    ckpt = make_checkpoint(tmp_path_factory.mktemp("browser_clip_ckpt"), tiny_models, "native_combine")
    predictor = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu", asr="fill")
    predictor.transcriber = Heard()
    yield from serving(predictor)


def test_page_takes_a_dropped_clip_and_shows_its_transcript(clip_server, tmp_path: Path):
    pytest.importorskip("av")
    sync_api = pytest.importorskip("playwright.sync_api")
    ensure_chromium()
    import base64

    from clips import make_clip

    url, predictor = clip_server
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0, fps=4, size=(32, 32))
    expected = predictor.predict(video=clip)
    assert expected.transcript == "heard 2.0 seconds"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.includes('head over')")
            assert not page.is_disabled("#video")
            dropped = page.evaluate_handle(
                """(b64) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const data = new DataTransfer();
                    data.items.add(new File([bytes], "clip.mp4", { type: "video/mp4" }));
                    return data;
                }""",
                base64.b64encode(clip.read_bytes()).decode(),
            )
            page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
            assert "clip.mp4" in page.inner_text("#clip-note")
            page.click("#submit")
            page.wait_for_selector("#result[data-state=done]", timeout=30_000)
            assert page.inner_text("#label") == expected.label
            assert page.inner_text("#transcript") == "heard 2.0 seconds"
            rows = page.query_selector_all("#contributions .bar")
            assert sorted(r.query_selector("span").inner_text() for r in rows) == ["image", "text"]
        finally:
            browser.close()
