"""Which training rows each rank reads in an epoch, in which order, and what an interrupted epoch has left.

Shape of an epoch: the train split's row groups, permuted with (seed, epoch) the same way on every
rank, make one sequence of N rows; a row's *position* is its index in that sequence. A stretch of the
epoch trained on one layout (world size W, per-rank batch b, shuffle buffer S) is a *segment*. It starts
from some set of positions (a fresh epoch: all N), kept in epoch order; rank r of W takes the
contiguous share [r*M/W, (r+1)*M/W) of its M positions, reads them in order, and draws its batches
through a bounded shuffle buffer (`ShuffleBuffer`). Every rank runs the same number of batches.

Resuming on another layout (another world size or batch size, after a failure or on purpose) starts a
new segment over the positions that the earlier segments did not emit, so each row is still trained on
once in the epoch. Those positions are recomputed, not stored: the buffer's random draws depend only on
how many rows it holds, so replaying each earlier rank's buffer on positions instead of rows (nothing
is read) gives exactly the rows it emitted; what remained in its buffer and what it had not yet read
are the new segment's input. The checkpoint records only the segments' layouts and batch counts.
Resuming on the same layout continues the same segment: bit-identical to an uninterrupted run.

Position sets are (n, 2) int64 arrays of disjoint [start, stop) intervals in ascending order: a fresh
epoch is one interval, and after a resume there are a few per earlier rank plus one per row left in a
buffer (at most S + b per rank), so they stay small next to N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Rows = TypeVar("Rows")


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group of a split: the unit of reading and of the per-epoch shuffle."""

    path: str
    index: int
    rows: int


@dataclass(frozen=True)
class Segment:
    """A finished stretch of an epoch on one layout: what a resume on another layout must replay.

    Args:
        world_size: the ranks it ran on.
        batch_size: rows per batch on each rank.
        shuffle_buffer: `data.shuffle_buffer` of that run.
        batches: the batches each rank emitted in it (fewer than the segment's steps: it was cut short).
    """

    world_size: int
    batch_size: int
    shuffle_buffer: int
    batches: int


@dataclass(frozen=True)
class Pick:
    """Rows of one row group that a rank reads, in order: a contiguous slice, or row indices.

    Args:
        group: the row group.
        first_position: the epoch position of the group's first row.
        rows: the rows within the group (`slice(start, stop)` in a fresh epoch).
    """

    group: RowGroup
    first_position: int
    rows: slice | np.ndarray

    def __len__(self) -> int:
        if isinstance(self.rows, slice):
            return self.rows.stop - self.rows.start
        return len(self.rows)

    def positions(self) -> np.ndarray:
        if isinstance(self.rows, slice):
            return np.arange(self.rows.start, self.rows.stop, dtype=np.int64) + self.first_position
        return self.rows.astype(np.int64) + self.first_position


def epoch_row_groups(groups: list[RowGroup], seed: int, epoch: int) -> list[RowGroup]:
    """The row groups in this epoch's order: a permutation that every rank computes identically."""
    order = np.random.default_rng([seed, epoch]).permutation(len(groups))
    return [groups[i] for i in order]


def segment_steps(rows: int, world_size: int, batch_size: int) -> int:
    """Batches every rank runs in a segment over `rows` rows: full batches of the smallest share."""
    return (rows // world_size) // batch_size


def interval_rows(intervals: np.ndarray) -> int:
    return int((intervals[:, 1] - intervals[:, 0]).sum())


def share(intervals: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank `rank`'s contiguous share [r*M/W, (r+1)*M/W) of the M positions in `intervals`."""
    lengths = intervals[:, 1] - intervals[:, 0]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = int(ends[-1]) if len(ends) else 0
    begin, end = rank * total // world_size, (rank + 1) * total // world_size
    # Clip each interval to the share's [begin, end) in the concatenated sequence of positions.
    low = intervals[:, 0] + np.clip(begin - starts, 0, lengths)
    high = intervals[:, 0] + np.clip(end - starts, 0, lengths)
    keep = high > low
    return np.stack([low[keep], high[keep]], axis=1)


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenation of np.arange(start, stop) over the pairs, without a Python loop."""
    lengths = stops - starts
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return np.arange(int(lengths.sum()), dtype=np.int64) + offsets


def picks(intervals: np.ndarray, ordered_groups: list[RowGroup]) -> list[Pick]:
    """What to read for some positions: one `Pick` per row group they touch, in epoch order.

    A group touched by one interval is a slice of it (so a fresh epoch reads ranges, as it always
    did); a group touched by several gets their rows as indices, and is still read once. Vectorised:
    after a resume there is an interval per row that was left in an earlier buffer (millions).
    """
    group_starts = np.cumsum([0] + [group.rows for group in ordered_groups]).astype(np.int64)
    if not len(intervals):
        return []
    # Each interval cut at the group boundaries inside it: one piece per (interval, group).
    first = np.searchsorted(group_starts, intervals[:, 0], side="right") - 1
    last = np.searchsorted(group_starts, intervals[:, 1] - 1, side="right") - 1
    counts = last - first + 1
    piece_group = np.repeat(first, counts) + _ranges(np.zeros(len(counts), np.int64), counts)
    piece_start = np.maximum(np.repeat(intervals[:, 0], counts), group_starts[piece_group])
    piece_stop = np.minimum(np.repeat(intervals[:, 1], counts), group_starts[piece_group + 1])
    nonempty = piece_stop > piece_start  # an empty row group inside a share is not read
    piece_group, piece_start, piece_stop = piece_group[nonempty], piece_start[nonempty], piece_stop[nonempty]
    groups, first_piece, num_pieces = np.unique(piece_group, return_index=True, return_counts=True)
    result = []
    for group, begin, count in zip(groups.tolist(), first_piece.tolist(), num_pieces.tolist(), strict=True):
        offset = int(group_starts[group])
        starts, stops = (
            piece_start[begin : begin + count] - offset,
            piece_stop[begin : begin + count] - offset,
        )
        rows = slice(int(starts[0]), int(stops[0])) if count == 1 else _ranges(starts, stops)
        result.append(Pick(ordered_groups[group], offset, rows))
    return result


class ShuffleBuffer(Generic[Rows]):
    """A rank's batches from its picks: rows pass through a buffer of `shuffle_buffer` rows, shuffled.

    Generic over what a pick reads as, so that the same draws serve training (columns of real rows) and
    the replay of an earlier segment (row positions): `read`, `concat` and `take` say how to handle it.
    After each batch, `held` returns the rows read but not yet emitted and `picks_read` counts the
    picks read so far: together, what this rank had left when stopped there.

    Args:
        batch_size: rows per batch.
        shuffle_buffer: rows kept back and mixed with each newly read pick (0: no row shuffle).
        steps: batches to emit at most (every rank emits the same number).
        rng: the rank's generator for the segment.
        concat: joins a list of read rows into one.
        take: selects rows (an index array) of read rows.
    """

    def __init__(
        self,
        batch_size: int,
        shuffle_buffer: int,
        steps: int,
        rng: np.random.Generator,
        concat: Callable[[list[Rows]], Rows],
        take: Callable[[Rows, np.ndarray], Rows],
    ) -> None:
        self.batch_size, self.shuffle_buffer, self.steps, self.rng = batch_size, shuffle_buffer, steps, rng
        self.concat, self.take = concat, take
        self.picks_read = 0
        self.held: Callable[[], Rows] | None = None

    def batches(self, rank_picks: Sequence[Pick], read: Callable[[Pick], Rows]) -> Iterator[Rows]:
        if not self.steps:  # a share too small for one batch on some rank: the segment has no steps
            return
        batch_size, reserve_rows = self.batch_size, self.shuffle_buffer
        pending: list[Rows] = []
        pending_rows = emitted = 0
        for index, pick in enumerate([*rank_picks, None]):
            if pick is not None:
                pending.append(read(pick))
                pending_rows += len(pick)
                self.picks_read = index + 1
                if pending_rows < reserve_rows + batch_size:
                    continue
            reserve = reserve_rows if pick is not None else 0
            columns = self.concat(pending)
            order = self.rng.permutation(pending_rows) if reserve_rows else np.arange(pending_rows)
            ready = max(0, pending_rows - reserve) // batch_size * batch_size
            for start in range(0, ready, batch_size):
                if emitted == self.steps:
                    return
                batch = self.take(columns, order[start : start + batch_size])
                self.held = lambda columns=columns, rest=order[start + batch_size :]: self.take(columns, rest)
                yield batch
                emitted += 1
            pending = [self.take(columns, order[ready:])]
            pending_rows -= ready


def _intervals_of(positions: np.ndarray) -> np.ndarray:
    """Sorted, distinct positions as [start, stop) runs."""
    if not len(positions):
        return np.zeros((0, 2), np.int64)
    positions = np.sort(positions)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = positions[np.concatenate([[0], breaks])]
    stops = positions[np.concatenate([breaks - 1, [len(positions) - 1]])] + 1
    return np.stack([starts, stops], axis=1).astype(np.int64)


def _pick_intervals(pick: Pick) -> np.ndarray:
    if isinstance(pick.rows, slice):
        return np.array([[pick.rows.start, pick.rows.stop]], np.int64) + pick.first_position
    return _intervals_of(pick.positions())


def _merge(parts: list[np.ndarray]) -> np.ndarray:
    """Disjoint interval sets as one, sorted, with touching intervals joined."""
    intervals = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    if not len(intervals):
        return intervals
    intervals = intervals[np.argsort(intervals[:, 0], kind="stable")]
    touching = np.flatnonzero(intervals[1:, 0] != intervals[:-1, 1]) + 1
    firsts = np.concatenate([[0], touching])
    lasts = np.concatenate([touching - 1, [len(intervals) - 1]])
    return np.stack([intervals[firsts, 0], intervals[lasts, 1]], axis=1)


def segment_rng(seed: int, epoch: int, rank: int, segment_index: int) -> np.random.Generator:
    # The first segment keeps the seed sequence runs have always used, so their batches do not change.
    key = [seed, epoch, rank] if segment_index == 0 else [seed, epoch, rank, segment_index]
    return np.random.default_rng(key)


def epoch_remainder(
    ordered_groups: list[RowGroup], seed: int, epoch: int, earlier: Sequence[Segment]
) -> np.ndarray:
    """The positions of the epoch that the `earlier` segments did not emit, as intervals.

    Args:
        ordered_groups: the epoch's row groups in epoch order (`epoch_row_groups`).
        seed: `training.seed`.
        epoch: the epoch.
        earlier: the segments already trained in this epoch, oldest first.

    Raises:
        ValueError: a segment that ran more batches than its rows allow (a checkpoint of other data).
    """
    intervals = np.array([[0, sum(group.rows for group in ordered_groups)]], np.int64)
    for index, segment in enumerate(earlier):
        steps = segment_steps(interval_rows(intervals), segment.world_size, segment.batch_size)
        if segment.batches >= steps:
            raise ValueError(
                f"segment {index} of epoch {epoch} ran {segment.batches} batches but its rows allow {steps}"
            )
        if not segment.batches:
            continue
        left: list[np.ndarray] = []
        for rank in range(segment.world_size):
            rank_picks = picks(share(intervals, rank, segment.world_size), ordered_groups)
            buffer: ShuffleBuffer[np.ndarray] = ShuffleBuffer(
                segment.batch_size, segment.shuffle_buffer, steps, segment_rng(seed, epoch, rank, index),
                concat=np.concatenate, take=lambda positions, rows: positions[rows],
            )  # fmt: skip
            # batches < steps, so the buffer reaches the cut; nothing is read, only positions are drawn.
            for emitted, _ in enumerate(buffer.batches(rank_picks, Pick.positions), start=1):
                if emitted == segment.batches:
                    break
            # What the rank had not read stays as intervals; only its buffer's rows are scattered.
            left += [_intervals_of(buffer.held()), *map(_pick_intervals, rank_picks[buffer.picks_read :])]
        intervals = _merge(left)
    return intervals


def rank_picks_and_steps(
    ordered_groups: list[RowGroup], seed: int, epoch: int, rank: int, world_size: int,
    batch_size: int, earlier: Sequence[Segment] = (),
) -> tuple[list[Pick], int]:  # fmt: skip
    """What rank `rank` reads in the epoch's current segment, and how many batches every rank runs."""
    remaining = epoch_remainder(ordered_groups, seed, epoch, earlier)
    steps = segment_steps(interval_rows(remaining), world_size, batch_size)
    return picks(share(remaining, rank, world_size), ordered_groups), steps
