"""Shared fixtures: tiny randomly initialised Hugging Face models saved to disk (loaded through the package's real
loading code), and a tiny MVSA-layout folder that contains every kind of broken sample the adapters must survive.

Nothing here touches the network or ~/.cache: every model is built locally and every cache goes to tmp paths.
"""

from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REAL_MVSA = REPO.parent / "shared" / "data" / "mvsa_single_4k"

POSITIVE_WORDS = ["good", "happy", "love", "great", "nice", "fun"]
NEGATIVE_WORDS = ["bad", "sad", "hate", "awful", "angry", "worst"]
NEUTRAL_WORDS = ["the", "a", "is", "day", "news", "today"]
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + POSITIVE_WORDS
    + NEGATIVE_WORDS
    + NEUTRAL_WORDS
    + ["cafe", "quoted", "hello", "world", "photo", "of", "my", "dog", ".", ",", "!", '"']
)
WORDS = {"positive": POSITIVE_WORDS, "negative": NEGATIVE_WORDS, "neutral": NEUTRAL_WORDS}
COLOURS = {"positive": (220, 60, 40), "negative": (30, 40, 160), "neutral": (128, 128, 128)}


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers it too; registering here keeps `-m slow` warning-free if that file changes.
    config.addinivalue_line("markers", "slow: real-data checks that take minutes (deselect with -m 'not slow')")


@pytest.fixture(autouse=True, scope="session")
def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    yield


# --------------------------------------------------------------------------------------------------- tiny models


@dataclass
class TinyModels:
    bert: Path
    vit: Path
    resnet: Path


def _save_tiny_bert(directory: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    # from_pretrained on a folder holding vocab.txt works on transformers 4.x and 5.x alike
    tokenizer = BertTokenizerFast.from_pretrained(directory)
    assert tokenizer.convert_tokens_to_ids("good") == VOCAB.index("good"), "tiny vocab was not picked up"
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory)


def _save_tiny_vit(directory: Path) -> None:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(1)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    ViTModel(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)


def _save_tiny_resnet(directory: Path) -> None:
    from transformers import ResNetConfig, ResNetModel, ViTImageProcessor

    torch.manual_seed(2)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny_models")
    models = TinyModels(bert=root / "bert", vit=root / "vit", resnet=root / "resnet")
    _save_tiny_bert(models.bert)
    _save_tiny_vit(models.vit)
    _save_tiny_resnet(models.resnet)
    return models


@pytest.fixture(scope="session")
def tiny_text_encoder(tiny_models: TinyModels):
    from fusent.encoders import TextEncoder

    return TextEncoder(str(tiny_models.bert), pooling="mean", max_length=32, device="cpu")


@pytest.fixture(scope="session")
def tiny_image_encoder(tiny_models: TinyModels):
    from fusent.encoders import create_image_encoder

    return create_image_encoder(str(tiny_models.vit), device="cpu")


@pytest.fixture(scope="session")
def tiny_settings(tiny_models: TinyModels):
    from fusent.train_flow import EncoderSettings

    return EncoderSettings(
        text_model=str(tiny_models.bert), max_length=32, image_model=str(tiny_models.vit), device="cpu"
    )


# ------------------------------------------------------------------------------------------- tiny MVSA folder


def jpeg_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (48, 40), seed: int = 0, noise: int = 25) -> bytes:
    """A real JPEG: a flat colour plus noise (so the compressed data is well past the header)."""
    rng = np.random.RandomState(seed)
    w, h = size
    pixels = np.clip(np.array(colour)[None, None, :] + rng.randint(-noise, noise + 1, (h, w, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def corrupt_bytes(seed: int) -> bytes:
    return b"definitely not a JPEG " + random.Random(seed).randbytes(300)


def truncated_jpeg_bytes(seed: int) -> bytes:
    data = jpeg_bytes((200, 180, 20), size=(64, 64), seed=seed, noise=80)
    return data[: len(data) // 2]


@dataclass
class MvsaSpec:
    """What the generated folder holds, so tests compare against it instead of hard-coding counts twice."""

    root: Path
    labels: dict[str, str] = field(default_factory=dict)  # expected labelled id -> label (first row wins)
    unlabelled: list[str] = field(default_factory=list)  # ids of test_without_label.txt, in file order
    good: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # expected ProblemReport.counts after load_mvsa
    missing_image: list[str] = field(default_factory=list)
    empty_text: list[str] = field(default_factory=list)
    corrupt_image: list[str] = field(default_factory=list)
    truncated_image: list[str] = field(default_factory=list)
    unknown_label: str = "angry01"
    duplicate: str = "pos00"
    latin: str = "latin01"


def make_mvsa_folder(root: Path, per_class: int = 10, test_good: int = 6) -> MvsaSpec:
    """MVSA layout: data/{guid}.txt + .jpg, train.txt (``guid,tag``), test_without_label.txt (``guid,null``)."""
    data = root / "data"
    data.mkdir(parents=True)
    spec = MvsaSpec(root=root)
    rng = random.Random(7)
    train_rows: list[tuple[str, str]] = []
    test_rows: list[str] = []

    def text_for(label: str) -> bytes:
        return " ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(2, 6))).encode()

    def add(guid: str, text: bytes | None, image: bytes | None) -> None:
        if text is not None:
            (data / f"{guid}.txt").write_bytes(text)
        if image is not None:
            (data / f"{guid}.jpg").write_bytes(image)

    seed = 0
    for label, prefix in (("positive", "pos"), ("negative", "neg"), ("neutral", "neu")):
        for k in range(per_class):
            guid = f"{prefix}{k:02d}"
            seed += 1
            add(guid, text_for(label), jpeg_bytes(COLOURS[label], (40 + 4 * (k % 3), 36), seed=seed))
            train_rows.append((guid, label))
            spec.labels[guid] = label
            spec.good.append(guid)

    # broken labelled samples: each is kept (with the broken modality absent) except the unknown label
    add("noimg01", text_for("positive"), None)
    add("corrupt01", text_for("negative"), corrupt_bytes(1))
    add("trunc01", text_for("neutral"), truncated_jpeg_bytes(1))
    add("empty01", b"  \n\t ", jpeg_bytes(COLOURS["positive"], seed=101))
    add(spec.unknown_label, text_for("negative"), jpeg_bytes(COLOURS["negative"], seed=102))
    add(spec.latin, b"caf\xe9 good \x93quoted\x94", jpeg_bytes(COLOURS["positive"], seed=103))
    for guid, label in (
        ("noimg01", "positive"),
        ("corrupt01", "negative"),
        ("trunc01", "neutral"),
        ("empty01", "positive"),
        (spec.latin, "positive"),
    ):
        train_rows.append((guid, label))
        spec.labels[guid] = label
    train_rows.append((spec.unknown_label, "angry"))
    train_rows.append((spec.duplicate, "negative"))  # second row of an id: must be dropped, first label kept
    rng.shuffle(train_rows)
    # the duplicate must come after the first row of its id
    train_rows.remove((spec.duplicate, "negative"))
    train_rows.append((spec.duplicate, "negative"))

    # samples to predict, broken ones included: every id here must get a prediction
    for k in range(test_good):
        guid = f"test{k:02d}"
        label = ("positive", "negative", "neutral")[k % 3]
        add(guid, text_for(label), jpeg_bytes(COLOURS[label], seed=200 + k))
        test_rows.append(guid)
    add("tcorrupt01", text_for("positive"), corrupt_bytes(2))
    add("tempty01", b"", jpeg_bytes(COLOURS["neutral"], seed=301))
    add("tnoimg01", text_for("negative"), None)
    add("tnothing01", b"", None)  # neither modality: still predicted (from the learned "missing" embeddings)
    add("ttrunc01", text_for("neutral"), truncated_jpeg_bytes(2))
    test_rows += ["tcorrupt01", "tempty01", "tnoimg01", "tnothing01", "ttrunc01"]

    (root / "train.txt").write_text("guid,tag\n" + "".join(f"{g},{t}\n" for g, t in train_rows))
    (root / "test_without_label.txt").write_text("guid,tag\n" + "".join(f"{g},null\n" for g in test_rows))

    spec.unlabelled = test_rows
    spec.missing_image = ["noimg01", "tnoimg01", "tnothing01"]
    spec.empty_text = ["empty01", "tempty01", "tnothing01"]
    spec.corrupt_image = ["corrupt01", "tcorrupt01"]
    spec.truncated_image = ["trunc01", "ttrunc01"]
    spec.counts = {"missing_image": 3, "empty_text": 3, "unknown_label": 1, "duplicate_id": 1, "no_modality": 1}
    return spec


@pytest.fixture(scope="session")
def tiny_mvsa(tmp_path_factory: pytest.TempPathFactory) -> MvsaSpec:
    return make_mvsa_folder(tmp_path_factory.mktemp("mvsa") / "tiny_mvsa")


@pytest.fixture(scope="session")
def prepared_tiny(tiny_mvsa: MvsaSpec, tiny_settings, tmp_path_factory: pytest.TempPathFactory):
    """The tiny folder split and encoded once (frozen tiny BERT + tiny ViT), shared by training tests."""
    from fusent.train_flow import prepare

    cache = tmp_path_factory.mktemp("prepared_cache")
    return prepare(tiny_mvsa.root, tiny_settings, cache_dir=cache, progress=False)


@pytest.fixture
def real_mvsa() -> Path:
    if not (REAL_MVSA / "train.txt").exists():
        pytest.skip(f"real MVSA slice not found at {REAL_MVSA}")
    return REAL_MVSA


# ------------------------------------------------------------------------------------ tiny CMU-MOSI style folder

REAL_MOSI = REPO.parent / "shared" / "data" / "cmu_mosi_text"
SCORE_OF = {"positive": 2.0, "negative": -2.0, "neutral": 0.0}


@dataclass
class MosiSpec:
    """What the generated regression folder holds; bad rows listed by the problem kind they must raise."""

    root: Path
    scores: dict[str, float] = field(default_factory=dict)  # expected labelled id -> score
    split: dict[str, str] = field(default_factory=dict)  # expected labelled id -> train / val / test
    unlabelled: list[str] = field(default_factory=list)
    bad: dict[str, list[str]] = field(default_factory=dict)  # problem kind -> ids


def make_mosi_folder(root: Path, train: int = 24, dev: int = 12) -> MosiSpec:
    """``label.csv`` (id,text,label,mode: train / dev / test rows and one of each bad-row kind) and
    ``test_without_label.csv`` (id,text, one row with no text); texts of tiny-vocabulary words whose score follows
    their sentiment, so a tiny model can learn it."""
    root.mkdir(parents=True)
    spec = MosiSpec(root=root)
    rng = random.Random(11)
    lines = ["id,text,label,mode"]
    sentiments = ["positive", "negative", "neutral"]
    for mode, n in (("train", train), ("dev", dev), ("test", 3)):
        for k in range(n):
            sentiment = sentiments[k % 3]
            sid = f"{mode}_{k:02d}"
            score = round(SCORE_OF[sentiment] + rng.uniform(-0.8, 0.8), 2)
            text = " ".join(rng.choice(WORDS[sentiment]) for _ in range(rng.randint(2, 5)))
            lines.append(f"{sid},{text},{score},{mode}")
            spec.scores[sid] = score
            spec.split[sid] = {"dev": "val"}.get(mode, mode)
    spec.bad = {
        "bad_score": ["nan01", "word01", "nolabel01"],
        "score_out_of_range": ["high01"],
        "empty_text": ["notext01", "tnotext01"],
        "duplicate_id": ["train_00"],
        "unknown_split": ["mode01"],
        "bad_row": ["comma01"],
    }
    lines += [
        "nan01,good day,nan,train",
        "word01,good day,very good,train",
        "nolabel01,good day,,train",
        "high01,good great,3.5,train",
        "notext01,,1.0,train",
        "train_00,bad sad,-2.5,dev",  # a second row of an id: the first (train) row is kept
        "mode01,bad day,-1.0,holdout",
        "comma01,good, great,2.0,train",  # an unquoted comma: five fields
    ]
    (root / "label.csv").write_text("\n".join(lines) + "\n")
    spec.unlabelled = [f"t{k:02d}" for k in range(5)] + ["tnotext01"]
    rows = ["id,text"] + [f"t{k:02d},{' '.join(WORDS[sentiments[k % 3]][:3])}" for k in range(5)] + ["tnotext01,"]
    (root / "test_without_label.csv").write_text("\n".join(rows) + "\n")
    return spec


@pytest.fixture(scope="session")
def tiny_mosi(tmp_path_factory: pytest.TempPathFactory) -> MosiSpec:
    return make_mosi_folder(tmp_path_factory.mktemp("mosi") / "tiny_mosi")


# ------------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def restore_process_state(monkeypatch: pytest.MonkeyPatch):
    """The CLI reconfigures root logging (to the runner's stderr) and sets TQDM_DISABLE with -q: undo both."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setitem(os.environ, "TQDM_DISABLE", "1")
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(*args: object):
    """Run ``fusent --debug ARGS...`` in-process; unexpected exceptions propagate so a test shows the real traceback
    (without --debug the CLI says them in one line)."""
    from typer.testing import CliRunner

    from fusent.cli import app

    return CliRunner().invoke(app, ["--debug", *(str(a) for a in args)], catch_exceptions=False)
