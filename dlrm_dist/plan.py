"""`dlrm-plan`: the sharding plan of a recipe on a cluster you describe, and the memory it needs per rank.

    dlrm-plan --config configs/criteo_1tb_dcnv2.toml --world-size 16 --local-world-size 8 \\
        --device cuda --hbm-gb 80 [--ddr-gb N] [--batch-size-per-rank N] [--data DIR] [--section.key=value]

It runs the planning half of training (`dlrm_dist.sharding.prepare_planning`, then TorchRec's
`EmbeddingShardingPlanner.plan`) on the model built on the meta device, over a `Topology` made from the
numbers given: no GPU, no process group, no data. Table sizes come from `model.num_embeddings`, or from
the manifest of `--data DIR` (checked against `model.num_embeddings` when both are given).

The memory figures are the planner's own storage estimates, summed per rank over the shards it placed
there: HBM and DDR each hold weights + optimizer state + the lookup's input/output buffers. The weight
column is exact (shard rows x columns x bytes per element); the rest of the estimate is optimizer state and
buffers. A data_parallel table is a full replica on every rank, so it counts on every rank.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torchrec.distributed.planner import ParameterConstraints
from torchrec.distributed.planner.constants import DDR_CAP
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
from torchrec.distributed.planner.types import PlannerError, ShardingOption
from torchrec.distributed.types import ModuleSharder, ShardingPlan

from data_prep.features import FeatureSchema
from data_prep.manifest import load_manifest
from dlrm_dist.config import JobConfig, build_arg_parser, load_config
from dlrm_dist.models import build_model
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.planning import (
    PLANNER_HBM_RESERVE,
    ClusterShape,
    build_planner,
    build_topology,
    first_plan,
    plan_attempts,
)
from dlrm_dist.sharding import plan_to_text, prepare_planning, table_sizes
from dlrm_dist.trainer import data_features, planner_ids_per_bag

DESCRIPTION = (
    "Print the TorchRec sharding plan of a recipe on a cluster described by numbers, and the memory "
    "(embedding weights + optimizer state) it needs on each rank. Needs no GPU and no process group."
)
GIB = 2**30
META_DEVICE = torch.device("meta")


class PlanDoesNotFitError(ValueError):
    """The planner found no plan: the tables do not fit in the cluster's memory, or not under the constraints."""


@dataclass(frozen=True)
class RankMemory:
    """What one rank holds under a plan, in bytes.

    Args:
        weight_bytes: embedding weights of the shards (and data_parallel replicas) placed on the rank.
        hbm_bytes: the planner's HBM estimate: weights + optimizer state + input/output buffers.
        ddr_bytes: the planner's DDR estimate (UVM kernels keep their tables there).
    """

    weight_bytes: int
    hbm_bytes: int
    ddr_bytes: int


@dataclass(frozen=True)
class PlanReport:
    """A plan and the memory it implies.

    Args:
        plan: the `ShardingPlan` DistributedModelParallel would receive.
        options: the planner's chosen sharding option per table (shard ranks, sizes, storage estimates).
        ranks: memory per rank, indexed by rank.
    """

    plan: ShardingPlan
    options: list[ShardingOption]
    ranks: list[RankMemory]


def rank_memory(options: list[ShardingOption], world_size: int) -> list[RankMemory]:
    """Sums the planner's per-shard storage estimates, and the shards' exact weight bytes, per rank.

    Args:
        options: the sharding options of a plan (each shard has its rank and storage set).
        world_size: number of ranks.

    Returns:
        A `RankMemory` per rank.
    """
    weights, hbm, ddr = [0] * world_size, [0] * world_size, [0] * world_size
    for option in options:
        bytes_per_element = option.tensor.element_size()
        for shard in option.shards:
            weights[shard.rank] += math.prod(shard.size) * bytes_per_element
            hbm[shard.rank] += shard.storage.hbm
            ddr[shard.rank] += shard.storage.ddr
    return [RankMemory(*memory) for memory in zip(weights, hbm, ddr, strict=True)]


def _storage_gap(
    module: nn.Module,
    sharders: list[ModuleSharder[nn.Module]],
    constraints: dict[str, ParameterConstraints],
    cluster: ClusterShape,
    batch_size: int,
) -> tuple[int, int]:
    """(bytes the tables need at least, bytes the cluster offers them), both as the planner counts them."""
    topology = build_topology(cluster)
    options = EmbeddingEnumerator(
        topology=topology, batch_size=batch_size, constraints=constraints
    ).enumerate(module, sharders)
    cheapest: dict[str, int] = {}
    for option in options:
        total = sum(shard.storage.hbm + shard.storage.ddr for shard in option.shards)
        cheapest[option.name] = min(total, cheapest.get(option.name, total))
    reserved = HeuristicalStorageReservation(percentage=PLANNER_HBM_RESERVE).reserve(
        topology=topology, batch_size=batch_size, module=module, sharders=sharders, constraints=constraints
    )
    available = sum(device.storage.hbm + device.storage.ddr for device in reserved.devices)
    return sum(cheapest.values()), available


@contextlib.contextmanager
def _quiet_torchrec() -> Iterator[None]:
    # What dlrm-plan prints is the plan. TorchRec's warnings about a meta-device dry run would bury it and
    # are expected: "Sharding spec not found" for every data_parallel replica, the dense-size heuristic
    # note, and HeuristicalStorageReservation's FutureWarning (training uses that reservation too).
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        root.setLevel(level)


def plan_cluster(
    cfg: JobConfig,
    features: FeatureSchema | list[int],
    cluster: ClusterShape,
    batch_size_per_rank: int,
    ids_per_bag: dict[str, float] | None = None,
) -> PlanReport:
    """Plans `cfg`'s model over `cluster` the way training would, without a GPU or process group.

    Args:
        cfg: the job config (`model`, `sharding`, `optim`).
        features: the data set's schema, or bare table sizes (tables C1..Cn over 13 dense features).
        cluster: the machines to plan for.
        batch_size_per_rank: the per-rank batch the planner sizes buffers and communication for.
        ids_per_bag: feature name -> the planner's ids per bag (`trainer.planner_ids_per_bag`); None:
            `model.multi_hot_sizes` over the features.

    Returns:
        The `PlanReport`.

    Raises:
        PlanDoesNotFitError: when the planner finds no plan; the one-line message gives the memory the
            tables need and the memory the cluster offers them.
        ValueError: naming the config field for a config the device cannot run.
    """
    train_module = CTRTrainModule(
        build_model(cfg.model, features, sparse_device=META_DEVICE, dense_device=META_DEVICE)
    )
    if ids_per_bag is None:
        ids_per_bag = planner_ids_per_bag(
            cfg.model, features if isinstance(features, FeatureSchema) else None
        )
    sharders, constraints = prepare_planning(
        train_module,
        cfg.sharding,
        cfg.optim,
        cluster.device_type,
        ids_per_bag,
        cluster.world_size,
    )
    chosen: list[list[ShardingOption]] = []

    def keep_chosen(options: list[ShardingOption]) -> list[ShardingOption]:
        chosen.append(options)
        return options

    attempts = plan_attempts(
        constraints, cfg.sharding, cluster.device_type, cluster.world_size, table_sizes(train_module)
    )
    with _quiet_torchrec():
        try:
            plan = first_plan(
                lambda attempt: build_planner(cluster, batch_size_per_rank, attempt, callbacks=[keep_chosen]),
                attempts,
                train_module,
                sharders,
            )
        except PlannerError:
            needed, available = _storage_gap(
                train_module, sharders, constraints, cluster, batch_size_per_rank
            )
            raise PlanDoesNotFitError(_no_plan_message(needed, available, cluster.world_size)) from None
    return PlanReport(plan=plan, options=chosen[-1], ranks=rank_memory(chosen[-1], cluster.world_size))


def _no_plan_message(needed: int, available: int, world_size: int) -> str:
    remedy = (
        "use more ranks (--world-size) or keep the tables in DDR behind an HBM cache "
        "(--ddr-gb N --sharding.compute_kernel=fused_uvm_caching)"
    )
    if needed > available:
        return (
            f"the tables need {needed / GIB:,.1f} GiB (weights + optimizer state + buffers, the planner's "
            f"estimate) but {world_size} ranks offer {available / GIB:,.1f} GiB of HBM + DDR (after the "
            f"planner's {PLANNER_HBM_RESERVE:.0%} HBM reserve and the dense model); {remedy}"
        )
    return (
        f"no plan: the tables need {needed / GIB:,.1f} GiB of the {available / GIB:,.1f} GiB the ranks offer, "
        "but no placement fits each shard on one rank under the [sharding] constraints; allow more sharding "
        f"types (sharding.types) or {remedy}"
    )


def report_to_text(report: PlanReport, cluster: ClusterShape) -> str:
    """The per-rank memory table printed under the plan (GiB), with a total line.

    Args:
        report: the plan and its memory.
        cluster: the machines (for the capacity column).

    Returns:
        One line per rank: weights, optimizer state + buffers, HBM, DDR and the share of HBM used.
    """
    capacity = cluster.hbm_bytes if cluster.device_type == "cuda" else cluster.ddr_bytes
    lines = [
        "memory per rank (GiB; planner estimate; HBM + DDR = weights + optimizer state and buffers):",
        f"{'rank':>5}  {'weights':>8}  {'opt+buffers':>11}  {'HBM':>8}  {'DDR':>8}  {'of capacity':>11}",
    ]
    for rank, memory in enumerate(report.ranks):
        used = memory.hbm_bytes if cluster.device_type == "cuda" else memory.ddr_bytes
        rest = memory.hbm_bytes + memory.ddr_bytes - memory.weight_bytes
        lines.append(
            f"{rank:>5}  {memory.weight_bytes / GIB:>8.2f}  {rest / GIB:>11.2f}  "
            f"{memory.hbm_bytes / GIB:>8.2f}  {memory.ddr_bytes / GIB:>8.2f}  {used / capacity:>11.0%}"
        )
    weights = sum(memory.weight_bytes for memory in report.ranks)
    hbm = sum(memory.hbm_bytes for memory in report.ranks)
    ddr = sum(memory.ddr_bytes for memory in report.ranks)
    lines.append(
        f"{'total':>5}  {weights / GIB:>8.2f}  {(hbm + ddr - weights) / GIB:>11.2f}  "
        f"{hbm / GIB:>8.2f}  {ddr / GIB:>8.2f}"
    )
    return "\n".join(lines)


def _positive(value: int | float | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{flag}: must be > 0, got {value}")


def parse_plan_args(argv: list[str] | None) -> tuple[JobConfig, ClusterShape, int]:
    """Parses the command line into the config, the cluster and the per-rank batch size.

    Args:
        argv: command-line tokens (None: sys.argv[1:]).

    Returns:
        `(cfg, cluster, batch_size_per_rank)`; the batch defaults to training.batch_size / world size.

    Raises:
        ValueError: naming the flag or config field of a bad value.
    """
    parser = build_arg_parser(DESCRIPTION)
    parser.add_argument("--world-size", type=int, required=True, help="ranks in the job (GPUs in all)")
    parser.add_argument("--local-world-size", type=int, help="ranks per host (default: --world-size)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device of each rank")
    parser.add_argument("--hbm-gb", type=float, default=80.0, help="GPU memory per rank, GiB (default 80)")
    parser.add_argument(
        "--ddr-gb", type=float, help=f"host memory per rank, GiB (default: TorchRec's {DDR_CAP / GIB:.0f})"
    )
    parser.add_argument("--batch-size-per-rank", type=int, help="default: training.batch_size / world size")
    args, rest = parser.parse_known_args(argv)
    local_world_size = args.local_world_size or args.world_size
    for value, flag in ((args.world_size, "--world-size"), (local_world_size, "--local-world-size"),
                        (args.hbm_gb, "--hbm-gb"), (args.ddr_gb, "--ddr-gb"),
                        (args.batch_size_per_rank, "--batch-size-per-rank")):  # fmt: skip
        _positive(value, flag)
    if args.world_size % local_world_size:
        raise ValueError(
            f"--world-size {args.world_size} is not a whole number of hosts of --local-world-size "
            f"{local_world_size}"
        )
    cfg = load_config(args.config, rest, {"data": {"path": args.data}} if args.data else None)
    batch_size = args.batch_size_per_rank
    if batch_size is None:
        if cfg.training.batch_size % args.world_size:
            raise ValueError(
                f"training.batch_size = {cfg.training.batch_size} is not divisible by --world-size "
                f"{args.world_size}; pass --batch-size-per-rank"
            )
        batch_size = cfg.training.batch_size // args.world_size
    cluster = ClusterShape(
        world_size=args.world_size,
        local_world_size=local_world_size,
        device_type=args.device,
        hbm_bytes=int(args.hbm_gb * GIB),
        ddr_bytes=int(args.ddr_gb * GIB) if args.ddr_gb else DDR_CAP,
    )
    return cfg, cluster, batch_size


def plan_features(cfg: JobConfig) -> FeatureSchema | list[int]:
    """What to plan: the manifest's features when `data.path` is set, else `model.num_embeddings`."""
    if cfg.data.path:
        return data_features(load_manifest(cfg.data.path), cfg.model, cfg.data.path)
    if not cfg.model.num_embeddings:
        raise ValueError(
            "model.num_embeddings: is empty and no --data DIR was given; set the table sizes in the "
            "recipe or pass the prepared data whose manifest has them"
        )
    return list(cfg.model.num_embeddings)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, cluster, batch_size = parse_plan_args(argv)
        report = plan_cluster(cfg, plan_features(cfg), cluster, batch_size)
    except (ValueError, FileNotFoundError) as error:
        # Config, cluster and data problems, and tables that do not fit: one line, not a traceback.
        print(f"dlrm-plan: error: {error}", file=sys.stderr)
        return 2
    hosts = cluster.world_size // cluster.local_world_size
    memory = f"{cluster.hbm_bytes / GIB:g} GiB HBM + " if cluster.device_type == "cuda" else ""
    print(
        f"{cfg.model.name}: {len(report.options)} tables, embedding dim {cfg.model.embedding_dim}, embedding "
        f"optimizer {cfg.optim.embedding_optimizer}; {cluster.world_size} ranks ({hosts} hosts x "
        f"{cluster.local_world_size}), {cluster.device_type}, {memory}{cluster.ddr_bytes / GIB:g} GiB DDR "
        f"per rank; batch {batch_size:,} per rank"
    )
    print(plan_to_text(report.plan))
    print()
    print(report_to_text(report, cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
