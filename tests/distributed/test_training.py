"""The trainer on 2 gloo ranks: exact distributed metrics, checkpoint round trip, exact resume after a kill."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from data_prep.manifest import load_manifest
from data_prep.oracle import auc
from data_prep.schema import DENSE_COLUMNS
from tests.conftest import features_of
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed
REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = torch.linspace(-1.0, 1.0, len(DENSE_COLUMNS))


class LinearScorer(torch.nn.Module):
    """A fixed scoring function with the train module's output shape, to test evaluation alone."""

    def forward(self, batch):
        logits = (
            batch.dense_features @ WEIGHTS + batch.sparse_features.values().reshape(26, -1)[0].float() * 1e-3
        )
        return torch.zeros(()), (torch.zeros(()), logits, batch.labels)


def _eval_worker(rank: int, world_size: int, data_dir: str, out: str) -> None:
    from dlrm_dist.data import list_row_groups
    from dlrm_dist.distributed import destroy_distributed, init_distributed
    from dlrm_dist.evaluation import evaluate

    ctx = init_distributed("cpu")
    try:
        groups = list_row_groups(data_dir, load_manifest(data_dir), "val")
        metrics = evaluate(
            LinearScorer(),
            groups,
            ctx,
            batch_size=128,
            features=features_of(data_dir),
        )
        if rank == 0:
            Path(out).write_text(json.dumps(metrics))
    finally:
        destroy_distributed()


def test_distributed_auc_and_logloss_equal_a_single_process_computation(prepared_sample, tmp_path):
    out = tmp_path / "metrics.json"
    run_ranks(_eval_worker, world_size=2, data_dir=str(prepared_sample), out=str(out))
    got = json.loads(out.read_text())
    manifest = load_manifest(prepared_sample)
    (val_file,) = manifest["splits"]["val"]["files"]
    table = pq.read_table(prepared_sample / val_file["path"])
    dense = np.stack([table.column(c).to_numpy() for c in DENSE_COLUMNS], 1)
    logits = dense @ WEIGHTS.numpy().astype(np.float64) + table.column("C1").to_numpy() * 1e-3
    labels = table.column("label").to_numpy().astype(np.float64)
    logloss = np.mean(np.logaddexp(0, logits) - labels * logits)
    assert got["rows"] == 571 == len(labels)
    assert got["auc"] == pytest.approx(auc(logits, labels), abs=1e-6)
    assert got["logloss"] == pytest.approx(logloss, abs=1e-5)


def _config(data_dir: str, run_dir: str, *overrides: str):
    from dlrm_dist.config import load_config

    base = [
        "--training.batch_size=256",
        "--eval.batch_size=512",
        "--metrics.progress_bar=false",
        "--training.device=cpu",
    ]
    return load_config(
        REPO_ROOT / "configs/tiny.toml", [*base, *overrides], {"data": {"path": data_dir}, "run_dir": run_dir}
    )


def _local_tensors(state: dict) -> dict[str, torch.Tensor]:
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _local_tensors(value).items()})
        elif hasattr(value, "local_shards"):
            flat.update({f"{key}[{i}]": s.tensor.clone() for i, s in enumerate(value.local_shards())})
        elif hasattr(value, "to_local"):
            flat[key] = value.to_local().clone()
        elif isinstance(value, torch.Tensor):
            flat[key] = value.clone()
    return flat


def _round_trip_worker(rank: int, world_size: int, data_dir: str, run_dir: str) -> None:
    from dlrm_dist.distributed import destroy_distributed, init_distributed
    from dlrm_dist.trainer import Trainer

    ctx = init_distributed("cpu")
    try:
        trained = Trainer(
            _config(data_dir, run_dir, "--training.max_steps=6", "--checkpoint.every_steps=0"), ctx
        )
        trained.run()
        expected_model = _local_tensors(trained.model.state_dict())
        expected_optim = _local_tensors(trained.optimizer.state_dict())
        # A fresh trainer with another seed starts from other weights, then loads the checkpoint.
        fresh = Trainer(
            _config(
                data_dir, run_dir, "--training.seed=99", f"--checkpoint.resume={run_dir}/checkpoints/step-6"
            ),
            ctx,
        )
        before = _local_tensors(fresh.model.state_dict())
        assert any(not torch.equal(before[k], expected_model[k]) for k in expected_model), (
            "seeds should differ"
        )
        state = fresh._restore()
        assert (state.step, state.samples_seen, state.world_size) == (6, 6 * 256, world_size)
        for name, tensors in (
            ("model", _local_tensors(fresh.model.state_dict())),
            ("optim", _local_tensors(fresh.optimizer.state_dict())),
        ):
            expected = expected_model if name == "model" else expected_optim
            assert tensors.keys() == expected.keys(), name
            for key in expected:
                assert torch.equal(tensors[key], expected[key]), f"{name} {key} differs after reload"
    finally:
        destroy_distributed()


def test_checkpoint_round_trip_restores_identical_values(prepared_sample, tmp_path):
    run_ranks(
        _round_trip_worker,
        world_size=2,
        timeout_s=180,
        data_dir=str(prepared_sample),
        run_dir=str(tmp_path / "run"),
    )


def _torchrun(data_dir: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            str(REPO_ROOT / "dlrm_dist/train.py"), "--config", str(REPO_ROOT / "configs/tiny.toml"),
            "--data", str(data_dir), "--run-dir", str(run_dir), "--training.batch_size=256",
            "--eval.every_steps=0", "--metrics.progress_bar=false", "--checkpoint.every_steps=8",
            "--checkpoint.keep=5", "--training.device=cpu", *overrides]  # fmt: skip


def _checkpoint_tensors(step_dir: Path, out: Path) -> dict[str, torch.Tensor]:
    dcp_to_torch_save(step_dir, out)
    return _local_tensors(torch.load(out, weights_only=False))


@pytest.mark.slow
def test_killed_and_resumed_run_equals_the_uninterrupted_run(prepared_sample, tmp_path):
    # A warmup and a decay, so that the rates after the resume are checked too (not only constant ones).
    steps = ("--training.max_steps=24", "--optim.warmup_steps=10", "--optim.decay=linear")
    reference = tmp_path / "reference"
    subprocess.run(_torchrun(prepared_sample, reference, *steps), check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_torchrun(prepared_sample, interrupted, *steps), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (interrupted / "checkpoints" / "step-8").exists():
        assert process.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (interrupted / "metrics.json").exists()
    # Whatever the kill left half-written must not count: only complete step dirs are resumed from.
    shutil.rmtree(interrupted / "tb", ignore_errors=True)
    resumed = subprocess.run(
        _torchrun(prepared_sample, interrupted, *steps, "--checkpoint.resume=auto"),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr

    got, expected = (json.loads((d / "metrics.json").read_text()) for d in (interrupted, reference))
    # On glibc the cpu trainer keeps freed host memory (training.keep_freed_memory's default).
    assert got["keeps_freed_memory"] is (platform.libc_ver()[0] == "glibc")
    for metrics in (got, expected):
        for key in (
            "seconds",
            "samples_per_sec",
            "steady_samples_per_sec",
            "data_wait_fraction",
            "steady_data_wait_fraction",
        ):
            metrics["train"].pop(key)
        # Measurements of the machine, not results of training.
        metrics.pop("memory")
    assert got == expected
    final_got = _checkpoint_tensors(interrupted / "checkpoints/step-24", tmp_path / "a.pt")
    final_expected = _checkpoint_tensors(reference / "checkpoints/step-24", tmp_path / "b.pt")
    assert final_got.keys() == final_expected.keys() and len(final_got) > 50
    for key, tensor in final_expected.items():
        assert torch.equal(final_got[key], tensor), key


@pytest.mark.slow
def test_warmup_fraction_is_a_share_of_the_planned_run_so_rungs_resume_onto_it(prepared_sample, tmp_path):
    """dlrm-tune trains a trial in rungs (max_steps 8, then resumed to 16): the same steps as one run to 16.

    With criteo_kaggle's optimizers: Adam, whose state exists only after its first step, must resume too.
    """
    warmup = ("--optim.warmup_fraction=0.9", "--checkpoint.keep=1", "--optim.dense_optimizer=adam",
              "--optim.lr=0.004", "--optim.embedding_optimizer=adagrad")  # fmt: skip
    whole = tmp_path / "whole"
    subprocess.run(_torchrun(prepared_sample, whole, *warmup, "--training.max_steps=16"), check=True,
                   capture_output=True)  # fmt: skip
    rungs = tmp_path / "rungs"
    for max_steps in (8, 16):
        subprocess.run(_torchrun(prepared_sample, rungs, *warmup, f"--training.max_steps={max_steps}",
                                 "--checkpoint.resume=auto"), check=True, capture_output=True)  # fmt: skip
    metrics = json.loads((whole / "metrics.json").read_text())
    train_rows = json.loads((prepared_sample / "manifest.json").read_text())["splits"]["train"]["rows"]
    # 0.9 of the epoch's steps (2 ranks x 128), not of the 8 or 16 the runs were cut to: both rungs
    # are inside the one warmup.
    assert metrics["learning_rates"]["warmup_steps"] == round(0.9 * ((train_rows // 2) // 128))
    assert metrics["learning_rates"]["warmup_steps"] > 16
    got = _checkpoint_tensors(rungs / "checkpoints/step-16", tmp_path / "a.pt")
    expected = _checkpoint_tensors(whole / "checkpoints/step-16", tmp_path / "b.pt")
    assert got.keys() == expected.keys() and len(got) > 50
    for key, tensor in expected.items():
        assert torch.equal(got[key], tensor), key


def _data_parallel_tables(run_dir: Path) -> set[str]:
    lines = (run_dir / "plan.txt").read_text().splitlines()[1:]
    return {line.split()[1] for line in lines if line.split()[2] == "data_parallel"}


@pytest.mark.slow
def test_resume_on_other_world_sizes_and_batch_sizes_goes_on_with_the_epochs_rest(prepared_sample, tmp_path):
    """2 ranks x 128 -> 1 rank x 256 -> 2 ranks x 64: each hop resumes from the last checkpoint."""
    first = tmp_path / "first"
    subprocess.run(
        _torchrun(prepared_sample, first, "--training.max_steps=8"), check=True, capture_output=True
    )
    single_run = tmp_path / "single"
    single = subprocess.run(
        [sys.executable, str(REPO_ROOT / "dlrm_dist/train.py"), "--config", str(REPO_ROOT / "configs/tiny.toml"),
         "--data", str(prepared_sample), "--run-dir", str(single_run), "--training.batch_size=256",
         "--eval.every_steps=0", "--checkpoint.every_steps=8", "--training.max_steps=16",
         f"--checkpoint.resume={first}/checkpoints/step-8", "--metrics.progress_bar=false"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    train_rows = 6857
    left = train_rows - 8 * 256
    assert (
        f"epoch 0 goes on with 1 rank x 256 rows per batch (the checkpoint: 2 x 128): {left // 256} steps"
        in (single.stdout + single.stderr)
    )
    # Tables stay on the optimizer they were trained by: 1 rank alone would plan them otherwise.
    assert _data_parallel_tables(single_run) == _data_parallel_tables(first) != set()
    last = tmp_path / "last"
    resumed = subprocess.run(
        _torchrun(prepared_sample, last, "--training.batch_size=128", f"--checkpoint.resume={single_run}/checkpoints/step-16"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((last / "metrics.json").read_text())
    # Rows trained: 8 steps of 256, 8 of 256, then full batches of 2 x 64 of what those left.
    remaining = train_rows - 16 * 256
    assert metrics["train"]["steps"] == 16 + (remaining // 2) // 64
    assert metrics["train"]["samples"] == 16 * 256 + (remaining // 2) // 64 * 128
    assert 0.6 < metrics["test"]["auc"] < 0.8
