"""The Predictor on every head and modality subset: Hugging Face-shaped scores, modality contributions, every
accepted input type, clear errors for bad input, batches, and the CPU speed options."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLOURS, TinyModels, corrupt_bytes, jpeg_bytes, truncated_jpeg_bytes
from PIL import Image

from fusent.encoders import TextEncoder
from fusent.fusion import available_heads
from fusent.model import FusentModel, ModelConfig
from fusent.predict import InputError, Prediction, Predictor

LABELS = ["negative", "neutral", "positive"]
PICTURE = jpeg_bytes(COLOURS["positive"], (40, 36), seed=5)


def make_checkpoint(
    root: Path, tiny: TinyModels, head: str = "native_combine", modalities: tuple[str, ...] = ("text", "image"), **kw
) -> Path:
    """A randomly initialised model over the tiny encoders, saved like `fusent train` saves one."""
    finetune = kw.pop("finetune_layers", 0)
    text = {"name": str(tiny.bert), "pooling": "mean", "max_length": 32, "finetune_layers": finetune}
    config = ModelConfig(
        labels=LABELS,
        head=head,
        dims={m: 32 for m in modalities},
        head_kwargs=kw,
        text_encoder=text if "text" in modalities else {},
        image_encoder={"name": str(tiny.vit)} if "image" in modalities else {},
    )
    torch.manual_seed(0)
    encoder = TextEncoder(**text, device="cpu") if finetune else None
    model = FusentModel(config, encoder)
    with torch.no_grad():  # heads start with zero "missing" embeddings and biases: make every path matter
        for p in model.head.parameters():
            if not p.any():
                p.add_(0.1 * torch.randn_like(p))
    return model.save_pretrained(root / f"{head}-{'-'.join(modalities)}-{finetune}")


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("predict_ckpts")


@pytest.fixture(scope="module")
def predictor(ckpt_root: Path, tiny_models: TinyModels) -> Predictor:
    return Predictor.from_pretrained(make_checkpoint(ckpt_root, tiny_models), use_cache=False, device="cpu")


def check_prediction(result: Prediction, given: set[str]) -> None:
    assert isinstance(result, list) and sorted(r["label"] for r in result) == LABELS
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert result.label == result[0]["label"] and result.score == scores[0]
    assert set(result.contributions) == given
    assert all(np.isfinite(v) for v in result.contributions.values())
    d = result.to_dict()
    assert d["scores"] == list(result) and d["contribution_method"] == result.contribution_method


SUBSETS = [{"text"}, {"image"}, {"text", "image"}]


@pytest.mark.parametrize("head", [h for h in available_heads(aliases=False) if h != "audio_only"])  # text+image
def test_every_head_every_modality_subset(head: str, ckpt_root: Path, tiny_models: TinyModels):
    p = Predictor.from_pretrained(make_checkpoint(ckpt_root, tiny_models, head), use_cache=False, device="cpu")
    usable = [s for s in SUBSETS if s <= set(p.modalities)]
    assert usable, head
    inputs = {"text": "good happy day", "image": PICTURE}
    results = {}
    for subset in usable:
        result = p.predict(**{m: inputs[m] for m in subset})
        check_prediction(result, subset)
        results[frozenset(subset)] = result
    if p.learned_weights is not None:
        assert head == "weighted"
        both = results[frozenset({"text", "image"})]
        assert both.contribution_method == "learned_weights"
        assert both.contributions == pytest.approx(p.learned_weights, abs=1e-6)
        assert results[frozenset({"text"})].contributions == {"text": pytest.approx(1.0)}
    elif {"text", "image"} <= set(p.modalities):
        # masking: the image's contribution is the top label's probability with it minus without it
        both, text_only = results[frozenset({"text", "image"})], results[frozenset({"text"})]
        assert both.contribution_method == "masking"
        without_image = {r["label"]: r["score"] for r in text_only}[both.label]
        assert both.contributions["image"] == pytest.approx(both.score - without_image, abs=1e-5)
    for m in {"text", "image"} - set(p.modalities):  # an ablation head: the modality it never reads is refused
        with pytest.raises(InputError, match=f"trained without {m}"):
            p.predict(**{m: inputs[m]})


def test_image_input_types_agree(predictor: Predictor, tmp_path: Path):
    path = tmp_path / "picture.jpg"
    path.write_bytes(PICTURE)
    decoded = Image.open(io.BytesIO(PICTURE)).convert("RGB")
    array = np.asarray(decoded)
    reference = predictor.predict(text="good", image=decoded)
    for image in (path, str(path), PICTURE, bytearray(PICTURE), array, array.astype(np.float32) / 255.0):
        result = predictor.predict(text="good", image=image)
        assert [r["label"] for r in result] == [r["label"] for r in reference]
        assert [r["score"] for r in result] == pytest.approx([r["score"] for r in reference], abs=1e-4)
    grey = predictor.predict(image=np.full((20, 30), 128, dtype=np.uint8))  # HxW greyscale
    check_prediction(grey, {"image"})


def test_text_is_cleaned_like_training_text(predictor: Predictor):
    a = predictor.predict(text="good   happy\n day")
    b = predictor.predict(text=b"good happy day")  # bytes are decoded like dataset files
    c = predictor.predict(text="good happy day")
    assert list(a) == list(c) and list(b) == list(c)


@pytest.mark.parametrize(
    ("post", "kind", "message"),
    [
        ({}, "no_input", "at least one of"),
        ({"text": "   \n"}, "no_input", "at least one of"),
        ({"text": 42}, "bad_text", "must be a str"),
        ({"image": corrupt_bytes(3)}, "corrupt_image", "not a readable image"),
        ({"image": truncated_jpeg_bytes(3)}, "truncated_image", "truncated"),
        ({"image": b""}, "corrupt_image", "empty"),
        ({"image": "/nonexistent/picture.jpg"}, "missing_image", "not found"),
        ({"image": np.zeros((4, 4, 2), dtype=np.uint8)}, "corrupt_image", "HxWx3/4"),
        ({"image": np.full((4, 4), 3.0)}, "corrupt_image", r"\[0, 1\]"),
        ({"image": 12}, "corrupt_image", "from a int"),
        ({"text": "good", "audio": b"RIFF...."}, "unsupported_modality", "trained without audio"),
    ],
)
def test_bad_input_is_an_input_error(predictor: Predictor, post: dict, kind: str, message: str):
    with pytest.raises(InputError, match=message) as info:
        predictor.predict(**post)
    assert info.value.kind == kind


def test_image_pixel_limit(predictor: Predictor):
    predictor.max_image_pixels = 100
    try:
        with pytest.raises(InputError, match="limit 100") as info:
            predictor.predict(image=PICTURE)
        assert info.value.kind == "too_large_image"
    finally:
        from fusent.data.images import MAX_IMAGE_PIXELS

        predictor.max_image_pixels = MAX_IMAGE_PIXELS


def test_batch_matches_single_posts_and_names_the_bad_one(predictor: Predictor):
    posts = [{"text": "good happy"}, {"image": PICTURE}, {"text": "bad sad", "image": PICTURE}] * 3
    batch = predictor.predict_batch(posts, batch_size=4)
    assert len(batch) == len(posts)
    for post, result in zip(posts, batch, strict=True):
        single = predictor.predict(**post)
        assert [r["label"] for r in result] == [r["label"] for r in single]
        assert [r["score"] for r in result] == pytest.approx([r["score"] for r in single], abs=1e-5)
        assert result.contributions == pytest.approx(single.contributions, abs=1e-5)
    with pytest.raises(InputError, match="post 1: not a readable image"):
        predictor.predict_batch([{"text": "good"}, {"image": corrupt_bytes(4)}])
    with pytest.raises(InputError, match="unknown field"):
        predictor.predict_batch([{"txt": "good"}])
    assert predictor.predict_batch([]) == []


def test_one_modality_models(ckpt_root: Path, tiny_models: TinyModels):
    text_ckpt = make_checkpoint(ckpt_root, tiny_models, "native_cat", ("text",))
    text_model = Predictor.from_pretrained(text_ckpt, use_cache=False, device="cpu")
    assert text_model.modalities == ["text"] and set(text_model.encoders) == {"text"}
    check_prediction(text_model.predict(text="good"), {"text"})
    with pytest.raises(InputError, match="trained without image"):
        text_model.predict(text="good", image=PICTURE)

    image_ckpt = make_checkpoint(ckpt_root, tiny_models, "native_cat", ("image",))
    image_model = Predictor.from_pretrained(image_ckpt, use_cache=False, device="cpu")
    assert image_model.modalities == ["image"] and set(image_model.encoders) == {"image"}
    check_prediction(image_model.predict(image=PICTURE), {"image"})
    with pytest.raises(InputError, match="trained without text"):
        image_model.predict(text="good")


def test_ablation_head_builds_no_encoder_it_never_reads(ckpt_root: Path, tiny_models: TinyModels):
    p = Predictor.from_pretrained(make_checkpoint(ckpt_root, tiny_models, "text_only"), use_cache=False)
    assert p.modalities == ["text"] and set(p.encoders) == {"text"}


def test_fine_tuned_text_model(ckpt_root: Path, tiny_models: TinyModels):
    ckpt = make_checkpoint(ckpt_root, tiny_models, "native_combine", finetune_layers=1)
    p = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    assert p.encoders["text"] is None and p.model.text_encoder is not None
    both, text_only = p.predict(text="good", image=PICTURE), p.predict(text="good")
    check_prediction(both, {"text", "image"})
    check_prediction(p.predict(image=PICTURE), {"image"})
    assert both.contributions["image"] == pytest.approx(both.score - dict(_pairs(text_only))[both.label], abs=1e-5)


def _pairs(result: Prediction) -> list[tuple[str, float]]:
    return [(r["label"], r["score"]) for r in result]


def test_prediction_with_cache_writes_and_reuses(ckpt_root: Path, tiny_models: TinyModels, tmp_path: Path):
    ckpt = make_checkpoint(ckpt_root, tiny_models)
    per_request = Predictor.from_pretrained(ckpt, cache_dir=tmp_path / "default", device="cpu")
    per_request.predict(text="good", image=PICTURE)
    per_request(["good", {"text": "bad", "image": PICTURE}])
    assert not any((tmp_path / "default").rglob("*.safetensors"))  # posts write no cache files unless asked
    cached = Predictor.from_pretrained(ckpt, cache_dir=tmp_path / "cache", device="cpu", cache_posts=True)
    first = cached.predict(text="good", image=PICTURE)
    assert any((tmp_path / "cache").rglob("*.safetensors"))
    assert cached.predict(text="good", image=PICTURE) == first
    uncached = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    assert uncached.cache is None
    fresh = uncached.predict(text="good", image=PICTURE)
    assert [r["label"] for r in fresh] == [r["label"] for r in first]
    assert [r["score"] for r in fresh] == pytest.approx([r["score"] for r in first], abs=1e-3)  # cache: fp16 states


def test_int8_text_encoder_is_close_and_keyed_apart(ckpt_root: Path, tiny_models: TinyModels):
    ckpt = make_checkpoint(ckpt_root, tiny_models)
    plain = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    quick = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu", quantize_text=True)
    assert quick.runtime["quantize_text"] and not plain.runtime["quantize_text"]
    assert quick.encoders["text"].cache_key() != plain.encoders["text"].cache_key()
    texts = ["good happy day", "bad sad news", "the day is"]
    _, float_pooled = plain.encoders["text"].encode(texts)
    _, int8_pooled = quick.encoders["text"].encode(texts)
    assert not torch.equal(float_pooled, int8_pooled)  # really quantised
    cos = torch.nn.functional.cosine_similarity(float_pooled, int8_pooled)
    assert cos.min() > 0.95
    check_prediction(quick.predict(text="good", image=PICTURE), {"text", "image"})


def test_onnx_image_encoder_matches_torch(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from fusent.encoders import create_image_encoder
    from fusent.encoders.runtime import RUN_IMAGES, OnnxImageEncoder

    torch_encoder = create_image_encoder("efficientnet-lite0", device="cpu")
    colours = list(COLOURS.values()) * 2  # more images than one ONNX Runtime call takes (RUN_IMAGES)
    images = [Image.open(io.BytesIO(jpeg_bytes(c, (60, 50), seed=i))) for i, c in enumerate(colours)]
    states, pooled = torch_encoder.encode(images)
    onnx = OnnxImageEncoder(create_image_encoder("efficientnet-lite0", device="cpu"), tmp_path)
    assert onnx.path.exists() and onnx.cache_key() != torch_encoder.cache_key()
    onnx_states, onnx_pooled = onnx.encode(images)
    assert torch.allclose(pooled, onnx_pooled, atol=1e-3)
    assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(states, onnx_states, strict=True))
    assert len(images) > RUN_IMAGES and len(onnx_states) == len(images)
    again = OnnxImageEncoder(create_image_encoder("efficientnet-lite0", device="cpu"), tmp_path)  # reuses the file
    assert again.path == onnx.path
    with pytest.raises(ValueError, match="EfficientNet-Lite"):
        OnnxImageEncoder(object(), tmp_path)  # type: ignore[arg-type]
