"""benchmarks/targets.py: its options are checked before anything loads, its commands are the ones a user types,
and a missing dataset is skipped, not an error."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "targets.py"


@pytest.fixture(scope="module")
def targets():
    spec = importlib.util.spec_from_file_location("targets_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_only_and_seeds_are_parsed(targets):
    args = targets.parse_args(["--only", "MVSA, mosi", "--select-seeds", "13,14", "--threads", "1"])
    assert args.only == ["mvsa", "mosi"]
    assert args.select_seeds == [13, 14]
    defaults = targets.parse_args([])
    assert defaults.only == ["mvsa", "memotion", "ravdess", "mosi"] and defaults.select_seeds == [13, 14, 15]


@pytest.mark.parametrize(
    "argv",
    [
        ["--only", "mvsa,imdb"],
        ["--only", ","],
        ["--threads", "0"],
        ["--cv", "1"],
        ["--ensemble", "1"],
        ["--select-seeds", "a"],
    ],
)
def test_bad_options_are_refused(targets, argv, capsys):
    with pytest.raises(SystemExit):
        targets.parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_command_names_every_non_default_option(targets):
    target = targets.TARGETS["mvsa"]
    candidate = targets.Candidate("gated", {"text_model": "mpnet"}, {"lr": 0.001}, {"dropout": 0.3})
    assert targets.command(target, candidate, 13, cv=5) == (
        "fusent train --data ../shared/data/mvsa_single_4k --head gated --text-model mpnet --lr 0.001 "
        "--dropout 0.3 --seed 13 --split-seed 13 --cv 5"
    )


def test_goals_read_in_their_direction(targets):
    mosi = targets.TARGETS["mosi"]
    assert mosi.reached("mae", 0.70) and not mosi.reached("mae", 0.75)
    assert mosi.reached("acc2_non0", 0.86) and not mosi.reached("acc2_non0", 0.80)
    assert mosi.better(0.8, 0.9) and not targets.TARGETS["mvsa"].better(0.6, 0.7)


def test_missing_data_is_skipped(targets, tmp_path, capsys):
    assert targets.main(["--data-root", str(tmp_path), "--only", "mvsa,ravdess"]) == 0
    out = capsys.readouterr().out
    assert "skip mvsa: no data at" in out and "skip ravdess: no data at" in out


def test_skip_slow_leaves_out_the_encoder_trained_from_scratch(targets, tmp_path):
    assert targets.parse_args(["--skip-slow"]).skip_slow
    slow = [c for c in targets.TARGETS["ravdess"].candidates if c.slow]
    assert [c.encoders for c in slow] == [{}]  # the default audio model, lstm-cnn
