"""Thread hygiene: the usable CPUs from the affinity mask and a (fake) cgroup quota, thread pools sized from them,
and ``--threads`` honoured by every command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import TinyModels, invoke

from fusent import threads
from fusent.threads import cgroup_cpu_limit, configure_threads, free_cpus, usable_cpus


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


@pytest.fixture
def restore_threads():
    """configure_threads changes torch's pool and the environment for the rest of the process: put both back."""
    before = torch.get_num_threads()
    env = {name: os.environ.get(name) for name in threads.THREAD_ENV}
    yield
    torch.set_num_threads(before)
    for name, value in env.items():
        os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def fake_cgroup(tmp_path: Path, own: str = "/", files: dict[str, str] | None = None) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{own}\n")
    return root, proc


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("own", "files", "expected"),
    [
        ("/", {}, 8),  # no cgroup file: the affinity mask
        ("/", {"cpu.max": "max 100000\n"}, 8),  # v2, unlimited
        ("/", {"cpu.max": "250000 100000\n"}, 2),  # v2, 2.5 CPUs: rounded down
        ("/", {"cpu.max": "50000 100000\n"}, 1),  # half a CPU: still one thread
        ("/", {"cpu.max": "1600000 100000\n"}, 8),  # a quota above the mask: the mask
        # v2, nested: the tightest quota of the process's cgroup and its ancestors
        ("/job/step", {"job/step/cpu.max": "max 100000", "job/cpu.max": "300000 100000", "cpu.max": "max 1"}, 3),
        ("/", {"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),  # v1
        ("/", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8),  # v1, unlimited
        ("/", {"cpu.max": "garbage"}, 8),
    ],
)
def test_usable_cpus_from_a_fake_cgroup(tmp_path: Path, own: str, files: dict[str, str], expected: int):
    root, proc = fake_cgroup(tmp_path, own, files)
    assert usable_cpus(root, proc) == expected


def test_cgroup_limit_is_none_without_files(tmp_path: Path):
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent_proc") is None


def test_usable_cpus_follows_the_affinity_mask(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cpus(*fake_cgroup(tmp_path)) == 1


def test_free_cpus_leaves_out_the_running_threads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.50 0.40 0.30 1/300 1234\n")  # only this process runs
    assert free_cpus(loadavg, samples=3, interval=0) == 8
    loadavg.write_text("9.10 8.00 7.00 4/300 1234\n")  # three other threads run
    assert free_cpus(loadavg, samples=3, interval=0) == 5
    loadavg.write_text("9.10 8.00 7.00 30/300 1234\n")  # oversubscribed: still one
    assert free_cpus(loadavg, samples=1) == 1
    assert free_cpus(tmp_path / "absent") is None


@pytest.mark.usefixtures("restore_threads")
def test_configure_threads_sizes_torch_and_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda *a: 4)
    monkeypatch.setattr(threads, "free_cpus", lambda *a: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert configure_threads() == 4 and torch.get_num_threads() == 4  # default: the usable CPUs
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "free_cpus", lambda *a: 1)
    assert configure_threads() == 1 and torch.get_num_threads() == 1  # ... fewer when others keep them busy
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    assert configure_threads(3) == 3 and torch.get_num_threads() == 3  # explicit: honoured (with a warning)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert configure_threads() == 2  # the user's OMP_NUM_THREADS wins over the default
    with pytest.raises(ValueError, match="at least 1"):
        configure_threads(0)


def test_openmp_waits_passively_unless_told_otherwise():
    assert os.environ["OMP_WAIT_POLICY"]  # set when fusent was imported (to PASSIVE unless the user chose)


def test_onnx_sessions_do_not_spin():
    pytest.importorskip("onnxruntime")
    options = threads.onnx_session_options(2)
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


class Configured(Exception):
    pass


@pytest.mark.usefixtures("restore_process_state")
@pytest.mark.parametrize(
    "command",
    [
        ["train", "--data", "x"],
        ["compare", "--data", "x"],
        ["evaluate", "ckpt", "--data", "x"],
        ["predict", "ckpt", "--data", "x"],
        ["serve", "ckpt"],
    ],
)
def test_every_command_passes_threads_on(command: list[str], monkeypatch: pytest.MonkeyPatch):
    seen = []

    def record(n):
        seen.append(n)
        raise Configured

    monkeypatch.setattr(threads, "configure_threads", record)
    with pytest.raises(Configured):
        invoke(*command, "--threads", "3")
    assert seen == [3]
    with pytest.raises(Configured):
        invoke(*command)
    assert seen == [3, None]
    assert invoke(*command, "--threads", "0").exit_code != 0  # rejected while parsing


@pytest.mark.usefixtures("restore_process_state", "restore_threads")
def test_predict_honours_threads(tmp_path: Path, tiny_models: TinyModels):
    from test_predict import make_checkpoint

    checkpoint = make_checkpoint(tmp_path, tiny_models, "text_only", ("text",))
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,text,label\na,good day,\nb,bad day,\n")
    torch.set_num_threads(2)
    result = invoke("predict", checkpoint, "--data", manifest, "--threads", "1", "-q")
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    assert result.stdout.splitlines()[0] == "id,label" and len(result.stdout.splitlines()) == 3
