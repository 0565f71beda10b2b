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
run's val AUC and by its test AUC; the top K of each and the recipe train seeds 1..N-1, seeds that
chose nothing, so their means carry no winner's curse. The recipe's regret is its mean below the best
candidate's mean, on val and on test. The best of the candidates' means is still a maximum over noisy
means, so this regret errs high, if anything.

    .venv/bin/python benchmarks/seed_spread.py [--workdir /tmp/recipe-sweep-multi] [--dataset movielens-100k]
        [--seeds 5] [--rows 200000] [--nproc-per-node 2] [--best-test | --top K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from edge_check import RECORDED_WINNERS, grid_winner
from recipe_sweep import DATASETS, RECIPE_FILE, Sweep, describe, quick_grid, recipe_index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recipe-sweep-multi"),
                        help="data sets, runs and results.json, shared with recipe_sweep.py")  # fmt: skip
    parser.add_argument("--dataset", default="movielens-100k",
                        help=f"one of {', '.join(DATASETS)}")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=5, help="training seeds 0..N-1 (default 5)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of a synthetic data set")
    parser.add_argument("--nproc-per-node", type=int, default=2, help="ranks per run")
    parser.add_argument("--best-test", action="store_true",
                        help="also the quick-grid point with the best seed-0 test AUC in WORKDIR's cache: "
                        "whether its lead over the recipe there is more than its seed's")  # fmt: skip
    parser.add_argument("--top", type=int, metavar="K",
                        help="the top K seed-0 points by val AUC and by test AUC, and the recipe, each with "
                        "fresh seeds 1..N-1: the recipe's regret without the seed's luck")  # fmt: skip
    args = parser.parse_args(argv)
    if args.top is not None and args.best_test:
        parser.error("--top: already holds the best seed-0 test point; drop --best-test")
    if args.top is not None and args.top < 1:
        parser.error(f"--top: must be >= 1, got {args.top}")
    if args.top is not None and args.seeds < 3:
        parser.error(f"--seeds: --top needs >= 2 fresh seeds (--seeds >= 3), got {args.seeds}")
    if args.dataset not in DATASETS:
        parser.error(f"--dataset: unknown data set {args.dataset!r}; known: {', '.join(DATASETS)}")
    if args.seeds < 2:
        parser.error(f"--seeds: a spread needs >= 2 seeds, got {args.seeds}")
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
        return _top(sweep, args, grid[index], prepared)
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


def _top(sweep: Sweep, args: argparse.Namespace, recipe: dict[str, object], prepared: Path) -> int:
    """--top: the recipe's regret against the best of the top seed-0 points, all read by fresh seeds."""
    read = sweep.points_read(args.dataset, args.rows)

    def key(point: dict[str, object]) -> str:
        return sweep.key(args.dataset, args.rows, point)

    if not read:
        print(f"{args.dataset}: {args.workdir} holds no seed-0 run of it at {args.rows} rows; run "
              f"benchmarks/recipe_sweep.py --grid quick --datasets {args.dataset} with this --workdir first")  # fmt: skip
        return 1
    by_key = {key(point): point for point in read}
    seed0 = {name: sweep.results[name] for name in by_key}
    recipe_key = key(recipe)
    if recipe_key not in seed0:
        print(f"{args.dataset}: {args.workdir} holds no seed-0 run of the recipe ({describe(recipe)})")
        return 1
    chosen_by: dict[str, list[str]] = {recipe_key: ["recipe"]}
    for split in ("val", "test"):
        ranked = sorted(seed0, key=lambda name: seed0[name][split]["auc"], reverse=True)
        for rank, name in enumerate(ranked[: args.top], start=1):
            chosen_by.setdefault(name, []).append(f"{split} #{rank}")
    print(f"{args.dataset}: {len(chosen_by)} candidates of {len(read)} points read, seeds 1..{args.seeds - 1}",
          flush=True)  # fmt: skip
    fresh: dict[str, tuple[list[float], list[float]]] = {}
    for name in chosen_by:
        vals, tests = [], []
        for seed in range(1, args.seeds):
            seeded = {**by_key[name], "training.seed": seed}
            vals.append(sweep.val_auc(args.dataset, args.rows, prepared, seeded))
            tests.append(sweep.test_aucs[key(seeded)])
        fresh[name] = vals, tests
    print(f"\n{args.dataset}: seed-0 readings, and the means of seeds 1..{args.seeds - 1}")
    print("| point | chosen as | seed-0 val | val mean | sd | seed-0 test | test mean | sd |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sorted(chosen_by, key=lambda name: statistics.mean(fresh[name][0]), reverse=True):
        vals, tests = fresh[name]
        print(f"| {describe(by_key[name])} | {', '.join(chosen_by[name])} | {seed0[name]['val']['auc']:.4f} | "
              f"{statistics.mean(vals):.4f} | {statistics.stdev(vals):.4f} | {seed0[name]['test']['auc']:.4f} | "
              f"{statistics.mean(tests):.4f} | {statistics.stdev(tests):.4f} |")  # fmt: skip
    for split, column in (("val", 0), ("test", 1)):
        best = max(chosen_by, key=lambda name: statistics.mean(fresh[name][column]))
        regret = statistics.mean(fresh[best][column]) - statistics.mean(fresh[recipe_key][column])
        print(f"the recipe's {split} regret over fresh seeds: {regret:.4f} (below {describe(by_key[best])}, "
              f"{statistics.mean(fresh[best][column]):.4f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
