"""Fine-tuning the last K blocks of a pretrained image encoder (``--finetune-image-layers``): only those blocks
train, at ``image_lr``; pixels (uint8) are cached instead of features; training batches alone are augmented; the
checkpoint reloads to identical predictions and the Predictor answers from it."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import COLOURS, MvsaSpec, TinyModels, invoke, jpeg_bytes
from PIL import Image

from fusent.encoders import FineTunedImageEncoder, create_image_encoder
from fusent.encoders.base import ModalityBatch
from fusent.features import FeatureCache
from fusent.model import CONFIG_NAME, FusentModel, predict_logits
from fusent.predict import Predictor
from fusent.train_flow import fit, prepare
from fusent.training import TrainConfig

TWO_EPOCHS = TrainConfig(epochs=2, batch_size=8, seed=3)


def _images(n: int = 3) -> list[Image.Image]:
    colours = list(COLOURS.values())
    return [
        Image.open(io.BytesIO(jpeg_bytes(colours[i % 3], (50 + 7 * i, 40), seed=i))).convert("RGB") for i in range(n)
    ]


def _trained(encoder: FineTunedImageEncoder) -> set[str]:
    return {n for n, p in encoder.model.named_parameters() if p.requires_grad}


def test_only_the_last_k_blocks_train(tiny_models: TinyModels):
    resnet1 = create_image_encoder(str(tiny_models.resnet), device="cpu", finetune_layers=1)
    resnet2 = create_image_encoder(str(tiny_models.resnet), device="cpu", finetune_layers=2)
    assert isinstance(resnet1, FineTunedImageEncoder) and resnet1.trainable
    assert _trained(resnet1) and all(n.startswith("encoder.stages.1.layers.0.") for n in _trained(resnet1))
    assert any(n.startswith("encoder.stages.0.") for n in _trained(resnet2)) and _trained(resnet1) < _trained(resnet2)
    assert not any(n.startswith("embedder.") for n in _trained(resnet2))  # the stem stays frozen
    vit = create_image_encoder(str(tiny_models.vit), device="cpu", finetune_layers=1)
    assert not any(n.startswith("embeddings.") for n in _trained(vit))
    layer = {n for n in _trained(vit) if n.startswith(("layers.0.", "encoder.layer.0."))}  # transformers 5 / 4
    assert layer and {"pooler.dense.weight", "layernorm.weight"} < _trained(vit)
    with pytest.raises(ValueError, match="has 2 blocks"):
        create_image_encoder(str(tiny_models.resnet), device="cpu", finetune_layers=3)
    with pytest.raises(ValueError, match="between 1 and"):
        create_image_encoder(str(tiny_models.resnet), device="cpu", finetune_layers=-1)
    with pytest.raises(ValueError, match="trained from scratch"):
        create_image_encoder("inception-sa", device="cpu", finetune_layers=1)
    assert not create_image_encoder(str(tiny_models.resnet), device="cpu", finetune_layers=0).trainable


def test_efficientnet_lite0_last_blocks_and_features_match_the_frozen_encoder():
    frozen = create_image_encoder("efficientnet-lite0", device="cpu")
    tuned = create_image_encoder("efficientnet-lite0", device="cpu", finetune_layers=2)
    assert isinstance(tuned, FineTunedImageEncoder) and tuned.out_dim == frozen.dim == 1280
    blocks = {n.split(".")[1] for n in _trained(tuned) if n.startswith("_blocks.")}
    assert blocks == {"14", "15"}  # of 16
    assert {n.split(".")[0] for n in _trained(tuned)} == {"_blocks", "_conv_head", "_bn1"}
    images = _images(2)
    pixels, _ = tuned.encode(images)
    assert pixels[0].dtype == torch.uint8 and pixels[0].shape == (3, 224, 224)
    batch = ModalityBatch(torch.stack(pixels).float(), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3),
                          torch.tensor([True, True]))  # fmt: skip
    tuned.eval()
    with torch.no_grad():
        out = tuned(batch)
    states, pooled = frozen.encode(images)
    torch.testing.assert_close(out.pooled, pooled, atol=1e-4, rtol=1e-4)  # same preprocessing and network
    torch.testing.assert_close(out.states[0], states[0], atol=1e-4, rtol=1e-4)
    # with a gradient: the frozen prefix runs without a graph, in runs of a few images, then the trained blocks
    with torch.enable_grad():
        graded = tuned(batch).pooled
    assert graded.requires_grad
    torch.testing.assert_close(graded, pooled, atol=1e-4, rtol=1e-4)
    tuned.train()  # the trained blocks drop-connect; every BatchNorm keeps its pretrained statistics
    assert tuned.model._blocks[15].training and not tuned.model._blocks[13].training
    assert not any(m.training for m in tuned.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_augmentation_changes_training_pixels_reproducibly(tiny_models: TinyModels):
    enc = create_image_encoder(str(tiny_models.vit), device="cpu", finetune_layers=1)
    pixels, _ = enc.encode(_images(4))
    batch = ModalityBatch(torch.stack(pixels).float(), torch.ones(4, 3, dtype=torch.bool), torch.zeros(4, 3),
                          torch.ones(4, dtype=torch.bool))  # fmt: skip
    a = enc.augment(batch, torch.Generator().manual_seed(0)).states
    b = enc.augment(batch, torch.Generator().manual_seed(0)).states
    c = enc.augment(batch, torch.Generator().manual_seed(1)).states
    assert a.shape == batch.states.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, batch.states) and a.min() >= 0 and a.max() <= 255


def test_uint8_pixels_survive_the_cache(tmp_path: Path):
    cache = FeatureCache(tmp_path)
    pixels = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    cache.put("k", "d" * 64, pixels, torch.zeros(3))
    hit = cache.get("k", "d" * 64)
    assert hit.states.dtype == torch.uint8 and torch.equal(hit.states, pixels)


@pytest.fixture(scope="module")
def prepared_ft(tiny_mvsa: MvsaSpec, tiny_settings, tiny_models: TinyModels, tmp_path_factory):
    settings = replace(tiny_settings, image_model=str(tiny_models.resnet), finetune_image_layers=1)
    return prepare(tiny_mvsa.root, settings, cache_dir=tmp_path_factory.mktemp("ft_img_cache"), progress=False)


def test_finetune_train_save_reload_predict(prepared_ft, tiny_models: TinyModels, tmp_path: Path, monkeypatch):
    p = prepared_ft
    image = p.train.modalities["image"]
    assert image.states[0].dtype == torch.uint8 and image.states[0].shape == (3, 32, 32)  # pixels, not features
    assert p.dims["image"] == 16 and p.encoder_configs["image"] == {
        "name": str(tiny_models.resnet),
        "finetune_layers": 1,
    }
    groups = []
    import fusent.training as training

    make = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", lambda g, c: groups.extend(g) or make(g, c))
    config = replace(TWO_EPOCHS, image_lr=7e-4)
    model, result = fit(p, "native_cat", config, progress=False)
    assert len(result.history) == 2
    encoder = model.encoders["image"]
    image_groups = [g for g in groups if g["lr"] == 7e-4]
    assert len(image_groups) == 1
    assert {id(q) for q in image_groups[0]["params"]} == {id(q) for q in encoder.parameters() if q.requires_grad}

    pristine = create_image_encoder(str(tiny_models.resnet), device="cpu", finetune_layers=1).model.state_dict()
    tuned = encoder.model.state_dict()
    changed = {k for k in tuned if tuned[k].is_floating_point() and not torch.equal(tuned[k], pristine[k])}
    assert changed and all(k.startswith("encoder.stages.1.") for k in changed)
    assert not any("running_mean" in k for k in changed)  # BatchNorm statistics stay frozen

    model.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert saved["image_encoder"] == {"name": str(tiny_models.resnet), "finetune_layers": 1}
    loaded = FusentModel.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert torch.equal(predict_logits(model, p.val), predict_logits(loaded, p.val))

    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cpu")
    assert predictor.encoders["image"] is predictor.model.encoders["image"]  # no second copy of the network
    samples = p.bundle.unlabelled
    expected = torch.softmax(predict_logits(model, p.unlabelled), -1).numpy()
    assert abs(predictor.predict_proba_samples(samples, progress=False) - expected).max() < 1e-5
    picture = jpeg_bytes(COLOURS["negative"], (40, 36), seed=4)
    both, text = predictor.predict(text="bad day", image=picture), predictor.predict(text="bad day")
    assert set(both.contributions) == {"text", "image"} and [r["score"] for r in both] != [r["score"] for r in text]


def test_augmentation_only_in_training(prepared_ft, tmp_path: Path, monkeypatch):
    calls = []
    original = FineTunedImageEncoder.augment
    monkeypatch.setattr(
        FineTunedImageEncoder, "augment", lambda s, b, g: calls.append(len(b.present)) or original(s, b, g)
    )
    model, _ = fit(prepared_ft, "native_cat", replace(TWO_EPOCHS, epochs=1), progress=False)
    assert calls  # on by default for fine-tuned image layers
    calls.clear()
    first, second = predict_logits(model, prepared_ft.val), predict_logits(model, prepared_ft.val)
    model.save_pretrained(tmp_path / "ckpt")
    Predictor.from_pretrained(tmp_path / "ckpt", use_cache=False, device="cpu").predict(image=jpeg_bytes((1, 2, 3)))
    assert not calls and torch.equal(first, second)
    fit(prepared_ft, "native_cat", replace(TWO_EPOCHS, epochs=1, augment=False), progress=False)
    assert not calls  # --no-augment turns it off


def test_cli_finetune_image_layers(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path, restore_process_state):
    args = ["--text-model", tiny_models.bert, "--image-model", tiny_models.vit, "--max-length", "32", "--device", "cpu"]
    args += ["--epochs", "1", "--batch-size", "8", "--cache-dir", tmp_path / "c", "-q"]
    result = invoke("train", "--data", tiny_mvsa.root, "--out", tmp_path / "run", "--finetune-image-layers", "1",
                    "--image-lr", "5e-4", *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "checkpoint" / CONFIG_NAME).read_text())
    assert saved["image_encoder"]["finetune_layers"] == 1 and saved["training"]["image_lr"] == 5e-4
    assert any(p.name.startswith("pixels-u8-32") for p in (tmp_path / "c").iterdir())
