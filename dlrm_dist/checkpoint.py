"""Sharded checkpoints with torch.distributed.checkpoint (DCP), written atomically, the newest K kept.

A checkpoint is `checkpoints/step-N/`:
  DCP files   the model's sharded tables and dense weights, and the combined optimizer state (fused
              embedding optimizer shards and dense optimizer), each rank writing its own shards;
  rank-R.pt   what differs per rank or is not a tensor: step, samples seen, data position (epoch,
              batches into it), learning-rate schedule, RNG state, world size.
Every rank writes into `.step-N.tmp/`; after a barrier one rank renames it to `step-N/`, so a step
directory exists only once complete, and a crash mid-save leaves nothing that `resume=auto` would pick.

Resuming with another world size would reload the tables fine (DCP reshards), but the data position is
per-rank, so it is refused before training with a message that says so.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from dlrm_dist.config import CheckpointConfig
from dlrm_dist.distributed import DistContext

_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class TrainerState:
    """Where training stands; saved per rank beside the DCP shards."""

    step: int
    samples_seen: int
    epoch: int
    batches_into_epoch: int
    world_size: int


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class Checkpointer:
    """Saves and restores the model, the optimizer and the trainer state under `<run_dir>/checkpoints`.

    Args:
        run_dir: the run directory.
        checkpoint_cfg: the `checkpoint` section.
        ctx: this rank's distributed context.
    """

    def __init__(self, run_dir: str | Path, checkpoint_cfg: CheckpointConfig, ctx: DistContext) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.cfg = checkpoint_cfg
        self.ctx = ctx

    def complete_steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(
            int(m.group(1)) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()
        )

    def resume_path(self) -> Path | None:
        """The checkpoint `checkpoint.resume` points at, or None to start fresh."""
        resume = self.cfg.resume
        if not resume:
            return None
        if resume == "auto":
            steps = self.complete_steps()
            return self.root / f"step-{steps[-1]}" if steps else None
        path = Path(resume)
        if not (path / f"rank-{self.ctx.rank}.pt").is_file():
            raise ValueError(
                f"checkpoint.resume: {resume} is not a complete checkpoint directory (no rank-{self.ctx.rank}.pt)"
            )
        return path

    def save(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainerState
    ) -> Path:
        """Writes step `state.step` on every rank; returns the published directory."""
        final = self.root / f"step-{state.step}"
        staging = self.root / f".step-{state.step}.tmp"
        if self.ctx.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        _barrier()
        dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(staging))
        per_rank = {
            "trainer": asdict(state),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.ctx.device.type == "cuda" else None,
        }
        torch.save(per_rank, staging / f"rank-{self.ctx.rank}.pt")
        _barrier()
        if self.ctx.rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            for old in self.complete_steps()[: -self.cfg.keep]:
                shutil.rmtree(self.root / f"step-{old}", ignore_errors=True)
        _barrier()
        return final

    def load(
        self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> TrainerState:
        """Restores everything `save` wrote, in place; returns the trainer state to continue from."""
        per_rank = torch.load(path / f"rank-{self.ctx.rank}.pt", weights_only=False)
        saved = TrainerState(**per_rank["trainer"])
        if saved.world_size != self.ctx.world_size:
            raise ValueError(
                f"checkpoint.resume: {path} was written by {saved.world_size} ranks, this run has "
                f"{self.ctx.world_size}; the data position is per rank, so resume with the same world size"
            )
        state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
        dcp.load(state, checkpoint_id=str(path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        scheduler.load_state_dict(per_rank["scheduler"])
        torch.set_rng_state(per_rank["torch_rng"])
        if per_rank["cuda_rng"] is not None and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(per_rank["cuda_rng"])
        return saved
