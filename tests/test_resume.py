"""``--resume``: a training run killed after epoch k continues from the state written after that epoch and ends
exactly where the uninterrupted run ends (weights, history, best epoch, metrics)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import MvsaSpec, TinyModels, invoke
from safetensors.torch import load_file

import fusent.train_flow
from fusent.train_flow import fit
from fusent.training import TrainConfig

pytestmark = pytest.mark.usefixtures("restore_process_state")


class Killed(Exception):
    """Stands in for a preemption / Ctrl-C after an epoch."""


def _kill_after(k: int):
    def on_epoch(epoch: int, row: dict) -> None:
        if epoch == k:
            raise Killed(f"killed after epoch {epoch}")

    return on_epoch


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resumed_training_ends_like_the_uninterrupted_run(prepared_tiny, tmp_path: Path):
    # modality dropout and the head's dropout draw random numbers every batch: the RNG state must come back too
    config = TrainConfig(epochs=5, batch_size=8, seed=3, patience=10, lr=1e-3, modality_dropout=0.3, schedule="cosine")
    whole, whole_result = fit(prepared_tiny, "native_combine", config, progress=False)
    state = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        fit(prepared_tiny, "native_combine", config, progress=False, state_file=state, on_epoch=_kill_after(2))
    assert torch.load(state, weights_only=False)["epoch"] == 2
    seen: list[int] = []
    resumed, result = fit(
        prepared_tiny, "native_combine", config, progress=False, state_file=state, resume_from=True,
        on_epoch=lambda epoch, row: seen.append(epoch),
    )  # fmt: skip
    assert seen == [3, 4, 5], "only the epochs after the saved one are trained"
    _same_weights(whole.state_dict(), resumed.state_dict())
    assert result.history == whole_result.history and result.best_epoch == whole_result.best_epoch
    assert result.val_metrics == whole_result.val_metrics


def test_resume_refuses_other_settings(prepared_tiny, tmp_path: Path):
    config = TrainConfig(epochs=3, batch_size=8, seed=3)
    state = tmp_path / "resume.pt"
    with pytest.raises(Killed):
        fit(prepared_tiny, "native_combine", config, progress=False, state_file=state, on_epoch=_kill_after(1))
    with pytest.raises(ValueError, match="lr=0.0002"):
        fit(prepared_tiny, "native_combine", replace(config, lr=1e-2), state_file=state, resume_from=True)


def _train_args(models: TinyModels, data: Path, cache: Path, out: Path) -> list[object]:
    return [
        "train", "--data", data, "--out", out, "--epochs", "4", "--batch-size", "8", "--text-model", models.bert,
        "--image-model", models.vit, "--max-length", "32", "--cache-dir", cache, "--device", "cpu", "-q",
    ]  # fmt: skip


def test_train_resume_on_the_command_line(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    whole = tmp_path / "whole"
    assert invoke(*_train_args(tiny_models, tiny_mvsa.root, cache, whole)).exit_code == 0
    assert not (whole / "resume.pt").exists(), "a finished run leaves nothing to resume"

    run = tmp_path / "run"
    no_state = invoke(*_train_args(tiny_models, tiny_mvsa.root, cache, run), "--resume")
    assert no_state.exit_code != 0 and "never completed an epoch" in " ".join(no_state.output.replace("│", "").split())

    train_model = fusent.train_flow.train_model
    monkeypatch.setattr(
        fusent.train_flow, "train_model", lambda *a, **kw: train_model(*a, **{**kw, "on_epoch": _kill_after(2)})
    )
    with pytest.raises(Killed):
        invoke(*_train_args(tiny_models, tiny_mvsa.root, cache, run))
    assert (run / "resume.pt").exists() and not (run / "metrics.json").exists()
    monkeypatch.setattr(fusent.train_flow, "train_model", train_model)
    resumed = invoke(*_train_args(tiny_models, tiny_mvsa.root, cache, run), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert not (run / "resume.pt").exists()

    (w1,), (w2,) = ((r / "checkpoint").glob("*.safetensors") for r in (whole, run))
    _same_weights(load_file(w1), load_file(w2))
    one, two = (json.loads((r / "metrics.json").read_text()) for r in (whole, run))
    assert one["history"] == two["history"] and one["test"] == two["test"] and one["best_epoch"] == two["best_epoch"]
