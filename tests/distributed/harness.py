"""Runs a function on N spawned ranks over gloo, the way torchrun would, and fails loudly if any rank does.

This is TorchRec's multi-process test pattern (`torchrec.distributed.test_utils.multi_process`): spawned
(not forked) processes, a free localhost port, every rank's exit code asserted. Each rank gets the
torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the
code under test goes through `dlrm_dist.distributed.init_distributed` exactly as in a real job.

The worker must be a module-level function (spawn pickles it by name) taking `rank` and `world_size`
keyword arguments; a failing rank's traceback is sent back and shown in the assertion message. After the
worker returns, its rank frees the process groups the worker left behind before the interpreter exits,
and fails if one is still referenced (`_free_process_groups`).
"""

from __future__ import annotations

import gc
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    """A localhost TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _gloo_worker_threads() -> int:
    """How many gloo worker threads (torch names them pt_gloo_runloop) this process has; 0 without /proc."""
    names = []
    for task in Path("/proc/self/task").glob("*"):
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended between listing and reading
            continue
    return names.count("pt_gloo_runloop")


def _free_process_groups() -> None:
    """Frees the process groups the worker left behind, while Python still runs; fails if one is held.

    A worker calls `destroy_distributed()` in its `finally`, while its models are still alive, and they
    hold the world group in reference cycles. Collected now, the groups join their gloo threads; left
    to the collector at interpreter exit, they can abort the rank (SIGABRT, "terminate called without
    an active exception"; see `dlrm_dist.distributed.destroy_distributed`). A group still referenced
    after this would do the same at random, so it fails here every time: a module global holds it, or a
    default argument (`torch.distributed.nn` captures the world group if first imported after
    `init_process_group`, e.g. by importing TorchRec inside the worker).
    """
    gc.collect()
    if threads := _gloo_worker_threads():
        raise RuntimeError(
            f"{threads} gloo worker threads outlive the worker: a process group is still referenced "
            "(a module global, a cache); freed during interpreter exit, it can abort this rank"
        )


def _rank_entry(
    worker: Callable[..., None],
    rank: int,
    world_size: int,
    port: int,
    kwargs: dict[str, Any],
    error_dir: str,
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    # Ranks share the machine's few cores; more than one intra-op thread each only oversubscribes them.
    torch.set_num_threads(1)
    try:
        worker(rank=rank, world_size=world_size, **kwargs)
        _free_process_groups()
    except BaseException:
        # A file rather than a pipe: a long traceback cannot block the rank's exit.
        Path(error_dir, f"rank{rank}.txt").write_text(f"rank {rank}:\n{traceback.format_exc()}")
        raise


def run_ranks(
    worker: Callable[..., None],
    world_size: int = 2,
    timeout_s: float = 120.0,
    **kwargs: Any,
) -> None:
    """Runs `worker(rank=r, world_size=world_size, **kwargs)` on `world_size` spawned processes.

    Args:
        worker: a module-level function; it calls `init_distributed()` itself.
        world_size: number of ranks, all on this host.
        timeout_s: ranks still running after this long are killed and the run fails (a hung collective).
        **kwargs: picklable arguments passed to every rank.

    Raises:
        AssertionError: when any rank exits non-zero or times out, with every rank's exit code and the
            tracebacks of those that raised. Once one rank fails, the others are killed.
    """
    context = mp.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="dlrm-dist-ranks-") as error_dir:
        processes = [
            context.Process(target=_rank_entry, args=(worker, rank, world_size, port, kwargs, error_dir))
            for rank in range(world_size)
        ]
        for process in processes:
            process.start()
        deadline = time.monotonic() + timeout_s
        # Poll rather than join in order: once one rank has failed, its peers would wait in a collective
        # until the deadline, so they are stopped right away.
        while any(process.is_alive() for process in processes) and time.monotonic() < deadline:
            if any(process.exitcode not in (None, 0) for process in processes):
                break
            time.sleep(0.05)
        killed = [rank for rank, process in enumerate(processes) if process.is_alive()]
        for rank in killed:
            processes[rank].kill()
            processes[rank].join()
        tracebacks = [path.read_text() for path in sorted(Path(error_dir).glob("rank*.txt"))]
    exit_codes = [process.exitcode for process in processes]
    if killed or any(code != 0 for code in exit_codes):
        raise AssertionError(
            f"{worker.__name__} failed: exit codes by rank {exit_codes}"
            + (f", ranks {killed} killed (a peer failed, or {timeout_s:.0f}s passed)" if killed else "")
            + "\n"
            + "\n".join(tracebacks)
        )
