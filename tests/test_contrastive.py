"""Paper 001's pieces: InfoNCE against hand-computed values, the 2D-Inception + self-attention image network
trained from scratch inside the model, image augmentation, and the joint loss through the one trainer."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from fusent.encoders import InceptionSAEncoder, create_image_encoder
from fusent.features import ModalityBatch
from fusent.losses import info_nce
from fusent.model import FusentModel, predict_logits
from fusent.train_flow import fit, prepare
from fusent.training import TrainConfig, joint_loss


def test_info_nce_hand_computed():
    # views (1,0),(0,1) | (1,0),(0,1), tau 1: each view's partner has sim 1, the two others sim 0
    # -> every view scores -log(e / (e + 1 + 1)) = log(1 + 2/e)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert info_nce(z, z.clone(), 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    # swapped partners: each partner has sim 0 while a non-partner has sim 1 -> -log(1 / (1 + 1 + e))
    swapped = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert info_nce(z, swapped, 1.0).item() == pytest.approx(math.log(2 + math.e), abs=1e-6)
    # scale does not matter (cosine similarity); a lower temperature sharpens an aligned batch toward 0
    assert info_nce(3 * z, z, 1.0).item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    assert info_nce(z, z, 0.1).item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)


def test_info_nce_needs_negatives():
    with pytest.raises(ValueError, match="at least two"):
        info_nce(torch.ones(1, 4), torch.ones(1, 4))


def _pixels(n: int = 4, size: int = 32, seed: int = 0) -> ModalityBatch:
    g = torch.Generator().manual_seed(seed)
    states = torch.randint(0, 256, (n, 3, size, size), generator=g).float()
    return ModalityBatch(states, torch.ones(n, 3, dtype=torch.bool), states.mean((2, 3)), torch.ones(n, dtype=bool))


def test_inception_encoder_shapes_and_gradients():
    enc = InceptionSAEncoder(size=32, d=3, channels=4)
    out = enc(_pixels())
    assert out.states.shape == (4, (32 // 4) ** 2, enc.out_dim) and enc.out_dim == 3 * 2 * 4
    assert out.pooled.shape == (4, enc.out_dim) and out.mask.all()
    out.pooled.sum().backward()
    enc.attention.gamma.grad = None  # gamma starts at 0, so f and g get no gradient on the first step ...
    assert all(p.grad is not None for n, p in enc.named_parameters() if not n.startswith("attention.")), [
        n for n, p in enc.named_parameters() if p.grad is None
    ]
    with torch.no_grad():  # ... but once gamma moves, the attention path is live
        enc.attention.gamma.fill_(0.5)
    enc.zero_grad()
    enc(_pixels()).pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.attention.parameters())


def test_inception_encode_is_pixels_and_registered():
    from PIL import Image

    enc = create_image_encoder("inception-sa")
    assert isinstance(enc, InceptionSAEncoder) and enc.trainable
    img = Image.new("RGB", (80, 50), (200, 10, 30))
    states, pooled = enc.encode([img])
    assert states[0].shape == (3, 64, 64)
    assert torch.allclose(pooled[0], torch.tensor([200.0, 10.0, 30.0]))


def test_augment_perturbs_training_pixels_reproducibly():
    enc = InceptionSAEncoder(size=32, channels=4)
    batch = _pixels()
    a = enc.augment(batch, torch.Generator().manual_seed(1)).states
    b = enc.augment(batch, torch.Generator().manual_seed(1)).states
    c = enc.augment(batch, torch.Generator().manual_seed(2)).states
    assert a.shape == batch.states.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, batch.states) and a.min() >= 0 and a.max() <= 255


@pytest.fixture(scope="module")
def prepared_inception(tiny_mvsa, tiny_settings, tmp_path_factory):
    settings = dataclasses.replace(tiny_settings, image_model="inception-sa")
    cache = tmp_path_factory.mktemp("pixel_cache")
    return prepare(tiny_mvsa.root, settings, cache_dir=cache, progress=False, keep_states=False)


def test_inception_trains_inside_the_model_and_round_trips(prepared_inception, tmp_path):
    p = prepared_inception
    assert p.train.modalities["image"].states is not None  # its input is kept even for a pooled head
    assert p.dims["image"] == InceptionSAEncoder().out_dim
    config = TrainConfig(epochs=2, batch_size=8, seed=3, augment=True, contrastive_weight=0.5)
    model, result = fit(p, "native_cat", config, progress=False)
    assert model.config.image_encoder == {"name": "inception-sa", "size": 64, "d": 3, "channels": 16}
    fresh = FusentModel.from_pretrained(model.save_pretrained(tmp_path / "ckpt"))
    assert "image" in fresh.encoders
    torch.testing.assert_close(predict_logits(fresh, p.val), predict_logits(model, p.val))
    # prediction never augments: the same inputs give the same logits twice
    torch.testing.assert_close(predict_logits(model, p.val), predict_logits(model, p.val))
    # the network really trained (differs from a fresh initialisation with the same seed)
    torch.manual_seed(config.seed)
    init = InceptionSAEncoder()
    assert not torch.allclose(init.block1.branch2[1].weight, model.encoders["image"].block1.branch2[1].weight)


def test_joint_loss_adds_infonce_to_the_task_loss(prepared_tiny):
    from fusent.losses import make_loss

    model, _ = fit(prepared_tiny, "basic", TrainConfig(epochs=1, batch_size=8, seed=3), progress=False)
    model.train()
    index = torch.arange(8)
    inputs, target = prepared_tiny.train.batch(index), prepared_tiny.y_train[index]
    texts = [prepared_tiny.train.texts[i] for i in index]
    base = dict(contrastive_weight=0.0, view_dropout=0.2)
    torch.manual_seed(0)  # dropout inside the head draws from the global generator: the same draws both times
    without = joint_loss(model, inputs, texts, target, make_loss(), TrainConfig(**base), torch.Generator())
    torch.manual_seed(0)
    with_term = joint_loss(
        model, inputs, texts, target, make_loss(), TrainConfig(**{**base, "contrastive_weight": 1.0}), torch.Generator()
    )
    assert with_term.item() > without.item() > 0
    model.zero_grad()
    with_term.backward()
    assert all(p.grad is not None for p in model.head.project.parameters())
