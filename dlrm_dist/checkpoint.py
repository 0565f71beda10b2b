"""Sharded checkpoints with torch.distributed.checkpoint (DCP), written atomically, the newest K kept.

A checkpoint is `checkpoints/step-N/`:
  DCP files   the model's sharded tables and dense weights, and the combined optimizer state (fused
              embedding optimizer shards and dense optimizer), each rank writing its own shards;
  rank-R.pt   what differs per rank or is not a tensor: step, samples seen, data position (epoch,
              batches into it), learning-rate schedule, RNG state, world size.
  checksums.json  size and BLAKE2b digest of every file above, so that a load notices damage.
Every rank writes into `.step-N.tmp/`; after a barrier one rank renames it to `step-N/`, so a step
directory exists only once complete, and a crash mid-save leaves nothing that `resume=auto` would pick.
Before the rename every file and the staging directory are on disk (fsync), and after it the parent
directory, so that a power cut cannot publish a step whose files are still only in the page cache.

A load verifies the checksums first. `resume=auto` skips a damaged newest step with one warning naming
the damaged file and takes the newest intact one; an explicit `resume=PATH` that is damaged stops.

A checkpoint resumes on any world size and sharding plan. DCP reshards the tables and their optimizer
state to the new plan; a table keeps the side of the optimizer it was trained on (the dense optimizer
when data_parallel, the fused one otherwise: `dlrm_dist.sharding` pins that when the new plan would
differ). The data position is global: the epoch's segments (`dlrm_dist.epoch_order`), so a resume on
another layout trains each remaining row of the epoch once. The per-rank file of rank r is
`rank-(r mod W).pt` of the W ranks that wrote it (the RNG states; step, position and schedule are the
same on every rank). Before loading, every tensor's shape in this run is compared with the checkpoint's,
so a state that cannot move (a row-wise optimizer's state of a column-wise sharded table, whose size
counts the column shards) stops with one line naming it instead of a traceback per rank.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torchrec.optim.keyed import KeyedOptimizerWrapper, OptimizerWrapper

from dlrm_dist.config import CheckpointConfig
from dlrm_dist.distributed import DistContext
from dlrm_dist.epoch_order import Segment

_STEP_DIR = re.compile(r"^step-(\d+)$")
CHECKSUMS_FILE = "checksums.json"
_READ_BLOCK = 1 << 20


def restart_count() -> int:
    """How many times torchrun's agent has restarted this job's workers (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, incomplete or damaged (the message names the file)."""


def file_digest(path: Path) -> str:
    """The BLAKE2b-128 hex digest of a file's bytes.

    BLAKE2b rather than a CRC: hashlib has it built in (no new dependency), it catches any change, and at
    ~1 GB/s per core it costs about what reading the file costs, once per save and once per load, spread
    over the ranks (`_share`). A CRC would be faster still but needs a package for a fast one.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    """Flushes a file's or a directory's data and metadata to disk (a directory: its entries)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _share(items: list[Any], ctx: DistContext) -> list[Any]:
    """This rank's share of a list that every rank holds in the same order (every W-th item)."""
    return items[ctx.rank :: ctx.world_size]


def _all_gather(value: Any, ctx: DistContext) -> list[Any]:
    if not dist.is_initialized() or ctx.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def damaged_file(path: Path, ctx: DistContext) -> str | None:
    """Verifies a checkpoint directory against its checksums.json, together on every rank.

    Each rank hashes every W-th listed file and the ranks all-gather what they found, so the reading is
    spread over the ranks and every rank reaches the same verdict: a rank that alone skipped a
    checkpoint would load another step than its peers and hang in DCP's collectives. (Verifying only
    the files a rank reads is not possible from outside DCP, which decides that from `.metadata`.)
    A collective: every rank must call it with the same path.

    Returns:
        None when every listed file is there with its size and digest; else a one-line description of
        the first damaged file (missing, other size, other digest, or checksums.json unreadable).
    """
    problem: str | None = None
    listed: dict[str, dict[str, Any]] = {}
    try:
        listed = json.loads((path / CHECKSUMS_FILE).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"{path / CHECKSUMS_FILE}: missing or unreadable ({type(error).__name__})"
    mine = None
    if problem is None:
        for name in _share(sorted(listed), ctx):
            file, expected = path / name, listed[name]
            if not file.is_file():
                mine = f"{file}: missing"
            elif file.stat().st_size != expected["bytes"]:
                mine = f"{file}: {file.stat().st_size} bytes, checksums.json says {expected['bytes']}"
            elif file_digest(file) != expected["blake2b"]:
                mine = f"{file}: contents differ from checksums.json (blake2b)"
            if mine:
                break
    found = [p for p in _all_gather(problem or mine, ctx) if p]
    return found[0] if found else None


@dataclass(frozen=True)
class TrainerState:
    """Where training stands; saved per rank beside the DCP shards.

    `world_size`, `batch_size` (per rank) and `shuffle_buffer` are the layout of the epoch's current
    segment, `batches_into_epoch` the batches each rank drew in it, and `earlier_segments` the epoch's
    segments on earlier layouts (`dlrm_dist.epoch_order`). `seed` and `train_rows` name the epoch order
    the position belongs to. Defaults: a state written before these were recorded (same layout assumed).
    """

    step: int
    samples_seen: int
    epoch: int
    batches_into_epoch: int
    world_size: int
    batch_size: int = 0
    shuffle_buffer: int = -1
    seed: int | None = None
    train_rows: int = 0
    earlier_segments: tuple[Segment, ...] = ()

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainerState:
        segments = tuple(Segment(**segment) for segment in saved.get("earlier_segments", ()))
        return cls(**{**saved, "earlier_segments": segments})


def next_epoch(position: TrainerState, epoch: int, seed: int) -> TrainerState:
    """`position` moved to the start of `epoch`, whose order `seed` fixes."""
    return dataclasses.replace(position, epoch=epoch, batches_into_epoch=0, seed=seed, earlier_segments=())


def resume_position(
    saved: TrainerState | None, here: TrainerState, source: str
) -> tuple[TrainerState, Segment | None]:
    """Where a run starts: fresh, at the checkpoint's position, or there on this run's layout.

    On another layout (world size, per-rank batch or shuffle buffer) the checkpoint's current segment
    ends where it stands and a new one begins over the epoch's rows not yet trained on. The resumed epoch
    keeps its order (the checkpoint's seed) even when `training.seed` changed: the next epochs take it.

    Args:
        saved: the checkpoint's state (None: a fresh run).
        here: this run at step 0: its layout, `training.seed` and train rows.
        source: what the checkpoint is, for the error message.

    Returns:
        The start, and the segment that the checkpoint's position ended when the layout changed (else None).

    Raises:
        CheckpointError: a checkpoint of another train split (its position would mean other rows).
    """
    if saved is None:
        return here, None
    if saved.train_rows and saved.train_rows != here.train_rows:
        raise CheckpointError(
            f"{source} was trained on {saved.train_rows:,} train rows and this data has {here.train_rows:,}; "
            "resume on the data it was trained on"
        )
    start = dataclasses.replace(
        here, step=saved.step, samples_seen=saved.samples_seen, epoch=saved.epoch,
        batches_into_epoch=saved.batches_into_epoch, earlier_segments=saved.earlier_segments,
        # An epoch that has started finishes in its order; one that has not takes this run's seed.
        seed=saved.seed if saved.seed is not None and (saved.batches_into_epoch or saved.earlier_segments)
        else here.seed,
    )  # fmt: skip
    # A state from before layouts were recorded: its per-rank batch from what it counted (samples_seen is
    # the global batch times the steps), its shuffle buffer this run's (it could resume on no other).
    batch_size = saved.batch_size or (saved.samples_seen // max(saved.step, 1) // saved.world_size)
    layout = (saved.world_size, batch_size or here.batch_size,
              here.shuffle_buffer if saved.shuffle_buffer < 0 else saved.shuffle_buffer)  # fmt: skip
    if layout == (here.world_size, here.batch_size, here.shuffle_buffer) or not saved.batches_into_epoch:
        return start, None
    cut = Segment(*layout, batches=saved.batches_into_epoch)
    return dataclasses.replace(
        start, batches_into_epoch=0, earlier_segments=(*start.earlier_segments, cut)
    ), cut


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

    def resume_path(self, warn: Callable[[str], None] = lambda _: None) -> Path | None:
        """The intact checkpoint `checkpoint.resume` points at, or None to start fresh.

        A collective (the checksums are verified on all ranks together): every rank must call it.

        Args:
            warn: where the one line about each damaged step that `auto` skips goes.

        Raises:
            CheckpointError: an explicit path that is not a checkpoint or is damaged, or `auto` when
                every checkpoint is damaged; the message names the path and the damaged file.
        """
        resume = self.cfg.resume
        if restart_count() and self.complete_steps():
            # A restarted attempt (torchrun --max-restarts, a scheduler retry) continues from this run's
            # own newest intact checkpoint, whatever the first attempt was told to start from.
            warn(f"restart {restart_count()}: resuming from the newest intact checkpoint under {self.root}")
            resume = "auto"
        if not resume:
            return None
        if resume == "auto":
            steps = self.complete_steps()
            for step in reversed(steps):
                path = self.root / f"step-{step}"
                problem = damaged_file(path, self.ctx)
                if problem is None:
                    return path
                warn(f"warning: checkpoint.resume=auto: skipping {path}, it is damaged: {problem}")
            if steps:
                raise CheckpointError(
                    f"checkpoint.resume=auto: every checkpoint under {self.root} is damaged; move them away "
                    "or set checkpoint.resume='' to start over"
                )
            return None
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"checkpoint.resume: {resume} is not a checkpoint directory")
        problem = damaged_file(path, self.ctx)
        if problem is not None:
            raise CheckpointError(f"checkpoint.resume: {resume} is damaged: {problem}")
        return path

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: TrainerState,
        sharding_types: dict[str, str] | None = None,
    ) -> Path:
        """Writes step `state.step` on every rank; returns the published directory.

        Args:
            sharding_types: table name -> its sharding type in this run's plan, so that a resume on
                another plan keeps each table on the optimizer it was trained with.
        """
        final = self.root / f"step-{state.step}"
        staging = self.root / f".step-{state.step}.tmp"
        if self.ctx.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        _barrier()
        dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(staging))
        per_rank = {
            "trainer": asdict(state),
            "sharding_types": dict(sharding_types or {}),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.ctx.device.type == "cuda" else None,
        }
        rank_file = staging / f"rank-{self.ctx.rank}.pt"
        torch.save(per_rank, rank_file)
        # DCP's FileSystemWriter fsyncs its own files (sync_files=True); this one is ours.
        _fsync_path(rank_file)
        _barrier()
        names = sorted(path.name for path in staging.iterdir())
        digests: dict[str, dict[str, Any]] = {}
        for name in _share(names, self.ctx):
            digests[name] = {"bytes": (staging / name).stat().st_size, "blake2b": file_digest(staging / name)}
        listed = {name: entry for part in _all_gather(digests, self.ctx) for name, entry in part.items()}
        if self.ctx.rank == 0:
            checksums = staging / CHECKSUMS_FILE
            checksums.write_text(json.dumps({"files": dict(sorted(listed.items()))}, indent=1) + "\n")
            _fsync_path(checksums)
            _fsync_path(staging)
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            _fsync_path(self.root)
            for old in self.complete_steps()[: -self.cfg.keep]:
                shutil.rmtree(self.root / f"step-{old}", ignore_errors=True)
        _barrier()
        return final

    def read_saved(self, path: Path) -> tuple[TrainerState, dict[str, str]]:
        """The trainer state and the tables' sharding types a checkpoint recorded (rank 0's file)."""
        per_rank = torch.load(path / "rank-0.pt", weights_only=False)
        return TrainerState.from_dict(per_rank["trainer"]), per_rank.get("sharding_types", {})

    def load(
        self, path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
    ) -> TrainerState:
        """Restores the model, the optimizer, the schedule and the RNG that `save` wrote, in place.

        Returns the trainer state as saved (`resume_position` turns it into this run's start).

        The schedule continues at the saved step with this run's peak rates (the same unless the
        config or, through `optim.reference_batch_size`, the batch size changed).

        Raises:
            CheckpointError: a tensor of this run that the checkpoint lacks or holds in another shape.
        """
        saved, _ = self.read_saved(path)
        per_rank = torch.load(path / f"rank-{self.ctx.rank % saved.world_size}.pt", weights_only=False)
        _init_lazy_optimizer_state(optimizer)
        state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
        problem = _mismatch(state, dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)
        if problem is not None:
            raise CheckpointError(
                f"checkpoint.resume: {path} does not fit this run's plan: {problem}; set sharding.tables "
                "for that table as in the checkpoint's plan (the run's plan.txt), or resume on its layout"
            )
        dcp.load(state, checkpoint_id=str(path))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        peak_rates = list(scheduler.base_lrs)
        scheduler.load_state_dict(per_rank["scheduler"])
        _rebase_schedule(scheduler, peak_rates)
        torch.set_rng_state(per_rank["torch_rng"])
        if per_rank["cuda_rng"] is not None and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(per_rank["cuda_rng"])
        return saved


def _init_lazy_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Gives the dense optimizer the state it would have after a step, so that DCP has keys to load into.

    DCP loads in place, into the tensors the target state dict already holds, and skips what the
    checkpoint has beyond them. Adagrad creates its state when it is built, but Adam only at its first
    step: a resumed Adam loaded nothing and started again from zero moments and step 0 (a resumed run
    drifted from the uninterrupted one; `tests/distributed/test_training.py` checks they are equal).
    TorchRec's `init_state` takes one step with zero gradients; the weights it could move (weight decay)
    are overwritten by the checkpoint's, loaded after it. The fused table optimizers keep their state
    in the tables' modules and are left alone.
    """
    for _, sub_optimizer in getattr(optimizer, "optimizers", [("", optimizer)]):
        if isinstance(sub_optimizer, (KeyedOptimizerWrapper, OptimizerWrapper)):
            sub_optimizer.init_state()


def _tensor_sizes(state: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, list[int]]]:
    """(DCP key, global size) of every tensor in a nested state dict; DCP joins dict keys with dots."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _tensor_sizes(value, f"{name}.")
        elif isinstance(value, torch.Tensor):  # ShardedTensor and DTensor report their global size
            yield name, list(value.size())


def _mismatch(state: dict[str, Any], saved: dict[str, Any]) -> str | None:
    for name, size in _tensor_sizes(state):
        entry = saved.get(name)
        if entry is None:
            return f"{name} is not in the checkpoint"
        saved_size = list(getattr(entry, "size", size))
        if saved_size != size:
            return f"{name} is {saved_size} in the checkpoint and {size} here"
    return None


def _rebase_schedule(scheduler: Any, peak_rates: list[float]) -> None:
    """Sets every group's rate to the saved step's, with this run's peak rates.

    Needed even when the peak rates are the saved ones: `LambdaLR.load_state_dict` restores the step
    count but not the groups' rates, and TorchRec's optimizers do not save their param_groups, so the
    groups would keep the rate a fresh schedule gives step 0 (a warmup's first, smallest rate).
    """
    scheduler.base_lrs = peak_rates
    for group, rate, factor in zip(
        scheduler.optimizer.param_groups, peak_rates, scheduler.lr_lambdas, strict=True
    ):
        group["initial_lr"] = rate
        group["lr"] = rate * factor(scheduler.last_epoch)
