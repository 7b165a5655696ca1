"""The REST service's contract, through FastAPI's test client: good requests answer what the Predictor answers;
bad ones get a 4xx with a JSON error naming the problem, never a 5xx, and never leave a worker hung."""

from __future__ import annotations

import base64
import random
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
from conftest import COLOURS, TinyModels, corrupt_bytes, jpeg_bytes, truncated_jpeg_bytes  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_predict import make_checkpoint  # noqa: E402

from fusent.predict import Predictor  # noqa: E402
from fusent.serve import ServeSettings, create_app  # noqa: E402

PICTURE = jpeg_bytes(COLOURS["negative"], (40, 36), seed=9)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, tiny_models: TinyModels) -> Predictor:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("serve_ckpt"), tiny_models, "native_combine")
    return Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")


@pytest.fixture(scope="module")
def client(predictor: Predictor):
    settings = ServeSettings(max_upload_bytes=200_000, max_text_chars=500, max_batch=4, max_image_pixels=1_000_000)
    with TestClient(create_app(predictor, settings)) as c:
        yield c


def error(response, status: int, kind: str, detail: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail", "field"} and body["error"] == kind, body
    assert detail in body["detail"], body
    return body


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def same(answer: dict, expected) -> None:
    assert answer["label"] == expected.label
    assert [s["label"] for s in answer["scores"]] == [r["label"] for r in expected]
    assert [s["score"] for s in answer["scores"]] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    assert answer["contributions"] == pytest.approx(expected.contributions, abs=1e-5)
    assert answer["contribution_method"] == expected.contribution_method


# --------------------------------------------------------------------------------------------- good requests


def test_health_metadata_page_docs(client: TestClient, predictor: Predictor):
    assert client.get("/health").json()["status"] == "ok"
    meta = client.get("/metadata").json()
    assert meta["labels"] == predictor.labels and meta["modalities"] == ["text", "image"]
    assert meta["fusion_head"] == "native_combine" and meta["contribution_method"] == "masking"
    assert set(meta["encoders"]) == {"text", "image"} and meta["version"]
    assert meta["limits"]["max_upload_bytes"] == 200_000
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="text"', 'id="image"', 'id="audio"', 'id="submit"', 'id="label"', 'id="contributions"'):
        assert element in page.text
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert "/predict/batch" in spec["paths"] and client.get("/docs").status_code == 200


def test_multipart_and_json_answer_like_the_predictor(client: TestClient, predictor: Predictor):
    expected = predictor.predict(text="so happy", image=PICTURE)
    files = {"image": ("p.jpg", PICTURE, "image/jpeg")}
    same(client.post("/predict", data={"text": "so happy"}, files=files).json(), expected)
    same(client.post("/predict", json={"text": "so happy", "image": b64(PICTURE)}).json(), expected)
    data_url = "data:image/jpeg;base64," + b64(PICTURE)
    same(client.post("/predict", json={"text": "so happy", "image": data_url}).json(), expected)
    same(client.post("/predict", data={"text": "so happy"}).json(), predictor.predict(text="so happy"))
    image_only = client.post("/predict", files={"image": ("p", PICTURE, "application/octet-stream")})
    same(image_only.json(), predictor.predict(image=PICTURE))
    # an empty file input (a form submitted without choosing a file) means "not given"
    same(
        client.post(
            "/predict", data={"text": "so happy"}, files={"image": ("", b"", "application/octet-stream")}
        ).json(),
        predictor.predict(text="so happy"),
    )


def test_batch(client: TestClient, predictor: Predictor):
    posts = [{"text": "good"}, {"image": b64(PICTURE)}, {"text": "bad", "image": b64(PICTURE)}]
    answer = client.post("/predict/batch", json={"posts": posts}).json()["predictions"]
    expected = [predictor.predict(text="good"), predictor.predict(image=PICTURE)]
    expected.append(predictor.predict(text="bad", image=PICTURE))
    assert len(answer) == 3
    for a, e in zip(answer, expected, strict=True):
        same(a, e)


# --------------------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("kwargs", "status", "kind", "detail"),
    [
        ({"files": {"image": ("p.jpg", corrupt_bytes(5), "image/jpeg")}}, 422, "corrupt_image", "not a readable"),
        ({"files": {"image": ("p.jpg", truncated_jpeg_bytes(5), "image/jpeg")}}, 422, "truncated_image", "truncated"),
        ({"files": {"image": ("p.txt", PICTURE, "text/plain")}}, 415, "unsupported_media_type", "'text/plain'"),
        ({"files": {"audio": ("a.txt", b"abc", "text/plain")}}, 415, "unsupported_media_type", "audio has"),
        ({"files": {"audio": ("a.wav", b"RIFF0000WAVE", "audio/wav")}}, 422, "unsupported_modality", "without audio"),
        ({"data": {"text": "x" * 501}}, 413, "text_too_long", "limit 500"),
        ({"data": {"text": "   "}}, 422, "no_input", "at least one of"),
        ({"data": {"txt": "good"}}, 422, "unknown_field", "txt"),
        ({"data": {"image": "not a file"}}, 422, "bad_image", "file upload"),
        ({"json": {}}, 422, "no_input", "at least one of"),
        ({"json": {"text": None, "image": None}}, 422, "no_input", "at least one of"),
        ({"json": {"text": "y" * 501}}, 413, "text_too_long", "501"),
        ({"json": {"image": "%%%not base64"}}, 422, "bad_base64", "image is not valid base64"),
        ({"json": {"image": b64(b"GIF89a-but-not-really")}}, 422, "corrupt_image", "not a readable"),
        ({"json": {"text": 5}}, 422, "invalid_json", "text"),
        ({"json": {"text": "good", "colour": "red"}}, 422, "invalid_json", "colour"),
        ({"json": {"audio": b64(b"RIFF")}}, 422, "unsupported_modality", "trained without audio"),
        ({"json": ["text"]}, 422, "invalid_json", ""),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "invalid_json", ""),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", ""),
        ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}, 400, "bad_multipart", ""),
    ],
)
def test_bad_input_gets_a_4xx_json_error(client: TestClient, kwargs: dict, status: int, kind: str, detail: str):
    error(client.post("/predict", **kwargs), status, kind, detail)


def test_image_pixel_limit_before_decoding(client: TestClient):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1500, 1000), (10, 20, 30)).save(buf, format="PNG")  # small file, 1.5 M pixels
    body = error(
        client.post("/predict", files={"image": ("big.png", buf.getvalue(), "image/png")}),
        413,
        "too_large_image",
        "1500x1000",
    )
    assert body["field"] == "image"


def test_oversize_upload_is_refused(client: TestClient):
    big = jpeg_bytes(COLOURS["neutral"], (800, 800), seed=1, noise=120)
    assert len(big) > 200_000
    error(client.post("/predict", files={"image": ("b.jpg", big, "image/jpeg")}), 413, "payload_too_large", "200,000")
    error(client.post("/predict", json={"image": b64(big)}), 413, "payload_too_large")

    def chunks():  # no Content-Length: the limit applies while the body streams in
        for _ in range(30):
            yield b"x" * 10_000

    error(
        client.post("/predict", content=chunks(), headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )
    assert client.get("/health").status_code == 200


def test_bad_batches(client: TestClient):
    error(client.post("/predict/batch", json={"posts": []}), 422, "no_input", "empty")
    error(client.post("/predict/batch", json={"posts": [{"text": "a"}] * 5}), 413, "batch_too_large", "limit 4")
    bad = [{"text": "good"}, {"image": b64(corrupt_bytes(6))}]
    error(client.post("/predict/batch", json={"posts": bad}), 422, "corrupt_image", "post 1:")
    error(client.post("/predict/batch", json={"posts": [{"text": "z" * 501}]}), 413, "text_too_long", "post 0:")
    error(client.post("/predict/batch", json={"posts": [{}]}), 422, "no_input", "post 0:")
    error(client.post("/predict/batch", data={"text": "a"}), 415, "unsupported_media_type")
    error(client.post("/predict/batch", json={"post": []}), 422, "invalid_json", "posts")


def test_garbage_never_gives_a_5xx(client: TestClient):
    rng = random.Random(0)
    types = ["application/json", "multipart/form-data; boundary=xyz", "image/jpeg", "", "text/plain"]
    for i in range(40):
        body = rng.randbytes(rng.randint(0, 3000))
        if i % 3 == 0:
            body = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n' + body
        for path in ("/predict", "/predict/batch"):
            response = client.post(path, content=body, headers={"content-type": types[i % len(types)]})
            assert 400 <= response.status_code < 500, (i, path, response.text)
            assert "error" in response.json()


def test_model_without_a_modality(tmp_path: Path, tiny_models: TinyModels):
    ckpt = make_checkpoint(tmp_path, tiny_models, "native_cat", ("text",))
    with TestClient(create_app(Predictor.from_pretrained(ckpt, use_cache=False, device="cpu"))) as c:
        assert c.get("/metadata").json()["modalities"] == ["text"]
        body = error(c.post("/predict", files={"image": ("p.jpg", PICTURE, "image/jpeg")}), 422, "unsupported_modality")
        assert "trained without image" in body["detail"] and body["field"] == "image"
        assert c.post("/predict", data={"text": "good"}).status_code == 200


def test_weighted_head_reports_learned_weights(tmp_path: Path, tiny_models: TinyModels):
    ckpt = make_checkpoint(tmp_path, tiny_models, "weighted")
    predictor = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    with TestClient(create_app(predictor)) as c:
        assert c.get("/metadata").json()["learned_weights"] == pytest.approx(predictor.learned_weights)
        answer = c.post("/predict", json={"text": "good", "image": b64(PICTURE)}).json()
        assert answer["contribution_method"] == "learned_weights"
        assert answer["contributions"] == pytest.approx(predictor.learned_weights, abs=1e-6)


def test_a_cached_predictor_is_refused(tmp_path: Path, tiny_models: TinyModels):
    ckpt = make_checkpoint(tmp_path, tiny_models)
    with pytest.raises(ValueError, match="feature cache"):
        create_app(Predictor.from_pretrained(ckpt, cache_dir=tmp_path / "cache", device="cpu"))


def test_timeout_answers_503_and_frees_the_worker(predictor: Predictor):
    """A model call slower than the timeout gets a 503; the worker is busy until the call really ends, then
    serves the next request (nothing hangs, nothing piles up)."""
    release = threading.Event()
    original = predictor.predict

    def slow_predict(**post):
        release.wait(10)
        return original(**post)

    settings = ServeSettings(timeout_s=0.3, workers=1)
    with TestClient(create_app(predictor, settings)) as c:
        predictor.predict = slow_predict  # type: ignore[method-assign]
        try:
            start = time.perf_counter()
            error(c.post("/predict", data={"text": "good"}), 503, "timeout", "0.3s")
            assert time.perf_counter() - start < 5
            # the one worker is still busy with the first call: this one times out waiting for it
            error(c.post("/predict", data={"text": "good"}), 503, "timeout", "no worker free")
        finally:
            release.set()
            predictor.predict = original  # type: ignore[method-assign]
        time.sleep(0.2)
        assert c.post("/predict", data={"text": "good"}).status_code == 200


def test_cli_serve_help_without_fastapi(monkeypatch):
    """The CLI starts without the serve extra, and `fusent serve` then says how to install it."""
    import builtins

    from typer.testing import CliRunner

    from fusent.cli import app

    real_import = builtins.__import__

    def no_fastapi(name, *args, **kwargs):
        if name == "fastapi" or name.startswith("fastapi."):
            raise ModuleNotFoundError("No module named 'fastapi'", name="fastapi")
        return real_import(name, *args, **kwargs)

    import sys

    monkeypatch.delitem(sys.modules, "fusent.serve", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_fastapi)
    result = CliRunner().invoke(app, ["serve", "some/checkpoint"])
    assert result.exit_code == 2
    assert "pip install 'fusent[serve]'" in result.output


# --------------------------------------------------------------------------------------------- docs and model card


def test_docs_work_offline(client: TestClient):
    """/docs and /redoc load Swagger UI / ReDoc from the installed fastapi-offline files: no URL leaves the host."""
    import re
    from urllib.parse import urljoin

    pytest.importorskip("fastapi_offline")
    for path, needed in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""", page.text)
        urls = [u for pair in urls for u in pair if u]
        assert any(u.endswith(needed) for u in urls), urls
        assert not [u for u in urls if "//" in u], f"{path} loads from another host: {urls}"
        for url in urls:
            answer = client.get(urljoin(f"http://testserver{path}", url))
            assert answer.status_code == 200 and len(answer.content) > 100, url
    assert client.get("/openapi.json").status_code == 200
    error(client.get("/docs-assets/nothing.js"), 404, "http_error")
    assert client.get("/docs-assets/..%2F..%2Fconsts.py").status_code == 404  # nothing outside the asset folder


def test_docs_without_the_assets_say_what_to_install(predictor: Predictor, monkeypatch):
    import fusent.serve

    monkeypatch.setattr(fusent.serve, "_docs_assets", lambda: None)
    with TestClient(create_app(predictor)) as c:
        error(c.get("/docs"), 503, "docs_unavailable", "pip install 'fusent[serve]'")
        assert c.post("/predict", data={"text": "good"}).status_code == 200


def test_model_card_without_a_run_folder(client: TestClient, predictor: Predictor):
    card = client.get("/model-card").json()
    assert card["labels"] == predictor.labels and card["head"] == "native_combine"
    assert card["modalities"] == ["text", "image"] and set(card["encoders"]) == {"text", "image"}
    assert card["encoders"]["text"]["name"].endswith("bert") and card["task"] == "classification"
    assert card["dataset"] is None and card["test_metrics"] is None  # a checkpoint on its own: not guessed
    assert "/model-card" in client.get("/openapi.json").json()["paths"]


def test_model_card_reads_the_run_folder(tmp_path: Path, tiny_models: TinyModels):
    """A checkpoint inside a `fusent train` run folder: the card gives the dataset, split sizes and test metrics;
    the text-only model's card lists only text (the page hides the other inputs from it)."""
    import json
    import shutil

    ckpt = make_checkpoint(tmp_path, tiny_models, "native_cat", ("text",))
    run = tmp_path / "run"
    shutil.copytree(ckpt, run / "checkpoint")
    metrics = {
        "dataset": "MVSA-Single",
        "split": {"kind": "random", "n_train": 80, "n_val": 10, "n_test": 10, "seed": 13},
        "best_epoch": 3,
        "test": {"n": 10, "accuracy": 0.7, "f1_macro": 0.61, "roc_auc_macro": float("nan"), "per_class": {}},
        "validation": {"n": 10, "accuracy": 0.8},
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    predictor = Predictor.from_pretrained(run / "checkpoint", use_cache=False, device="cpu")
    with TestClient(create_app(predictor, checkpoint=run / "checkpoint")) as c:
        card = c.get("/model-card").json()
    assert card["dataset"] == "MVSA-Single" and card["best_epoch"] == 3
    assert card["test_metrics"] == {"n": 10, "accuracy": 0.7, "f1_macro": 0.61}  # NaN and tables left out
    assert card["validation_metrics"] == {"n": 10, "accuracy": 0.8}
    assert card["split"]["n_test"] == 10 and card["modalities"] == ["text"] and list(card["encoders"]) == ["text"]

    (run / "metrics.json").write_text("{broken")  # a damaged report: no metrics, the service still starts
    with TestClient(create_app(predictor, checkpoint=run / "checkpoint")) as c:
        assert c.get("/model-card").json()["test_metrics"] is None
    (run / "metrics.json").unlink()
    shutil.copytree(run / "checkpoint", tmp_path / "elsewhere")
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))  # beside a copied checkpoint, not its run folder
    with TestClient(create_app(predictor, checkpoint=tmp_path / "elsewhere")) as c:
        assert c.get("/model-card").json()["dataset"] is None


def test_page_has_the_service_page_parts(client: TestClient):
    """The page is one self-contained file: no URL to another host; every part the browser test drives is there."""
    page = client.get("/").text
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    for element in ("examples", "batch-files", "batch-table", "spinner", "card", "text-group", "audio-group"):
        assert f'id="{element}"' in page, element


def test_model_card_of_a_real_train_run(prepared_tiny, tiny_mvsa, tmp_path: Path):
    """The run folder `fusent train` writes, as it is: the card names the dataset and gives the test metrics."""
    from fusent.options import TrainConfig
    from fusent.runs import train_run

    run = tmp_path / "run"
    train_run(prepared_tiny, "native_cat", TrainConfig(epochs=1, batch_size=8), {}, run, progress=False, plots=False)
    predictor = Predictor.from_pretrained(run / "checkpoint", use_cache=False, device="cpu")
    with TestClient(create_app(predictor, checkpoint=run / "checkpoint")) as c:
        card = c.get("/model-card").json()
    assert card["dataset"] == tiny_mvsa.root.name and card["split"]["kind"] == "random"
    assert card["test_metrics"]["n"] == prepared_tiny.split["n_test"] > 0
    assert 0.0 <= card["test_metrics"]["accuracy"] <= 1.0 and card["best_epoch"] == 1
    assert card["labels"] == predictor.labels and card["head"] == "native_cat"
