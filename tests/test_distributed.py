"""Distributed training: ``fusent train --nproc 2`` (torchrun, gloo, 2 CPU processes) on the tiny MVSA folder
matches one process with the same global batch; the helpers shard and average the way the trainer relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, MvsaSpec, TinyModels, invoke
from safetensors.torch import load_file

from fusent import distributed

pytestmark = pytest.mark.usefixtures("restore_process_state")


def _args(models: TinyModels, data: Path, cache: Path, out: Path, batch_size: int) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(out), "--epochs", "3", "--batch-size", str(batch_size),
        "--text-model", str(models.bert), "--image-model", str(models.vit), "--max-length", "32",
        "--cache-dir", str(cache), "--device", "cpu", "--dropout", "0", "--modality-dropout", "0", "--seed", "5",
        "--lr", "1e-3", "--patience", "10", "-q",
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    (weights,) = (run / "checkpoint").glob("*.safetensors")
    return load_file(weights)


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path
):
    # one process, batch 8: the reference
    single = tmp_path / "single"
    result = invoke(*_args(tiny_models, tiny_mvsa.root, tmp_path / "cache1", single, 8))
    assert result.exit_code == 0, result.output
    # two processes, batch 4 each (global 8), a fresh cache: each rank encodes half of the samples
    double = tmp_path / "double"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "fusent.cli", *_args(tiny_models, tiny_mvsa.root, tmp_path / "cache2", double, 4)]
    done = subprocess.run(
        [*command[:3], "train", "--nproc", "2", *command[4:]], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("TEST, n=") == 1, "rank 0 alone reports"
    one, two = (json.loads((run / "metrics.json").read_text()) for run in (single, double))
    assert len(two["history"]) == len(one["history"]) == 3
    # the same samples in every optimizer step; only the last, short step differs (the ranks' halves are averaged
    # with equal weight), so the numbers agree closely but not bit for bit
    for a, b in zip(one["history"], two["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=0.05)
    w1, w2 = _weights(single), _weights(double)
    assert w1.keys() == w2.keys()
    for name in w1:
        assert torch.allclose(w1[name].float(), w2[name].float(), atol=0.01), name
    assert two["split"] == one["split"]
    assert not (double / "resume.pt").exists()
    # the sharded encoding filled the one cache with every sample: as many entries as the one-process encoding
    assert sorted(p.name for p in (tmp_path / "cache2").rglob("*.*")) == sorted(
        p.name for p in (tmp_path / "cache1").rglob("*.*")
    )


def test_nproc_needs_the_command_line(tiny_mvsa: MvsaSpec, tmp_path: Path):
    from typer.testing import CliRunner

    from fusent.cli import app

    args = ["train", "--data", str(tiny_mvsa.root), "--out", str(tmp_path), "--nproc", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "from the command line" in result.output
    result = CliRunner().invoke(app, [*args, "--cv", "3"])
    assert result.exit_code != 0 and "one process per fold" in result.output


def test_helpers_are_no_ops_in_one_process():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.average_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]
    argv = ["train", "--nproc", "2", "--epochs", "3", "--nproc=4"]
    assert distributed.strip_nproc(argv) == ["train", "--epochs", "3"]


def _ranks(rank: int, world: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        shards = distributed.shard(list(range(5)))
        p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
        p.grad = torch.full((2,), float(rank + 1))  # 1 and 2: mean 1.5
        q.grad = torch.ones(1) * 4 if rank == 0 else None  # only rank 0 reached q: its own gradient
        distributed.average_gradients([p, q])
        torch.save({"shards": shards, "p": p.grad, "q": q.grad}, out / f"{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_sharding_and_gradient_averaging_across_two_ranks(tmp_path: Path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_ranks, args=(2, port, tmp_path), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["shards"] == [0, 2, 4] and r1["shards"] == [1, 3, 0]  # equal counts: padded by wrapping around
    assert r0["p"].tolist() == r1["p"].tolist() == [1.5, 1.5]
    assert r0["q"].tolist() == r1["q"].tolist() == [4.0]
