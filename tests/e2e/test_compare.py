"""`dlrm-compare` on a tiny dataset: one row per model with finite metrics, written three ways."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlrm_dist.compare import DEFAULT_MODELS, main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--training.max_steps=8", "--training.batch_size=256", "--eval.batch_size=1024",
        "--model.deep_mlp=16,16", "--model.cin_layers=8,8", "--model.low_rank_dim=8",
        "--checkpoint.enabled=false", "--metrics.progress_bar=false", "--training.device=cpu"]  # fmt: skip


def test_compare_trains_every_family_and_tabulates_them(prepared_sample, tmp_path, capsys):
    run_dir = tmp_path / "compare"
    argv = [
        "--data",
        str(prepared_sample),
        "--config",
        str(REPO_ROOT / "configs/tiny.toml"),
        "--run-dir",
        str(run_dir),
        *TINY,
    ]
    assert main(argv) == 0

    with (run_dir / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == list(DEFAULT_MODELS)
    for row in rows:
        metrics = json.loads((run_dir / row["model"] / "metrics.json").read_text())
        assert float(row["test_auc"]) == metrics["test"]["auc"]
        for name in (
            "val_auc",
            "test_auc",
            "val_logloss",
            "test_logloss",
            "samples_per_sec",
            "peak_memory_gib",
        ):
            assert math.isfinite(float(row[name])) and float(row[name]) > 0, (row["model"], name)
        assert 0 < float(row["test_auc"]) < 1
        assert int(row["dense_parameters"]) > 0 and int(row["sparse_parameters"]) > 0
        # Same steps, batch and world size for every model: only the model differs.
        assert metrics["train"]["steps"] == 8 and metrics["world_size"] == 1
    sparse = {row["model"]: int(row["sparse_parameters"]) for row in rows}
    test_aucs = {row["model"]: float(row["test_auc"]) for row in rows}
    # Tables are 8 wide (tiny.toml); the families with a linear part add 4-wide first-order tables.
    assert sparse["deepfm"] == sparse["dlrm"] * (8 + 4) // 8 == sparse["xdeepfm"] == sparse["wide_deep"]
    assert sparse["dcn"] == sparse["dlrm_dcnv2"] == sparse["dlrm"]

    table = (run_dir / "comparison.md").read_text()
    assert all(f"| {model} |" in table for model in DEFAULT_MODELS)
    assert table in capsys.readouterr().out
    for model in DEFAULT_MODELS:
        events = EventAccumulator(str(run_dir / "tb" / model))
        events.Reload()
        assert events.PluginTagToContent("hparams"), model
        test_auc = events.Scalars("compare/test_auc")[0].value
        assert test_auc == pytest.approx(test_aucs[model], abs=1e-6)

    # A second call reuses the finished runs; one with another config refuses to mix them.
    assert main(argv) == 0
    assert "already trained" in capsys.readouterr().out
    assert main([*argv, "--training.seed=7"]) == 1
    assert "holds a finished run with another config" in capsys.readouterr().err


def test_compare_rejects_unknown_models_and_model_name_override(prepared_sample, tmp_path, capsys):
    base = ["--data", str(prepared_sample), "--run-dir", str(tmp_path / "c")]
    assert main([*base, "--models", "dlrm,fm_v9"]) == 2
    assert "--models: fm_v9 not known" in capsys.readouterr().err
    assert main([*base, "--model.name=dcn"]) == 2
    assert "--model.name" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
