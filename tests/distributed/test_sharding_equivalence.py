"""A sharded DLRM on 2 gloo ranks computes what the same model computes unsharded, for every sharding type.

For each type: the plan really uses it; each rank's logits and the global loss equal the unsharded
reference's on the same global batch (each rank holds half of it); the dense gradients after DDP's
average equal the reference's full-batch gradients; and after one step (fused SGD in backward for the
embeddings, plain SGD for the dense parameters) every table equals the reference's table after SGD.
The fused Adagrad variants are checked the same way against PyTorch's Adagrad and TorchRec's
RowWiseAdagrad.

The reference starts from the sharded model's own initial weights, gathered from its ShardedTensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torchrec.optim as trec_optim
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.nn.parallel import DistributedDataParallel
from torchrec.datasets.utils import Batch
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS
from dlrm_dist.config import SHARDING_TYPES, ModelConfig, OptimConfig, ShardingConfig
from dlrm_dist.distributed import destroy_distributed, init_distributed
from dlrm_dist.models import build_model
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.sharding import fused_optimizer_spec, plan_to_text, shard_model
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed

WORLD_SIZE = 2
GLOBAL_BATCH_SIZE = 16
MAX_IDS_PER_BAG = 3
# 51..176 rows, every other one odd, so that row-wise blocks are not all equal.
TABLE_ROWS = [51 + 5 * index for index in range(len(SPARSE_COLUMNS))]
MODEL_CFG = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16, 1])
# Different rates, so that a table stepped by the wrong optimizer cannot pass.
OPTIM_CFG = OptimConfig(lr=0.1, embedding_lr=0.5, eps=1e-8, embedding_optimizer="sgd", dense_optimizer="sgd")

# What each fused (fbgemm) embedding optimizer must compute, written with PyTorch's own optimizers.
REFERENCE_EMBEDDING_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda params: torch.optim.SGD(params, lr=OPTIM_CFG.embedding_lr),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=OPTIM_CFG.embedding_lr, eps=OPTIM_CFG.eps),
    "rowwise_adagrad": lambda params: trec_optim.RowWiseAdagrad(
        params, lr=OPTIM_CFG.embedding_lr, eps=OPTIM_CFG.eps
    ),
}
ATOL = 1e-5


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=ATOL, msg=lambda detail: f"{what}: {detail}")


def make_global_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same random global batch on every rank.

    Returns:
        dense_features [B, 13], bag lengths [F, B] (0..3, empty bags included), ids [F, B, 3], labels [B].
    """
    generator = torch.Generator().manual_seed(seed)
    dense_features = torch.rand(GLOBAL_BATCH_SIZE, NUM_DENSE, generator=generator)
    lengths = torch.randint(
        0, MAX_IDS_PER_BAG + 1, (len(SPARSE_COLUMNS), GLOBAL_BATCH_SIZE), generator=generator
    )
    ids = torch.stack(
        [
            torch.randint(0, rows, (GLOBAL_BATCH_SIZE, MAX_IDS_PER_BAG), generator=generator)
            for rows in TABLE_ROWS
        ]
    )
    labels = torch.randint(0, 2, (GLOBAL_BATCH_SIZE,), generator=generator).float()
    return dense_features, lengths, ids, labels


def slice_batch(
    dense_features: torch.Tensor,
    lengths: torch.Tensor,
    ids: torch.Tensor,
    labels: torch.Tensor,
    samples: slice,
) -> Batch:
    """The `Batch` of the samples in `samples`, its KJT laid out key-major as TorchRec expects."""
    local_lengths = lengths[:, samples]
    values = [
        ids[feature, sample, : local_lengths[feature, position]]
        for feature in range(len(SPARSE_COLUMNS))
        for position, sample in enumerate(range(GLOBAL_BATCH_SIZE)[samples])
    ]
    sparse_features = KeyedJaggedTensor.from_lengths_sync(
        keys=list(SPARSE_COLUMNS), values=torch.cat(values), lengths=local_lengths.reshape(-1)
    )
    return Batch(
        dense_features=dense_features[samples], sparse_features=sparse_features, labels=labels[samples]
    )


def gather_full_state(model: nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """The model's state with every ShardedTensor assembled into a full tensor, on every rank."""
    full_state = {}
    for name, value in model.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype)
            value.gather(dst=0, out=full if rank == 0 else None)
            dist.broadcast(full, src=0)
            value = full
        full_state[name] = value.detach().clone()
    return full_state


def check_sharded_equals_unsharded(
    rank: int, world_size: int, sharding_type: str, embedding_optimizer: str
) -> None:
    ctx = init_distributed("cpu")
    try:
        torch.manual_seed(rank)  # different per rank: equality must come from the gather, not the seed
        sharded, plan = shard_model(
            CTRTrainModule(build_model(MODEL_CFG, TABLE_ROWS)),
            # Column-wise shards of 4 columns: with TorchRec's default (128) an 8-wide table stays whole.
            ShardingConfig(types=[sharding_type], min_column_shard_dim=4),
            dataclasses.replace(OPTIM_CFG, embedding_optimizer=embedding_optimizer),
            ctx,
            batch_size_per_rank=GLOBAL_BATCH_SIZE // world_size,
        )
        planned_types = {
            sharding.sharding_type for tables in plan.plan.values() for sharding in tables.values()
        }
        assert planned_types == {sharding_type}, (
            f"asked for {sharding_type}, the plan uses {planned_types}:\n{plan_to_text(plan)}"
        )
        if sharding_type == "column_wise":
            shard_counts = {
                len(sharding.ranks) for tables in plan.plan.values() for sharding in tables.values()
            }
            assert shard_counts == {2}, f"column_wise tables should have 2 shards:\n{plan_to_text(plan)}"
        where = f"[{sharding_type}, {embedding_optimizer}, rank {rank}]"
        has_ddp = any(isinstance(module, DistributedDataParallel) for module in sharded.modules())
        assert has_ddp == (world_size > 1), f"{where} DDP wraps the dense part only with ranks to average"

        initial_state = gather_full_state(sharded, rank)
        reference = CTRTrainModule(build_model(MODEL_CFG, TABLE_ROWS, sparse_device=torch.device("cpu")))
        reference.load_state_dict(initial_state)

        dense_features, lengths, ids, labels = make_global_batch(seed=7)
        local_size = GLOBAL_BATCH_SIZE // world_size
        local_samples = slice(rank * local_size, (rank + 1) * local_size)
        local_batch = slice_batch(dense_features, lengths, ids, labels, local_samples)
        global_batch = slice_batch(dense_features, lengths, ids, labels, slice(None))

        local_loss, (_, local_logits, _) = sharded(local_batch)
        reference_loss, (_, reference_logits, _) = reference(global_batch)
        assert_close(local_logits, reference_logits[local_samples], f"{where} logits")
        global_loss = local_loss.detach().clone()
        dist.all_reduce(global_loss)
        assert_close(global_loss / world_size, reference_loss.detach(), f"{where} loss")

        local_loss.backward()
        reference_loss.backward()
        reference_params = dict(reference.named_parameters())
        # Parameters TorchRec leaves to the dense optimizer: the MLPs, plus data_parallel tables.
        dense_params = dict(in_backward_optimizer_filter(sharded.named_parameters()))
        assert dense_params, f"{where} no dense parameters found"
        for name, param in dense_params.items():
            assert_close(param.grad, reference_params[name].grad, f"{where} gradient of {name}")

        torch.optim.SGD(dense_params.values(), lr=OPTIM_CFG.lr).step()
        torch.optim.SGD([reference_params[name] for name in dense_params], lr=OPTIM_CFG.lr).step()
        # TorchRec divides the embedding gradients by the world size in the backward of its all-to-all
        # (comm_ops.GRADIENT_DIVISION), so the fused step sees the gradient of the global mean loss, as
        # DDP's average gives the dense parameters: the reference steps on its full-batch gradient.
        fused_tables = [param for name, param in reference_params.items() if name not in dense_params]
        if fused_tables:
            REFERENCE_EMBEDDING_OPTIMIZERS[embedding_optimizer](fused_tables).step()
        stepped_state = gather_full_state(sharded, rank)
        for name, reference_value in reference.state_dict().items():
            assert_close(stepped_state[name], reference_value, f"{where} {name} after one step")
    finally:
        destroy_distributed()


@pytest.mark.parametrize("sharding_type", SHARDING_TYPES)
def test_sharded_model_matches_unsharded_reference(sharding_type: str) -> None:
    run_ranks(
        check_sharded_equals_unsharded,
        world_size=WORLD_SIZE,
        sharding_type=sharding_type,
        embedding_optimizer="sgd",
    )


@pytest.mark.parametrize("sharding_type", ["table_wise", "data_parallel"])
def test_one_rank_model_without_ddp_matches_unsharded_reference(sharding_type: str) -> None:
    run_ranks(
        check_sharded_equals_unsharded, world_size=1, sharding_type=sharding_type, embedding_optimizer="sgd"
    )


@pytest.mark.parametrize("embedding_optimizer", ["rowwise_adagrad", "adagrad"])
def test_fused_embedding_optimizer_matches_its_pytorch_counterpart(embedding_optimizer: str) -> None:
    """Catches a wrong class -> fbgemm mapping (e.g. per-element instead of rowwise Adagrad)."""
    run_ranks(
        check_sharded_equals_unsharded,
        world_size=WORLD_SIZE,
        sharding_type="row_wise",
        embedding_optimizer=embedding_optimizer,
    )


def test_adam_embeddings_on_cpu_fail_naming_the_field() -> None:
    # fbgemm's CPU kernel has no Adam; without this check DMP fails deep inside fbgemm with an assert.
    with pytest.raises(
        ValueError, match=r"optim\.embedding_optimizer: 'adam' .* rowwise_adagrad, adagrad, sgd"
    ):
        fused_optimizer_spec(dataclasses.replace(OPTIM_CFG, embedding_optimizer="adam"), "cpu")
