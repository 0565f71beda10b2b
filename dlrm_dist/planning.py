"""What TorchRec's sharding planner is given: per-table constraints, pooling factors, the cluster.

`dlrm_dist.sharding` shards a model in three steps (its docstring); this module holds the planner of the
second and its inputs, built from numbers and config alone: `build_constraints` turns `[sharding]` into
`ParameterConstraints` (with `pooling_factors` for multi-hot features), `ClusterShape` describes the
machines (`live_cluster` reads this job's), and `build_topology` / `build_planner` make TorchRec's
`Topology` and `EmbeddingShardingPlanner` from it. Nothing here needs a GPU, a process group or a
sharded model, so `dlrm-plan` can plan a cluster it does not run on; `dlrm_dist.sharding.prepare_planning`
gathers these inputs for training and `dlrm-plan` alike.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.constants import POOLING_FACTOR
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import (
    HardwareConfig,
    KernelConfig,
    PlannerError,
    ShardingOption,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ShardingPlan

from dlrm_dist.config import SHARDING_TYPES, ShardingConfig
from dlrm_dist.distributed import DistContext

# Share of each rank's HBM the planner keeps free for activations and the dense model (TorchRec's default).
PLANNER_HBM_RESERVE = 0.15

# On one rank a split table keeps all its shards there, and the split only adds work: the planner chose
# table_row_wise for every criteo_kaggle table on 1 CPU rank, whose input bucketing and splits made a
# step 2.3 ms (7%) slower than table_wise.
ONE_RANK_TYPES = ("table_wise", "data_parallel")

# Devices on which several ranks first plan the tables a recipe leaves open whole (ONE_RANK_TYPES), and
# only when that does not fit with every type: TorchRec's cost model, written for GPUs, makes every
# criteo_kaggle table table_row_wise on 2 CPU ranks, whose bucketing and two all-to-alls over gloo made
# a step 1.19-1.23x slower than table_wise in `benchmarks/train_throughput.py`.
WHOLE_TABLES_FIRST_DEVICES = ("cpu",)


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


def plan_attempts(
    constraints: dict[str, ParameterConstraints],
    sharding_cfg: ShardingConfig,
    device_type: str,
    world_size: int,
    table_sizes: Mapping[str, int],
) -> list[dict[str, ParameterConstraints]]:
    """The constraint sets to plan with, in order; the first the planner finds a plan for is used.

    On several ranks of a `WHOLE_TABLES_FIRST_DEVICES` device, the tables the recipe leaves open
    (`sharding.types` empty, not named in `sharding.tables`) are first all held to table_wise or
    data_parallel; then the largest 1, 2, 4, ... of them get every type back (a table too large to sit
    whole on one rank is split, the rest stay whole), and last all of them. Elsewhere `constraints`.

    Args:
        constraints: from `build_constraints`.
        sharding_cfg: the `[sharding]` section.
        device_type: "cpu" or "cuda".
        world_size: ranks of the plan.
        table_sizes: table name -> weights (rows x dim), to relax the largest first.
    """
    if device_type not in WHOLE_TABLES_FIRST_DEVICES or world_size == 1 or sharding_cfg.types:
        return [constraints]
    open_tables = sorted(
        (table for table in constraints if table not in sharding_cfg.tables),
        key=lambda table: (-table_sizes.get(table, 0), table),
    )

    def whole_except(relaxed: set[str]) -> dict[str, ParameterConstraints]:
        return {
            table: dataclasses.replace(
                constraint,
                sharding_types=[t for t in constraint.sharding_types or () if t in ONE_RANK_TYPES],
            )
            if table in open_tables and table not in relaxed
            else constraint
            for table, constraint in constraints.items()
        }

    attempts, count = [whole_except(set())], 1
    while count < len(open_tables):
        attempts.append(whole_except(set(open_tables[:count])))
        count *= 2
    attempts.append(constraints)
    return [attempt for index, attempt in enumerate(attempts) if attempt not in attempts[:index]]


def first_plan(
    make_planner: Callable[[dict[str, ParameterConstraints]], EmbeddingShardingPlanner],
    attempts: Sequence[dict[str, ParameterConstraints]],
    module: torch.nn.Module,
    sharders: list,
) -> ShardingPlan:
    """The plan of the first of `attempts` (see `plan_attempts`) the planner finds one for.

    Raises:
        PlannerError: the last attempt's, when none has a plan.
    """
    for index, constraints in enumerate(attempts):
        try:
            return make_planner(constraints).plan(module, sharders)
        except PlannerError:
            if index == len(attempts) - 1:
                raise
    raise ValueError("no constraints to plan with")
