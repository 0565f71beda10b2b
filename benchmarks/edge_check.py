"""Steps past the grid edges that each data set's own winner sits on, to see whether its best lies outside.

`benchmarks/recipe_sweep.py` warns when a data set's val winner is the lowest or highest value its grid
line tried along some axis, or when the grid did not vary that axis around it at all: the data set's
best, against which regret is measured, may then lie outside the grid. This script takes each winner
and walks past each such edge (both ways along an axis not varied): one step beyond it along that axis
(rates, batch size and warmup steps x2 or /2, warmup share +/-15 points of the run, 0 to 95%: from a
share below 15% the step down is no warmup), and another
while each step still beats the last, `--max-steps` at most. A point that beats the winner by more than
`--min-gain` starts another round from it (`--rounds` at most), along the lines through it of the grid
and of the points tried. Every run goes through the workdir's cache (WORKDIR/results.json): a recorded
winner is trained again there, beside the steps from it, so those comparisons are between runs of one
trainer version; a winner read from a sweep in the cache shares the trainer of that sweep's runs.

Winners come from WORKDIR/results.json when it holds the whole quick grid for a data set (a sweep run
with the same --workdir, --rows and --nproc-per-node), and otherwise from `RECORDED_WINNERS`: the val
winners of the 90-point sweep of the README (200k synthetic rows, 2 ranks), whose cache did not outlive
its machine.

    .venv/bin/python benchmarks/edge_check.py [--workdir /tmp/recipe-sweep-multi] [--rows 200000]
        [--datasets a,b,...] [--nproc-per-node 2] [--max-steps 3] [--rounds 3] [--min-gain 0.0005]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

from recipe_sweep import (
    AXES,
    DATASETS,
    DEFAULTS,
    QUICK_DATASETS,
    SYNTH_DAYS,
    Sweep,
    describe,
    grid_point,
    quick_grid,
    warmup_share,
)

# The val winner of each quick-grid data set in the 90-point sweep of the README (the regret tables' 0.0000
# cells), and the edges the sweep printed for it.
RECORDED_WINNERS: dict[str, dict[str, object]] = {
    "synth-values-1e6": grid_point(("adagrad", 0.02), ("adam", 0.004), **warmup_share(0.1)),
    "synth-pairs-1e3": grid_point(
        ("adagrad", 0.1), ("adam", 0.008), **warmup_share(0.3), training__batch_size=256
    ),
    "synth-dense-weak": grid_point(
        ("adagrad", 0.05), ("adam", 0.002), **warmup_share(0.6), training__batch_size=256
    ),
    "criteo-sample-5split": grid_point(
        ("adagrad", 0.1), ("adam", 0.004), **warmup_share(0.6), training__batch_size=128
    ),
    "movielens-100k": grid_point(
        ("adagrad", 0.05), ("adam", 0.004), **warmup_share(0.6), training__batch_size=512
    ),
}
# Warmup shares move by this much of the run per step; the others double or halve.
WARMUP_STEP = 0.15


class Run(NamedTuple):
    """One row of the summary: a data set's winner (round 0, axis "winner") or a step past its edge."""

    dataset: str
    round: int
    axis: str
    direction: int
    point: str
    auc: float
    gain: float
    """val AUC above the first winner's"""


def edges(grid: list[dict[str, object]], winner: dict[str, object]) -> list[tuple[str, int]]:
    """(axis, direction) for each axis along which `winner` is the lowest (-1) or highest (+1) value
    that its grid line tried (the same lines as `recipe_sweep.edge_warnings`, except that the warmup share
    is no axis of a winner without one), and both directions of an axis along which the grid did not
    vary it at all."""
    full = [{**DEFAULTS, **point} for point in grid]
    here = {**DEFAULTS, **winner}
    found = []
    for axis in AXES:
        if axis == "optim.warmup_steps" and here["optim.warmup_fraction"]:
            continue
        if axis == "optim.warmup_fraction" and not here["optim.warmup_fraction"]:
            continue  # warmup in steps: the fraction is not its axis
        line = [point[axis] for point in full if all(point[k] == here[k] for k in point if k != axis)]
        if len(line) < 2:
            found += [(axis, -1), (axis, +1)]
            continue
        if here[axis] == min(line):
            found.append((axis, -1))
        if here[axis] == max(line):
            found.append((axis, +1))
    return found


def step(point: dict[str, object], axis: str, direction: int) -> dict[str, object] | None:
    """`point` one step along `axis` in `direction`, or None where that leaves the axis's range."""
    value = {**DEFAULTS, **point}[axis]
    if axis == "optim.warmup_fraction":
        # Down to no warmup at all (0) from a share below one step; never above 95% of the run.
        moved = round(max(value + direction * WARMUP_STEP, 0.0), 4)
        if moved == value or moved > 0.95:
            return None
    elif axis == "training.batch_size":
        moved = value * 2 if direction > 0 else value // 2
        if moved < 32:
            return None
    elif axis == "optim.warmup_steps":
        moved = value * 2 if direction > 0 else value // 2
        if moved < 1 or moved == value:  # no warmup doubles to no warmup
            return None
    else:
        moved = round(value * 2 if direction > 0 else value / 2, 6)
    return {**point, axis: moved}


def grid_winner(
    sweep: Sweep, name: str, rows: int, grid: list[dict[str, object]], splits: int | None = None
) -> dict[str, object] | None:
    """The data set's val winner over `grid` from the cache, or None when a point is missing.

    Args:
        splits: for a data set of several splits, how many; a point counts only with all of them cached
            (`Sweep.val_auc` scores their mean).
    """
    cached = []
    for point in grid:
        key = sweep.key(name, rows, point)
        if splits is None:
            runs = [sweep.results[key]] if key in sweep.results else []
        else:
            runs = [sweep.results.get(f"{key} split={index}") for index in range(splits)]
            runs = [] if None in runs else runs
        if not runs:
            return None
        cached.append(sum(result["val"]["auc"] for result in runs) / len(runs))
    return grid[max(range(len(grid)), key=cached.__getitem__)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recipe-sweep-multi"),
                        help="data sets, runs and results.json, shared with recipe_sweep.py")  # fmt: skip
    parser.add_argument("--rows", type=int, default=200_000, help="rows of each synthetic data set")
    parser.add_argument("--datasets", default=",".join(QUICK_DATASETS),
                        help=f"comma-separated subset of {', '.join(DATASETS)} (default: the five "
                        "quick-grid sets; any other needs a quick-grid sweep of it in --workdir)")  # fmt: skip
    parser.add_argument("--nproc-per-node", type=int, default=2, help="ranks per run")
    parser.add_argument("--max-steps", type=int, default=3, help="steps past each edge at most")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds at most: a point that beats the winner by more than --min-gain becomes "
                        "the winner of the next round, whose edges are walked in turn")  # fmt: skip
    parser.add_argument("--min-gain", type=float, default=0.0005,
                        help="val AUC a point must gain over the winner to start another round (default "
                        "0.0005; smaller gains are reported but within the runs' noise)")  # fmt: skip
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    for name in names:
        if name not in DATASETS:
            parser.error(f"--datasets: unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if args.max_steps < 1:
        parser.error(f"--max-steps: must be >= 1, got {args.max_steps}")
    if args.rounds < 1:
        parser.error(f"--rounds: must be >= 1, got {args.rounds}")
    if args.min_gain < 0:
        parser.error(f"--min-gain: must be >= 0, got {args.min_gain}")
    if args.rows < 10 * SYNTH_DAYS:
        parser.error(f"--rows: must be >= {10 * SYNTH_DAYS}, got {args.rows}")

    grid = quick_grid()
    sweep = Sweep(args.workdir, args.nproc_per_node)
    summary: list[Run] = []
    for name in names:
        prepared = DATASETS[name].prepare(args.workdir / name, args.rows)
        if prepared is None:
            print(f"skipping {name}: its input or its dlrm-prep command is not available")
            continue
        splits = len(prepared) if isinstance(prepared, list) else None
        winner = grid_winner(sweep, name, args.rows, grid, splits)
        source = "this workdir's sweep"
        if winner is None and name in RECORDED_WINNERS:
            winner, source = RECORDED_WINNERS[name], "the README's 90-point sweep"
        if winner is None:
            print(f"skipping {name}: no recorded winner, and {args.workdir} holds no quick-grid sweep of it")
            continue
        print(f"{name}: winner ({source}) {describe(winner)}", flush=True)
        first = best = sweep.val_auc(name, args.rows, prepared, winner)
        summary.append(Run(name, 0, "winner", 0, describe(winner), best, 0.0))
        tried: list[dict[str, object]] = [winner]
        for round_index in range(1, args.rounds + 1):
            # Lines through the winner run over the grid and every point tried so far.
            found = edges(grid + tried, winner)
            if not found:
                print("  no edge: every axis was tried on both sides")
            challenger, challenger_auc = winner, best
            for axis, direction in found:
                point, last = winner, best
                for _ in range(args.max_steps):
                    point = step(point, axis, direction)
                    if point is None:
                        break
                    auc = sweep.val_auc(name, args.rows, prepared, point)
                    tried.append(point)
                    summary.append(Run(name, round_index, axis, direction, describe(point), auc, auc - first))
                    if auc > challenger_auc:
                        challenger, challenger_auc = point, auc
                    if auc <= last:
                        break
                    last = auc
            if challenger_auc - best <= args.min_gain:
                break
            winner, best = challenger, challenger_auc
            if round_index < args.rounds:
                print(f"{name}: round {round_index + 1} from {describe(winner)} ({best:.4f})", flush=True)

    print("\n| data set | round | past edge | point | val AUC | vs the first winner |")
    print("|---|---|---|---|---|---|")
    for name, round_index, axis, direction, label, auc, gain in summary:
        edge = "(the winner)" if axis == "winner" else f"{axis} {'lower' if direction < 0 else 'higher'}"
        print(f"| {name} | {round_index} | {edge} | {label} | {auc:.4f} | {gain:+.4f} |")
    for name in dict.fromkeys(run.dataset for run in summary):
        top = max((run for run in summary if run.dataset == name), key=lambda run: run.auc)
        verdict = "holds" if top.gain <= 0 else f"beaten by {top.gain:.4f}, by {top.point}"
        print(f"{name}: the winner {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
