"""`dlrm-tune`: a budgeted search whose output is a recipe dlrm-train runs as is."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest

from dlrm_dist.config import load_config
from dlrm_dist.tune import config_to_toml, main

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = str(REPO_ROOT / "configs/tiny.toml")


def test_the_written_recipe_reads_back_to_the_same_config(tmp_path):
    cfg = load_config(
        TINY, ["--sharding.tables.C3=row_wise", "--optim.lr=0.0123", "--model.num_embeddings=5,6"]
    )
    path = tmp_path / "recipe.toml"
    path.write_text(config_to_toml(cfg, "a header\nof two lines"))
    again = load_config(path)
    expected = cfg.to_dict()
    got = again.to_dict()
    # The recipe leaves out where the data and the run are, and any resume: those belong to a run.
    for config in (expected, got):
        config.pop("run_dir")
        config["data"].pop("path")
        config["checkpoint"].pop("resume")
    assert got == expected
    assert tomllib.loads(path.read_text())["sharding"]["tables"] == {"C3": "row_wise"}


@pytest.mark.e2e
@pytest.mark.slow
def test_tune_stays_in_budget_and_writes_a_recipe_that_reproduces_its_best_trial(
    prepared_sample, tmp_path, capsys
):
    out = tmp_path / "tuned.toml"
    started = time.monotonic()
    args = ["--data", str(prepared_sample), "--config", TINY, "--out", str(out), "--budget-minutes", "0.75",
            "--training.device=cpu"]  # fmt: skip
    assert main(args) == 0
    # The budget bounds the search (one rung may overrun by a process start-up; the rest is writing).
    assert time.monotonic() - started < 0.75 * 60 + 20
    printed = capsys.readouterr().out
    assert "| trial |" in printed and "best: trial" in printed
    tuned = load_config(out)
    text = out.read_text()
    best_line = next(line for line in text.splitlines() if line.startswith("# Best: trial"))
    assert "val AUC" in best_line
    # Trial 0 is the recipe itself, so the search can only improve on it.
    assert "| 0 | rowwise_adagrad | 0.05 | adagrad | 0.01 | 512 | 0% |" in text
    assert tuned.model == load_config(TINY).model
    assert (tmp_path / "tuned.toml.trials" / "trials.md").is_file()


def test_bad_arguments_stop_with_one_line(prepared_sample, tmp_path, capsys):
    assert (
        main(["--data", str(prepared_sample), "--out", str(tmp_path / "t.toml"), "--budget-minutes", "0"])
        == 2
    )
    assert capsys.readouterr().err.strip() == "dlrm-tune: error: --budget-minutes: must be > 0, got 0.0"
    assert (
        main(
            ["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "t.toml"), "--budget-minutes", "1"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("dlrm-tune: error:") and "manifest.json not found" in err and "\n" not in err


@pytest.mark.e2e
@pytest.mark.slow
def test_compare_tunes_each_model_then_trains_it_with_its_tuned_recipe(prepared_sample, tmp_path):
    from dlrm_dist.compare import main as compare

    run_dir = tmp_path / "compare"
    args = ["--data", str(prepared_sample), "--config", TINY, "--run-dir", str(run_dir), "--models", "lr",
            "--tune-minutes", "0.3", "--training.device=cpu"]  # fmt: skip
    assert compare(args) == 0
    tuned = run_dir / "tuned" / "lr.toml"
    assert tuned.is_file() and (run_dir / "lr" / "metrics.json").is_file()
    # The model trained with the tuned recipe: its resolved config is the tuned one.
    trained = load_config(tuned).optim
    config = json.loads((run_dir / "lr" / "config.json").read_text())
    assert config["optim"]["lr"] == trained.lr and config["optim"]["embedding_lr"] == trained.embedding_lr
