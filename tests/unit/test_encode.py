"""Vocabulary lookups and counts, checked against plain one-value-at-a-time versions."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from data_prep import encode
from data_prep.allocator import keep_freed_memory
from data_prep.table_tasks import _counts, build_vocab_columns

# A small pool, so that lookups find some values and counts repeat.
values_of_pool = st.lists(st.integers(0, 40).map(lambda v: v * 7919), max_size=300)


@given(values=values_of_pool, kept=st.sets(st.integers(0, 40).map(lambda v: v * 7919)))
def test_vocab_ids_are_each_values_position_in_the_vocabulary_plus_one(values, kept):
    vocabulary = np.array(sorted(kept), np.uint64)
    position = {value: index for index, value in enumerate(sorted(kept))}
    expected = [position[value] + 1 if value in position else 0 for value in values]
    assert encode.vocab_ids(np.array(values, np.uint64), vocabulary).tolist() == expected


@given(
    chunks=st.lists(
        st.tuples(
            # A dictionary may repeat a hash (distinct strings that collide), and holds 0 (missing).
            st.lists(st.integers(0, 12), min_size=1, max_size=20),
            st.lists(st.integers(0, 10_000), max_size=200),
        ),
        max_size=4,
    )
)
def test_counts_of_a_dictionary_column_are_those_of_its_rows(chunks):
    arrays, rows = [], Counter()
    for dictionary, picks in chunks:
        indices = [pick % len(dictionary) for pick in picks]
        arrays.append(
            pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(dictionary, pa.uint64()))
        )
        rows.update(dictionary[index] for index in indices if dictionary[index] != 0)
    column = pa.chunked_array(arrays, pa.dictionary(pa.int32(), pa.uint64()))
    values, counts = _counts(column)
    assert values.tolist() == sorted(rows)
    assert counts.tolist() == [rows[value] for value in sorted(rows)]


def test_counts_of_a_plain_column_leave_missing_out():
    values, counts = _counts(pa.chunked_array([pa.array([5, 0, 5, 3], pa.uint64())]))
    assert values.tolist() == [3, 5]
    assert counts.tolist() == [1, 2]


def test_keep_freed_memory_sets_defaults_and_leaves_the_users_settings(monkeypatch):
    monkeypatch.delenv("MIMALLOC_PURGE_DELAY", raising=False)
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    keep_freed_memory()
    assert os.environ["MIMALLOC_PURGE_DELAY"] == "-1"
    assert os.environ["NUMPY_MADVISE_HUGEPAGE"] == "1"


def test_vocabulary_columns_built_together_equal_each_built_alone(tmp_path):
    rng = np.random.default_rng(0)
    prefixes = []
    for chunk in range(3):
        pairs = [
            encode.sum_counts(rng.integers(1, 50, 400).astype(np.uint64), np.ones(400, np.int64))
            for _ in range(4)
        ]
        prefix = tmp_path / f"chunk{chunk}"
        encode.spill_counts(pairs, prefix, np.uint64)
        prefixes.append(prefix)
    out_paths = [str(tmp_path / "c1.npy"), str(tmp_path / "c3.npy")]
    result = build_vocab_columns([str(p) for p in prefixes], [1, 3], 30, 1 << 20, out_paths)
    assert result["columns"] == [1, 3]
    for column, path in zip([1, 3], out_paths, strict=True):
        # A 64-byte budget forces the partitioned reduce on this side, one partition per few pairs.
        alone, partitions = encode.reduce_column(prefixes, column, 30, 64, 64)
        assert partitions > 1
        assert np.load(path).tolist() == alone.tolist()
        assert 0 < len(alone) < 49
