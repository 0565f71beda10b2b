"""`dlrm-train` on data that is not there or not whole: one line naming the path, exit 2, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep.manifest import load_manifest

pytestmark = pytest.mark.distributed
REPO_ROOT = Path(__file__).resolve().parents[2]


def _train(capsys, data_dir: Path, run_dir: Path) -> list[str]:
    """Runs `dlrm-train` in this process (one rank); returns the lines it printed to stderr."""
    from dlrm_dist.train import main

    argv = ["--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", str(data_dir), "--run-dir", str(run_dir),
            "--training.batch_size=256", "--eval.every_steps=0", "--metrics.progress_bar=false",
            "--metrics.tensorboard=false", "--checkpoint.enabled=false", "--training.device=cpu"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("dlrm-train")]


def _train_shard(data_dir: Path) -> Path:
    return data_dir / load_manifest(data_dir)["splits"]["train"]["files"][0]["path"]


def test_a_missing_data_directory_is_named(capsys, tmp_path):
    assert _train(capsys, tmp_path / "nowhere", tmp_path / "run") == [
        f"dlrm-train: error (rank 0): data.path: {tmp_path / 'nowhere'} is not a directory; "
        "pass --data DIR written by dlrm-prep"
    ]
    assert not (tmp_path / "run").exists()


def test_a_missing_manifest_is_named(capsys, tmp_path):
    lines = _train(capsys, tmp_path, tmp_path / "run")
    assert len(lines) == 1 and f"{tmp_path / 'manifest.json'} not found" in lines[0]


def test_a_truncated_shard_is_named_before_training(capsys, prepared_sample, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_sample, data_dir)
    shard = _train_shard(data_dir)
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    lines = _train(capsys, data_dir, tmp_path / "run")
    assert len(lines) == 1 and lines[0].startswith(
        f"dlrm-train: error (rank 0): {shard}: not a readable Parquet shard"
    )
    assert not (tmp_path / "run").exists()


def test_damaged_pages_are_named_when_training_reads_them(capsys, prepared_sample, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(prepared_sample, data_dir)
    shard = _train_shard(data_dir)
    metadata = pq.ParquetFile(shard).metadata
    data = bytearray(shard.read_bytes())
    # Every page header of the shard's first column, footer untouched: the start-up check passes.
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(0)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + 64] = b"\xff" * 64
    shard.write_bytes(bytes(data))
    pq.ParquetFile(shard)
    lines = _train(capsys, data_dir, tmp_path / "run")
    assert len(lines) == 1 and lines[0].startswith(
        f"dlrm-train: error (rank 0): {shard}: cannot read row group"
    )
