"""Tests of `benchmarks/seed_spread.py`: the seeds it trains and the spread it prints."""

from __future__ import annotations

import importlib.util
import json
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


def test_best_test_needs_a_whole_cached_sweep(scripts, tmp_path, monkeypatch, capsys):
    sweep, _, spread = scripts
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    with pytest.raises(SystemExit):
        spread.main(["--workdir", str(tmp_path), "--best-test"])
    assert (
        f"--best-test: {tmp_path} holds no whole quick-grid sweep of movielens-100k"
        in capsys.readouterr().err
    )


def test_best_test_adds_the_point_of_the_best_cached_test_auc(scripts, tmp_path, monkeypatch, capsys):
    sweep, _, spread = scripts
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    grid = sweep.quick_grid()
    keys = [sweep.Sweep(tmp_path, 2).key("movielens-100k", 0, point) for point in grid]
    # Every point's seed-0 run cached, the 7th with the best test AUC.
    cache = {
        key: {"val": {"auc": 0.69}, "test": {"auc": 0.70 + (index == 6) / 100}}
        for index, key in enumerate(keys)
    }
    (tmp_path / "results.json").write_text(json.dumps(cache))
    trained = []

    def fake_val_auc(self, dataset, rows, prepared, point):
        trained.append(point)
        self.test_aucs[self.key(dataset, rows, point)] = 0.70 + point["training.seed"] / 100
        return 0.69

    monkeypatch.setattr(sweep.Sweep, "val_auc", fake_val_auc)
    assert spread.main(["--workdir", str(tmp_path), "--seeds", "2", "--best-test"]) == 0
    assert {k: v for k, v in trained[-1].items() if k != "training.seed"} == grid[6]
    assert f"| the best seed-0 test AUC: {sweep.describe(grid[6])} |" in capsys.readouterr().out


def test_top_reads_the_best_seed_zero_points_and_the_recipe_with_fresh_seeds(
    scripts, tmp_path, monkeypatch, capsys
):
    sweep, _, spread = scripts
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    grid = sweep.quick_grid()
    recipe = grid[sweep.recipe_index(grid)]
    runs = sweep.Sweep(tmp_path, 2)
    # Seed 0 (val, test): grid[0] leads on val, grid[1] and grid[3] tie behind it; grid[1] leads on test,
    # then grid[2]; grid[4] is in neither top 2, and the recipe is last on both.
    seed0 = {0: (0.75, 0.70), 1: (0.74, 0.72), 2: (0.73, 0.71), 3: (0.74, 0.69), 4: (0.70, 0.68)}
    cache = {runs.key("movielens-100k", 0, grid[index]): {"val": {"auc": val}, "test": {"auc": test}}
             for index, (val, test) in seed0.items()}  # fmt: skip
    cache[runs.key("movielens-100k", 0, recipe)] = {"val": {"auc": 0.60}, "test": {"auc": 0.60}}
    # grid[1] again, as an edge walk spells it: one run, not a second candidate.
    assert "optim.warmup_fraction" not in grid[1]
    cache[runs.key("movielens-100k", 0, {**grid[1], "optim.warmup_fraction": 0.0})] = cache[
        runs.key("movielens-100k", 0, grid[1])
    ]
    (tmp_path / "results.json").write_text(json.dumps(cache))
    # Fresh seeds: grid[0] was lucky (its mean is 0.70); grid[2] is the best by val (0.73), 0.01 above
    # the recipe; on test the recipe (0.725) leads grid[2] (0.72).
    fresh = {0: (0.70, 0.69), 1: (0.71, 0.70), 2: (0.73, 0.72), 3: (0.705, 0.69), "recipe": (0.72, 0.725)}
    trained = []

    def fake_val_auc(self, dataset, rows, prepared, point):
        seed = point["training.seed"]
        bare = {name: value for name, value in point.items() if name != "training.seed"}
        index = "recipe" if bare == recipe else grid.index(bare)  # the walk's spelling is no grid point
        trained.append((index, seed))
        val, test = fresh[index]
        spread_of_seeds = (seed - 2.5) / 1000  # seeds 1..4: -0.0015 .. +0.0015, mean 0
        self.test_aucs[self.key(dataset, rows, point)] = test + spread_of_seeds
        return val + spread_of_seeds

    monkeypatch.setattr(sweep.Sweep, "val_auc", fake_val_auc)
    assert spread.main(["--workdir", str(tmp_path), "--rows", "0", "--seeds", "5", "--top", "2"]) == 0
    # The recipe, then the top 2 by val with the tie (grid[0], grid[1], grid[3]), then by test (grid[2]).
    assert trained == [(point, seed) for point in ("recipe", 0, 1, 3, 2) for seed in (1, 2, 3, 4)]
    out = capsys.readouterr().out
    assert "movielens-100k: 5 candidates of 6 points read, seeds 1..4" in out
    assert f"| {sweep.describe(grid[1])} | val #2, test #1 | 0.7400 | 0.7100 | " in out
    assert f"| {sweep.describe(grid[3])} | val #3 | 0.7400 | 0.7050 | " in out
    assert (
        f"the recipe's val regret over fresh seeds: 0.0100 (below {sweep.describe(grid[2])}, 0.7300)" in out
    )
    assert (
        "the recipe's test regret over fresh seeds: 0 (it leads the best other candidate, "
        f"{sweep.describe(grid[2])}, 0.7200, by 0.0050)" in out
    )
    assert f"best fresh val mean's point ({sweep.describe(grid[2])}): -0.0050" in out


def test_top_needs_the_recipes_seed_zero_run(scripts, tmp_path, monkeypatch, capsys):
    sweep, _, spread = scripts
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    grid = sweep.quick_grid()
    key = sweep.Sweep(tmp_path, 2).key("movielens-100k", 0, grid[0])
    (tmp_path / "results.json").write_text(json.dumps({key: {"val": {"auc": 0.7}, "test": {"auc": 0.7}}}))
    assert spread.main(["--workdir", str(tmp_path), "--top", "2"]) == 1
    assert f"movielens-100k: {tmp_path} holds no seed-0 run of the recipe" in capsys.readouterr().out


def test_top_and_best_test_exclude_each_other(scripts, tmp_path, capsys):
    _, _, spread = scripts
    with pytest.raises(SystemExit):
        spread.main(["--workdir", str(tmp_path), "--top", "3", "--best-test"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_top_needs_two_fresh_seeds(scripts, tmp_path, capsys):
    _, _, spread = scripts
    with pytest.raises(SystemExit):
        spread.main(["--workdir", str(tmp_path), "--seeds", "2", "--top", "3"])
    assert "--seeds: --top needs >= 2 fresh seeds (--seeds >= 3), got 2" in capsys.readouterr().err
