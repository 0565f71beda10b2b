"""How much a recipe sweep's AUC readings move with the training seed alone, on one data set.

A sweep reads each grid point once, with `training.seed = 0`, so the best of its points on one data set
is partly the luckiest seed. This trains `configs/criteo_kaggle.toml`'s grid point and the data set's
own val winner (over the quick grid in WORKDIR's cache when that holds every point for the data set, else
`edge_check.RECORDED_WINNERS`) with `--seeds` seeds each (the data and its split stay
fixed; the seed draws the initial weights and the batch order) and prints the mean and standard
deviation of val and test AUC. Runs are cached with the sweep's (WORKDIR/results.json), each seed under its own key:
seed 0 trains again what the sweep's own run trained, under another key.

With `--top K` it asks instead how far the recipe is from the data set's best once the seed's luck is
taken out. Every point the cache holds a seed-0 run of (the grid's, an edge walk's) is ranked by that
run's val AUC and by its test AUC; the top K of each (and any tied with the K-th) and the recipe train
seeds 1..N-1, seeds that chose nothing, so their means carry no winner's curse. The recipe's regret is
its mean below the best other candidate's mean, on val and on test. Two biases remain, opposite ways:
the best of the candidates' means is a maximum over noisy means (the regret errs high), and a point
outside the top K by its one noisy seed-0 reading is never read again, though its mean might be the
best (the regret errs low).

    .venv/bin/python benchmarks/seed_spread.py [--workdir /tmp/recipe-sweep-multi] [--dataset movielens-100k]
        [--seeds 5] [--rows 200000] [--nproc-per-node 2] [--best-test | --top K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

from edge_check import RECORDED_WINNERS, grid_winner
from recipe_sweep import DATASETS, DEFAULTS, RECIPE_FILE, Sweep, describe, quick_grid, recipe_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recipe-sweep-multi"),
                        help="data sets, runs and results.json, shared with recipe_sweep.py")  # fmt: skip
    parser.add_argument("--dataset", default="movielens-100k",
                        help=f"one of {', '.join(DATASETS)}")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=5, help="training seeds 0..N-1 (default 5)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of a synthetic data set")
    parser.add_argument("--nproc-per-node", type=int, default=2, help="ranks per run")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--best-test", action="store_true",
                        help="also the quick-grid point with the best seed-0 test AUC in WORKDIR's cache: "
                        "whether its lead over the recipe there is more than its seed's")  # fmt: skip
    chosen.add_argument("--top", type=int, metavar="K",
                        help="the top K seed-0 points by val AUC and by test AUC, and the recipe, each with "
                        "fresh seeds 1..N-1: the recipe's regret without the seed's luck")  # fmt: skip
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds: a spread needs >= 2 seeds, got {args.seeds}")
    if args.top is not None and args.seeds < 3:
        parser.error(f"--seeds: --top needs >= 2 fresh seeds (--seeds >= 3), got {args.seeds}")
    if args.top is not None and args.top < 1:
        parser.error(f"--top: must be >= 1, got {args.top}")
    if args.dataset not in DATASETS:
        parser.error(f"--dataset: unknown data set {args.dataset!r}; known: {', '.join(DATASETS)}")
    grid = quick_grid()
    index = recipe_index(grid)
    if index is None:
        parser.error(f"{RECIPE_FILE} is not a point of the quick grid: nothing to compare")
    prepared = DATASETS[args.dataset].prepare(args.workdir / args.dataset, args.rows)
    if prepared is None:
        print(f"{args.dataset}: its input or its dlrm-prep command is not available")
        return 1
    if isinstance(prepared, list):
        parser.error(f"--dataset: {args.dataset} has no test rows (several splits); pick another")
    sweep = Sweep(args.workdir, args.nproc_per_node)
    if args.top is not None:
        return top_regret(sweep, args.dataset, args.rows, prepared, grid[index], args.top, args.seeds)
    # The data sets of several splits are refused above, so this one has a single split.
    winner = grid_winner(sweep, args.dataset, args.rows, grid) or RECORDED_WINNERS.get(args.dataset)
    if winner is None:
        parser.error(
            f"--dataset: {args.dataset} has no recorded winner and {args.workdir} no quick-grid sweep of it; "
            f"run benchmarks/recipe_sweep.py --grid quick --datasets {args.dataset} with this --workdir first"
        )
    points = {"recipe": grid[index], f"{args.dataset}'s val winner": winner}
    if args.best_test:
        keys = [sweep.key(args.dataset, args.rows, point) for point in grid]
        if not all(key in sweep.results for key in keys):
            parser.error(f"--best-test: {args.workdir} holds no whole quick-grid sweep of {args.dataset}")
        best = max(range(len(grid)), key=lambda i: sweep.results[keys[i]]["test"]["auc"])
        points["the best seed-0 test AUC"] = grid[best]
    rows = []
    for label, point in points.items():
        vals, tests = [], []
        for seed in range(args.seeds):
            seeded = {**point, "training.seed": seed}
            vals.append(sweep.val_auc(args.dataset, args.rows, prepared, seeded))
            tests.append(sweep.test_aucs[sweep.key(args.dataset, args.rows, seeded)])
        rows.append(
            f"| {label}: {describe(point)} | {statistics.mean(vals):.4f} | {statistics.stdev(vals):.4f} | "
            f"{statistics.mean(tests):.4f} | {statistics.stdev(tests):.4f} | "
            f"{' / '.join(f'{value:.4f}' for value in tests)} |"
        )
    print(f"\n{args.dataset}, {args.seeds} training seeds each:")
    print("| point | val AUC mean | sd | test AUC mean | sd | test AUC per seed |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


class Readings(NamedTuple):
    """One candidate's AUCs from the fresh seeds, in seed order."""

    val: list[float]
    test: list[float]


def top_regret(
    sweep: Sweep, dataset: str, rows: int, prepared: Path, recipe: dict[str, object], top: int, seeds: int
) -> int:
    """--top: the recipe's regret against the best of the top seed-0 points, all read by fresh seeds.

    Args:
        prepared: the data set's prepared directory (one split).
        recipe: the recipe's point, as the quick grid states it.
        top: how many points to take by each seed-0 reading (val, test), and every point tied with the last.
        seeds: seeds 1..seeds-1 read each candidate.

    Returns:
        0, or 1 when the cache lacks the seed-0 runs to rank.
    """

    def trained(point: dict[str, object]) -> tuple:
        """What a run trains: two spellings of one run (a walk's step down to no warmup names
        optim.warmup_fraction=0.0, the grid's points leave it out) are one candidate."""
        return tuple(sorted({**DEFAULTS, **point}.items()))

    distinct: dict[tuple, dict[str, object]] = {}
    for point in sweep.seed0_points(dataset, rows):
        # The shorter spelling (the grid's) stands for both, so that seeds cached under it are found.
        if trained(point) not in distinct or len(point) < len(distinct[trained(point)]):
            distinct[trained(point)] = point
    if trained(recipe) not in distinct:
        print(f"{dataset}: {sweep.work} holds no seed-0 run of the recipe ({describe(recipe)}) at "
              f"{sweep.nproc_per_node} ranks; run benchmarks/recipe_sweep.py --grid quick --datasets {dataset} "
              "with this --workdir and --nproc-per-node first")  # fmt: skip
        return 1
    candidates = list(distinct.values())
    mine = candidates.index(distinct[trained(recipe)])
    seed0 = [sweep.results[sweep.key(dataset, rows, point)] for point in candidates]
    chosen_as: dict[int, list[str]] = {mine: ["recipe"]}
    for split in ("val", "test"):
        ranked = sorted(range(len(candidates)), key=lambda index: seed0[index][split]["auc"], reverse=True)
        last = seed0[ranked[min(top, len(ranked)) - 1]][split]["auc"]
        for rank, index in enumerate(ranked, start=1):
            if seed0[index][split]["auc"] < last:
                break
            chosen_as.setdefault(index, []).append(f"{split} #{rank}")
    print(
        f"{dataset}: {len(chosen_as)} candidates of {len(candidates)} points read, seeds 1..{seeds - 1}",
        flush=True,
    )
    fresh: dict[int, Readings] = {}
    for index in chosen_as:
        readings = Readings([], [])
        for seed in range(1, seeds):
            seeded = {**candidates[index], "training.seed": seed}
            readings.val.append(sweep.val_auc(dataset, rows, prepared, seeded))
            readings.test.append(sweep.test_aucs[sweep.key(dataset, rows, seeded)])
        fresh[index] = readings
    print(f"\n{dataset}: seed-0 readings, and the means of seeds 1..{seeds - 1}")
    print("| point | chosen as | seed-0 val | val mean | sd | seed-0 test | test mean | sd |")
    print("|---|---|---|---|---|---|---|---|")
    for index in sorted(chosen_as, key=lambda index: statistics.mean(fresh[index].val), reverse=True):
        readings = fresh[index]
        print(f"| {describe(candidates[index])} | {', '.join(chosen_as[index])} | {seed0[index]['val']['auc']:.4f} | "
              f"{statistics.mean(readings.val):.4f} | {statistics.stdev(readings.val):.4f} | "
              f"{seed0[index]['test']['auc']:.4f} | {statistics.mean(readings.test):.4f} | "
              f"{statistics.stdev(readings.test):.4f} |")  # fmt: skip
    others = [index for index in chosen_as if index != mine]
    for split in ("val", "test"):
        mean = {index: statistics.mean(getattr(fresh[index], split)) for index in chosen_as}
        best = max(others, key=mean.__getitem__, default=None)
        if best is None:
            print(f"the recipe is the only candidate on {split}")
            continue
        gap = mean[best] - mean[mine]
        against = f"{describe(candidates[best])}, {mean[best]:.4f}"
        if gap > 0:
            print(f"the recipe's {split} regret over fresh seeds: {gap:.4f} (below {against})")
        else:
            print(f"the recipe's {split} regret over fresh seeds: 0 (it leads the best other candidate, "
                  f"{against}, by {-gap:.4f})")  # fmt: skip
    # The test rows read at the point that the fresh val means would choose: no test reading chose it.
    val_winner = max(chosen_as, key=lambda index: statistics.mean(fresh[index].val))
    gap = statistics.mean(fresh[val_winner].test) - statistics.mean(fresh[mine].test)
    print(
        f"its test mean below that of the best fresh val mean's point ({describe(candidates[val_winner])}): {gap:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
