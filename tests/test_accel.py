"""The GPU path (fusent/accel.py) on a machine without a GPU (CI never has one): on a CPU everything stays float32
and the feature-cache keys stay what they were; with the autocast dtype monkeypatched to bf16 / fp16 (CPU autocast
supports both) the encoders, the trainer and the Predictor run their mixed-precision code paths. The CUDA tests at
the end run only where a GPU is present."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import COLOURS, MvsaSpec, TinyModels, jpeg_bytes

from fusent import accel, cost
from fusent.encoders.base import Encoder
from fusent.features import FeatureCache, build_features
from fusent.model import FusentModel, ModelConfig
from fusent.options import EncoderSettings, OptionError, TrainConfig

PICTURE = jpeg_bytes(COLOURS["positive"], (40, 36), seed=5)
#: FixedEncoder's CPU cache key as the code before the GPU path computed it (git fe829cd): caches stay valid.
FIXED_KEY_BEFORE = "20def3e66a9a2a3fbfcd"


class FixedEncoder(Encoder):
    modality, dim = "text", 4

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)
        self.autocast_seen: list[bool] = []

    def settings(self) -> dict[str, Any]:
        return {"name": "fixed-model", "pooling": "mean", "max_length": 32}

    def fingerprint(self) -> str:
        return "abc123"

    def encode(self, items: list[Any]) -> tuple[list[torch.Tensor], torch.Tensor]:
        self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
        out = torch.nn.functional.linear(torch.ones(len(items), 3, 4), torch.full((4, 4), 1 / 3))
        return list(out), out.mean(1)


def fake_amp(dtype: torch.dtype):
    """``amp_dtype`` as on a GPU with ``dtype``, but for the CPU (``--precision fp32`` still turns it off)."""

    def amp_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
        return None if precision == "fp32" else dtype

    return amp_dtype


# --------------------------------------------------------------------------------------------- CPU: float32


def test_cpu_runs_in_float32_without_autocast():
    assert accel.amp_dtype("cpu") is None and not accel.needs_grad_scaler("cpu")
    assert accel.loader_options("cpu") == {"pin_memory": False}
    layer = torch.nn.Linear(4, 2)
    with accel.autocast("cpu") as dtype:
        assert not torch.is_autocast_enabled("cpu")
        out = layer(torch.ones(1, 4))
    assert dtype is None and out.dtype == torch.float32
    x = torch.ones(3)
    assert accel.to_device(x, "cpu").device.type == "cpu"
    assert not accel.MixedPrecision("cpu").scaler.is_enabled()


def test_cpu_cache_key_is_the_key_from_before_the_gpu_path(tiny_text_encoder):
    assert FixedEncoder().cache_key() == FIXED_KEY_BEFORE
    encoder = FixedEncoder()
    encoder.precision = "fp32"
    assert encoder.cache_key() == FIXED_KEY_BEFORE
    # a real encoder: the old formula, with nothing added for precision
    old = {"modality": "text", **tiny_text_encoder.settings(), "weights": tiny_text_encoder.fingerprint()}
    expected = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:20]
    assert tiny_text_encoder.cache_key() == expected


def test_mixed_precision_enters_the_cache_key(monkeypatch: pytest.MonkeyPatch, tiny_text_encoder):
    plain = tiny_text_encoder.cache_key()
    monkeypatch.setattr(accel, "amp_dtype", fake_amp(torch.bfloat16))
    bf16 = FixedEncoder()
    bf16_key = bf16.cache_key()
    assert accel.cache_key_fields(bf16) == {"precision": "bfloat16"} and bf16_key != FIXED_KEY_BEFORE
    assert tiny_text_encoder.cache_key() != plain
    monkeypatch.setattr(accel, "amp_dtype", fake_amp(torch.float16))
    assert FixedEncoder().cache_key() not in (FIXED_KEY_BEFORE, bf16_key)
    off = FixedEncoder()
    off.precision = "fp32"
    assert off.cache_key() == FIXED_KEY_BEFORE


def test_bf16_and_fp32_features_never_share_a_cache_entry(
    monkeypatch: pytest.MonkeyPatch, tiny_settings: EncoderSettings, tmp_path: Path
):
    from fusent.data import ProblemReport, Sample
    from fusent.encoders.build import build_encoders

    samples = [Sample(id=str(i), text=f"a fine day number {i}", image=None, label="positive") for i in range(5)]
    cache = FeatureCache(tmp_path)

    def encode(precision: str) -> tuple[torch.Tensor, str]:
        encoders, _ = build_encoders(tiny_settings.text_config(), {"name": "none"}, "cpu", None, precision)
        table = build_features(samples, encoders, cache, ProblemReport(), progress=False)
        return table.modalities["text"].pooled, encoders["text"].cache_key()

    fp32, fp32_key = encode("auto")
    monkeypatch.setattr(accel, "amp_dtype", fake_amp(torch.bfloat16))
    bf16, bf16_key = encode("auto")
    assert bf16_key != fp32_key and sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32_key, bf16_key])
    assert bf16.dtype == torch.float32  # cast back: the cache and the heads read float32
    assert not torch.equal(bf16, fp32) and torch.allclose(bf16, fp32, atol=0.1)  # bf16 rounding, not a new encoder
    again, key = encode("fp32")  # the option turns it off: the first (fp32) entries are read back
    assert key == fp32_key and torch.equal(again, fp32)


def test_frozen_encoding_runs_under_autocast_only_when_mixed(monkeypatch: pytest.MonkeyPatch):
    from fusent.features import encode_items

    encoder = FixedEncoder()
    states, pooled = accel.encode_frozen(encoder, encode_items, ["a", "b"])
    monkeypatch.setattr(accel, "amp_dtype", fake_amp(torch.bfloat16))
    mixed_states, mixed_pooled = accel.encode_frozen(encoder, encode_items, ["a", "b"])
    assert encoder.autocast_seen == [False, True]
    assert mixed_pooled.dtype == torch.float32 and all(s.dtype == torch.float32 for s in mixed_states)
    assert torch.allclose(mixed_pooled, pooled, atol=1e-2)


def test_precision_option_is_validated_once_and_recorded(prepared_tiny, tiny_models: TinyModels, tmp_path: Path):
    from fusent.predict import Predictor
    from fusent.train_flow import fit

    with pytest.raises(OptionError, match="--precision must be one of auto | fp32"):
        EncoderSettings(precision="fp16")
    settings = dataclasses.replace(prepared_tiny.settings, precision="fp32")
    model, _ = fit(dataclasses.replace(prepared_tiny, settings=settings), "native_combine", TrainConfig(epochs=1))
    assert model.config.precision == "fp32"
    ckpt = model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((ckpt / "config.json").read_text())["precision"] == "fp32"
    predictor = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    assert predictor.model.config.precision == "fp32" and predictor.encoders["text"].precision == "fp32"
    assert Predictor.from_pretrained(ckpt, use_cache=False, precision="auto").encoders["image"].precision == "auto"
    with pytest.raises(OptionError, match="--precision"):
        Predictor.from_pretrained(ckpt, use_cache=False, precision="half")


# ----------------------------------------------------------------------------- the mixed-precision code paths


def _spy(monkeypatch: pytest.MonkeyPatch, method: str) -> list[tuple[bool, torch.dtype]]:
    """Record, at each call of FusentModel.``method``, whether CPU autocast is on and in which dtype."""
    seen: list[tuple[bool, torch.dtype]] = []
    original = getattr(FusentModel, method)

    def spy(self, *args: Any, **kwargs: Any):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FusentModel, method, spy)
    return seen


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_trainer_runs_its_forward_under_autocast(monkeypatch: pytest.MonkeyPatch, prepared_tiny, dtype):
    from fusent.model import predict_logits
    from fusent.train_flow import fit

    monkeypatch.setattr(accel, "amp_dtype", fake_amp(dtype))
    scaled: list[bool] = []
    original_scale = torch.amp.GradScaler.scale
    monkeypatch.setattr(
        torch.amp.GradScaler, "scale", lambda self, x: scaled.append(self.is_enabled()) or original_scale(self, x)
    )
    losses, forwards = _spy(monkeypatch, "loss"), _spy(monkeypatch, "forward")
    model, result = fit(prepared_tiny, "native_combine", TrainConfig(epochs=2, batch_size=8), progress=False)
    assert losses and all(seen == (True, dtype) for seen in losses)
    assert forwards and all(seen == (True, dtype) for seen in forwards)  # validation, in predict_logits
    assert scaled and all(s == (dtype == torch.float16) for s in scaled)  # loss scaling for fp16 only
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    logits = predict_logits(model, prepared_tiny.val)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_predictor_runs_under_autocast_on_mixed_precision(monkeypatch: pytest.MonkeyPatch, tiny_models, tmp_path):
    from fusent.predict import Predictor

    text = {"name": str(tiny_models.bert), "pooling": "mean", "max_length": 32, "finetune_layers": 0}
    config = ModelConfig(
        labels=["negative", "neutral", "positive"],
        head="native_combine",
        dims={"text": 32, "image": 32},
        text_encoder=text,
        image_encoder={"name": str(tiny_models.vit)},
    )
    torch.manual_seed(0)
    ckpt = FusentModel(config).save_pretrained(tmp_path / "ckpt")
    reference = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu").predict(text="good", image=PICTURE)
    monkeypatch.setattr(accel, "amp_dtype", fake_amp(torch.bfloat16))
    seen = _spy(monkeypatch, "encode")
    mixed = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    result = mixed.predict(text="good", image=PICTURE)
    assert seen == [(True, torch.bfloat16)]
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-5)
    assert dict(map(_pair, result)) == pytest.approx(dict(map(_pair, reference)), abs=0.05)
    off = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu", precision="fp32")
    off.predict(text="good", image=PICTURE)
    assert seen[-1][0] is False


def _pair(row: dict[str, Any]) -> tuple[str, float]:
    return row["label"], row["score"]


def test_cli_refuses_an_unknown_precision(tiny_mvsa: MvsaSpec, tmp_path: Path):
    from conftest import invoke

    result = invoke("train", "--data", tiny_mvsa.root, "--out", tmp_path / "run", "--precision", "half", "-q")
    assert result.exit_code == 2 and "--precision" in result.output
    assert not (tmp_path / "run").exists()


def test_cost_report_has_peak_gpu_memory_only_when_cuda_was_used(monkeypatch: pytest.MonkeyPatch):
    with cost.recording() as costs:
        assert "peak_gpu_mb" not in costs.summary()  # CUDA never initialised in this process
    resets: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", resets.append)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: (d + 1) * 96 * 2**20)
    with cost.recording() as costs:
        summary = costs.summary()
    assert resets == [0, 1] and summary["peak_gpu_mb"] == 192.0
    assert "peak GPU 192 MiB" in cost.format_costs(summary)


# ------------------------------------------------------------------------------------- on a GPU (skipped in CI)

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


@needs_gpu
def test_cuda_autocast_and_pinned_copies():  # pragma: no cover - needs a GPU
    dtype = accel.amp_dtype("cuda")
    assert dtype in (torch.bfloat16, torch.float16)
    assert accel.needs_grad_scaler("cuda") == (dtype == torch.float16)
    layer = torch.nn.Linear(4, 2).cuda()
    with accel.autocast("cuda") as used:
        out = layer(accel.to_device(torch.ones(1, 4), "cuda"))
        with accel.autocast("cuda", "fp32") as inner:  # an explicit float32 region inside mixed precision
            assert inner is None and layer(torch.ones(1, 4, device="cuda")).dtype == torch.float32
    assert used == dtype and out.dtype == dtype
    assert accel.to_device(out, "cuda") is out  # already there: no pinned round trip
    assert accel.loader_options("cuda") == {"pin_memory": True}


@needs_gpu
def test_cuda_end_to_end_encode_train_predict(
    tiny_mvsa: MvsaSpec, tiny_settings: EncoderSettings, tmp_path: Path
):  # pragma: no cover - needs a GPU
    from fusent.encoders.build import build_encoders
    from fusent.predict import Predictor
    from fusent.train_flow import fit, prepare

    settings = dataclasses.replace(tiny_settings, device="cuda")
    with cost.recording() as costs:
        prepared = prepare(tiny_mvsa.root, settings, cache_dir=tmp_path / "cache", progress=False)
        model, result = fit(prepared, "native_combine", TrainConfig(epochs=1, batch_size=8), progress=False)
        summary = costs.summary()
    assert result.history and model.device.type == "cuda" and summary["peak_gpu_mb"] > 0
    cuda_keys = {
        e.cache_key() for e in build_encoders(settings.text_config(), settings.image_config(), "cuda")[0].values()
    }
    cpu_keys = {
        e.cache_key() for e in build_encoders(settings.text_config(), settings.image_config(), "cpu")[0].values()
    }
    assert cuda_keys.isdisjoint(cpu_keys)
    assert {p.name for p in (tmp_path / "cache").iterdir()} >= cuda_keys
    predictor = Predictor.from_pretrained(model.save_pretrained(tmp_path / "ckpt"), use_cache=False, device="cuda")
    scores = predictor.predict(text="a fine day", image=PICTURE)
    assert sum(r["score"] for r in scores) == pytest.approx(1.0, abs=1e-4)
    reference = Predictor.from_pretrained(tmp_path / "ckpt", use_cache=False, device="cuda", precision="fp32")
    fp32 = reference.predict(text="a fine day", image=PICTURE)
    assert dict(map(_pair, scores)) == pytest.approx(dict(map(_pair, fp32)), abs=0.05)
