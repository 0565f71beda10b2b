"""The per-rank loader: disjoint, balanced, complete; eval sees every row once; order is reproducible."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from data_prep.manifest import load_manifest
from data_prep.schema import DENSE_COLUMNS, SPARSE_COLUMNS
from dlrm_dist.data import (
    Prefetcher,
    iter_eval_batches,
    iter_train_batches,
    list_row_groups,
    rank_row_ranges,
    train_steps_per_epoch,
)
from tests.conftest import features_of


def split_rows(data_dir, split) -> list[tuple]:
    manifest = load_manifest(data_dir)
    rows = []
    for entry in manifest["splits"][split]["files"]:
        table = pq.read_table(data_dir / entry["path"])
        dense = np.stack([table.column(c).to_numpy() for c in DENSE_COLUMNS], 1)
        sparse = np.stack([table.column(c).to_numpy() for c in SPARSE_COLUMNS], 1)
        rows += [
            (float(label), *d.tolist(), *s.tolist())
            for label, d, s in zip(table.column("label").to_numpy(), dense, sparse, strict=True)
        ]
    return rows


def batch_rows(batch, valid=None) -> list[tuple]:
    size = batch.labels.shape[0]
    valid = size if valid is None else valid
    sparse = batch.sparse_features.values().reshape(len(SPARSE_COLUMNS), size).T
    return [
        (float(batch.labels[i]), *batch.dense_features[i].tolist(), *sparse[i].tolist()) for i in range(valid)
    ]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_rank_ranges_are_disjoint_balanced_and_complete(prepared_sample, world_size):
    groups = list_row_groups(prepared_sample, load_manifest(prepared_sample), "train")
    covered = []
    sizes = []
    for rank in range(world_size):
        ranges = rank_row_ranges(groups, rank, world_size)
        sizes.append(sum(r.stop - r.start for r in ranges))
        covered += [(r.group.path, r.group.index, row) for r in ranges for row in range(r.start, r.stop)]
    assert len(covered) == len(set(covered)) == sum(g.rows for g in groups) == 6857
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 512), (2, 300), (3, 1000)])
def test_eval_covers_every_row_exactly_once(prepared_sample, world_size, batch_size):
    manifest = load_manifest(prepared_sample)
    for split in ("val", "test", "train"):
        groups = list_row_groups(prepared_sample, manifest, split)
        seen = []
        batch_counts = set()
        for rank in range(world_size):
            batches = list(
                iter_eval_batches(
                    groups,
                    rank,
                    world_size,
                    batch_size,
                    features=features_of(prepared_sample),
                )
            )
            batch_counts.add(len(batches))
            for batch, valid in batches:
                assert batch.labels.shape[0] == batch_size
                assert batch.sparse_features.lengths().tolist() == [1] * (26 * batch_size)
                seen += batch_rows(batch, valid)
        assert len(batch_counts) == 1, "every rank must run the same number of eval batches"
        assert sorted(seen) == sorted(split_rows(prepared_sample, split)), split


def test_eval_max_rows_takes_the_first_rows(prepared_sample):
    groups = list_row_groups(prepared_sample, load_manifest(prepared_sample), "train")
    seen = []
    for rank in range(2):
        for batch, valid in iter_eval_batches(
            groups,
            rank,
            2,
            128,
            max_rows=700,
            features=features_of(prepared_sample),
        ):
            seen += batch_rows(batch, valid)
    assert sorted(seen) == sorted(split_rows(prepared_sample, "train")[:700])


def test_train_batches_are_disjoint_equal_in_number_and_reproducible(prepared_sample):
    groups = list_row_groups(prepared_sample, load_manifest(prepared_sample), "train")
    world_size, batch_size = 2, 256
    steps = train_steps_per_epoch(groups, world_size, batch_size)
    assert steps == (6857 // 2) // 256
    features = features_of(prepared_sample)

    def rank_batches(rank: int, epoch: int) -> list:
        return list(
            iter_train_batches(
                groups,
                rank,
                world_size,
                batch_size,
                seed=3,
                epoch=epoch,
                shuffle_buffer=500,
                features=features,
            )
        )

    per_rank = [rank_batches(r, epoch=0) for r in range(2)]
    assert [len(b) for b in per_rank] == [steps, steps]
    rows = [row for batches in per_rank for batch in batches for row in batch_rows(batch)]
    all_rows = split_rows(prepared_sample, "train")
    assert len(rows) == steps * batch_size * world_size
    remaining = list(all_rows)
    for row in rows:
        remaining.remove(row)  # raises if a row is served twice or does not exist
    again = rank_batches(0, epoch=0)
    assert all(
        torch.equal(a.labels, b.labels) and torch.equal(a.dense_features, b.dense_features)
        for a, b in zip(again, per_rank[0], strict=True)
    )
    next_epoch = rank_batches(0, epoch=1)
    assert not torch.equal(next_epoch[0].dense_features, per_rank[0][0].dense_features)


def test_prefetcher_yields_everything_in_order_and_surfaces_errors():
    assert list(Prefetcher(iter(range(100)), depth=4)) == list(range(100))

    def failing():
        yield 1
        raise RuntimeError("reader broke")

    prefetcher = Prefetcher(failing(), depth=2)
    assert next(prefetcher) == 1
    with pytest.raises(RuntimeError, match="reader broke"):
        next(prefetcher)
