"""What ``fusent tune`` does: an Optuna study over the trainer's options, selected on VALIDATION only.

Each trial trains one head on the cached features and is worth its best validation score (macro-F1, or -MAE for
regression); a median pruner stops trials whose per-epoch validation score trails the others. The study lives in
SQLite in the study folder, so an interrupted study (Ctrl-C, a killed job) resumes where it stopped. After the
study the best configuration is trained once more with the same seed and the test part is scored once, by
``runs.train_run``: no test score ever reaches the sampler, the pruner or the choice of the best trial.

Encoder-side options are searched only where the feature cache makes them cheap: each text pooling is its own cached
encoding, prepared the first time a trial asks for it and kept for the rest of the study; fine-tuned text layers
(text encoded at train time, slow) only when asked for.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .runs import TrainRun, train_run, write_json
from .tasks import get_task
from .train_flow import EncoderSettings, Prepared, fit
from .training import TrainConfig

if TYPE_CHECKING:  # optuna is an optional extra: imported when a study runs
    import optuna

log = logging.getLogger("fusent")

STUDY_NAME = "fusent-tune"
#: what ``--search`` may name; ``loss`` also searches the focal gamma (when the loss is focal)
SEARCHABLE = (
    "lr",
    "weight_decay",
    "dropout",
    "hidden",
    "class_weights",
    "loss",
    "modality_dropout",
    "text_pooling",
    "finetune_text_layers",
)
#: searched by default: everything but fine-tuning (text re-encoded every epoch of every trial)
DEFAULT_SEARCH = tuple(s for s in SEARCHABLE if s != "finetune_text_layers")
#: searched options that build the encoders; the rest build the trainer or the head
ENCODER_PARAMS = ("text_pooling", "finetune_text_layers")
HEAD_PARAMS = ("hidden", "dropout")
POOLINGS = ("cls", "mean", "last4")
FINISHED = ("COMPLETE", "PRUNED")


class TuneError(ValueError):
    """A study that cannot start or finish as asked; the message says what to do."""


def parse_search(text: str, finetune: bool = False) -> tuple[str, ...]:
    """``--search``: ``default`` or comma-separated names of SEARCHABLE; ``finetune`` adds fine-tuned layers."""
    names = list(DEFAULT_SEARCH) if text.strip() == "default" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SEARCHABLE]
    if unknown or not names:
        raise TuneError(f"--search takes 'default' or names from {', '.join(SEARCHABLE)}; got {text!r}")
    if finetune and "finetune_text_layers" not in names:
        names.append("finetune_text_layers")
    return tuple(dict.fromkeys(names))


def applicable(search: Sequence[str], task_name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """The searched names that mean something for this data: no class weights for regression, no modality dropout
    with one modality, no text options without text."""
    skip = set()
    if task_name != "classification":
        skip.add("class_weights")
    if len(modalities) < 2:
        skip.add("modality_dropout")
    if "text" not in modalities:
        skip.update(ENCODER_PARAMS)
    return tuple(n for n in search if n not in skip)


def suggest(trial: optuna.Trial, search: Sequence[str], task_name: str) -> dict[str, Any]:
    """One configuration, as option name -> value (the names ``fusent train`` takes)."""
    p: dict[str, Any] = {}
    if "lr" in search:
        p["lr"] = trial.suggest_float("lr", 1e-5, 3e-3, log=True)
    if "weight_decay" in search:
        p["weight_decay"] = trial.suggest_float("weight_decay", 1e-4, 0.1, log=True)
    if "dropout" in search:
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.6)
    if "hidden" in search:
        p["hidden"] = trial.suggest_categorical("hidden", [64, 128, 256, 512])
    if "class_weights" in search:
        p["class_weights"] = trial.suggest_categorical("class_weights", ["none", "sqrt", "balanced"])
    if "loss" in search:
        if task_name == "classification":
            p["loss"] = trial.suggest_categorical("loss", ["ce", "focal"])
            if p["loss"] == "focal":
                p["focal_gamma"] = trial.suggest_float("focal_gamma", 0.5, 5.0)
        else:
            p["loss"] = trial.suggest_categorical("regression_loss", ["l1", "mse"])
    if "modality_dropout" in search:
        p["modality_dropout"] = trial.suggest_float("modality_dropout", 0.0, 0.5)
    if "text_pooling" in search:
        p["text_pooling"] = trial.suggest_categorical("text_pooling", list(POOLINGS))
    if "finetune_text_layers" in search:
        p["finetune_text_layers"] = trial.suggest_categorical("finetune_text_layers", [0, 1, 2])
        if p["finetune_text_layers"]:
            p["text_lr"] = trial.suggest_float("text_lr", 1e-5, 1e-4, log=True)
    return p


def options_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A finished trial's configuration as option names (its Optuna params, with the regression loss renamed)."""
    params = dict(trial.params)
    if "regression_loss" in params:
        params["loss"] = params.pop("regression_loss")
    return params


def configure(
    params: dict[str, Any], settings: EncoderSettings, config: TrainConfig, head_kwargs: dict[str, Any]
) -> tuple[EncoderSettings, TrainConfig, dict[str, Any]]:
    """The fixed settings with a trial's searched options laid over them."""
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = dataclasses.replace(settings, **{k: v for k, v in params.items() if k in ENCODER_PARAMS})
    config = dataclasses.replace(config, **{k: v for k, v in params.items() if k in train_fields})
    return settings, config, {**head_kwargs, **{k: v for k, v in params.items() if k in HEAD_PARAMS}}


class Encodings:
    """Prepared data per encoder setting a study visits, each built at most once per study (process): trials that
    share a text pooling share its features, and a pooling no trial asks for is never encoded."""

    def __init__(self, prepare: Callable[[EncoderSettings], Prepared]):
        self._prepare = prepare
        self._done: dict[tuple[Any, ...], Prepared] = {}

    def get(self, settings: EncoderSettings) -> Prepared:
        key = tuple(getattr(settings, k) for k in ("text_pooling", "finetune_text_layers"))
        if key not in self._done:
            self._done[key] = self._prepare(settings)
        return self._done[key]


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError as exc:  # pragma: no cover - the CLI reports it
        raise TuneError("fusent tune needs optuna, from the tune extra: pip install 'fusent[tune]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from here instead
    return optuna


def storage_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state.name in FINISHED]


def open_study(study_dir: Path, fixed: dict[str, Any], *, resume: bool, seed: int, trials: int) -> optuna.Study:
    """Create the study in ``study_dir/study.db``, or load it with ``resume``; a resumed study must have been started
    with the same fixed settings (``fixed``: data, head, options), else its trials are not comparable."""
    optuna = _optuna()
    study_dir.mkdir(parents=True, exist_ok=True)
    exists = (study_dir / "study.db").is_file()
    fixed = json.loads(json.dumps(fixed, default=str))
    if exists and not resume:
        raise TuneError(
            f"{study_dir} already holds a study: pass --resume to continue it, or choose another --study-dir"
        )
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage_url(study_dir), direction="maximize", load_if_exists=True
    )
    before = study.user_attrs.get("fixed")
    if before is None:
        study.set_user_attr("fixed", fixed)
    elif before != fixed:
        changed = sorted(k for k in set(before) | set(fixed) if before.get(k) != fixed.get(k))
        raise TuneError(
            f"{study_dir} holds a study started with other fixed settings ({', '.join(changed)}); resume with the "
            "same options, or choose another --study-dir"
        )
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # one process runs a study folder: a trial still "running" was cut off (a killed job), not in progress
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    # seeded, and offset by the trials already there: a resumed study must not redraw its first random points
    n = len(study.trials)
    study.sampler = optuna.samplers.TPESampler(seed=seed + n, n_startup_trials=min(10, max(3, trials // 3)))
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=4)
    return study


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` inside (None: unchanged). A head on pooled features is a small MLP:
    measured on MVSA (native_cat, 2 cores shared with other jobs), 3 epochs took 10 s single-threaded and 60-75 s
    with 2 threads, which spend their time waiting on each other."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_study(
    study: optuna.Study,
    encodings: Encodings,
    head: str,
    settings: EncoderSettings,
    config: TrainConfig,
    head_kwargs: dict[str, Any],
    *,
    trials: int,
    search: Sequence[str] = DEFAULT_SEARCH,
    timeout: float | None = None,
    threads: int | None = 1,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> None:
    """Run trials until the study has ``trials`` finished (complete or pruned) ones, or ``timeout`` seconds pass
    (checked between trials). Ctrl-C keeps every finished trial in the study, so the same command resumes it.
    Trials train with ``threads`` torch threads (see ``torch_threads``)."""
    optuna = _optuna()
    base = encodings.get(settings)
    task = get_task(base.bundle.task)
    search = applicable(search, task.name, list(base.dims))

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, search, task.name)
        trial_settings, trial_config, trial_kwargs = configure(params, settings, config, head_kwargs)
        prepared = encodings.get(trial_settings)
        best = -math.inf

        def report(epoch: int, metrics: dict[str, Any]) -> None:
            nonlocal best
            best = max(best, task.score(metrics))
            trial.report(best, epoch)  # the best so far: what the trial would be worth if stopped here
            if trial.should_prune():
                trial.set_user_attr("pruned_epoch", epoch)
                raise optuna.TrialPruned(f"validation {task.monitor} trails the median at epoch {epoch}")

        with torch_threads(threads):
            _, result = fit(prepared, head, trial_config, trial_kwargs, progress=False, on_epoch=report)
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs", len(result.history))
        trial.set_user_attr("validation", task.headline(result.val_metrics))
        return task.score(result.val_metrics)

    done = len(finished(study))
    if done >= trials:
        print(f"the study already has {done} finished trials (--trials {trials}); nothing to run", file=sys.stderr)
        return
    print(f"tuning {head}: {done} of {trials} trials done, searching {', '.join(search)}", file=sys.stderr, flush=True)
    try:
        study.optimize(
            objective, n_trials=trials - done, timeout=timeout, callbacks=[_progress(task, trials), *callbacks]
        )
    except KeyboardInterrupt:
        print(
            f"interrupted: the study keeps its {len(finished(study))} finished trials; run the same command with "
            "--resume to continue",
            file=sys.stderr,
        )
        raise


def _progress(task: Any, trials: int) -> Callable[[Any, Any], None]:
    def show(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seconds = (trial.duration.total_seconds()) if trial.duration else 0.0
        if trial.state.name == "COMPLETE":
            what = f"validation {task.monitor} {_shown(task, trial.value)} (epoch {trial.user_attrs.get('best_epoch')})"
        elif trial.state.name == "PRUNED":
            what = f"pruned at epoch {trial.user_attrs.get('pruned_epoch')}"
        else:
            what = trial.state.name.lower()
        best = [t.value for t in study.trials if t.state.name == "COMPLETE"]
        best_text = f"; best {_shown(task, max(best))}" if best else ""
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        count = len(finished(study))
        print(f"trial {trial.number} ({count}/{trials}): {what} [{seconds:.1f}s]{best_text}  {params}", file=sys.stderr)

    return show


def _shown(task: Any, value: float | None) -> str:
    """The study maximises the task's score; show the metric itself (MAE, not -MAE)."""
    if value is None:
        return "-"
    return f"{-value:.4f}" if task.name == "regression" else f"{value:.4f}"


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def train_command(
    data: Path,
    head: str,
    seed: int,
    options: dict[str, Any],
    defaults: dict[str, Any],
    params: dict[str, Any],
    out: Path,
    threads: int | None = None,
) -> str:
    """A ``fusent train`` command line with the study's fixed options (those not at their default) and the best
    trial's searched ones: the same split, encoders and trainer, so it reproduces the best configuration. With
    ``threads``, prefixed by ``OMP_NUM_THREADS=n``: torch's results change in the last digits with its thread count,
    and on MVSA that moved the selected epoch's macro-F1 by 0.003."""
    args = [f"OMP_NUM_THREADS={threads}"] if threads else []
    args += ["fusent", "train", "--data", str(data), "--head", head, "--seed", str(seed), "--out", str(out)]
    for name, value in {**options, **params}.items():
        if name == "cv" or value is None or (name not in params and value == defaults.get(name)):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list | tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return shlex.join(args)


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    """One row per trial: state, value, epochs, validation headline and every searched parameter."""
    names = sorted({k for t in study.trials for k in t.params})
    metrics = sorted({k for t in study.trials for k in t.user_attrs.get("validation", {})})
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["number", "state", "value", "best_epoch", "epochs", "pruned_epoch", "seconds", *names] + metrics)
        for t in study.trials:
            a = t.user_attrs
            out.writerow(
                [
                    t.number,
                    t.state.name,
                    "" if t.value is None else f"{t.value:.6f}",
                    a.get("best_epoch", ""),
                    a.get("epochs", ""),
                    a.get("pruned_epoch", ""),
                    f"{t.duration.total_seconds():.2f}" if t.duration else "",
                    *(t.params.get(n, "") for n in names),
                    *(a.get("validation", {}).get(m, "") for m in metrics),
                ]
            )
    return path


def param_importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances of the parameters every complete trial has; empty when too few trials to tell."""
    optuna = _optuna()
    try:
        return dict(
            optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        )
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def plot_trials(study: optuna.Study, importances: dict[str, float], path: Path, title: str) -> Path:
    """Optimization history (complete trials, pruned ones at their last reported score, the best so far) and the
    parameter importances, as one matplotlib PNG."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    complete = [(t.number, t.value) for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    pruned = [
        (t.number, t.intermediate_values[max(t.intermediate_values)])
        for t in study.trials
        if t.state.name == "PRUNED" and t.intermediate_values
    ]
    if complete:
        left.plot(*zip(*complete, strict=True), "o", color="tab:blue", label="complete")
        xs, best, running = [], [], -math.inf
        for number, value in complete:
            running = max(running, value)
            xs.append(number)
            best.append(running)
        left.step(xs, best, where="post", color="tab:red", label="best so far")
    if pruned:
        left.plot(*zip(*pruned, strict=True), "x", color="grey", label="pruned (last report)")
    left.set_xlabel("trial number")
    left.set_ylabel("validation score (maximised)")
    left.set_title(f"{title}: optimization history")
    left.legend(loc="lower right", fontsize=8)
    if importances:
        names = list(importances)[::-1]
        right.barh(names, [importances[n] for n in names], color="tab:green")
        right.set_xlabel("importance (fANOVA)")
    else:
        right.text(0.5, 0.5, "too few complete trials\nfor importances", ha="center", va="center")
        right.set_axis_off()
    right.set_title("parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclasses.dataclass
class TuneOutcome:
    """The best trial, its retraining and test score, and the files written."""

    best: dict[str, Any]
    run: TrainRun
    files: list[Path]


def finish_study(
    study: optuna.Study,
    encodings: Encodings,
    head: str,
    settings: EncoderSettings,
    config: TrainConfig,
    head_kwargs: dict[str, Any],
    study_dir: Path,
    command: Callable[[dict[str, Any]], str],
    *,
    calibrate: bool = True,
    progress: bool = True,
    threads: int | None = 1,
) -> TuneOutcome:
    """Train the best trial's configuration once more (same seed), score the test part once, and write the study
    files: trials.csv, best.json, best_command.txt, trials.png and the run folder ``best/``."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise TuneError("no trial of the study completed (all pruned or failed): run more --trials")
    trial = study.best_trial
    params = options_of(trial)
    best_settings, best_config, best_kwargs = configure(params, settings, config, head_kwargs)
    prepared = encodings.get(best_settings)
    task = get_task(prepared.bundle.task)
    print(f"training the best configuration (trial {trial.number}) once more", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with torch_threads(threads):  # as its trial trained
        run = train_run(
            prepared, head, best_config, best_kwargs, study_dir / "best", calibrate=calibrate, progress=progress
        )
    retrained = task.score(run.scores["validation"])
    if not math.isclose(retrained, trial.value, abs_tol=1e-6):
        log.warning(
            "the retrained best configuration scores %.4f on validation, its trial %.4f (non-deterministic kernels?)",
            retrained,
            trial.value,
        )
    importances = param_importances(study)
    counts = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    cmd = command(params)
    best = {
        "head": head,
        "task": task.name,
        "monitor": task.monitor,
        "selected_on": "validation",
        "split": prepared.split,
        "trial": trial.number,
        "params": params,
        "validation_score": trial.value,
        "best_epoch": run.best_epoch,
        "validation": run.scores["validation"],
        "test": run.scores.get("test"),
        "calibration": run.scores.get("calibration"),
        "importances": importances,
        "trials": {k.lower(): v for k, v in counts.items()},
        "retrain_seconds": time.perf_counter() - start,
        "threads": threads or torch.get_num_threads(),
        "command": cmd,
        "run": str(study_dir / "best"),
    }
    files = [study_dir / "study.db", write_trials_csv(study, study_dir / "trials.csv")]
    write_json(study_dir / "best.json", best)
    (study_dir / "best_command.txt").write_text(cmd + "\n")
    files += [study_dir / "best.json", study_dir / "best_command.txt"]
    files.append(plot_trials(study, importances, study_dir / "trials.png", head))
    files.append(study_dir / "best")
    return TuneOutcome(best, run, files)
