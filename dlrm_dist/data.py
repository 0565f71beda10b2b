"""Parquet shards -> per-rank batches (dense tensor, KeyedJaggedTensor of sparse ids, labels).

Which rows a rank reads: the split's row groups, listed from the Parquet footers in manifest order
(and, for training, permuted per epoch with the seed: the same permutation on every rank), form one
sequence of rows; rank r of W reads rows [r*N/W, (r+1)*N/W) of it. So the ranks' parts are disjoint,
cover the split, and differ in size by at most one row, whatever W is.

Training: rows go through a bounded shuffle buffer and come out in batches of the per-rank batch size;
every rank runs the same number of steps (a sharded model's forward is a collective), so each epoch
drops the few rows past the last full batch of the smallest rank.

Evaluation: every row exactly once. Each rank runs the same number of batches, so the last batches
are padded to full size with copies of a real row, and each batch carries how many of its rows count.

Which columns: the data set's feature schema (`data_prep.features.FeatureSchema`, from the manifest)
names the label, the dense columns (any number, zero included) and the categorical ones, in order; the
KeyedJaggedTensor's keys are the categorical names. When any categorical feature is multi-hot (a
`list<int32>` bag of ids per row), the rows' categorical part stays a pyarrow table, so shuffling,
padding and batching are `take`/`slice`/`concat` on the bags, and the KeyedJaggedTensor is built
key-major from the bag lengths (1 for a one-hot column beside them) and the concatenated ids. All
one-hot data keeps its numpy [F, B] fast path, every length 1.

The reading, shuffling and batch assembly run in a background thread, `prefetch` batches ahead of
the model; pyarrow and numpy release the GIL for the heavy parts.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_prep.features import FeatureSchema
from data_prep.manifest import load_manifest
from dlrm_dist.epoch_order import (
    Pick,
    RowGroup,
    Segment,
    ShuffleBuffer,
    epoch_remainder,
    epoch_row_groups,
    interval_rows,
    rank_picks_and_steps,
    segment_rng,
    segment_steps,
)


class DataError(ValueError):
    """Prepared data that cannot be read: a missing or damaged shard (the message names the file)."""


@dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of one row group."""

    group: RowGroup
    start: int
    stop: int


def read_manifest(data_dir: str | Path) -> dict:
    """`data_prep.manifest.load_manifest`, with a missing directory or file as a `DataError` naming it."""
    if not Path(data_dir).is_dir():
        raise DataError(f"data.path: {data_dir} is not a directory; pass --data DIR written by dlrm-prep")
    try:
        return load_manifest(data_dir)
    except FileNotFoundError as error:
        raise DataError(str(error)) from None
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{Path(data_dir) / 'manifest.json'}: cannot be read ({error})") from None


def list_row_groups(data_dir: str | Path, manifest: dict, split: str) -> list[RowGroup]:
    """The split's row groups in manifest order, sizes read from the Parquet footers.

    Reading every footer up front is also the start-up check of the shards: a missing, truncated or
    overwritten file stops here with a `DataError` naming it, before any training.
    """
    groups = []
    for entry in manifest["splits"][split]["files"]:
        path = str(Path(data_dir) / entry["path"])
        try:
            metadata = pq.ParquetFile(path).metadata
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"{path}: not a readable Parquet shard ({error})") from None
        groups.extend(
            RowGroup(path, index, metadata.row_group(index).num_rows)
            for index in range(metadata.num_row_groups)
        )
    return groups


def rank_row_ranges(groups: list[RowGroup], rank: int, world_size: int) -> list[RowRange]:
    """Rank `rank`'s contiguous share [r*N/W, (r+1)*N/W) of the rows of `groups`, in their order."""
    total = sum(group.rows for group in groups)
    begin, end = rank * total // world_size, (rank + 1) * total // world_size
    ranges, offset = [], 0
    for group in groups:
        start, stop = max(begin, offset), min(end, offset + group.rows)
        if start < stop:
            ranges.append(RowRange(group, start - offset, stop - offset))
        offset += group.rows
    return ranges


def _read_group(group: RowGroup) -> pa.Table:
    try:
        # Decoded on the reading thread alone: pyarrow's own pool would take the cores from the training
        # thread's compute (on 2 CPU cores, 49.7k -> 52.2k samples/s at the criteo_kaggle shapes, mean
        # of 3 alternating runs of benchmarks/train_throughput.py's 1-rank command, 60 steps).
        return pq.ParquetFile(group.path).read_row_group(group.index, use_threads=False)
    except (OSError, pa.ArrowException) as error:
        # Damage past the footer (checked at start) only shows when the pages are decoded.
        raise DataError(f"{group.path}: cannot read row group {group.index} ({error})") from None


def _read_range(row_range: RowRange) -> pa.Table:
    return _read_group(row_range.group).slice(row_range.start, row_range.stop - row_range.start)


def _read_pick(pick: Pick) -> pa.Table:
    table = _read_group(pick.group)
    if isinstance(pick.rows, slice):
        return table.slice(pick.rows.start, pick.rows.stop - pick.rows.start)
    return table.take(pa.array(pick.rows, pa.int64()))


# One-hot: [F, B] int32 ids. Any multi-hot: a table of the F categorical columns, one row per sample.
Sparse = np.ndarray | pa.Table
# (dense [B, num_dense] float32, sparse, labels [B] float32) of some rows.
Columns = tuple[np.ndarray, Sparse, np.ndarray]


def _columns(table: pa.Table, features: FeatureSchema) -> Columns:
    if features.dense:
        dense = np.stack([table.column(name).to_numpy() for name in features.dense], axis=1)
    else:
        dense = np.zeros((table.num_rows, 0), np.float32)
    names = list(features.categorical_names)
    if features.any_multi_hot:
        sparse = table.select(names).combine_chunks()
    else:
        sparse = np.stack([table.column(name).to_numpy() for name in names], axis=0)
    labels = table.column(features.label).to_numpy().astype(np.float32)
    return dense, sparse, labels


def _multi_hot_features(bags: pa.Table) -> KeyedJaggedTensor:
    """The KJT of a table of categorical columns: key-major, all of the first column's bags, then the next.

    A `list<int32>` column gives each row's bag; a one-hot `int32` column a bag of one id per row.
    """
    lengths, values = [], []
    for name in bags.column_names:
        column = bags.column(name).combine_chunks()
        if pa.types.is_list(column.type):
            lengths.append(pc.list_value_length(column).to_numpy())
            values.append(column.flatten().to_numpy())
        else:
            lengths.append(np.ones(len(column), np.int32))
            values.append(column.to_numpy())
    return KeyedJaggedTensor(
        keys=list(bags.column_names),
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
    )


def make_batch(dense: np.ndarray, sparse: Sparse, labels: np.ndarray, keys: list[str]) -> Batch:
    """Builds a `Batch` from [B, num_dense] dense, the sparse part of `Columns` and [B] labels.

    Args:
        dense: [B, num_dense] dense features.
        sparse: [F, B] one-hot ids, or a table of the F categorical columns with B rows.
        labels: [B] labels.
        keys: the F categorical feature names (the KJT's keys), in the order of `sparse`.

    Returns:
        The batch; its KeyedJaggedTensor has one bag per (key, sample), key-major, of length 1 for
        one-hot features and the bag's length for multi-hot ones.
    """
    if isinstance(sparse, pa.Table):
        sparse_features = _multi_hot_features(sparse.select(keys))
    else:
        num_features, batch_size = sparse.shape
        sparse_features = KeyedJaggedTensor(
            keys=list(keys),
            values=torch.from_numpy(np.ascontiguousarray(sparse).reshape(-1).astype(np.int64)),
            lengths=torch.ones(num_features * batch_size, dtype=torch.int32),
        )
    return Batch(
        dense_features=torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
        sparse_features=sparse_features,
        labels=torch.from_numpy(labels),
    )


def _concat(parts: list[Columns]) -> Columns:
    sparse_parts = [part[1] for part in parts]
    return (
        np.concatenate([part[0] for part in parts]),
        pa.concat_tables(sparse_parts)
        if isinstance(sparse_parts[0], pa.Table)
        else np.concatenate(sparse_parts, axis=1),
        np.concatenate([part[2] for part in parts]),
    )


def _take(columns: Columns, rows: np.ndarray | slice) -> Columns:
    dense, sparse, labels = columns
    if not isinstance(sparse, pa.Table):
        return dense[rows], sparse[:, rows], labels[rows]
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(sparse.num_rows)
        taken = sparse.slice(start, max(stop - start, 0))
    else:
        taken = sparse.take(pa.array(rows, pa.int64()))
    return dense[rows], taken, labels[rows]


def train_steps_per_epoch(groups: list[RowGroup], world_size: int, batch_size_per_rank: int) -> int:
    """Steps every rank runs in a whole epoch: full batches of the smallest rank's share."""
    return segment_steps(sum(group.rows for group in groups), world_size, batch_size_per_rank)


def train_steps_left(
    groups: list[RowGroup], world_size: int, batch_size_per_rank: int, seed: int, epoch: int,
    earlier: Sequence[Segment] = (),
) -> int:  # fmt: skip
    """Steps every rank runs in the epoch's current segment: all of it, or what `earlier` left."""
    if not earlier:
        return train_steps_per_epoch(groups, world_size, batch_size_per_rank)
    remaining = epoch_remainder(epoch_row_groups(groups, seed, epoch), seed, epoch, earlier)
    return segment_steps(interval_rows(remaining), world_size, batch_size_per_rank)


def iter_train_batches(
    groups: list[RowGroup],
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle_buffer: int,
    *,
    features: FeatureSchema,
    earlier: Sequence[Segment] = (),
) -> Iterator[Batch]:
    """This rank's training batches of one epoch (or of what is left of it), in a deterministic order.

    Args:
        groups: the train split's row groups (`list_row_groups`).
        rank: this rank.
        world_size: the number of ranks.
        batch_size: rows per batch on this rank.
        seed: with `epoch` and `rank`, what the row-group permutation and the shuffle buffer draw from.
        epoch: the epoch.
        shuffle_buffer: rows kept back and mixed with each new row group (0: no row shuffle).
        features: the data set's schema: which columns to read.
        earlier: segments of this epoch already trained on other layouts (`dlrm_dist.epoch_order`);
            the batches then cover only the rows they did not emit.
    """
    keys = list(features.categorical_names)
    rank_picks, steps = rank_picks_and_steps(
        epoch_row_groups(groups, seed, epoch), seed, epoch, rank, world_size, batch_size, earlier
    )
    buffer: ShuffleBuffer[Columns] = ShuffleBuffer(
        batch_size, shuffle_buffer, steps, segment_rng(seed, epoch, rank, len(earlier)), _concat, _take
    )
    for columns in buffer.batches(rank_picks, lambda pick: _columns(_read_pick(pick), features)):
        yield make_batch(*columns, keys)


def eval_batches_per_rank(groups: list[RowGroup], world_size: int, batch_size: int) -> int:
    largest_share = -(-sum(group.rows for group in groups) // world_size)
    return -(-largest_share // batch_size)


def iter_eval_batches(
    groups: list[RowGroup],
    rank: int,
    world_size: int,
    batch_size: int,
    max_rows: int = 0,
    *,
    features: FeatureSchema,
) -> Iterator[tuple[Batch, int]]:
    """This rank's evaluation batches as (batch, rows that count); every row of the split exactly once.

    All ranks yield `eval_batches_per_rank` batches of exactly `batch_size` rows; rows past the end of
    this rank's share repeat its last real row (or row 0 of the split if it has none) and do not count.

    Args:
        groups: the split's row groups.
        rank: this rank.
        world_size: the number of ranks.
        batch_size: rows per batch on this rank.
        max_rows: evaluate only the split's first rows (0: all).
        features: the data set's schema: which columns to read.
    """
    if max_rows:
        groups = _first_rows(groups, max_rows)
    num_batches = eval_batches_per_rank(groups, world_size, batch_size)
    range_iter = iter(rank_row_ranges(groups, rank, world_size))
    keys = list(features.categorical_names)
    filler = _columns(_read_range(RowRange(groups[0], 0, 1)), features) if groups else None
    pending: list[Columns] = []
    pending_rows = 0
    for _ in range(num_batches):
        while pending_rows < batch_size and (row_range := next(range_iter, None)) is not None:
            pending.append(_columns(_read_range(row_range), features))
            pending_rows += row_range.stop - row_range.start
        columns = _concat(pending) if pending else filler
        valid = min(batch_size, pending_rows)
        if valid:
            filler = _take(columns, slice(valid - 1, valid))
        padding = _take(filler, np.zeros(batch_size - valid, np.int64))
        yield make_batch(*_concat([_take(columns, slice(0, valid)), padding]), keys), valid
        pending = [_take(columns, slice(valid, None))] if pending_rows > valid else []
        pending_rows -= valid


def _first_rows(groups: list[RowGroup], max_rows: int) -> list[RowGroup]:
    kept, total = [], 0
    for group in groups:
        if total >= max_rows:
            break
        kept.append(RowGroup(group.path, group.index, min(group.rows, max_rows - total)))
        total += kept[-1].rows
    return kept


class Prefetcher:
    """Runs an iterator in a background thread, `depth` items ahead, and times how long the consumer waits.

    Args:
        iterator: what to run ahead (batches).
        depth: how many items may wait in the queue.
    """

    _END = object()

    def __init__(self, iterator: Iterator, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.wait_seconds = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(iterator,), daemon=True, name="batch-prefetch"
        )
        self._thread.start()

    def _run(self, iterator: Iterator) -> None:
        # One intra-op thread here (the setting is per thread; the training thread keeps its own). A
        # torch op that runs in parallel from this thread starts a second OpenMP team beside the training
        # thread's, and from then on fbgemm's CPU table backward ran 5x slower (2.4 -> 13 ms a step at the
        # criteo_kaggle shapes on 2 cores): the whole step went from 34 to 53 ms.
        torch.set_num_threads(1)
        try:
            for item in iterator:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(self._END)
        except BaseException as error:  # surfaced in the consumer's thread, with its traceback
            self._queue.put(error)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        started = time.perf_counter()
        item = self._queue.get()
        self.wait_seconds += time.perf_counter() - started
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
