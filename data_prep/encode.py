"""Categorical encoding: 32-bit raw values to embedding ids, by hashing or by a frequency vocabulary.

Hash mode maps a value v of column c to `v % buckets[c]`: no pass over the data, the MLPerf way of
capping tables (40M). Vocabulary mode gives the values seen at least K times in the train split
contiguous ids 1..n (in value order) and maps everything else, including values never seen in train,
to the reserved id 0.

Counting has to stay within bounded memory at Criteo 1TB scale, where some columns hold hundreds of
millions of distinct values. It happens in two steps:
  1. per chunk, the (value, count) pairs of each column, sorted by value, are spilled to disk
     (`count_chunk`), so no process ever holds more than one chunk's pairs;
  2. per column, the spilled pairs are summed one value-range partition at a time (`reduce_column`);
     the number of partitions is chosen so that one partition's pairs fit `memory_budget` bytes.
     Criteo's values are hashes, uniform over the 32-bit range, so equal ranges hold equal shares.
The kept values of a column are stored as one sorted uint32 array; encoding is a binary search in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ENCODINGS = ("hash", "vocab")
# Bytes one (value, count) pair costs during the reduce: the value (8 bytes in `dlrm-prep table`) and
# its uint32 count, gathered from the chunks, then `sum_counts`'s sort order (8), the sorted value and
# count and the count widened to int64, and the run boundaries.
_BYTES_PER_PAIR = 48
# Vocabularies up to this size are read whole rather than memory-mapped: each shard writer maps them
# afresh, and a fresh mapping faults its pages in one by one during the lookups. On the 1M-row table of
# `benchmarks/prep_throughput.py` (20 columns, up to 36k kept values) the lookups took 134 ms of a run
# read, 147 ms mapped (most of it was then the binary search, see `vocab_ids`).
_READ_VOCABULARY_BYTES = 16 << 20


def hash_ids(values: np.ndarray, buckets: int) -> np.ndarray:
    return (values % np.uint32(buckets)).astype(np.int32)


def load_vocabulary(path: str | Path) -> np.ndarray:
    """A column's sorted kept values: read into memory up to `_READ_VOCABULARY_BYTES`, memory-mapped
    beyond, so that a worker holds only the pages of a large vocabulary that its lookups touch."""
    if os.path.getsize(path) <= _READ_VOCABULARY_BYTES:
        return np.load(path)
    return np.load(path, mmap_mode="r")


def vocab_ids(values: np.ndarray, kept_values: np.ndarray) -> np.ndarray:
    """Ids of `values` in a sorted vocabulary: position + 1 when present, else 0."""
    if len(kept_values) == 0:
        return np.zeros(len(values), np.int32)
    # The values are searched in sorted order, then put back: each search then starts where the last
    # one ended (numpy's binary search does), and neighbouring searches walk the same cache lines of the
    # vocabulary. 16k values of a chunk's dictionary in a 36k-value vocabulary: 0.65 ms, sort included,
    # against 1.5 ms in their own order.
    order = np.argsort(values)
    positions = np.empty(len(values), np.int64)
    positions[order] = np.searchsorted(kept_values, values[order])
    found = kept_values[np.minimum(positions, len(kept_values) - 1)] == values
    return np.where(found, positions + 1, 0).astype(np.int32)


def count_chunk(columns: list[np.ndarray], out_prefix: Path, value_dtype: type = np.uint32) -> None:
    """Writes the sorted (value, count) pairs of each column's values (see `spill_counts`).

    `value_dtype` is uint32 for Criteo's hex values, uint64 for `dlrm-prep table`'s hashed strings.
    """
    spill_counts([np.unique(column, return_counts=True) for column in columns], out_prefix, value_dtype)


def sum_counts(
    values: np.ndarray, counts: np.ndarray, sorted_runs: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) pairs with repeated values, as the sorted distinct values and their summed counts
    (int64).

    `sorted_runs`: the pairs are a concatenation of runs sorted by value (one per chunk), which a stable
    sort (timsort) merges in far fewer steps than a sort of shuffled values takes.
    """
    order = np.argsort(values, kind="stable" if sorted_runs else None)
    ordered = values[order]
    if len(ordered) == 0:
        return ordered, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.add.reduceat(counts[order].astype(np.int64), starts)


def spill_counts(pairs: list[tuple[np.ndarray, np.ndarray]], out_prefix: Path, value_dtype: type) -> None:
    """Writes each column's (value, count) pairs, sorted by value with distinct values, as
    `<prefix>.values.npy` / `.counts.npy`.

    `<prefix>.offsets.npy` holds where each column's pairs start; the three files are written under
    temporary names and renamed, the offsets last, so a present offsets file means a complete count.
    """
    values_per_column = [values.astype(value_dtype) for values, _ in pairs]
    counts_per_column = [counts.astype(np.uint32) for _, counts in pairs]
    offsets = np.zeros(len(pairs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(v) for v in values_per_column])
    for suffix, array in (
        ("values", np.concatenate(values_per_column) if pairs else np.zeros(0, value_dtype)),
        ("counts", np.concatenate(counts_per_column) if pairs else np.zeros(0, np.uint32)),
        ("offsets", offsets),
    ):
        temporary = out_prefix.with_name(out_prefix.name + f".{suffix}.tmp.npy")
        np.save(temporary, array)
        temporary.rename(out_prefix.with_name(out_prefix.name + f".{suffix}.npy"))


def count_is_complete(out_prefix: Path) -> bool:
    return out_prefix.with_name(out_prefix.name + ".offsets.npy").exists()


def _load(prefix: Path, suffix: str) -> np.ndarray:
    return np.load(prefix.with_name(prefix.name + f".{suffix}.npy"), mmap_mode="r")


def count_slices(count_prefixes: list[Path], columns: list[int]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Each column's (values, counts) pairs in each spilled chunk, memory-mapped: per column, one
    (values, counts) slice per prefix. The chunk files are opened once for all `columns`."""
    per_column: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in columns]
    for prefix in count_prefixes:
        offsets, values, counts = (_load(prefix, suffix) for suffix in ("offsets", "values", "counts"))
        for slices, column in zip(per_column, columns, strict=True):
            start, stop = int(offsets[column]), int(offsets[column + 1])
            slices.append((values[start:stop], counts[start:stop]))
    return per_column


def reduce_column(
    count_prefixes: list[Path], column: int, min_count: int, memory_budget: int, value_bits: int = 32
) -> tuple[np.ndarray, int]:
    """Sums one column's spilled counts and keeps the values seen at least `min_count` times.

    Args:
        count_prefixes: the prefixes `count_chunk` wrote, one per train chunk.
        column: index of the categorical column (0 for C1).
        min_count: the threshold K.
        memory_budget: bytes one partition's pairs may take while they are summed.
        value_bits: 32 (uint32 values) or 64 (uint64, `dlrm-prep table`); partitions split this range.

    Returns:
        (kept_values, num_partitions): the sorted uint32 values that get ids 1..n, and how many
        value-range partitions the reduce used (1 for data that fits the budget at once).
    """
    (slices,) = count_slices(count_prefixes, [column])
    return reduce_slices(slices, min_count, memory_budget, value_bits)


def reduce_slices(
    slices: list[tuple[np.ndarray, np.ndarray]], min_count: int, memory_budget: int, value_bits: int = 32
) -> tuple[np.ndarray, int]:
    """`reduce_column` of one column's slices from `count_slices`."""
    total_pairs = sum(len(values) for values, _ in slices)
    partition_bits = 0
    while (total_pairs >> partition_bits) * _BYTES_PER_PAIR > memory_budget and partition_bits < 16:
        partition_bits += 1
    kept = []
    value_type = np.uint32 if value_bits == 32 else np.uint64
    for partition in range(1 << partition_bits):
        low = partition << (value_bits - partition_bits)
        high = (partition + 1) << (value_bits - partition_bits)
        part_values, part_counts = [], []
        for values, counts in slices:
            # Each chunk's pairs are sorted by value, so a partition is one contiguous range of them.
            # The last partition's upper end, 2**value_bits, does not fit the value type: it ends the array.
            if not partition_bits:
                begin, end = 0, len(values)
            else:
                begin = int(np.searchsorted(values, value_type(low)))
                end = len(values) if high >> value_bits else int(np.searchsorted(values, value_type(high)))
            part_values.append(np.asarray(values[begin:end]))
            part_counts.append(np.asarray(counts[begin:end]))
        if not part_values:
            continue
        merged_values = np.concatenate(part_values)
        if len(merged_values) == 0:
            continue
        distinct, totals = sum_counts(merged_values, np.concatenate(part_counts), sorted_runs=True)
        kept.append(distinct[totals >= min_count])
    kept_values = np.concatenate(kept).astype(value_type) if kept else np.zeros(0, value_type)
    return kept_values, 1 << partition_bits
