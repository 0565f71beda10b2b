"""What a resume on another layout costs: replaying the earlier ranks' shuffle buffers on row positions.

A resume on another world size or batch size recomputes which rows of the epoch are left
(`dlrm_dist.epoch_order.epoch_remainder`) and each new rank's picks from them. Nothing is read: the
row groups here are only sizes (Kaggle-sized by default, 45M rows in 180 groups of 250k). The
baseline, measured in the same run, is one `numpy` permutation of the epoch's rows: the least that any
exact reshuffle of the epoch would cost.

    .venv/bin/python benchmarks/resume_replay.py [--rows-per-group 250000 --groups 180]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dlrm_dist.epoch_order import (
    RowGroup,
    Segment,
    epoch_remainder,
    epoch_row_groups,
    interval_rows,
    rank_picks_and_steps,
    segment_steps,
)

# (world size, per-rank batch, shuffle buffer) of the checkpoint, and the new layout it resumes on.
CASES = [((8, 256, 16384), (3, 700)), ((2, 1024, 16384), (8, 128)), ((16, 4096, 262144), (8, 8192))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-group", type=int, default=250_000)
    parser.add_argument("--groups", type=int, default=180)
    args = parser.parse_args(argv)
    groups = [RowGroup(f"part-{i // 4}", i % 4, args.rows_per_group) for i in range(args.groups)]
    rows = sum(group.rows for group in groups)
    began = time.perf_counter()
    np.random.default_rng(0).permutation(rows)
    baseline = time.perf_counter() - began
    print(f"{rows:,} rows; baseline, one permutation of them: {baseline:.2f} s")
    for (world_size, batch_size, shuffle_buffer), (new_world, new_batch) in CASES:
        steps = segment_steps(rows, world_size, batch_size)
        cut = Segment(world_size, batch_size, shuffle_buffer, steps // 2)
        began = time.perf_counter()
        ordered = epoch_row_groups(groups, 0, 0)
        left = epoch_remainder(ordered, 0, 0, (cut,))
        replay = time.perf_counter() - began
        began = time.perf_counter()
        picks, new_steps = rank_picks_and_steps(ordered, 0, 0, 0, new_world, new_batch, (cut,))
        share = time.perf_counter() - began
        print(
            f"{world_size} ranks x {batch_size} (buffer {shuffle_buffer:,}) cut at step {steps // 2:,} of "
            f"{steps:,} -> {new_world} x {new_batch}: replay {replay:.2f} s ({replay / baseline:.1f}x the "
            f"baseline), {interval_rows(left):,} rows left in {len(left):,} intervals; one new rank's "
            f"picks {share:.2f} s ({len(picks)} row groups, {new_steps:,} steps)"
        )


if __name__ == "__main__":
    main()
