"""Sharding the embedding tables across ranks: fused optimizer, planner, DistributedModelParallel.

This follows TorchRec's recipe, in order:

1. attach the embedding optimizer to the table weights (`_apply_optimizer_in_backward`); TorchRec turns it
   into an fbgemm fused optimizer that updates the tables inside backward, so no embedding gradient is
   ever materialised;
2. plan with `EmbeddingShardingPlanner` over the real topology (world size, hosts, HBM or DDR per rank),
   with per-table `ParameterConstraints` from `[sharding]` and the features' ids per bag; rank 0 plans and
   broadcasts the plan (`dlrm-plan` runs the same steps 1-2 for a `ClusterShape` given as numbers, with no
   GPU and no process group);
3. wrap in `DistributedModelParallel`, which shards the tables, materialises them from the meta device and
   wraps the dense rest in DDP (on more than one rank: see `OneRankWrapper`).

Tables sharded `data_parallel` are the exception to step 1: TorchRec replicates them with the dense kernel
and DDP averages their gradients, so they are trained by the dense optimizer, not the fused one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torchrec.optim as trec_optim
from torch import nn
from torch.distributed.optim import _apply_optimizer_in_backward
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import (
    DataParallelWrapper,
    DefaultDataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.constants import POOLING_FACTOR
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import (
    HardwareConfig,
    KernelConfig,
    ShardingOption,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ModuleSharder, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from dlrm_dist.config import SHARDING_TYPES, OptimConfig, ShardingConfig
from dlrm_dist.distributed import DistContext

# Share of each rank's HBM the planner keeps free for activations and the dense model (TorchRec's default).
PLANNER_HBM_RESERVE = 0.15


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


# On one rank a split table keeps all its shards there, and the split only adds work: the planner chose
# table_row_wise for every criteo_kaggle table on 1 CPU rank, whose input bucketing and splits made a
# step 2.3 ms (7%) slower than table_wise.
ONE_RANK_TYPES = ("table_wise", "data_parallel")


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


def pooling_factors(
    table_features: dict[str, list[str]], ids_per_bag: Mapping[str, float]
) -> dict[str, list[float]]:
    """The planner's pooling factors (ids per bag) of every table's features (`trainer.planner_ids_per_bag`).

    Args:
        table_features: the features each table reads (e.g. table C3 and wide_C3 both read feature C3).
        ids_per_bag: feature name -> ids per bag of the multi-hot features (empty: one-hot, TorchRec's
            default of 1 per bag; a feature not named has 1).

    Returns:
        Per table, one pooling factor per feature it reads; empty when `ids_per_bag` is.
    """
    if not ids_per_bag:
        return {}
    return {
        table: [float(ids_per_bag.get(feature, 1.0)) for feature in features]
        for table, features in table_features.items()
    }


def build_constraints(
    sharding_cfg: ShardingConfig,
    table_names: list[str],
    sharder: EmbeddingBagCollectionSharder,
    compute_device_type: str,
    table_pooling_factors: dict[str, list[float]] | None,
    world_size: int,
) -> dict[str, ParameterConstraints]:
    """Per-table planner constraints from `[sharding]`, checked against what the device can run.

    Args:
        sharding_cfg: `types` for all tables, `tables` per-table overrides, `compute_kernel`,
            `min_column_shard_dim`.
        table_names: every embedding table of the model.
        sharder: the sharder whose sharding types and kernels are available.
        compute_device_type: "cpu" or "cuda".
        table_pooling_factors: ids per bag of each table's features (see `pooling_factors`); a table
            left out keeps TorchRec's one-hot default.
        world_size: ranks the plan is for. On one rank a table left open is table_wise or
            data_parallel: the row and column splits would put every shard on that rank anyway.

    Returns:
        `ParameterConstraints` keyed by table name.

    Raises:
        ValueError: naming `sharding.tables.<name>` for an unknown table, `sharding.types` for a type the
            device cannot run, or `sharding.compute_kernel` for a kernel no allowed type can run with.
    """
    unknown_tables = sorted(set(sharding_cfg.tables) - set(table_names))
    if unknown_tables:
        raise ValueError(
            f"sharding.tables.{unknown_tables[0]}: no such table (known: {', '.join(table_names)})"
        )
    offered_types = sharder.sharding_types(compute_device_type)
    constraints: dict[str, ParameterConstraints] = {}
    for table in table_names:
        allowed_types = [sharding_cfg.tables[table]] if table in sharding_cfg.tables else sharding_cfg.types
        # Left open, the planner chooses among the five types this project supports and tests, not
        # TorchRec's extra ones (table_column_wise, grid_shard).
        allowed_types = list(allowed_types) or [
            t for t in SHARDING_TYPES if t in offered_types and (world_size > 1 or t in ONE_RANK_TYPES)
        ]
        for sharding_type in allowed_types:
            if sharding_type not in offered_types:
                raise ValueError(
                    f"sharding.types: {sharding_type!r} cannot run on {compute_device_type} "
                    f"(available: {', '.join(offered_types)})"
                )
        kernels = None
        if sharding_cfg.compute_kernel:
            # data_parallel has exactly one kernel, "dense"; allowing it keeps a global kernel choice
            # (e.g. "fused") compatible with tables that the planner may replicate.
            kernels = [sharding_cfg.compute_kernel, EmbeddingComputeKernel.DENSE.value]
            runnable = {
                kernel
                for sharding_type in allowed_types
                for kernel in sharder.compute_kernels(sharding_type, compute_device_type)
            }
            if sharding_cfg.compute_kernel not in runnable:
                raise ValueError(
                    f"sharding.compute_kernel: {sharding_cfg.compute_kernel!r} cannot run table {table} "
                    f"sharded {', '.join(allowed_types)} on {compute_device_type} "
                    f"(available: {', '.join(sorted(runnable))})"
                )
        constraints[table] = ParameterConstraints(
            sharding_types=allowed_types,
            compute_kernels=kernels,
            min_partition=sharding_cfg.min_column_shard_dim or None,
            # Multi-hot bags scale the planner's input buffers, lookup cost and all-to-all estimates.
            pooling_factors=(table_pooling_factors or {}).get(table, [POOLING_FACTOR]),
        )
    return constraints


def _host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class ClusterShape:
    """The machines a plan is for, as TorchRec's planner sees them.

    Args:
        world_size: ranks in the job.
        local_world_size: ranks per host (on cuda, GPUs per node).
        device_type: "cpu" or "cuda".
        hbm_bytes: GPU memory of each rank (unused on cpu).
        ddr_bytes: host memory of each rank (its share of the host's).
    """

    world_size: int
    local_world_size: int
    device_type: str
    hbm_bytes: int
    ddr_bytes: int


def live_cluster(ctx: DistContext) -> ClusterShape:
    """This job's machines: its ranks, the host's DDR shared by its ranks and, on cuda, the GPU's HBM.

    Args:
        ctx: world size, ranks per host and device of this job.

    Returns:
        The `ClusterShape` to plan for.
    """
    hbm_bytes = torch.cuda.get_device_properties(ctx.device).total_memory if ctx.device.type == "cuda" else 0
    return ClusterShape(
        world_size=ctx.world_size,
        local_world_size=ctx.local_world_size,
        device_type=ctx.device.type,
        hbm_bytes=hbm_bytes,
        ddr_bytes=_host_memory_bytes() // ctx.local_world_size,
    )


def build_topology(cluster: ClusterShape) -> Topology:
    """TorchRec's `Topology` of `cluster`; built from numbers alone, so it needs no GPU or process group.

    Args:
        cluster: ranks, hosts and memory per rank.

    Returns:
        The topology (on cuda the planner places tables in HBM first, then DDR through UVM kernels).
    """
    hardware = HardwareConfig(
        ddr_cap_bytes=cluster.ddr_bytes,
        hbm_cap_bytes=cluster.hbm_bytes if cluster.device_type == "cuda" else None,
    )
    return TopologyFactory.create_topology(
        trainer_config=TrainerConfig(
            world_size=cluster.world_size, local_world_size=cluster.local_world_size
        ),
        hardware_config=hardware,
        kernel_config=KernelConfig(compute_device=cluster.device_type),
    )


def build_planner(
    cluster: ClusterShape,
    batch_size_per_rank: int,
    constraints: dict[str, ParameterConstraints],
    callbacks: Sequence[Callable[[list[ShardingOption]], list[ShardingOption]]] = (),
) -> EmbeddingShardingPlanner:
    """An `EmbeddingShardingPlanner` over `cluster`.

    Args:
        cluster: the machines to plan for (`live_cluster(ctx)` for this job).
        batch_size_per_rank: the per-rank batch the planner sizes communication for.
        constraints: per-table constraints from `build_constraints`.
        callbacks: called with the chosen sharding options (each shard's rank and storage estimate)
            before they become the plan; each returns the options to keep.

    Returns:
        The planner.
    """
    return EmbeddingShardingPlanner(
        topology=build_topology(cluster),
        batch_size=batch_size_per_rank,
        constraints=constraints,
        storage_reservation=HeuristicalStorageReservation(percentage=PLANNER_HBM_RESERVE),
        debug=False,
        callbacks=list(callbacks),
    )


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
    planner = build_planner(live_cluster(ctx), batch_size_per_rank, constraints)
    plan = planner.collective_plan(train_module, sharders, dist.GroupMember.WORLD)
    if trained_types and _replication_changed(plan, trained_types):
        # A resume on another layout: plan again with each table kept on its side of the optimizer
        # (every rank decides alike, from the broadcast plan). Planning unpinned first keeps a resume on
        # the same layout on exactly the plan it had.
        pinned = pin_replication(constraints, trained_types)
        planner = build_planner(live_cluster(ctx), batch_size_per_rank, pinned)
        plan = planner.collective_plan(train_module, sharders, dist.GroupMember.WORLD)
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
