"""``fusent tune``: an Optuna study on validation only, resumable, pruned per epoch, test scored once at the end."""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
from conftest import MvsaSpec, TinyModels, invoke

optuna = pytest.importorskip("optuna")

from fusent import pipeline, runs, training, tune  # noqa: E402
from fusent.training import TrainConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env


def model_args(models: TinyModels, cache: Path) -> list[str]:
    return [
        "--text-model", str(models.bert), "--image-model", str(models.vit), "--max-length", "32",
        "--cache-dir", str(cache), "--device", "cpu", "--epochs", "2", "--batch-size", "8", "-q",
    ]  # fmt: skip


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def watch_test_scoring(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record every table the trainer, the pipeline and the run writer predict, and whether the study had ended
    (the final ``train_run`` had started) when it happened."""
    seen: dict[str, list] = {"predicted": [], "evaluated": []}
    state = {"final": False}
    for module in (training, pipeline, runs):
        real = module.predict_logits

        def spy(model, table, *args, _real=real, **kwargs):
            seen["predicted"].append((set(table.ids), state["final"]))
            return _real(model, table, *args, **kwargs)

        monkeypatch.setattr(module, "predict_logits", spy)
    real_evaluate = runs.evaluate_prepared

    def evaluate(*args, **kwargs):
        seen["evaluated"].append(state["final"])
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(runs, "evaluate_prepared", evaluate)
    real_run = tune.train_run

    def final_run(*args, **kwargs):
        state["final"] = True
        return real_run(*args, **kwargs)

    monkeypatch.setattr(tune, "train_run", final_run)
    return seen


def test_tune_cli_writes_study_scores_test_once_and_resumes(
    tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path, watch_test_scoring: dict[str, list]
):
    study_dir, cache = tmp_path / "study", tmp_path / "cache"
    args = ["tune", "--data", tiny_mvsa.root, "--head", "native_cat", "--study-dir", study_dir]
    result = invoke(*args, "--trials", "3", *model_args(tiny_models, cache))
    assert result.exit_code == 0, result.output
    for name in ("study.db", "trials.csv", "best.json", "best_command.txt", "trials.png", "best/checkpoint"):
        assert (study_dir / name).exists(), name
    rows = read_rows(study_dir / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {"state", "value", "lr", "text_pooling", "val_f1_macro"} <= set(rows[0])
    best = json.loads((study_dir / "best.json").read_text())
    assert best["selected_on"] == "validation" and best["test"]["f1_macro"] >= 0
    assert set(best["params"]) >= {"lr", "weight_decay", "dropout", "hidden", "class_weights", "loss"}
    assert best["params"]["text_pooling"] in ("cls", "mean", "last4")
    complete = {r["number"]: float(r["value"]) for r in rows if r["state"] == "COMPLETE"}
    assert best["validation_score"] == pytest.approx(max(complete.values()), abs=1e-6)
    assert "TEST" in result.output and "reproduce: OMP_NUM_THREADS=1 fusent train" in result.output

    # the test part: scored once, by the final run, never during the trials
    test_ids = {row[0] for row in csv.reader((study_dir / "best" / "split.csv").open()) if row[1:] == ["test"]}
    assert test_ids
    touching = [final for ids, final in watch_test_scoring["predicted"] if ids & test_ids]
    assert touching == [True], "the test part was predicted during the trials or more than once"
    assert watch_test_scoring["evaluated"] == [True]

    # the best command reproduces the best configuration's validation score
    command = (study_dir / "best_command.txt").read_text().strip()
    assert command.startswith("OMP_NUM_THREADS=1 fusent train ")  # as the trials trained
    rerun = invoke(*shlex.split(command)[2:], "-q")
    assert rerun.exit_code == 0, rerun.output
    rerun_metrics = json.loads((study_dir / "rerun" / "metrics.json").read_text())
    assert rerun_metrics["validation"]["f1_macro"] == pytest.approx(best["validation_score"], abs=1e-6)

    # a second invocation: refused without --resume, continues the trial count with it
    again = invoke(*args, "--trials", "4", *model_args(tiny_models, cache))
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = invoke(*args, "--trials", "4", "--resume", *model_args(tiny_models, cache))
    assert resumed.exit_code == 0, resumed.output
    rows = read_rows(study_dir / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    other = invoke(*args, "--trials", "5", "--resume", "--lr", "0.1", *model_args(tiny_models, cache))
    assert other.exit_code == 2 and "other fixed settings" in other.output


@pytest.fixture
def study_parts(tiny_mvsa: MvsaSpec, tiny_settings, tmp_path: Path):
    """What a study needs besides its folder: memoised encodings of the tiny folder and a 2-epoch trainer."""
    calls: list[str] = []

    def prepare(settings):
        calls.append(settings.text_pooling)
        return pipeline.prepare(tiny_mvsa.root, settings, cache_dir=tmp_path / "cache", progress=False)

    return tune.Encodings(prepare), tiny_settings, TrainConfig(epochs=2, batch_size=8), calls


def _open(study_dir: Path, resume: bool = False, trials: int = 4):
    return tune.open_study(study_dir, {"data": "tiny", "head": "native_cat"}, resume=resume, seed=0, trials=trials)


def test_ctrl_c_keeps_finished_trials_and_the_next_run_resumes(study_parts, tmp_path: Path):
    encodings, settings, config, calls = study_parts
    search = ("lr", "dropout", "text_pooling")

    def interrupt_after_two(study, trial):
        if len(tune.finished(study)) == 2:
            raise KeyboardInterrupt

    study = _open(tmp_path / "s")
    with pytest.raises(KeyboardInterrupt):
        tune.run_study(
            study, encodings, "native_cat", settings, config, {}, trials=4, search=search,
            callbacks=[interrupt_after_two],
        )  # fmt: skip
    first = [(t.number, t.params) for t in tune.finished(study)]
    assert len(first) == 2
    study = _open(tmp_path / "s", resume=True)  # a new process: the study comes back from study.db
    assert [(t.number, t.params) for t in tune.finished(study)] == first
    tune.run_study(study, encodings, "native_cat", settings, config, {}, trials=4, search=search)
    done = tune.finished(study)
    assert [t.number for t in done] == [0, 1, 2, 3] and [(t.number, t.params) for t in done[:2]] == first
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 4, "a resumed study redrew old points"
    assert sorted(calls) == sorted(set(calls)), "a text pooling was encoded twice in one study"


class PruneSecondTrial(optuna.pruners.BasePruner):
    """Prunes trial 1 as soon as it reports; lets the others run (the wiring, not the median rule, under test)."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_pruned_trial_is_recorded_as_pruned(study_parts, tmp_path: Path):
    encodings, settings, config, _ = study_parts
    study = _open(tmp_path / "s", trials=3)
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    study.pruner = PruneSecondTrial()
    tune.run_study(study, encodings, "native_cat", settings, config, {}, trials=3, search=("lr",))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "COMPLETE"]
    pruned = study.trials[1]
    assert list(pruned.intermediate_values) == [1] and pruned.user_attrs["pruned_epoch"] == 1
    assert list(study.trials[0].intermediate_values) == [1, 2]  # every epoch reported


def test_help_names_the_dashboard():
    result = invoke("tune", "--help")
    assert result.exit_code == 0 and "optuna-dashboard sqlite:///" in " ".join(result.output.split())


def test_search_options_are_checked_and_fit_the_data():
    assert tune.parse_search("default") == tune.DEFAULT_SEARCH
    assert "finetune_text_layers" not in tune.DEFAULT_SEARCH
    assert tune.parse_search("lr,loss", finetune=True) == ("lr", "loss", "finetune_text_layers")
    with pytest.raises(tune.TuneError, match="--search"):
        tune.parse_search("lr,pooling")
    assert tune.applicable(tune.SEARCHABLE, "regression", ["text"]) == (
        "lr", "weight_decay", "dropout", "hidden", "loss", "text_pooling", "finetune_text_layers",
    )  # fmt: skip
    assert tune.applicable(tune.DEFAULT_SEARCH, "classification", ["image"]) == (
        "lr", "weight_decay", "dropout", "hidden", "class_weights", "loss",
    )  # fmt: skip
    settings, config, kwargs = tune.configure(
        {"lr": 0.01, "hidden": 64, "text_pooling": "cls", "focal_gamma": 1.5},
        pipeline.EncoderSettings(),
        TrainConfig(epochs=3),
        {"d_model": 32},
    )
    assert (settings.text_pooling, config.lr, config.focal_gamma, config.epochs) == ("cls", 0.01, 1.5, 3)
    assert kwargs == {"d_model": 32, "hidden": 64}
    assert dataclasses.replace(settings, text_pooling="mean") == pipeline.EncoderSettings()


def test_train_command_keeps_fixed_options_and_the_searched_ones():
    defaults = {"lr": 2e-4, "calibrate": True, "head_arg": None, "limit": None, "epochs": 40, "text_pooling": "mean"}
    options = {**defaults, "calibrate": False, "head_arg": ["d_model=8"], "epochs": 5}
    line = tune.train_command(
        Path("d"), "gated", 3, options, defaults, {"lr": 0.001, "text_pooling": "mean"}, Path("o"), threads=2
    )
    assert shlex.split(line) == [
        "OMP_NUM_THREADS=2", "fusent", "train", "--data", "d", "--head", "gated", "--seed", "3", "--out", "o",
        "--lr", "0.001", "--no-calibrate", "--head-arg", "d_model=8", "--epochs", "5",
        "--text-pooling", "mean",
    ]  # fmt: skip


def test_fine_tuned_text_layers_are_searched_only_when_asked(study_parts, tmp_path: Path):
    encodings, settings, config, calls = study_parts
    study = _open(tmp_path / "s", trials=2)
    study.enqueue_trial({"finetune_text_layers": 1, "text_lr": 5e-5})
    study.enqueue_trial({"finetune_text_layers": 0})
    search = tune.parse_search("lr", finetune=True)
    tune.run_study(study, encodings, "native_cat", settings, config, {}, trials=2, search=search)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params["finetune_text_layers"] == 1 and "text_lr" not in study.trials[1].params
    tuned = encodings.get(dataclasses.replace(settings, finetune_text_layers=1))
    assert tuned.text_encoder is not None and tuned.text_encoder.finetune_layers == 1
    assert encodings.get(settings).text_encoder is None  # the default search leaves text frozen and cached
    assert len(calls) == 2


def test_a_trial_left_running_by_a_killed_job_is_failed_on_resume(tmp_path: Path):
    study = _open(tmp_path / "s")
    study.ask()  # the process dies here: the trial stays RUNNING in study.db
    study = _open(tmp_path / "s", resume=True)
    assert [t.state.name for t in study.trials] == ["FAIL"] and tune.finished(study) == []
