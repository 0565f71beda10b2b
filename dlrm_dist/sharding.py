"""Sharding the embedding tables across ranks: fused optimizer, planner, DistributedModelParallel.

This follows TorchRec's recipe, in order:

1. attach the embedding optimizer to the table weights (`_apply_optimizer_in_backward`); TorchRec turns it
   into an fbgemm fused optimizer that updates the tables inside backward, so no embedding gradient is
   ever materialised;
2. plan with `EmbeddingShardingPlanner` over the real topology (world size, hosts, HBM or DDR per rank),
   with per-table `ParameterConstraints` from `[sharding]` and the features' ids per bag (the planner
   and its inputs are built in `dlrm_dist.planning`); rank 0 plans and broadcasts the plan (`dlrm-plan`
   runs the same steps 1-2 for a `ClusterShape` given as numbers, with no GPU and no process group);
3. wrap in `DistributedModelParallel`, which shards the tables, materialises them from the meta device and
   wraps the dense rest in DDP (on more than one rank: see `OneRankWrapper`).

Tables sharded `data_parallel` are the exception to step 1: TorchRec replicates them with the dense kernel
and DDP averages their gradients, so they are trained by the dense optimizer, not the fused one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torchrec.optim as trec_optim
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.collective_utils import invoke_on_rank_and_broadcast_result
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import (
    DataParallelWrapper,
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import ParameterConstraints
from torchrec.distributed.types import ModuleSharder, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from dlrm_dist.config import SHARDING_TYPES, OptimConfig, ShardingConfig
from dlrm_dist.distributed import DistContext
from dlrm_dist.planning import (
    build_constraints,
    build_planner,
    first_plan,
    live_cluster,
    plan_attempts,
    pooling_factors,
)


@dataclass(frozen=True)
class FusedOptimizerSpec:
    """An embedding optimizer as TorchRec wants it: a class it maps to an fbgemm `EmbOptimType`.

    Args:
        optimizer_class: looked up in `torchrec.distributed.utils._OPTIMIZER_CLASS_TO_EMB_OPT_TYPE`.
        takes_eps: whether `optim.eps` is passed on (Adagrad and Adam have an epsilon, SGD has not).
        device_types: where fbgemm's table-batched embedding kernel implements it.
    """

    optimizer_class: type[torch.optim.Optimizer]
    takes_eps: bool
    device_types: tuple[str, ...] = ("cpu", "cuda")


# TorchRec 1.8 maps these classes to fbgemm's EXACT_ROWWISE_ADAGRAD, EXACT_ADAGRAD, EXACT_SGD and ADAM.
# Note that torch.optim.Adagrad means per-element EXACT_ADAGRAD; only torchrec's RowWiseAdagrad is rowwise.
# fbgemm's CPU kernel has no ADAM ("Optimizer adam is not supported in CPU mode.").
FUSED_OPTIMIZERS: dict[str, FusedOptimizerSpec] = {
    "rowwise_adagrad": FusedOptimizerSpec(trec_optim.RowWiseAdagrad, takes_eps=True),
    "adagrad": FusedOptimizerSpec(trec_optim.Adagrad, takes_eps=True),
    "sgd": FusedOptimizerSpec(trec_optim.SGD, takes_eps=False),
    "adam": FusedOptimizerSpec(trec_optim.Adam, takes_eps=True, device_types=("cuda",)),
}


class EmbeddingBagCollectionAllTypesSharder(EmbeddingBagCollectionSharder):
    """TorchRec's EBC sharder that also offers row_wise and table_row_wise on CPU.

    TorchRec 1.8 lists row_wise / table_row_wise only for cuda, although their gloo path (all-to-all plus
    reduce-scatter) works on CPU; this makes all five sharding types plannable everywhere.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        offered = super().sharding_types(compute_device_type)
        return offered + [sharding_type for sharding_type in SHARDING_TYPES if sharding_type not in offered]


class OneRankWrapper(DataParallelWrapper):
    """DistributedModelParallel's data-parallel step for a job of one rank: the dense part stays a plain
    module on the device, with no DDP around it.

    DDP on one rank has nothing to average, yet its hooks and bucket copies cost about 1 ms of a 30 ms
    criteo_kaggle step on 2 CPU cores. State dicts and parameter names are the same either way
    (DistributedModelParallel strips DDP's "module." prefix), so checkpoints move between world sizes.
    """

    def wrap(self, dmp: DistributedModelParallel, env: object, device: torch.device) -> None:
        dmp._dmp_wrapped_module.to(device)


def build_sharders() -> list[ModuleSharder[nn.Module]]:
    """The sharders handed to both the planner and DistributedModelParallel (they must be the same)."""
    return [EmbeddingBagCollectionAllTypesSharder()]


def fused_optimizer_spec(optim_cfg: OptimConfig, device_type: str) -> FusedOptimizerSpec:
    """The registry entry of `optim.embedding_optimizer`, checked against the device.

    Args:
        optim_cfg: the `[optim]` section.
        device_type: "cpu" or "cuda".

    Returns:
        The `FusedOptimizerSpec`.

    Raises:
        ValueError: naming `optim.embedding_optimizer` when fbgemm cannot run it on this device.
    """
    spec = FUSED_OPTIMIZERS[optim_cfg.embedding_optimizer]
    if device_type not in spec.device_types:
        usable = [name for name, other in FUSED_OPTIMIZERS.items() if device_type in other.device_types]
        raise ValueError(
            f"optim.embedding_optimizer: {optim_cfg.embedding_optimizer!r} has no fused {device_type} kernel "
            f"in fbgemm (runs on: {', '.join(spec.device_types)}); on {device_type} use one of "
            f"{', '.join(usable)}"
        )
    return spec


def apply_embedding_optimizer(module: nn.Module, optim_cfg: OptimConfig, device_type: str) -> None:
    """Attaches `optim.embedding_optimizer` to every embedding table of `module`, to run in backward.

    Must run before planning: the planner sizes optimizer state and picks the `fused` kernel from it.

    Args:
        module: the unsharded model (tables usually on the meta device).
        optim_cfg: `embedding_optimizer`, `embedding_lr` and `eps`.
        device_type: "cpu" or "cuda" (fbgemm's optimizers differ between them).

    Raises:
        ValueError: naming `optim.embedding_optimizer` when it cannot run on this device.
    """
    spec = fused_optimizer_spec(optim_cfg, device_type)
    optimizer_kwargs: dict[str, float] = {"lr": optim_cfg.embedding_lr}
    if spec.takes_eps:
        optimizer_kwargs["eps"] = optim_cfg.eps
    embedding_params = [
        param
        for submodule in module.modules()
        if isinstance(submodule, EmbeddingBagCollection)
        for param in submodule.parameters()
    ]
    # torch's own entry point; torchrec.optim.apply_optimizer_in_backward is a deprecated alias of it.
    _apply_optimizer_in_backward(spec.optimizer_class, embedding_params, optimizer_kwargs)


def _table_features(module: nn.Module) -> dict[str, list[str]]:
    """The features each embedding table of `module` reads, keyed by table name."""
    return {
        config.name: list(config.feature_names)
        for submodule in module.modules()
        if isinstance(submodule, EmbeddingBagCollection)
        for config in submodule.embedding_bag_configs()
    }


def table_sizes(module: nn.Module) -> dict[str, int]:
    """Rows x dim of each embedding table of `module`, keyed by table name."""
    return {
        config.name: config.num_embeddings * config.embedding_dim
        for submodule in module.modules()
        if isinstance(submodule, EmbeddingBagCollection)
        for config in submodule.embedding_bag_configs()
    }


def prepare_planning(
    train_module: nn.Module,
    sharding_cfg: ShardingConfig,
    optim_cfg: OptimConfig,
    device_type: str,
    ids_per_bag: Mapping[str, float] | None,
    world_size: int,
) -> tuple[list[ModuleSharder[nn.Module]], dict[str, ParameterConstraints]]:
    """Step 1 and the inputs of step 2: attaches the fused optimizer, then builds sharders and constraints.

    Shared by `shard_model` and `dlrm-plan`, so that a dry-run plan is the plan training would make.

    Args:
        train_module: the unsharded model, tables on the meta device.
        sharding_cfg: the `[sharding]` section.
        optim_cfg: the `[optim]` section (embedding optimizer, its lr and eps).
        device_type: "cpu" or "cuda".
        ids_per_bag: feature name -> ids per bag (`trainer.planner_ids_per_bag`; None or empty: one-hot).
        world_size: ranks the plan is for (see `build_constraints`).

    Returns:
        `(sharders, constraints)` for the planner and DistributedModelParallel.
    """
    sharders = build_sharders()
    apply_embedding_optimizer(train_module, optim_cfg, device_type)
    table_features = _table_features(train_module)
    constraints = build_constraints(
        sharding_cfg,
        list(table_features),
        sharders[0],
        device_type,
        pooling_factors(table_features, ids_per_bag or {}),
        world_size,
    )
    return sharders, constraints


def shard_model(
    train_module: nn.Module,
    sharding_cfg: ShardingConfig,
    optim_cfg: OptimConfig,
    ctx: DistContext,
    batch_size_per_rank: int,
    ids_per_bag: Mapping[str, float] | None = None,
    trained_types: Mapping[str, str] | None = None,
) -> tuple[DistributedModelParallel, ShardingPlan]:
    """Shards `train_module`'s embedding tables over all ranks and data-parallelises the rest.

    Every rank must call this with the same module and config (it plans on rank 0 and broadcasts).

    Args:
        train_module: e.g. `CTRTrainModule(build_model(...))`, tables on the meta device.
        sharding_cfg: the `[sharding]` section.
        optim_cfg: the `[optim]` section (embedding optimizer, its lr and eps).
        ctx: this rank's distributed context (the default process group must exist).
        batch_size_per_rank: per-rank batch size, for the planner's cost model.
        ids_per_bag: feature name -> ids per bag, the planner's pooling factors (None or empty: one-hot).
        trained_types: table -> sharding type in the checkpoint being resumed (None: a fresh run).

    Returns:
        `(model, plan)`: the `DistributedModelParallel` model (its `fused_optimizer` holds the embedding
        optimizer state) and the plan every rank uses.
    """
    sharders, constraints = prepare_planning(
        train_module, sharding_cfg, optim_cfg, ctx.device.type, ids_per_bag, ctx.world_size
    )
    cluster = live_cluster(ctx)
    attempts = plan_attempts(
        constraints, sharding_cfg, ctx.device.type, ctx.world_size, table_sizes(train_module)
    )

    def collective_plan(attempts: list[dict[str, ParameterConstraints]]) -> ShardingPlan:
        # Planned on rank 0 and broadcast, as TorchRec's `collective_plan` does, trying `attempts` in turn.
        return invoke_on_rank_and_broadcast_result(
            dist.GroupMember.WORLD,
            0,
            first_plan,
            lambda attempt: build_planner(cluster, batch_size_per_rank, attempt),
            attempts,
            train_module,
            sharders,
        )

    plan = collective_plan(attempts)
    if trained_types and _replication_changed(plan, trained_types):
        # A resume on another layout: plan again with each table kept on its side of the optimizer
        # (every rank decides alike, from the broadcast plan). Planning unpinned first keeps a resume on
        # the same layout on exactly the plan it had.
        plan = collective_plan([pin_replication(attempt, trained_types) for attempt in attempts])
    wrapper = OneRankWrapper() if ctx.world_size == 1 else DefaultDataParallelWrapper()
    model = DistributedModelParallel(
        module=train_module, device=ctx.device, plan=plan, sharders=sharders, data_parallel_wrapper=wrapper
    )
    return model, plan


def sharding_types(plan: ShardingPlan) -> dict[str, str]:
    """Table name -> its sharding type in `plan` (what a checkpoint records)."""
    return {table: sharding_type for _, table, sharding_type, _, _, _ in _shard_rows(plan)}


def _replication_changed(plan: ShardingPlan, trained_types: Mapping[str, str]) -> bool:
    data_parallel = ShardingType.DATA_PARALLEL.value
    return any(
        (planned == data_parallel) != (trained_types[table] == data_parallel)
        for table, planned in sharding_types(plan).items()
        if table in trained_types
    )


def pin_replication(
    constraints: dict[str, ParameterConstraints], trained_types: Mapping[str, str]
) -> dict[str, ParameterConstraints]:
    """The constraints with each table held to data_parallel or away from it, as it was trained.

    A data_parallel table is trained by the dense optimizer (through DDP), a sharded one by the fused
    embedding optimizer: their optimizer states differ in kind (e.g. Adam's moments against row-wise
    Adagrad's accumulator), so a resume cannot move a table across without losing its state.

    Raises:
        ValueError: naming `sharding.tables.<table>` when this run's constraints leave it no such type.
    """
    data_parallel = ShardingType.DATA_PARALLEL.value
    pinned = {}
    for table, constraint in constraints.items():
        allowed = list(constraint.sharding_types or [])
        if table in trained_types:
            was_replicated = trained_types[table] == data_parallel
            allowed = [t for t in allowed if (t == data_parallel) == was_replicated]
            if not allowed:
                raise ValueError(
                    f"sharding.tables.{table}: the checkpoint trained it {trained_types[table]}, and this "
                    f"run allows only {', '.join(constraint.sharding_types or [])}; a table cannot move "
                    "between data_parallel (dense optimizer) and sharded (fused optimizer) on resume"
                )
        pinned[table] = dataclasses.replace(constraint, sharding_types=allowed)
    return pinned


def _shard_rows(
    plan: ShardingPlan,
) -> list[tuple[str, str, str, str, str, list[tuple[int, list[int], list[int]]]]]:
    """(module, table, sharding type, kernel, ranks, [(rank, offsets, sizes)]) for every table of the plan."""
    rows = []
    for module_path, module_plan in plan.plan.items():
        for table, sharding in module_plan.items():
            shards = []
            if sharding.sharding_spec is not None:
                for shard in sharding.sharding_spec.shards:
                    shards.append((shard.placement.rank(), shard.shard_offsets, shard.shard_sizes))
            ranks = ",".join(str(rank) for rank in sharding.ranks or [])
            rows.append((module_path, table, sharding.sharding_type, sharding.compute_kernel, ranks, shards))
    return rows


def plan_to_text(plan: ShardingPlan) -> str:
    """A human-readable table of the plan (what plan.txt holds).

    Args:
        plan: the plan returned by `shard_model`.

    Returns:
        One line per table: module, table, sharding type, kernel, ranks, and each shard as
        `r<rank>:<rows>x<cols>@<row offset>,<col offset>` (data_parallel: a full replica on every rank).
    """
    header = ("module", "table", "sharding", "kernel", "ranks", "shards (rank:rows x cols @ row,col)")
    lines = [header]
    for module_path, table, sharding_type, kernel, ranks, shards in _shard_rows(plan):
        shard_text = " ".join(
            f"r{rank}:{sizes[0]}x{sizes[1]}@{offsets[0]},{offsets[1]}" for rank, offsets, sizes in shards
        )
        if sharding_type == ShardingType.DATA_PARALLEL.value:
            shard_text = "full replica on every rank"
        lines.append((module_path, table, sharding_type, kernel, ranks or "all", shard_text))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in lines
    )


def embedding_bytes_per_rank(model: DistributedModelParallel, world_size: int) -> list[int]:
    """Bytes of embedding weights each rank holds under the model's plan (optimizer state not included).

    No collective: every rank can compute the whole list from the plan.

    Args:
        model: the sharded model; its plan gives the shards, its tables the element size and the size
            of data_parallel replicas.
        world_size: number of ranks.

    Returns:
        A list indexed by rank.
    """
    bytes_per_rank = [0] * world_size
    for module_path, table, sharding_type, _, _, shards in _shard_rows(model.plan):
        weight = model.module.get_submodule(module_path).embedding_bags[table].weight
        if sharding_type == ShardingType.DATA_PARALLEL.value:
            for rank in range(world_size):
                bytes_per_rank[rank] += weight.numel() * weight.element_size()
            continue
        for rank, _, sizes in shards:
            bytes_per_rank[rank] += sizes[0] * sizes[1] * weight.element_size()
    return bytes_per_rank
