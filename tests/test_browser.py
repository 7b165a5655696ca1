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


def serving(predictor: Predictor, checkpoint: Path | None = None):
    """uvicorn serving ``predictor`` (loaded from ``checkpoint``) in a thread until the module's tests are done."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    from fusent.serve import create_app

    port = free_port()
    app = create_app(predictor, checkpoint=checkpoint)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
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


# ------------------------------------------------------------------ the service page (issue 14, item 17)


def launch(p):
    return p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)


def open_page(browser, url: str):
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.includes('head over')")
    page.wait_for_selector("#card dl")
    return page


def not_blank(png: Path) -> tuple[int, float]:
    """Distinct colours and the share of pixels that are not near-white, of a screenshot."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(np.int64)
    colours = len(np.unique(pixels @ np.array([65536, 256, 1])))
    return colours, float((pixels.min(axis=1) < 235).mean())


def page_file(page, selector: str) -> bytes:
    """The bytes of the file a file input holds (as the page set it)."""
    import base64

    b64 = page.evaluate(
        """async (sel) => {
            const buf = await document.querySelector(sel).files[0].arrayBuffer();
            let s = ""; new Uint8Array(buf).forEach((b) => { s += String.fromCharCode(b); });
            return btoa(s);
        }""",
        selector,
    )
    return base64.b64decode(b64)


def test_service_page_examples_batch_card_and_screenshot(server, tmp_path: Path):
    """Example posts fill the form and predict what the Predictor predicts; a batch of files gives a table (a bad
    file gets its own error row, the others still answer); the card and the spinner work; the page is not blank."""
    sync_api = pytest.importorskip("playwright.sync_api")
    ensure_chromium()
    from conftest import COLOURS, corrupt_bytes, jpeg_bytes

    url, predictor = server
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            assert page.is_hidden("#audio-group") and page.is_disabled("#audio")  # the model reads no audio
            assert page.is_visible("#text-group") and page.is_visible("#image-group")
            assert "native_combine" in page.inner_text("#card") and "No test metrics" in page.inner_text("#card")
            assert page.is_hidden("#spinner")

            wav = page.evaluate(
                """async () => { const buf = await exampleWav(EXAMPLES[0]).arrayBuffer();
                    let s = ""; new Uint8Array(buf).forEach((b) => { s += String.fromCharCode(b); });
                    return btoa(s); }"""
            )  # the example sound an audio model gets: a WAV the loaders read
            import base64
            import io

            import soundfile

            wave, rate = soundfile.read(io.BytesIO(base64.b64decode(wav)))
            assert rate == 16_000 and len(wave) == 16_000 and 0.2 < abs(wave).max() < 0.3

            page.click("#examples button[data-example=happy]")
            page.wait_for_function("document.getElementById('image').files.length === 1")
            text, image = page.input_value("#text"), page_file(page, "#image")
            assert "beach" in text and image[:4] == b"\x89PNG"
            expected = predictor.predict(text=text, image=image)
            page.click("#submit")
            page.wait_for_selector("#result[data-state=done]", timeout=30_000)
            assert page.inner_text("#label") == expected.label and page.is_hidden("#spinner")

            picture = jpeg_bytes(COLOURS["positive"], (40, 36), seed=3)
            dropped = page.evaluate_handle(
                """(bytes) => { const data = new DataTransfer();
                    data.items.add(new File([new Uint8Array(bytes)], "drop.jpg", { type: "image/jpeg" }));
                    return data; }""",
                list(picture),
            )
            page.dispatch_event("#image-drop", "drop", {"dataTransfer": dropped})
            assert page_file(page, "#image") == picture and page.is_visible("#preview")

            (tmp_path / "posts.txt").write_text("so happy today\nterrible service\n")
            (tmp_path / "posts.csv").write_text('id,text\n1,"fine, thanks"\n2,what a mess\n')
            (tmp_path / "photo.jpg").write_bytes(picture)
            (tmp_path / "broken.jpg").write_bytes(corrupt_bytes(4))
            files = [tmp_path / n for n in ("posts.txt", "posts.csv", "photo.jpg", "broken.jpg")]
            page.set_input_files("#batch-files", [str(f) for f in files])
            page.wait_for_selector("#batch-table[data-state=done]", timeout=60_000)
            rows = [
                [c.inner_text() for c in r.query_selector_all("td")]
                for r in page.query_selector_all("#batch-table tbody tr")
            ]
            posts = ["so happy today", "terrible service", "fine, thanks", "what a mess"]
            wanted = [predictor.predict(text=t).label for t in posts] + [predictor.predict(image=picture).label]
            assert [r[1] for r in rows[:4]] == posts and [r[2] for r in rows[:5]] == wanted
            assert rows[5][1] == "broken.jpg" and "not a readable" in rows[5][2]
            assert page.is_hidden("#batch-spinner")

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            colours, inked = not_blank(shot)
            assert colours > 30 and inked > 0.03, (colours, inked)
            page.set_content("<html><body></body></html>")  # the check tells a blank page apart
            page.screenshot(path=str(shot), full_page=True)
            assert not_blank(shot) == (1, 0.0)
        finally:
            browser.close()


@pytest.fixture(scope="module")
def text_server(tmp_path_factory, tiny_models: TinyModels):
    """A text-only model in a run folder whose metrics.json gives the card its dataset and test metrics."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("browser_text_ckpt")
    ckpt = shutil.copytree(make_checkpoint(root, tiny_models, "native_cat", ("text",)), root / "run" / "checkpoint")
    metrics = {"dataset": "tiny-tweets", "split": {"kind": "random", "n_train": 8, "n_val": 1, "n_test": 1}}
    (root / "run" / "metrics.json").write_text(json.dumps({**metrics, "test": {"n": 1, "accuracy": 0.5}}))
    yield from serving(Predictor.from_pretrained(ckpt, use_cache=False, device="cpu"), ckpt)


def test_page_hides_inputs_a_text_model_does_not_read(text_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    ensure_chromium()
    url, predictor = text_server
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            for group in ("#image-group", "#audio-group", "#video-group"):
                assert page.is_hidden(group), group
            assert page.is_visible("#text-group") and "image, audio, video" in page.inner_text("#hidden-note")
            card = page.inner_text("#card")
            assert "tiny-tweets" in card and "8 train / 1 validation / 1 test" in card
            cells = [c.inner_text() for c in page.query_selector_all("#card-metrics td")]
            assert cells == ["n", "1", "accuracy", "0.5000"]
            page.click("#examples button[data-example=sad]")
            page.wait_for_function("document.getElementById('text').value.length > 0")
            page.click("#submit")
            page.wait_for_selector("#result[data-state=done]", timeout=30_000)
            assert page.inner_text("#label") == predictor.predict(text=page.input_value("#text")).label
        finally:
            browser.close()


def test_docs_render_offline_in_chromium(server, tmp_path: Path):
    """Swagger UI at /docs renders the service's operations from the installed files (the machine has no
    internet, so a CDN script would leave the page empty)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    pytest.importorskip("fastapi_offline")
    ensure_chromium()
    url, _ = server
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
            page.goto(url + "docs")
            page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
            assert "fusent" in page.inner_text(".swagger-ui .info .title")
            paths = {e.inner_text() for e in page.query_selector_all(".opblock-summary-path")}
            assert {"/predict", "/predict/batch", "/model-card"} <= {p.replace("\u200b", "") for p in paths}
            assert outside == [], outside
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
            colours, inked = not_blank(tmp_path / "docs.png")
            assert colours > 30 and inked > 0.03, (colours, inked)
        finally:
            browser.close()
