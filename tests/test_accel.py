"""The GPU path helpers import and behave on a machine without a GPU (CI never has one); the CUDA checks run only
where a GPU is present."""

from __future__ import annotations

import pytest
import torch

from fusent.accel import amp_dtype, autocast, needs_grad_scaler, to_device


def test_cpu_runs_in_float32_without_autocast():
    assert amp_dtype("cpu") is None and not needs_grad_scaler("cpu")
    layer = torch.nn.Linear(4, 2)
    with autocast("cpu") as dtype:
        out = layer(torch.ones(1, 4))
    assert dtype is None and out.dtype == torch.float32
    x = torch.ones(3)
    assert to_device(x, "cpu").device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_autocast_and_pinned_copies():  # pragma: no cover - needs a GPU
    dtype = amp_dtype("cuda")
    assert dtype in (torch.bfloat16, torch.float16)
    layer = torch.nn.Linear(4, 2).cuda()
    with autocast("cuda") as used:
        out = layer(to_device(torch.ones(1, 4), "cuda"))
    assert used == dtype and out.dtype == dtype
    with autocast("cuda", enabled=False) as used:
        assert used is None and layer(torch.ones(1, 4, device="cuda")).dtype == torch.float32
