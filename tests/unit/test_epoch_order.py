"""The global data position: an epoch cut short on one layout and finished on others trains each row once.

The rows are real Parquet rows carrying their own id, read through `iter_train_batches`, so the
check is on what the loader serves, not on the position bookkeeping that computes it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.features import Categorical, FeatureSchema
from dlrm_dist.data import RowGroup, iter_train_batches, train_steps_left, train_steps_per_epoch
from dlrm_dist.epoch_order import Segment, epoch_remainder, epoch_row_groups, interval_rows

FEATURES = FeatureSchema(categorical=(Categorical("C1", 7),), dense=("row_id",))
# Files of uneven row groups, so that shares and buffers cut groups at arbitrary rows.
GROUP_SIZES = [(97, 40), (250, 64), (13, 13), (301, 100), (41, 7)]


@pytest.fixture(scope="module")
def groups(tmp_path_factory) -> list[RowGroup]:
    root = tmp_path_factory.mktemp("ids")
    found, first = [], 0
    for index, (rows, group_rows) in enumerate(GROUP_SIZES):
        ids = np.arange(first, first + rows)
        table = pa.table({
            "label": pa.array(ids % 2, pa.float32()),
            "row_id": pa.array(ids, pa.float32()),
            "C1": pa.array(ids % 7, pa.int32()),
        })  # fmt: skip
        path = root / f"part-{index}.parquet"
        pq.write_table(table, path, row_group_size=group_rows)
        metadata = pq.ParquetFile(path).metadata
        found += [
            RowGroup(str(path), g, metadata.row_group(g).num_rows) for g in range(metadata.num_row_groups)
        ]
        first += rows
    return found


def _ids(batch) -> list[int]:
    return batch.dense_features[:, 0].long().tolist()


def _served(groups, layout, seed, epoch, earlier, batches=None) -> tuple[list[list[int]], int]:
    """Row ids each rank of `layout` is served in the current segment (its first `batches`, or all)."""
    world_size, batch_size, shuffle_buffer = layout
    per_rank = []
    for rank in range(world_size):
        stream = iter_train_batches(groups, rank, world_size, batch_size, seed, epoch, shuffle_buffer,
                                    features=FEATURES, earlier=earlier)  # fmt: skip
        per_rank.append([row for batch in itertools.islice(stream, batches) for row in _ids(batch)])
    return per_rank, train_steps_left(groups, world_size, batch_size, seed, epoch, earlier)


layouts = st.tuples(st.integers(1, 3), st.integers(1, 40), st.sampled_from([0, 1, 17, 300]))


@settings(max_examples=max(10, settings.default.max_examples // 4), deadline=None)
@given(chain=st.lists(st.tuples(layouts, st.floats(0.0, 1.0)), min_size=1, max_size=3), final=layouts,
       seed=st.integers(0, 3), epoch=st.integers(0, 2))  # fmt: skip
def test_an_epoch_finished_on_other_layouts_serves_every_row_once(groups, chain, final, seed, epoch):
    total = sum(group.rows for group in groups)
    earlier: tuple[Segment, ...] = ()
    seen: list[int] = []
    for layout, fraction in chain:
        steps = train_steps_left(groups, layout[0], layout[1], seed, epoch, earlier)
        cut = int(fraction * (steps - 1))
        if cut < 1:
            continue
        per_rank, _ = _served(groups, layout, seed, epoch, earlier, batches=cut)
        assert [len(rows) for rows in per_rank] == [cut * layout[1]] * layout[0]
        seen += [row for rows in per_rank for row in rows]
        earlier = (*earlier, Segment(*layout, batches=cut))
    remaining = interval_rows(epoch_remainder(epoch_row_groups(groups, seed, epoch), seed, epoch, earlier))
    assert remaining == total - len(seen)
    per_rank, steps = _served(groups, final, seed, epoch, earlier)
    assert steps == (remaining // final[0]) // final[1]
    assert [len(rows) for rows in per_rank] == [steps * final[1]] * final[0]
    seen += [row for rows in per_rank for row in rows]
    assert len(set(seen)) == len(seen), "a row was served twice in one epoch"
    # What no segment served is only the last segment's tail: less than a batch per rank, plus the
    # rows of uneven shares.
    assert total - len(seen) < final[0] * (final[1] + 1)


def test_a_fresh_epoch_is_one_segment_over_all_rows(groups):
    ordered = epoch_row_groups(groups, 1, 0)
    assert epoch_remainder(ordered, 1, 0, ()).tolist() == [[0, sum(g.rows for g in groups)]]
    assert train_steps_left(groups, 2, 30, 1, 0) == train_steps_per_epoch(groups, 2, 30)


def test_a_segment_past_its_rows_is_refused(groups):
    steps = train_steps_per_epoch(groups, 2, 30)
    with pytest.raises(ValueError, match=f"ran {steps} batches but its rows allow {steps}"):
        epoch_remainder(epoch_row_groups(groups, 1, 0), 1, 0, (Segment(2, 30, 0, steps),))


def test_resumed_segment_reads_each_row_group_once(groups, monkeypatch):
    """Rows left in an earlier rank's buffer are scattered: they are taken from a group read once."""
    import dlrm_dist.data as data

    reads: list[tuple[str, int]] = []
    original = data._read_group
    monkeypatch.setattr(
        data, "_read_group", lambda group: reads.append((group.path, group.index)) or original(group)
    )
    earlier = (Segment(3, 20, 300, 4),)
    list(iter_train_batches(groups, 0, 1, 25, 0, 0, 100, features=FEATURES, earlier=earlier))
    assert len(reads) == len(set(reads))
    assert Path(reads[0][0]).suffix == ".parquet"


def test_a_remainder_too_small_for_a_batch_has_no_steps(groups):
    earlier = (Segment(1, 40, 0, train_steps_per_epoch(groups, 1, 40) - 1),)
    assert train_steps_left(groups, 3, 30, 0, 0, earlier) == 0
    for rank in range(3):
        assert (
            list(iter_train_batches(groups, rank, 3, 30, 0, 0, 0, features=FEATURES, earlier=earlier)) == []
        )
