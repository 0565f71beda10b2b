"""Tests of `benchmarks/edge_check.py`: which edges it walks past, its steps, and when a walk stops."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the script is executed, and edge_check
    # imports recipe_sweep by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    try:
        yield _load("recipe_sweep"), _load("edge_check")
    finally:
        sys.modules.pop("recipe_sweep", None)
        sys.modules.pop("edge_check", None)


def test_recorded_winners_are_grid_points_and_their_edges_are_the_sweeps_warnings(scripts):
    sweep, check = scripts
    grid = sweep.quick_grid()
    for name, winner in check.RECORDED_WINNERS.items():
        assert winner in grid, name
        found = check.edges(grid, winner)
        warnings = sweep.edge_warnings(grid, winner)
        at_end = {axis for axis, _ in found if sum(a == axis for a, _ in found) == 1}
        unvaried = {axis for axis, _ in found if sum(a == axis for a, _ in found) == 2}
        assert at_end == {m.split(" = ")[0] for m in warnings if "value tried" in m}, name
        assert unvaried == {m.split(" = ")[0] for m in warnings if "was not varied" in m}, name
        for axis, direction in found:
            if axis in at_end:
                side = "lowest" if direction < 0 else "highest"
                assert any(m.startswith(axis) and side in m for m in warnings), (name, axis)


def test_steps_double_or_halve_rates_and_batches_and_move_warmup_within_the_run(scripts):
    _, check = scripts
    winner = check.RECORDED_WINNERS["synth-pairs-1e3"]  # embedding 0.1, Adam 0.008, batch 256, warmup 30%
    assert check.step(winner, "optim.embedding_lr", +1)["optim.embedding_lr"] == 0.2
    assert check.step(winner, "optim.lr", -1)["optim.lr"] == 0.004
    assert check.step(winner, "training.batch_size", -1)["training.batch_size"] == 128
    lower = check.step(winner, "optim.warmup_fraction", -1)
    assert lower["optim.warmup_fraction"] == 0.15
    assert check.step(lower, "optim.warmup_fraction", -1)["optim.warmup_fraction"] == 0.0
    assert check.step(check.step(lower, "optim.warmup_fraction", -1), "optim.warmup_fraction", -1) is None
    # From a share below one step, down is no warmup.
    assert (
        check.step({**winner, "optim.warmup_fraction": 0.1}, "optim.warmup_fraction", -1)[
            "optim.warmup_fraction"
        ]
        == 0.0
    )
    assert check.step({**winner, "optim.warmup_fraction": 0.9}, "optim.warmup_fraction", +1) is None
    # Only the stepped axis changes.
    moved = check.step(winner, "optim.lr", +1)
    assert {k for k in winner if winner[k] != moved[k]} == {"optim.lr"}


def _fake_movielens(sweep, tmp_path, monkeypatch, auc):
    """Makes MovieLens a directory that is never read and each run's val AUC `auc(point)`; returns the list
    the trained points go into, in order."""
    monkeypatch.setitem(
        sweep.DATASETS, "movielens-100k", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared")
    )
    trained = []

    def fake_val_auc(self, dataset, rows, prepared, point):
        trained.append(point)
        return auc(point)

    monkeypatch.setattr(sweep.Sweep, "val_auc", fake_val_auc)
    return trained


def test_a_walk_goes_on_while_each_step_beats_the_last(scripts, tmp_path, monkeypatch, capsys):
    sweep, check = scripts
    # MovieLens's recorded winner (embedding 0.05) sits at the lowest embedding rate of its line; a
    # made-up AUC that peaks at 0.0125 makes the walk take 0.025 and 0.0125 and stop after 0.00625.
    trained = _fake_movielens(
        sweep,
        tmp_path,
        monkeypatch,
        lambda point: 0.7 - abs(math.log2(point["optim.embedding_lr"] / 0.0125)) / 100,
    )
    assert check.main(["--workdir", str(tmp_path), "--datasets", "movielens-100k", "--max-steps", "5"]) == 0
    rates = [point["optim.embedding_lr"] for point in trained]
    assert rates[:4] == [0.05, 0.025, 0.0125, 0.00625]
    # The warmup share was not varied around the winner: one step each way, neither better.
    assert [point["optim.warmup_fraction"] for point in trained[4:6]] == [0.45, 0.75]
    # 0.0125 beat the winner by more than --min-gain: a second round walks from it, both ways along
    # the dense rate, the batch and the warmup (its rate line, 0.00625 to 0.05, has it inside), and
    # none of those gains, so there is no third.
    second = trained[6:]
    assert all(point["optim.embedding_lr"] == 0.0125 for point in second)
    assert [p["optim.lr"] for p in second[:2]] == [0.002, 0.008]
    assert [p["training.batch_size"] for p in second[2:4]] == [256, 1024]
    assert [p["optim.warmup_fraction"] for p in second[4:]] == [0.45, 0.75]
    out = capsys.readouterr().out
    assert "movielens-100k: round 2 from adagrad 0.0125 / adam 0.004 / b512 w60% (0.7000)" in out
    assert (
        "| movielens-100k | 1 | optim.embedding_lr lower | adagrad 0.0125 / adam 0.004 / b512 w60% | 0.7000 | +0.0200 |"
        in out
    )
    assert "movielens-100k: the winner beaten by 0.0200, by adagrad 0.0125 / adam 0.004 / b512 w60%" in out


def test_a_winner_that_no_step_beats_holds(scripts, tmp_path, monkeypatch, capsys):
    sweep, check = scripts
    winner = check.RECORDED_WINNERS["movielens-100k"]
    trained = _fake_movielens(sweep, tmp_path, monkeypatch, lambda point: 0.7 if point == winner else 0.69)
    assert check.main(["--workdir", str(tmp_path), "--datasets", "movielens-100k"]) == 0
    # One step past each of its three edges (embedding rate lower, warmup both ways), and no second round.
    assert len(trained) == 4
    assert "movielens-100k: the winner holds" in capsys.readouterr().out


def test_an_unknown_data_set_is_one_clear_error(scripts, tmp_path, capsys):
    _, check = scripts
    with pytest.raises(SystemExit):
        check.main(["--workdir", str(tmp_path), "--datasets", "nope"])
    assert "--datasets: unknown data set 'nope'" in capsys.readouterr().err


def test_a_data_set_without_a_winner_is_skipped_with_a_reason(scripts, tmp_path, monkeypatch, capsys):
    sweep, check = scripts
    monkeypatch.setitem(
        sweep.DATASETS, "synth-default", sweep.DataSet("fake", lambda work, rows: tmp_path / "prepared", True)
    )
    assert check.main(["--workdir", str(tmp_path), "--datasets", "synth-default"]) == 0
    assert f"skipping synth-default: no recorded winner, and {tmp_path} holds no quick-grid sweep of it" in (
        capsys.readouterr().out
    )


def test_the_winner_from_a_cached_sweep_needs_every_point_and_every_split(scripts, tmp_path):
    sweep, check = scripts
    grid = sweep.quick_grid()[:3]
    runs = sweep.Sweep(tmp_path, nproc_per_node=2)
    for index, point in enumerate(grid):
        key = runs.key("movielens-100k", 0, point)
        runs.results[key] = {"val": {"auc": [0.70, 0.72, 0.71][index]}}
        for split in range(2):
            runs.results[f"{runs.key('criteo-sample-5split', 0, point)} split={split}"] = {
                "val": {"auc": [0.60, 0.66, 0.68][index] + split / 100}
            }
    assert check.grid_winner(runs, "movielens-100k", 0, grid) == grid[1]
    assert check.grid_winner(runs, "criteo-sample-5split", 0, grid, splits=2) == grid[2]
    # A third split the cache lacks: no winner rather than the mean of the two it has.
    assert check.grid_winner(runs, "criteo-sample-5split", 0, grid, splits=3) is None
    # A grid point the cache lacks: no winner.
    assert check.grid_winner(runs, "movielens-100k", 0, sweep.quick_grid()[:4]) is None


def test_no_warmup_in_steps_has_no_step_up(scripts):
    _, check = scripts
    point = {
        **check.RECORDED_WINNERS["synth-values-1e6"],
        "optim.warmup_fraction": 0.0,
        "optim.warmup_steps": 0,
    }
    assert check.step(point, "optim.warmup_steps", +1) is None
    assert (
        check.step({**point, "optim.warmup_steps": 100}, "optim.warmup_steps", +1)["optim.warmup_steps"]
        == 200
    )


def test_the_last_round_announces_no_next_one(scripts, tmp_path, monkeypatch, capsys):
    sweep, check = scripts
    trained = _fake_movielens(sweep, tmp_path, monkeypatch, lambda point: 0.8 - point["optim.embedding_lr"])
    assert check.main(["--workdir", str(tmp_path), "--datasets", "movielens-100k", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "round 2" not in out and "movielens-100k: the winner beaten by" in out
    assert len(trained) == 1 + 3 + 2  # the winner, three rates down, the warmup both ways
