"""Stable 64-bit hashes for `dlrm-prep table`: categorical values, and the seeded random split.

A categorical value is its bytes (UTF-8 text as written in the file; an integer Parquet value as its
decimal text, so `7` in Parquet and `7` in CSV are the same value). Its hash is FNV-1a 64 over those
bytes followed by the MurmurHash3 64-bit finalizer (`fmix64`), which spreads FNV's low bits so that
`hash % buckets` is uniform for any bucket count. The result is the same on every machine, run and
Python version (unlike `hash()`); a hash of 0 becomes 1, because 0 stands for a missing value.

pyarrow.compute has no scalar hash of strings (its `hash_*` functions are grouped aggregations), so
the hash is written here with numpy: strings are sorted by length once, and byte position j is folded
into the first (longest) strings that reach it, so the work is the total byte count plus one numpy
call per position of the longest string. Each chunk hashes only its distinct values
(`pc.dictionary_encode`), which repeated categorical values make several times fewer than its rows.

The random split hashes a row's position, not its content: `fmix64(seed * GOLDEN + file_index * 2**40
+ line)`, compared with the split fractions scaled to 2**64. It is reproducible, streaming, and does not
depend on chunking or workers; two equal rows at different lines may land in different splits.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
FMIX_1 = 0xFF51AFD7ED558CCD
FMIX_2 = 0xC4CEB9FE1A85EC53
GOLDEN = 0x9E3779B97F4A7C15
MISSING = 0
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer of uint64 values (wrapping arithmetic)."""
    h = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(33)
        h *= np.uint64(FMIX_1)
        h ^= h >> np.uint64(33)
        h *= np.uint64(FMIX_2)
        h ^= h >> np.uint64(33)
    return h


def _fnv1a(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    starts = offsets[:-1].astype(np.int64)
    lengths = np.diff(offsets).astype(np.int64)
    order = np.argsort(-lengths, kind="stable")
    sorted_starts = starts[order]
    hashes = np.full(len(starts), np.uint64(FNV_OFFSET))
    longer_than = len(starts) - np.cumsum(np.bincount(lengths)) if len(starts) else np.zeros(0, np.int64)
    with np.errstate(over="ignore"):
        for position, active in enumerate(longer_than):
            if active == 0:
                break
            hashes[:active] ^= data[sorted_starts[:active] + position]
            hashes[:active] *= np.uint64(FNV_PRIME)
    out = np.empty_like(hashes)
    out[order] = hashes
    return out


def _distinct_hashes(values: pa.Array) -> np.ndarray:
    """Hashes of a binary array without nulls (one per element)."""
    values = values.cast(pa.large_binary())
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], np.int64)[values.offset : values.offset + len(values) + 1]
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    hashes = fmix64(_fnv1a(offsets, data))
    hashes[hashes == MISSING] = 1
    return hashes


def hash_dictionary(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of a binary/string (or dictionary of them) array as (hashes, indices): value i's hash
    is `hashes[indices[i]]`, one entry per dictionary value (distinct values, whose hashes may still
    collide). Null and empty values give 0 (missing); `hashes` ends with a 0 that the nulls point at,
    so every index is valid.

    Each distinct value is hashed once, and a chunk's rows stay int32 indices until they become ids
    (`data_prep.table_tasks`): ids are a function of the hash alone, so they can be computed per
    distinct value and gathered once, instead of gathering the hashes and then computing one per row.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        # The CSV reader already built the dictionary (see `data_prep.table_parse`).
        encoded = pa.DictionaryArray.from_arrays(values.indices, values.dictionary.cast(pa.binary()))
    else:
        encoded = pc.dictionary_encode(values.cast(pa.binary()))
    hashes = np.zeros(len(encoded.dictionary) + 1, np.uint64)
    if len(encoded.dictionary):
        hashes[:-1] = _distinct_hashes(encoded.dictionary)
        empty = pc.equal(pc.binary_length(encoded.dictionary), 0).to_numpy(zero_copy_only=False)
        hashes[:-1][empty] = MISSING
    # int32 first: a Parquet dictionary column may keep narrower indices, in which the null slot's
    # index (the dictionary's length) need not fit.
    indices = encoded.indices.cast(pa.int32())
    if indices.null_count:
        indices = indices.fill_null(len(encoded.dictionary))
    return hashes, indices.to_numpy()


def hash_values(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The uint64 hash of each value of a binary/string (or dictionary of them) array; null and empty
    values give 0 (missing)."""
    if len(values) == 0:
        return np.zeros(0, np.uint64)
    hashes, indices = hash_dictionary(values)
    return hashes[indices]


def split_bounds(fractions: tuple[float, float, float]) -> tuple[int, int]:
    """The uint64 thresholds of the random split: train below the first, val below the second."""
    train = min(int(fractions[0] * 2**64), 2**64 - 1)
    val = min(train + int(fractions[1] * 2**64), 2**64 - 1)
    return train, val


def random_split_codes(
    seed: int, file_index: int, lines: np.ndarray, fractions: tuple[float, float, float]
) -> np.ndarray:
    """Split code (0 train, 1 val, 2 test) of each row from its file index and 1-based line number."""
    with np.errstate(over="ignore"):
        key = np.uint64((seed * GOLDEN + file_index * 2**40) % 2**64) + lines.astype(np.uint64)
    mixed = fmix64(key)
    train, val = split_bounds(fractions)
    codes = np.full(len(lines), SPLIT_CODES["test"], np.uint8)
    codes[mixed < np.uint64(val)] = SPLIT_CODES["val"]
    codes[mixed < np.uint64(train)] = SPLIT_CODES["train"]
    return codes
