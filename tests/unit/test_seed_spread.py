"""Tests of `benchmarks/seed_spread.py`: the seeds it trains and the spread it prints."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    names = ("recipe_sweep", "edge_check", "seed_spread")
    try:
        for name in names:
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # the scripts import each other by name
            spec.loader.exec_module(module)
        yield tuple(sys.modules[name] for name in names)
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_each_point_trains_once_per_seed_and_the_spread_is_over_seeds(scripts, tmp_path, monkeypatch, capsys):
    sweep, _, spread = scripts
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    seen = []

    def fake_val_auc(self, dataset, rows, prepared, point):
        seen.append((point["optim.embedding_lr"], point["training.seed"]))
        key = self.key(dataset, rows, point)
        # Test AUC 0.70, 0.71, 0.72 over the seeds; val 0.01 below.
        self.test_aucs[key] = 0.70 + point["training.seed"] / 100
        return self.test_aucs[key] - 0.01

    monkeypatch.setattr(sweep.Sweep, "val_auc", fake_val_auc)
    assert spread.main(["--workdir", str(tmp_path), "--seeds", "3"]) == 0
    # The recipe (embedding 0.1 at reference batch 1024) and MovieLens's winner (0.05), seeds 0, 1, 2.
    assert seen == [(0.1, 0), (0.1, 1), (0.1, 2), (0.05, 0), (0.05, 1), (0.05, 2)]
    out = capsys.readouterr().out
    assert (
        "| recipe: adagrad 0.1 / adam 0.008 / b256 w45% | 0.7000 | 0.0100 | 0.7100 | 0.0100 | 0.7000 / 0.7100 / 0.7200 |"
        in out
    )


def test_one_seed_is_no_spread(scripts, tmp_path, capsys):
    _, _, spread = scripts
    with pytest.raises(SystemExit):
        spread.main(["--workdir", str(tmp_path), "--seeds", "1"])
    assert "--seeds: a spread needs >= 2 seeds, got 1" in capsys.readouterr().err
