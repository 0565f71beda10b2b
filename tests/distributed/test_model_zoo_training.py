"""Every model family trains sharded on 2 gloo ranks and survives a torch.distributed.checkpoint round trip.

For each family, in one spawned 2-rank job (spawning costs seconds, the families only a fraction):
the plan shards every table of every collection (the first-order tables wide_C* too) with the sharding
type asked for; the sharded model computes the logits of an unsharded copy of its weights; 8 steps of fused row-wise Adagrad (tables) plus Adagrad (dense) lower the global loss
on a fixed synthetic batch set whose label is a function of C1; and after saving `model.state_dict()`
with DCP, a freshly initialised sharded model that loads it holds equal local shards and tensors and
computes the same logits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.datasets.utils import Batch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS
from dlrm_dist.config import ModelConfig, OptimConfig, ShardingConfig
from dlrm_dist.distributed import DistContext, destroy_distributed, init_distributed
from dlrm_dist.models import MODEL_REGISTRY, build_model
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.optim import build_optimizer
from dlrm_dist.sharding import plan_to_text, shard_model
from tests.distributed.harness import run_ranks
from tests.distributed.test_sharding_equivalence import gather_full_state

pytestmark = pytest.mark.distributed

WORLD_SIZE = 2
CPU = torch.device("cpu")
BATCH_SIZE_PER_RANK = 32
NUM_BATCHES = 4
TRAIN_STEPS = 8
# 50..100 rows.
TABLE_ROWS = [50 + 2 * index for index in range(len(SPARSE_COLUMNS))]
MODEL_CFG = ModelConfig(
    embedding_dim=8,
    bottom_mlp=[16, 8],
    top_mlp=[16, 1],
    cross_layers=2,
    low_rank_dim=4,
    cin_layers=[4, 4],
    deep_mlp=[16, 16],
)
OPTIM_CFG = OptimConfig(
    lr=0.05, embedding_lr=0.1, dense_optimizer="adagrad", embedding_optimizer="rowwise_adagrad"
)
# Table-wise puts each table whole on one rank, row-wise splits every table across both.
SHARDING_TYPE_BY_FAMILY = {
    "dlrm": "table_wise",
    "dlrm_dcnv2": "row_wise",
    "wide_deep": "row_wise",
    "deepfm": "table_wise",
    "dcn": "table_wise",
    "xdeepfm": "row_wise",
    "lr": "table_wise",
    "fm": "row_wise",
}


def make_batches(rank: int) -> list[Batch]:
    """This rank's fixed batches: one id per bag, labels 1 exactly when C1's id is in its table's lower half."""
    generator = torch.Generator().manual_seed(1000 + rank)
    batches = []
    for _ in range(NUM_BATCHES):
        ids = torch.stack(
            [torch.randint(0, rows, (BATCH_SIZE_PER_RANK,), generator=generator) for rows in TABLE_ROWS]
        )
        sparse_features = KeyedJaggedTensor.from_lengths_sync(
            keys=list(SPARSE_COLUMNS),
            values=ids.reshape(-1),
            lengths=torch.ones(ids.numel(), dtype=torch.int64),
        )
        batches.append(
            Batch(
                dense_features=torch.rand(BATCH_SIZE_PER_RANK, NUM_DENSE, generator=generator),
                sparse_features=sparse_features,
                labels=(ids[0] < TABLE_ROWS[0] // 2).float(),
            )
        )
    return batches


def global_mean_loss(model: nn.Module, batches: list[Batch]) -> float:
    """The mean loss over every rank's batches, the same number on every rank."""
    with torch.no_grad():
        local_sum = torch.stack([model(batch)[0] for batch in batches]).sum()
    dist.all_reduce(local_sum)
    return local_sum.item() / (len(batches) * dist.get_world_size())


def build_sharded(name: str, ctx: DistContext, seed: int) -> tuple[nn.Module, str]:
    torch.manual_seed(seed)
    unsharded = CTRTrainModule(build_model(dataclasses.replace(MODEL_CFG, name=name), TABLE_ROWS))
    expected_tables = {
        config.name
        for module in unsharded.modules()
        if isinstance(module, EmbeddingBagCollection)
        for config in module.embedding_bag_configs()
    }
    model, plan = shard_model(
        unsharded,
        ShardingConfig(types=[SHARDING_TYPE_BY_FAMILY[name]]),
        OPTIM_CFG,
        ctx,
        batch_size_per_rank=BATCH_SIZE_PER_RANK,
    )
    planned = {table: sharding for tables in plan.plan.values() for table, sharding in tables.items()}
    assert set(planned) == expected_tables, f"[{name}] tables left out of the plan:\n{plan_to_text(plan)}"
    assert {sharding.sharding_type for sharding in planned.values()} == {SHARDING_TYPE_BY_FAMILY[name]}, (
        f"[{name}] not every table is sharded {SHARDING_TYPE_BY_FAMILY[name]}:\n{plan_to_text(plan)}"
    )
    assert {rank for sharding in planned.values() for rank in sharding.ranks} == {0, 1}, (
        f"[{name}] the tables do not use both ranks:\n{plan_to_text(plan)}"
    )
    return model, plan_to_text(plan)


def local_values(model: nn.Module) -> dict[str, list[torch.Tensor]]:
    """What this rank holds of each state entry: a ShardedTensor's local shards, else the tensor.

    Tables with no shard on this rank (table-wise, placed on the other one) are left out.
    """
    values = {}
    for key, value in model.state_dict().items():
        if isinstance(value, ShardedTensor):
            if value.local_shards():
                values[key] = [shard.tensor.detach().clone() for shard in value.local_shards()]
        else:
            values[key] = [value.detach().clone()]
    return values


def equal_entries(first: dict[str, list[torch.Tensor]], second: dict[str, list[torch.Tensor]]) -> list[str]:
    """The keys of `first` whose local tensors are all equal to `second`'s."""
    return [
        key
        for key in first
        if all(torch.equal(left, right) for left, right in zip(first[key], second[key], strict=True))
    ]


def train_and_round_trip_every_family(rank: int, world_size: int, checkpoint_root: str) -> None:
    ctx = init_distributed("cpu")
    try:
        batches = make_batches(rank)
        for name in SHARDING_TYPE_BY_FAMILY:
            model, plan_text = build_sharded(name, ctx, seed=0)
            reference = CTRTrainModule(
                build_model(dataclasses.replace(MODEL_CFG, name=name), TABLE_ROWS, sparse_device=CPU)
            )
            reference.load_state_dict(gather_full_state(model, rank))
            with torch.no_grad():
                torch.testing.assert_close(
                    model(batches[0])[1][1],
                    reference(batches[0])[1][1],
                    msg=lambda detail, name=name: f"[{name}] sharded and unsharded logits differ: {detail}",
                )

            optimizer = build_optimizer(model, OPTIM_CFG)
            loss_before = global_mean_loss(model, batches)
            for step in range(TRAIN_STEPS):
                loss, _ = model(batches[step % NUM_BATCHES])
                loss.backward()  # the fused optimizer updates the tables inside backward
                optimizer.step()
                optimizer.zero_grad()
            loss_after = global_mean_loss(model, batches)
            assert loss_after < loss_before, (
                f"[{name}] loss went from {loss_before:.4f} to {loss_after:.4f}\n{plan_text}"
            )

            checkpoint_id = str(Path(checkpoint_root) / name)
            dcp.save({"model": model.state_dict()}, checkpoint_id=checkpoint_id)
            trained = local_values(model)
            fresh, _ = build_sharded(name, ctx, seed=1 + rank)
            unchanged = equal_entries(trained, local_values(fresh))
            assert not unchanged, f"[{name}] a fresh model already equals the trained one at {unchanged}"
            state = {"model": fresh.state_dict()}
            dcp.load(state, checkpoint_id=checkpoint_id)
            fresh.load_state_dict(state["model"])
            restored = local_values(fresh)
            assert set(restored) == set(trained)
            differing = sorted(set(trained) - set(equal_entries(trained, restored)))
            assert not differing, f"[{name}] rank {rank}: after loading, these differ: {differing}"
            with torch.no_grad():
                torch.testing.assert_close(fresh(batches[0])[1][1], model(batches[0])[1][1], rtol=0, atol=0)
    finally:
        destroy_distributed()


def test_every_family_trains_sharded_and_round_trips_through_dcp(tmp_path: Path) -> None:
    assert set(SHARDING_TYPE_BY_FAMILY) == set(MODEL_REGISTRY), "a family is missing from this test"
    run_ranks(
        train_and_round_trip_every_family,
        world_size=WORLD_SIZE,
        timeout_s=240.0,
        checkpoint_root=str(tmp_path),
    )
