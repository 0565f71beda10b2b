"""Resuming on another plan: tables keep their side of the optimizer; a state that cannot move is named."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torchrec.distributed.planner import ParameterConstraints

from dlrm_dist.checkpoint import CheckpointError, TrainerState, _mismatch, resume_position
from dlrm_dist.epoch_order import Segment
from dlrm_dist.sharding import pin_replication

ALL = ["data_parallel", "table_wise", "row_wise"]


def test_pinning_keeps_each_table_on_the_side_it_was_trained_on():
    constraints = {
        name: ParameterConstraints(sharding_types=list(ALL), pooling_factors=[2.0]) for name in "ABC"
    }
    pinned = pin_replication(constraints, {"A": "data_parallel", "B": "row_wise"})
    assert pinned["A"].sharding_types == ["data_parallel"]
    assert pinned["B"].sharding_types == ["table_wise", "row_wise"]
    assert pinned["C"].sharding_types == ALL  # not in the checkpoint: left to the planner
    assert pinned["A"].pooling_factors == [2.0]
    assert constraints["A"].sharding_types == ALL  # the caller's constraints are not changed


def test_a_table_that_would_have_to_change_sides_is_named():
    constraints = {"C6": ParameterConstraints(sharding_types=["row_wise"])}
    with pytest.raises(ValueError, match=r"^sharding\.tables\.C6: the checkpoint trained it data_parallel"):
        pin_replication(constraints, {"C6": "data_parallel"})


def test_a_state_of_another_shape_or_missing_is_named():
    state = {"model": {"w": torch.zeros(4, 2)}, "optim": {"state": {"w": {"momentum1": torch.zeros(8)}}}}
    saved = {"model.w": SimpleNamespace(size=torch.Size([4, 2]))}
    assert _mismatch(state, saved) == "optim.state.w.momentum1 is not in the checkpoint"
    saved["optim.state.w.momentum1"] = SimpleNamespace(size=torch.Size([4]))
    assert _mismatch(state, saved) == "optim.state.w.momentum1 is [4] in the checkpoint and [8] here"
    saved["optim.state.w.momentum1"] = SimpleNamespace(size=torch.Size([8]))
    assert _mismatch(state, saved) is None


HERE = TrainerState(0, 0, 0, 0, world_size=1, batch_size=256, shuffle_buffer=100, seed=7, train_rows=5000)


def test_a_state_without_its_layout_is_cut_at_the_batch_it_counted():
    # Written by 2 ranks x 128 before layouts were recorded: 10 steps of a 256 global batch.
    legacy = TrainerState(step=10, samples_seen=2560, epoch=0, batches_into_epoch=10, world_size=2)
    start, cut = resume_position(legacy, HERE, "checkpoint.resume: old")
    assert cut == Segment(2, 128, 100, 10)
    assert (start.step, start.batches_into_epoch, start.earlier_segments) == (10, 0, (cut,))


def test_a_started_epoch_keeps_its_seed_and_a_fresh_one_takes_this_runs():
    started = dataclasses.replace(HERE, step=3, samples_seen=768, batches_into_epoch=3, seed=1)
    assert resume_position(started, HERE, "x")[0].seed == 1
    at_boundary = dataclasses.replace(HERE, step=19, samples_seen=19 * 256, epoch=1, seed=1)
    assert resume_position(at_boundary, HERE, "x")[0].seed == 7


def test_a_checkpoint_of_other_data_is_refused():
    other = dataclasses.replace(HERE, step=3, train_rows=4000)
    with pytest.raises(CheckpointError, match="trained on 4,000 train rows and this data has 5,000"):
        resume_position(other, HERE, "checkpoint.resume: old")
