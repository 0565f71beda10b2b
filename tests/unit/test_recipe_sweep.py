"""Tests of `benchmarks/recipe_sweep.py`'s selection: minimax regret across data sets and the edge check."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from dlrm_dist.config import load_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("recipe_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the script is executed.
    sys.modules["recipe_sweep"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["recipe_sweep"]


def test_minimax_regret_prefers_the_point_that_is_never_far_off(sweep):
    grid = sweep.GRIDS["quick"]()[:3]
    # Point 0 wins data set a by a little and loses b by a lot; point 1 is second on both.
    aucs = {"a": [0.80, 0.79, 0.70], "b": [0.60, 0.69, 0.70]}
    table, chosen = sweep.regret_table(grid, aucs)
    assert chosen == 1
    assert "| 0.0100 | 0.0100 | 0.0100 |" in table  # point 1: regret 0.01 on each, worst 0.01
    assert "| best val AUC | 0.8000 | 0.7000 | |" in table


def test_edge_warnings_name_an_axis_whose_winner_is_at_the_end_of_its_line(sweep):
    grid = sweep.GRIDS["quick"]()
    top_rate = next(
        p for p in grid if p["optim.embedding_lr"] == 0.1 and p["optim.dense_optimizer"] == "adam"
    )
    messages = sweep.edge_warnings(grid, top_rate)
    assert any("optim.embedding_lr = 0.1 is the highest value tried" in m for m in messages)
    middle = next(p for p in grid if p["optim.embedding_lr"] == 0.05 and p["optim.dense_optimizer"] == "adam")
    assert not any(m.startswith("optim.embedding_lr") for m in sweep.edge_warnings(grid, middle))


def test_grids_hold_the_recipe_and_no_duplicates(sweep):
    for name, build in sweep.GRIDS.items():
        grid = build()
        keys = [tuple(sorted(point.items())) for point in grid]
        assert len(set(keys)) == len(keys), name
        assert sweep.RECIPE in grid, name


def test_a_data_set_of_several_splits_scores_the_mean_of_its_splits(sweep, tmp_path, monkeypatch):
    trained = {}

    def fake_train(self, key, prepared, point):
        trained[key] = prepared
        return {"a": 0.70, "b": 0.74, "c": 0.75}[prepared.name]

    monkeypatch.setattr(sweep.Sweep, "_train", fake_train)
    runs = sweep.Sweep(tmp_path, nproc_per_node=2)
    splits = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    auc = runs.val_auc("criteo-sample-5split", 1000, splits, sweep.RECIPE)
    assert auc == pytest.approx(0.73)
    # One cached run per split, each under its own key.
    assert sorted(key.rsplit(" ", 1)[1] for key in trained) == ["split=0", "split=1", "split=2"]
    assert list(trained.values()) == splits


def test_the_kaggle_recipe_is_a_quick_grid_point_at_its_own_batch(sweep):
    # The sweep states rates for batch 1024 and the recipe for its own batch (256): the recipe must be
    # one of the grid's points once both sides' rates are scaled to that batch by the recipe's rule.
    recipe = load_config(SCRIPT.parents[1] / "configs" / "criteo_kaggle.toml")
    grid = sweep.GRIDS["quick"]()
    point = {**sweep.DEFAULTS, **grid[sweep.recipe_index(grid)]}
    assert sweep.describe(point) == "adagrad 0.1 / adam 0.008 / b256 w45%"
    # The sqrt rule from 1024 to 256 halves the point's rates: the file's own numbers.
    assert (recipe.optim.reference_batch_size, recipe.training.batch_size) == (256, 256)
    assert point["optim.reference_batch_size"] == 1024
    assert (recipe.optim.embedding_lr, recipe.optim.lr) == pytest.approx(
        (point["optim.embedding_lr"] / 2, point["optim.lr"] / 2)
    )
    assert (recipe.optim.embedding_optimizer, recipe.optim.dense_optimizer) == ("adagrad", "adam")


def test_the_recipe_at_another_batch_is_the_point_of_the_same_stated_rates(sweep, tmp_path):
    # The file's rates are stated for batch 256 and scale by the square root of the batch ratio: at
    # batch 512 they are the grid point that states the same rates at 1024 with batch 512.
    text = (SCRIPT.parents[1] / "configs" / "criteo_kaggle.toml").read_text()
    assert text.count("\nbatch_size = 256\n") == 1
    other = tmp_path / "recipe.toml"
    grid = sweep.GRIDS["quick"]()
    other.write_text(text.replace("\nbatch_size = 256\n", "\nbatch_size = 512\n"))
    assert sweep.describe(grid[sweep.recipe_index(grid, other)]) == "adagrad 0.1 / adam 0.008 / b512 w45%"
    # At batch 64 no point of the grid has the recipe's warmup and batch.
    other.write_text(text.replace("\nbatch_size = 256\n", "\nbatch_size = 64\n"))
    assert sweep.recipe_index(grid, other) is None


def test_held_out_data_sets_are_never_in_the_sets_that_choose(sweep):
    assert sweep.HELD_OUT and all(name in sweep.DATASETS for name in sweep.HELD_OUT)
    assert not set(sweep.HELD_OUT) & (set(sweep.DEFAULT_DATASETS) | set(sweep.QUICK_DATASETS))


def test_each_size_of_a_synthetic_data_set_has_its_own_directory(sweep, tmp_path, monkeypatch):
    # Runs are cached by --rows, so a second size in the same workdir must not train on the first's data.
    commands = []

    def fake_run(command, check):
        commands.append(command)
        if command[1] == "criteo":
            out = Path(command[command.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "manifest.json").write_text("{}")

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    prepare = sweep.DATASETS["synth-heldout-4e4"].prepare
    small, large = prepare(tmp_path, 200), prepare(tmp_path, 1000)
    assert small != large
    synth, criteo = commands[0::2], commands[1::2]
    assert [command[command.index("--rows-per-day") + 1] for command in synth] == ["40", "200"]
    # Each size's conversion reads its own synth output, which the oracle finds beside the prepared data.
    for prepared, made, converted in zip((small, large), synth, criteo, strict=True):
        assert (
            made[made.index("--out") + 1]
            == converted[converted.index("--input") + 1]
            == str(prepared.parent / "synth")
        )
        assert converted[converted.index("--out") + 1] == str(prepared)
    assert prepare(tmp_path, 200) == small and len(commands) == 4  # made once per size


def test_seed0_points_are_the_cached_seed_zero_points_of_one_data_set_and_size(sweep, tmp_path):
    runs = sweep.Sweep(tmp_path, 2)
    grid = sweep.GRIDS["quick"]()
    walked = {**grid[0], "optim.warmup_fraction": 0.0, "optim.warmup_steps": 0, "optim.lr": 1e-05}
    for point in (grid[3], walked):
        runs.results[runs.key("synth-heldout-4e4", 200, point)] = {}
    runs.results[runs.key("synth-heldout-4e4", 200, {**grid[5], "training.seed": 1})] = {}  # another seed
    runs.results[runs.key("synth-heldout-4e4", 2000, grid[6])] = {}  # another size
    runs.results[runs.key("synth-heldout-hashed", 200, grid[7])] = {}  # another data set
    runs.results[sweep.Sweep(tmp_path, 1).key("synth-heldout-4e4", 200, grid[8])] = {}  # another rank count
    runs.results[runs.key("synth-heldout-4e4", 200, grid[9]) + " split=0"] = {}  # a split
    points = runs.seed0_points("synth-heldout-4e4", 200)
    assert points == [grid[3], walked]
    # 0 and 0.0 are equal but not the same setting on a command line: the types come back too.
    assert {name: type(value) for name, value in points[1].items()} == {
        name: type(value) for name, value in walked.items()
    }
    # A data set whose name starts another's: each reads only its own runs.
    runs.results[runs.key("criteo-sample-5split", 0, grid[1])] = {}
    runs.results[runs.key("criteo-sample", 0, grid[2])] = {}
    assert runs.seed0_points("criteo-sample", 0) == [grid[2]]


def test_a_cache_key_that_does_not_read_back_is_named(sweep, tmp_path):
    runs = sweep.Sweep(tmp_path, 2)
    key = runs.key("synth-heldout-4e4", 200, {"optim.embedding_optimizer": "row wise"})
    runs.results[key] = {}
    with pytest.raises(ValueError, match="does not read back into its settings"):
        runs.seed0_points("synth-heldout-4e4", 200)


def test_add_recipe_trains_the_recipe_beside_a_grid_that_lacks_it(sweep, tmp_path, monkeypatch, capsys):
    recipe = sweep.quick_grid()[sweep.recipe_index(sweep.quick_grid())]
    assert sweep.recipe_index(sweep.full_grid()) is None
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    trained = []

    def fake_val_auc(self, dataset, rows, prepared, point):
        trained.append(point)
        self.test_aucs[self.key(dataset, rows, point)] = 0.70
        # The recipe 0.0099 below the best of the grid (its first point, 0.7499).
        return 0.74 if point == recipe else 0.75 - len(trained) / 1e4

    monkeypatch.setattr(sweep.Sweep, "val_auc", fake_val_auc)
    argv = ["--workdir", str(tmp_path), "--grid", "full", "--datasets", "movielens-100k"]
    assert sweep.main([*argv, "--add-recipe"]) == 0
    assert len(trained) == len(sweep.full_grid()) + 1 and trained[-1] == recipe
    assert "criteo_kaggle.toml is adagrad 0.1 / adam 0.008 / b256 w45%: val regret movielens-100k 0.0099" in (
        capsys.readouterr().out
    )
    trained.clear()
    assert sweep.main(argv) == 0
    assert len(trained) == len(sweep.full_grid())
    assert "criteo_kaggle.toml is not a point of this grid" in capsys.readouterr().out
