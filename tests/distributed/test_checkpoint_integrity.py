"""Self-checking checkpoints on 2 gloo ranks: damage is found, `auto` falls back, an explicit path stops."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed
REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = ["--training.batch_size=256", "--eval.batch_size=512", "--eval.every_steps=0",
        "--metrics.progress_bar=false", "--metrics.tensorboard=false", "--training.device=cpu",
        "--checkpoint.every_steps=8", "--checkpoint.keep=5", "--training.max_steps=16"]  # fmt: skip


def _train_worker(rank: int, world_size: int, data_dir: str, run_dir: str, overrides: list[str]) -> None:
    from dlrm_dist.config import load_config
    from dlrm_dist.distributed import destroy_distributed, init_distributed
    from dlrm_dist.trainer import Trainer

    cfg = load_config(
        REPO_ROOT / "configs/tiny.toml", [*BASE, *overrides], {"data": {"path": data_dir}, "run_dir": run_dir}
    )
    ctx = init_distributed("cpu")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            Trainer(cfg, ctx).run()
    finally:
        Path(run_dir, f"stdout-rank{rank}.txt").write_text(printed.getvalue())
        destroy_distributed()


def _main_worker(rank: int, world_size: int, argv: list[str], out: str) -> None:
    """Runs the `dlrm-train` entry point as a rank would, recording its exit code and what it printed."""
    from dlrm_dist.train import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    Path(out, f"rank{rank}.json").write_text(
        json.dumps({"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()})
    )


def _train(data_dir: Path, run_dir: Path, *overrides: str) -> dict:
    run_ranks(_train_worker, world_size=2, timeout_s=240, data_dir=str(data_dir), run_dir=str(run_dir),
              overrides=list(overrides))  # fmt: skip
    return json.loads((run_dir / "metrics.json").read_text())


def _results(metrics: dict) -> dict:
    """What training computed, without the measurements of the machine (time, memory)."""
    train = {
        k: v
        for k, v in metrics["train"].items()
        if k
        not in (
            "seconds",
            "samples_per_sec",
            "steady_samples_per_sec",
            "data_wait_fraction",
            "steady_data_wait_fraction",
        )
    }
    return {**{k: v for k, v in metrics.items() if k != "memory"}, "train": train}


def _largest_shard(step_dir: Path) -> Path:
    return max(step_dir.glob("*.distcp"), key=lambda path: path.stat().st_size)


@pytest.fixture(scope="module")
def trained(prepared_sample, tmp_path_factory) -> Path:
    """A 2-rank run with checkpoints at steps 8 and 16 (kept read-only: tests copy it)."""
    run_dir = tmp_path_factory.mktemp("integrity") / "run"
    _train(prepared_sample, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def resumed_from_step_8(prepared_sample, trained, tmp_path_factory) -> dict:
    """The metrics of the trained run resumed explicitly from its intact step 8."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    shutil.copytree(trained, run_dir)
    return _train(prepared_sample, run_dir, f"--checkpoint.resume={run_dir}/checkpoints/step-8")


def test_every_file_is_listed_and_any_damage_is_named(trained, tmp_path):
    from dlrm_dist.checkpoint import CHECKSUMS_FILE, damaged_file
    from dlrm_dist.distributed import DistContext

    ctx = DistContext(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"),
                      backend="gloo")  # fmt: skip
    step_dir = tmp_path / "step-16"
    shutil.copytree(trained / "checkpoints/step-16", step_dir)
    listed = json.loads((step_dir / CHECKSUMS_FILE).read_text())["files"]
    assert sorted(listed) == sorted(p.name for p in step_dir.iterdir() if p.name != CHECKSUMS_FILE)
    assert {".metadata", "rank-0.pt", "rank-1.pt"} <= listed.keys()
    assert damaged_file(step_dir, ctx) is None

    shard = _largest_shard(step_dir)
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    shard.write_bytes(bytes(data))
    assert shard.stat().st_size == listed[shard.name]["bytes"]
    assert damaged_file(step_dir, ctx) == f"{shard}: contents differ from checksums.json (blake2b)"

    with shard.open("r+b") as handle:
        handle.truncate(middle)
    assert damaged_file(step_dir, ctx) == f"{shard}: {middle} bytes, checksums.json says {len(data)}"
    shutil.copy2(trained / "checkpoints/step-16" / shard.name, shard)
    (step_dir / "rank-1.pt").unlink()
    assert damaged_file(step_dir, ctx) == f"{step_dir / 'rank-1.pt'}: missing"
    (step_dir / CHECKSUMS_FILE).unlink()
    assert damaged_file(step_dir, ctx).startswith(f"{step_dir / CHECKSUMS_FILE}: missing or unreadable")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_auto_skips_a_damaged_newest_checkpoint(
    prepared_sample, trained, resumed_from_step_8, damage, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    damaged = _largest_shard(run_dir / "checkpoints/step-16") if damage == "truncate" else (
        run_dir / "checkpoints/step-16/rank-1.pt")  # fmt: skip
    if damage == "truncate":
        with damaged.open("r+b") as handle:
            handle.truncate(damaged.stat().st_size // 2)
    else:
        damaged.unlink()

    metrics = _train(prepared_sample, run_dir, "--checkpoint.resume=auto")

    printed = (run_dir / "stdout-rank0.txt").read_text().splitlines()
    warnings = [line for line in printed if line.startswith("warning:")]
    assert len(warnings) == 1 and str(damaged) in warnings[0], printed
    assert f"resumed from {run_dir}/checkpoints/step-8 at step 8" in "\n".join(printed)
    assert "warning:" not in (run_dir / "stdout-rank1.txt").read_text()
    assert _results(metrics) == _results(resumed_from_step_8)
    # The step the damaged checkpoint held was written again, intact.
    from dlrm_dist.checkpoint import damaged_file
    from dlrm_dist.distributed import DistContext

    ctx = DistContext(0, 1, 0, 1, torch.device("cpu"), "gloo")
    assert damaged_file(run_dir / "checkpoints/step-16", ctx) is None


def test_an_explicit_damaged_checkpoint_stops_with_one_line_and_changes_nothing(
    prepared_sample, trained, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    shard = _largest_shard(run_dir / "checkpoints/step-16")
    data = bytearray(shard.read_bytes())
    data[100:164] = bytes(64)
    shard.write_bytes(bytes(data))
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}

    out = tmp_path / "out"
    out.mkdir()
    argv = ["--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(prepared_sample), "--run-dir",
            str(run_dir), *BASE, "--training.max_steps=24", f"--checkpoint.resume={shard.parent}"]  # fmt: skip
    run_ranks(_main_worker, world_size=2, timeout_s=240, argv=argv, out=str(out))

    for rank in range(2):
        result = json.loads((out / f"rank{rank}.json").read_text())
        assert result["code"] == 2
        # Only the library's warnings beside it: no traceback.
        assert "Traceback" not in result["stderr"]
        assert [line for line in result["stderr"].splitlines() if line.startswith("dlrm-train")] == [
            f"dlrm-train: error (rank {rank}): checkpoint.resume: {shard.parent} is damaged: "
            f"{shard}: contents differ from checksums.json (blake2b)"
        ]
    after = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert after == before
