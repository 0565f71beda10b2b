"""Resuming on another plan: tables keep their side of the optimizer; a state that cannot move is named."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchrec.distributed.planner import ParameterConstraints

from dlrm_dist.checkpoint import _mismatch
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
