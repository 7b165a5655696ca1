"""The bad-input corpus against the REST service: hostile images and audio, empty uploads, stalled and vanished
clients, overload, and the OpenAPI document; every answer is a 2xx or a 4xx with a JSON error, never a 5xx."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import badinputs as bad
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from conftest import TinyModels  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_hostile_model import make_regression_checkpoint, make_trainable_checkpoint  # noqa: E402
from test_predict import make_checkpoint  # noqa: E402
from test_serve import b64, error  # noqa: E402

from fusent.predict import Predictor  # noqa: E402
from fusent.serve import ApiError, Runner, ServeSettings, create_app  # noqa: E402

SETTINGS = ServeSettings(max_upload_bytes=2_000_000, max_text_chars=500, max_batch=4)


@pytest.fixture(scope="module")
def text_image(tmp_path_factory, tiny_models: TinyModels) -> Predictor:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("hostile_serve"), tiny_models)
    return Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")


@pytest.fixture(scope="module")
def client(text_image: Predictor):
    with TestClient(create_app(text_image, SETTINGS)) as c:
        yield c


@pytest.fixture(scope="module")
def audio_client(tmp_path_factory, tiny_models: TinyModels):
    """text + audio with lstm-cnn: warmed up as `fusent serve` does (which used to crash at start-up)."""
    ckpt = make_trainable_checkpoint(tmp_path_factory.mktemp("hostile_audio"), tiny_models, "weighted", audio=True)
    predictor = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    predictor.warm_up()
    with TestClient(create_app(predictor, SETTINGS)) as c:
        yield c


# ------------------------------------------------------------------------------------- items 1, 2, 3, 6


@pytest.mark.parametrize("make", [bad.tall_png, bad.very_tall_png, bad.wide_png])
def test_elongated_images_are_a_422(client: TestClient, make):
    for answer in (
        client.post("/predict", files={"image": ("strip.png", make(), "image/png")}),
        client.post("/predict", json={"text": "good", "image": b64(make())}),
    ):
        body = error(answer, 422, "elongated_image", "aspect ratio")
        assert body["field"] == "image" and "<bytes>" not in body["detail"]


def test_text_only_request_to_an_inception_sa_model(tmp_path: Path, tiny_models: TinyModels):
    ckpt = make_trainable_checkpoint(tmp_path, tiny_models, "self_attention", image=True)
    with TestClient(create_app(Predictor.from_pretrained(ckpt, use_cache=False, device="cpu"))) as c:
        assert c.post("/predict", json={"text": "good"}).status_code == 200


def test_silent_clipped_and_long_audio_are_answered(audio_client: TestClient, tmp_path: Path):
    for audio, kind in ((bad.silent_wav(), "silent_audio"), (bad.clipped_wav(), "clipped_audio")):
        answer = audio_client.post("/predict", data={"text": "good"}, files={"audio": ("a.wav", audio, "audio/wav")})
        assert answer.status_code == 200, answer.text  # the CLI accepts these: so does the service
        assert [w["kind"] for w in answer.json()["warnings"]] == [kind]
    long_flac = bad.write_long_flac(tmp_path / "long.flac", 180).read_bytes()
    start = time.perf_counter()
    answer = audio_client.post("/predict", files={"audio": ("a.flac", long_flac, "audio/flac")})
    assert answer.status_code == 200 and answer.json()["warnings"] == []
    assert time.perf_counter() - start < 5  # three minutes of audio: only the model's second is decoded
    assert audio_client.post("/predict", json={"text": "good"}).status_code == 200


def test_regression_checkpoint_answers_scores(tmp_path: Path, tiny_models: TinyModels):
    ckpt = make_regression_checkpoint(tmp_path, tiny_models)
    with TestClient(create_app(Predictor.from_pretrained(ckpt, use_cache=False, device="cpu"))) as c:
        answer = c.post("/predict", json={"text": "good"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["label"] is None and isinstance(answer.json()["score"], float)


# ------------------------------------------------------------------------------------------------ item 11


def test_zero_byte_upload_is_refused_like_json(client: TestClient):
    empty = bad.empty_upload()
    error(client.post("/predict", files={"image": ("a.jpg", empty, "image/jpeg")}), 422, "corrupt_image", "empty")
    error(client.post("/predict", json={"image": b64(empty)}), 422, "corrupt_image", "empty")
    # a browser's file input left empty sends no file name: that is "not given"
    assert client.post("/predict", data={"text": "good"}, files={"image": ("", b"", "image/jpeg")}).status_code == 200


def test_openapi_refs_resolve(client: TestClient):
    spec = client.get("/openapi.json").json()

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = list(refs(spec))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[-1] in spec["components"]["schemas"], ref


def test_405_says_what_is_allowed(client: TestClient):
    answer = client.get("/predict")
    error(answer, 405, "http_error")
    assert answer.headers["allow"] == "POST"


# ------------------------------------------------------------------------------------------------- item 8


def _scope(path: str = "/predict", length: int = 100) -> dict:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
        "headers": headers, "http_version": "1.1", "scheme": "http", "server": ("test", 80),
        "client": ("client", 1), "root_path": "",
    }  # fmt: skip


async def _call(app, receive) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(app(_scope(), receive, send), 5)
    return sent


def test_a_stalled_body_is_cut_off(text_image: Predictor):
    app = create_app(text_image, ServeSettings(body_timeout_s=0.2))

    async def stall() -> dict:
        await asyncio.sleep(3600)
        return {}

    start = time.perf_counter()
    sent = asyncio.run(_call(app, stall))
    assert sent[0]["status"] == 408 and b"body_timeout" in sent[1]["body"]
    assert time.perf_counter() - start < 2


def test_a_vanished_client_leaves_no_traceback(text_image: Predictor, caplog: pytest.LogCaptureFixture):
    app = create_app(text_image, SETTINGS)

    async def gone() -> dict:
        return {"type": "http.disconnect"}

    with caplog.at_level(logging.INFO):
        asyncio.run(_call(app, gone))  # used to raise ClientDisconnect through the app, after a logged 500
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# ------------------------------------------------------------------------------------------------- item 7


def test_work_is_not_started_past_what_the_deadline_allows():
    """Ten requests at once, one worker, calls of 0.15 s, a 0.5 s timeout: a request whose worker frees up too late
    to finish is refused at once; every prediction computed is answered (none thrown away as a 503)."""
    runner = Runner(ServeSettings(workers=1, timeout_s=0.5))
    computed = 0
    lock = threading.Lock()

    def work() -> str:
        nonlocal computed
        time.sleep(0.15)
        with lock:
            computed += 1
        return "ok"

    async def main() -> list:
        return await asyncio.gather(*(runner.run(work) for _ in range(10)), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        runner.close()
    answered = sum(r == "ok" for r in results)
    refused = [r for r in results if isinstance(r, ApiError)]
    assert answered + len(refused) == 10 and all(r.status == 503 for r in refused)
    time.sleep(0.3)  # let a call started in vain finish before counting
    assert answered >= 2 and computed == answered, (answered, computed)
