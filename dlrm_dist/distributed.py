"""The process group and the device of this rank, as one frozen `DistContext` handed down to everything.

Ranks are started by torchrun / torchx (`dist.ddp`), which set RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. A plain `python -m ...` run has none of them; it still gets
a 1-rank gloo process group, because TorchRec's `DistributedModelParallel` and planner always talk to one.

GPU ranks follow TorchRec's recipe: one GPU per local rank (`torch.cuda.set_device(LOCAL_RANK)`) and nccl.
CPU ranks use gloo.
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# The collective backend that goes with each device type.
BACKEND_BY_DEVICE_TYPE: dict[str, str] = {"cuda": "nccl", "cpu": "gloo"}
DEVICE_PREFERENCES = ("auto", "cpu", "cuda")
# TorchRec's module globals (torchrec/distributed/comm.py) that hold subgroups past a destroy.
TORCHREC_GROUP_CACHES = ("_INTRA_PG", "_CROSS_PG", "_INTRA_PG_2D", "_CROSS_PG_2D")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; built once by `init_distributed`, then only read.

    Args:
        rank: global rank, 0..world_size-1.
        world_size: number of ranks in the job.
        local_rank: rank on this host, 0..local_world_size-1 (also the GPU index on cuda).
        local_world_size: ranks on this host (torchrun's nproc_per_node).
        device: the device this rank computes on (`cuda:<local_rank>` or `cpu`).
        backend: the collective backend of the default process group (nccl or gloo).
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str


def _resolve_device_type(device_preference: str) -> str:
    """Maps "auto" | "cpu" | "cuda" to the device type this process will use, failing early and clearly."""
    if device_preference not in DEVICE_PREFERENCES:
        raise ValueError(
            f"device_preference: {device_preference!r} is not one of {', '.join(DEVICE_PREFERENCES)}"
        )
    if device_preference == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(
            f"training.device='cuda' but no CUDA device is available (torch {torch.__version__} is "
            f"{build}, torch.cuda.is_available() is False); use device 'cpu' or 'auto'"
        )
    if device_preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device_preference


def _free_localhost_port() -> int:
    """A TCP port that nothing listens on right now (the OS picks it; it is released before returning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_preference: str = "auto") -> DistContext:
    """Creates the default process group and picks this rank's device.

    Under torchrun / torchx the rendezvous comes from the environment (`env://`). Without those variables
    the process is rank 0 of a 1-rank gloo (or nccl) group on a free localhost port.

    Args:
        device_preference: "auto" (cuda when available), "cpu" (gloo) or "cuda" (nccl, one GPU per
            local rank).

    Returns:
        The frozen `DistContext` of this rank.

    Raises:
        ValueError: an unknown preference, "cuda" without a usable GPU, or more local ranks than GPUs.
        RuntimeError: when a default process group already exists (its rank and backend could differ).
    """
    if dist.is_initialized():
        raise RuntimeError(
            "init_distributed: a default process group already exists; destroy_distributed() first"
        )
    device_type = _resolve_device_type(device_preference)
    backend = BACKEND_BY_DEVICE_TYPE[device_type]

    if _launched_by_torchrun():
        rank = int(os.environ["RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        init_method = "env://"
    else:
        rank, world_size, local_rank, local_world_size = 0, 1, 0, 1
        init_method = f"tcp://127.0.0.1:{_free_localhost_port()}"

    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} but this host has {torch.cuda.device_count()} GPU(s); "
                "start at most one rank per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        # Before the process group exists, so that nccl binds this rank's communicator to its own GPU.
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    return DistContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        device=device,
        backend=backend,
    )


def destroy_distributed() -> None:
    """Tears down every process group and frees them now, so that their threads end before Python does.

    `destroy_process_group` only unregisters the groups. A gloo group's worker threads run until the last
    reference to the group goes, and two kinds of reference outlive the call: TorchRec's cached
    intra/cross-node subgroups, and the reference cycles of a dropped sharded model. A group left for
    interpreter exit is freed during finalization, and that can abort the rank (SIGABRT, "terminate
    called without an active exception"): a worker thread still releasing its last finished collective
    needs the GIL to drop a tensor the main thread has let go of; once finalization has begun, Python
    ends a thread that asks for the GIL (pthread_exit), and the forced unwind through a noexcept
    destructor calls std::terminate. Freeing a group joins its worker threads, so here they finish.

    A group that the caller still reaches (through a model it holds) is freed when the caller drops the
    model, which it should do before the process exits. A no-op when there is no process group.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
    _release_torchrec_groups()
    gc.collect()


def _release_torchrec_groups() -> None:
    """Drops TorchRec's module-level subgroup caches, which it never resets itself.

    `torchrec.distributed.comm.intra_and_cross_node_pg` (table-row-wise and grid sharding) creates the
    groups on first use and keeps them in globals; after a destroy they would also be handed to the next
    process group's sharders, though they belong to the destroyed one.
    """
    comm = sys.modules.get("torchrec.distributed.comm")
    if comm is None:  # TorchRec was never imported, so it cached nothing
        return
    for name in TORCHREC_GROUP_CACHES:
        if getattr(comm, name, None) is not None:
            setattr(comm, name, None)


def peak_memory_by_rank(ctx: DistContext) -> dict[str, Any]:
    """Every rank's peak memory so far, gathered on all ranks (a collective: every rank must call it).

    On cuda the peak is torch's peak of allocated device memory; on cpu the process's peak resident set
    (`ru_maxrss`), which is what a CPU rank's embedding shards, activations and optimizer state cost.

    Returns:
        `{"kind": "cuda_allocated" | "cpu_rss", "peak_bytes_per_rank": [...], "peak_bytes_max_rank": int}`.
    """
    if ctx.device.type == "cuda":
        kind, peak = "cuda_allocated", torch.cuda.max_memory_allocated(ctx.device)
    else:
        # Linux reports ru_maxrss in KiB.
        kind, peak = "cpu_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per_rank: list[int] = [0] * ctx.world_size
    dist.all_gather_object(per_rank, int(peak))
    return {"kind": kind, "peak_bytes_per_rank": per_rank, "peak_bytes_max_rank": max(per_rank)}
