"""The training loop: restore -> step -> evaluate -> checkpoint -> log, on every rank alike.

`Trainer` builds its components from the config slices (data, model + sharding, optimizers, monitor,
checkpointer) and then runs. On CPU the step is a plain loop; on CUDA it is TorchRec's
`TrainPipelineSparseDist`, which overlaps the next batch's copy and input all-to-all with this one's
compute. Only rank 0 writes files and logs: the others get no-op writers chosen here, once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from tqdm import tqdm

from data_prep.features import FeatureSchema
from dlrm_dist.checkpoint import Checkpointer, TrainerState, next_epoch, resume_position
from dlrm_dist.config import EvalConfig, JobConfig, ModelConfig
from dlrm_dist.data import (
    Prefetcher,
    iter_train_batches,
    list_row_groups,
    read_manifest,
    train_steps_left,
    train_steps_per_epoch,
)
from dlrm_dist.distributed import DistContext, peak_memory_by_rank
from dlrm_dist.evaluation import evaluate
from dlrm_dist.host_memory import keep_freed_memory
from dlrm_dist.models import build_model, parameter_counts
from dlrm_dist.models.tables import default_feature_names
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.monitor import build_monitor
from dlrm_dist.optim import build_lr_scheduler, build_optimizer, scaled_learning_rates, warmup_steps_of
from dlrm_dist.precision import autocast_dtype, compile_dense_parts
from dlrm_dist.sharding import embedding_bytes_per_rank, plan_to_text, shard_model, sharding_types


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss was NaN or infinite."""


def data_features(manifest: dict[str, Any], model_cfg: ModelConfig, data_dir: str) -> FeatureSchema:
    """The data set's features, the manifest's, with table sizes checked against the config.

    Args:
        manifest: the parsed manifest.json of the prepared data.
        model_cfg: `max_table_rows` (a cap no table may exceed) and `num_embeddings` (the sizes a recipe
            expects, one per categorical feature in the data's order; empty: any).
        data_dir: where the manifest came from, for the error messages.

    Returns:
        The schema: label, dense and categorical features with their table sizes, as the manifest says.

    Raises:
        ValueError: naming `model.max_table_rows` when a table exceeds the cap, or `model.num_embeddings`
            and the first table whose size differs from the manifest's.
    """
    features = FeatureSchema.from_manifest(manifest)
    cap = model_cfg.max_table_rows
    too_big = [(f.name, f.num_embeddings) for f in features.categorical if cap and f.num_embeddings > cap]
    if too_big:
        raise ValueError(
            f"model.max_table_rows = {cap:,} but {data_dir}/manifest.json has larger tables "
            f"({', '.join(f'{name}: {size:,}' for name, size in too_big)}); prepare the data with "
            f"`--hash-buckets {cap}` or raise model.max_table_rows"
        )
    # A recipe's sizes are the model it means (what dlrm-plan planned, what MLPerf compares); data with
    # other tables would silently train a different model.
    expected = model_cfg.num_embeddings
    if expected and len(expected) != len(features.categorical):
        raise ValueError(
            f"model.num_embeddings: the config gives {len(expected)} table sizes but {data_dir}/manifest.json "
            f"has {len(features.categorical)} categorical features; set model.num_embeddings = [] to take "
            "the manifest's sizes"
        )
    for wanted, feature in zip(expected, features.categorical, strict=False):
        if wanted != feature.num_embeddings:
            raise ValueError(
                f"model.num_embeddings: {feature.name} has {wanted:,} rows in the config but "
                f"{feature.num_embeddings:,} in {data_dir}/manifest.json; prepare the data with "
                f"`--hash-buckets {','.join(str(rows) for rows in expected)}` or set model.num_embeddings "
                "to the manifest's sizes (or to [] to take them as they are)"
            )
    return features


def _batch_size_per_rank(global_batch: int, world_size: int, name: str) -> int:
    if global_batch % world_size:
        raise ValueError(f"{name} = {global_batch} is not divisible by the world size {world_size}")
    return global_batch // world_size


def planner_ids_per_bag(model_cfg: ModelConfig, features: FeatureSchema | None) -> dict[str, float]:
    """The ids per bag the planner's cost model assumes per categorical feature (`dlrm-train`, `dlrm-plan`).

    Args:
        model_cfg: `multi_hot_sizes`, the recipe's sizes (one per feature, in order), which win when set.
        features: the prepared data's schema, whose measured mean bag lengths serve otherwise (None:
            no data; then the features are C1..Cn of `multi_hot_sizes`).

    Returns:
        Feature name -> ids per bag, for the multi-hot features; empty for one-hot data (TorchRec's
        default of 1 per bag).
    """
    if model_cfg.multi_hot_sizes:
        names = features.categorical_names if features is not None else None
        if names is not None and len(names) != len(model_cfg.multi_hot_sizes):
            raise ValueError(
                f"model.multi_hot_sizes: gives {len(model_cfg.multi_hot_sizes)} sizes but the data has "
                f"{len(names)} categorical features"
            )
        names = names or default_feature_names(len(model_cfg.multi_hot_sizes))
        return {name: float(size) for name, size in zip(names, model_cfg.multi_hot_sizes, strict=True)}
    if features is None:
        return {}
    return {f.name: float(f.mean_bag_length) for f in features.categorical if f.mean_bag_length is not None}


def eval_interval(eval_cfg: EvalConfig, steps_per_epoch: int) -> int:
    """Steps between periodic validations: `eval.every_steps`, or derived from `eval.per_epoch`.

    Args:
        eval_cfg: `every_steps` and `per_epoch` (at most one of them is set).
        steps_per_epoch: optimizer steps in one pass over the train split.

    Returns:
        The interval in steps (0: no periodic validation). `per_epoch` evaluations space out as
        steps_per_epoch // per_epoch, as MLPerf's validation_freq_within_epoch does, and at least 1.
    """
    if eval_cfg.per_epoch:
        return max(1, steps_per_epoch // eval_cfg.per_epoch)
    return eval_cfg.every_steps


class Trainer:
    """Owns the components of one run and its loop.

    Args:
        cfg: the whole job config.
        ctx: this rank's distributed context (the process group exists).
    """

    def __init__(self, cfg: JobConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.run_dir = Path(cfg.run_dir)
        self.is_writer = ctx.rank == 0
        # Before the model and the batches exist: every step's activations then reuse the same heap
        # blocks instead of faulting in fresh pages (about 10% of a CPU step; dlrm_dist.host_memory).
        self.keeps_freed_memory = (
            ctx.device.type == "cpu" and cfg.training.keep_freed_memory and keep_freed_memory()
        )
        self.log: Callable[[str], None] = (
            (lambda message: tqdm.write(message)) if self.is_writer else (lambda _: None)
        )
        manifest = read_manifest(cfg.data.path)
        self.groups = {
            split: list_row_groups(cfg.data.path, manifest, split) for split in ("train", "val", "test")
        }
        self.batch_size = _batch_size_per_rank(cfg.training.batch_size, ctx.world_size, "training.batch_size")
        self.eval_batch_size = _batch_size_per_rank(cfg.eval.batch_size, ctx.world_size, "eval.batch_size")
        self.steps_per_epoch = train_steps_per_epoch(self.groups["train"], ctx.world_size, self.batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"training.batch_size = {cfg.training.batch_size} is larger than the train split allows "
                f"({sum(g.rows for g in self.groups['train'])} rows over {ctx.world_size} ranks)"
            )
        self.checkpointer = Checkpointer(self.run_dir, cfg.checkpoint, ctx)
        # The checkpoint to resume is found first (a collective: its checksums are verified on all ranks
        # together): the plan, the schedule's length and the epoch's remaining rows follow from it.
        self.resume_from = self.checkpointer.resume_path(warn=self.log)
        saved, trained_types = (None, None)
        if self.resume_from is not None:
            saved, trained_types = self.checkpointer.read_saved(self.resume_from)
        here = TrainerState(0, 0, 0, 0, ctx.world_size, self.batch_size, cfg.data.shuffle_buffer,
                            cfg.training.seed, sum(group.rows for group in self.groups["train"]))  # fmt: skip
        self.start, self.layout_cut = resume_position(saved, here, f"checkpoint.resume: {self.resume_from}")
        self.start_epoch_steps = train_steps_left(
            self.groups["train"], ctx.world_size, self.batch_size, self.start.seed, self.start.epoch,
            self.start.earlier_segments,
        )  # fmt: skip
        planned = self.start.step
        if self.start.epoch < cfg.training.epochs:
            planned += self.start_epoch_steps - self.start.batches_into_epoch
            planned += (cfg.training.epochs - self.start.epoch - 1) * self.steps_per_epoch
        self.total_steps = min(planned, cfg.training.max_steps) if cfg.training.max_steps else planned
        # optim.warmup_fraction is a share of the planned epochs, not of a max_steps cut: a run cut
        # short (dlrm-tune's rungs, resumed step after step) warms up as the whole run would.
        self.warmup_steps = warmup_steps_of(cfg.optim, planned)

        self.features = data_features(manifest, cfg.model, cfg.data.path)
        torch.manual_seed(cfg.training.seed)
        net = build_model(cfg.model, self.features, dense_device=ctx.device)
        self.compiled = compile_dense_parts(net) if cfg.training.compile else []
        model = CTRTrainModule(net, autocast_dtype(cfg.training.precision, ctx.device.type), ctx.device.type)
        # Counted before sharding, while every table is whole: the same on every rank and world size.
        self.dense_parameters, self.sparse_parameters = parameter_counts(model)
        # The rates this run uses: the recipe's, scaled to this batch size when it names a reference one.
        self.optim = scaled_learning_rates(cfg.optim, cfg.training.batch_size)
        self.model, self.plan = shard_model(
            model,
            cfg.sharding,
            self.optim,
            ctx,
            self.batch_size,
            planner_ids_per_bag(cfg.model, self.features),
            trained_types,
        )
        self.optimizer = build_optimizer(self.model, self.optim)
        self.scheduler = build_lr_scheduler(self.optimizer, self.optim, self.total_steps, self.warmup_steps)
        # Built in `run`, after the resume is accepted: a SummaryWriter creates tb/ as it starts.
        self.monitor = build_monitor(self.run_dir, False, False)
        self.pipeline = (
            TrainPipelineSparseDist(self.model, self.optimizer, ctx.device)
            if ctx.device.type == "cuda"
            else None
        )
        self.data_wait_seconds = 0.0
        # Periodic evaluation and checkpoints, left out of the training throughput and its data-wait share.
        self.paused_seconds = 0.0

    def _write_run_files(self) -> None:
        if not self.is_writer:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(self.cfg.to_json() + "\n")
        plan_text = plan_to_text(self.plan)
        (self.run_dir / "plan.txt").write_text(plan_text + "\n")
        self.log(f"sharding plan ({self.ctx.world_size} ranks, {self.ctx.device.type}):\n{plan_text}")
        if self.optim is not self.cfg.optim:
            self.log(
                f"learning rates scaled ({self.cfg.optim.lr_scaling}) from batch {self.cfg.optim.reference_batch_size:,} "
                f"to {self.cfg.training.batch_size:,}: lr {self.optim.lr:.4g}, embedding_lr {self.optim.embedding_lr:.4g}"
            )
        self.monitor.text("config", self.cfg.to_json())
        self.monitor.text("plan", plan_text)
        for rank, size in enumerate(embedding_bytes_per_rank(self.model, self.ctx.world_size)):
            self.monitor.scalar("memory/embedding_bytes", size, rank)
            self.log(f"rank {rank}: {size / 2**20:,.1f} MiB of embedding weights")
        if self.cfg.metrics.tensorboard:
            self.log(f"TensorBoard: tensorboard --logdir {(self.run_dir / 'tb').resolve()}")

    def _restore(self) -> TrainerState:
        if self.resume_from is None:
            return self.start
        self.checkpointer.load(self.resume_from, self.model, self.optimizer, self.scheduler)
        start = self.start
        self.log(
            f"resumed from {self.resume_from} at step {start.step} (epoch {start.epoch}, batch {start.batches_into_epoch})"
        )
        if self.layout_cut is not None:
            cut, ranks = (
                self.layout_cut,
                f"{self.ctx.world_size} rank{'s' if self.ctx.world_size > 1 else ''}",
            )
            self.log(
                f"epoch {start.epoch} goes on with {ranks} x {self.batch_size} rows per batch (the checkpoint: "
                f"{cut.world_size} x {cut.batch_size}): {self.start_epoch_steps} steps over the rows it has "
                "not trained on yet"
            )
        return start

    def _epoch_batches(self, start: TrainerState) -> Prefetcher:
        """The batches of `start`'s epoch (segment) from its position on; its seed fixes their order."""
        batches = iter_train_batches(
            self.groups["train"], self.ctx.rank, self.ctx.world_size, self.batch_size, start.seed,
            start.epoch, self.cfg.data.shuffle_buffer, features=self.features, earlier=start.earlier_segments,
        )  # fmt: skip
        # Resuming replays the segment's deterministic order up to the saved position without the model.
        skip = start.batches_into_epoch
        return Prefetcher(itertools.islice(batches, skip, None), self.cfg.data.prefetch_batches)

    def _step(self, batches: Iterator, step: int) -> torch.Tensor:
        """One optimizer step; returns the loss (a device tensor: reading it syncs, so only on log steps)."""
        if self.pipeline is not None:
            # progress() returns the model's second output, (loss.detach(), logits, labels), not the loss.
            loss, _, _ = self.pipeline.progress(batches)
            return loss
        batch = next(batches).to(self.ctx.device)
        # Before forward, as TorchRec's train pipelines do: zero_grad() is also where the fused embedding
        # optimizer copies this step's scheduled rate into its kernel, which then updates the tables
        # inside backward (after step() it would hand them the previous step's rate).
        self.optimizer.zero_grad()
        loss, _ = self.model(batch)
        # On CPU reading the loss costs no device sync, so check every step, before backward: the fused
        # embedding optimizer updates the tables inside backward, so after it is already too late.
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at step {step + 1}; stopping before its update")
        loss.backward()
        self.optimizer.step()
        return loss

    def _evaluate(self, split: str, max_rows: int = 0) -> dict[str, float]:
        return evaluate(
            self.model,
            self.groups[split],
            self.ctx,
            self.eval_batch_size,
            max_rows,
            self.cfg.data.prefetch_batches,
            features=self.features,
        )

    def _log_eval(self, split: str, metrics: dict[str, float], step: int) -> None:
        self.monitor.scalar(f"eval/{split}/auc", metrics["auc"], step)
        self.monitor.scalar(f"eval/{split}/logloss", metrics["logloss"], step)
        self.log(
            f"step {step}: {split} AUC {metrics['auc']:.4f} logloss {metrics['logloss']:.4f} ({metrics['rows']:,} rows)"
        )

    def _checkpoint(self, state: TrainerState) -> None:
        if self.cfg.checkpoint.enabled:
            path = self.checkpointer.save(
                self.model, self.optimizer, self.scheduler, state, sharding_types(self.plan)
            )
            self.last_saved_step = state.step
            self.log(f"step {state.step}: checkpoint {path}")

    def run(self) -> dict[str, Any]:
        """Trains to the configured end, evaluates val and test, writes metrics.json; returns the metrics."""
        # Restore first: a refused resume (a damaged checkpoint, a plan it does not fit) stops before
        # this run has written anything, so the run directory stays as the earlier run left it.
        state = self._restore()
        self.monitor = build_monitor(self.run_dir, self.cfg.metrics.tensorboard, self.is_writer)
        self._write_run_files()
        # The step whose checkpoint is known good: the one resumed from, then each one saved. (Not "a
        # step-N directory exists": a damaged one that `resume=auto` skipped must be written again.)
        self.last_saved_step = state.step
        step, samples_seen = state.step, state.samples_seen
        global_batch = self.cfg.training.batch_size
        eval_every = eval_interval(self.cfg.eval, self.steps_per_epoch)
        ckpt_every = self.cfg.checkpoint.every_steps
        progress = tqdm(total=self.total_steps, initial=step, desc="train", unit="step",
                        disable=not (self.is_writer and self.cfg.metrics.progress_bar), dynamic_ncols=True)  # fmt: skip
        started, steps_at_start, reached_target = time.perf_counter(), step, False
        # (step, unpaused clock, data wait so far) at the end of the first logging window: the steady rate
        # and data-wait share start there.
        steady_from: tuple[int, float, float] | None = None
        position = state
        self.model.train()
        try:
            for epoch in range(state.epoch, self.cfg.training.epochs):
                resumed_epoch = epoch == state.epoch
                # A resumed epoch finishes in its own order (its seed, its segments); the next ones are new.
                epoch_start = state if resumed_epoch else next_epoch(position, epoch, self.cfg.training.seed)
                epoch_steps = self.start_epoch_steps if resumed_epoch else self.steps_per_epoch
                batches = self._epoch_batches(epoch_start)
                try:
                    for batch_index in range(epoch_start.batches_into_epoch, epoch_steps):
                        if step >= self.total_steps or reached_target:
                            break
                        loss = self._step(batches, step)
                        self.scheduler.step()
                        step += 1
                        samples_seen += global_batch
                        progress.update(1)
                        if step - steps_at_start == self.cfg.training.log_every_steps:
                            waited = self.data_wait_seconds + batches.wait_seconds
                            steady_from = (step, time.perf_counter() - self.paused_seconds, waited)
                        if step % self.cfg.training.log_every_steps == 0 or step == self.total_steps:
                            self._log_train(loss, step, samples_seen, started, steps_at_start, batches)
                        position = dataclasses.replace(
                            epoch_start,
                            step=step,
                            samples_seen=samples_seen,
                            batches_into_epoch=batch_index + 1,
                        )
                        if batch_index + 1 == epoch_steps:
                            position = next_epoch(position, epoch + 1, self.cfg.training.seed)
                        if eval_every and step % eval_every == 0 and step < self.total_steps:
                            with self._paused():
                                val = self._evaluate("val", self.cfg.eval.max_rows)
                            self._log_eval("val", val, step)
                            target = self.cfg.training.target_auc
                            reached_target = bool(target) and val["auc"] >= target
                            self.model.train()
                        if ckpt_every and step % ckpt_every == 0:
                            with self._paused():
                                self._checkpoint(position)
                finally:
                    self.data_wait_seconds += batches.wait_seconds
                    batches.close()
                if step >= self.total_steps or reached_target:
                    break
            ended = time.perf_counter() - self.paused_seconds
            elapsed = ended - started
            steady_rate = steady_wait = None
            if steady_from is not None and step > steady_from[0]:
                steady_seconds = max(ended - steady_from[1], 1e-9)
                steady_rate = (step - steady_from[0]) * global_batch / steady_seconds
                steady_wait = (self.data_wait_seconds - steady_from[2]) / steady_seconds
            if step and step != self.last_saved_step:
                self._checkpoint(position)
            return self._finish(
                step, samples_seen, elapsed, steps_at_start, reached_target, steady_rate, steady_wait
            )
        finally:
            progress.close()
            self.monitor.close()

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """Times a pause of training (an evaluation, a checkpoint) so throughput figures leave it out."""
        if self.ctx.device.type == "cuda":
            # Training kernels still queued belong to training, not to the pause: wait for them first.
            # Only on evaluation and checkpoint steps, which sync anyway.
            torch.cuda.synchronize(self.ctx.device)
        began = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - began

    def _log_train(
        self,
        loss: torch.Tensor,
        step: int,
        samples_seen: int,
        started: float,
        first_step: int,
        batches: Prefetcher,
    ) -> None:
        # The one host sync of the loop, only on logging steps: reading the loss.
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {step} (checked every {self.cfg.training.log_every_steps} steps)"
            )
        elapsed = max(time.perf_counter() - started - self.paused_seconds, 1e-9)
        rate = (step - first_step) * self.cfg.training.batch_size / elapsed
        self.monitor.scalar("train/loss", loss_value, step)
        self.monitor.scalar("train/lr", self.scheduler.get_last_lr()[-1], step)
        self.monitor.scalar("train/embedding_lr", self.scheduler.get_last_lr()[0], step)
        self.monitor.scalar("perf/samples_per_sec", rate, step)
        self.monitor.scalar(
            "perf/data_wait_fraction", (self.data_wait_seconds + batches.wait_seconds) / elapsed, step
        )
        self.log(
            f"step {step}/{self.total_steps}: loss {loss_value:.4f}, {rate:,.0f} samples/s, {samples_seen:,} samples"
        )

    def _finish(
        self,
        step: int,
        samples_seen: int,
        elapsed: float,
        first_step: int,
        reached_target: bool,
        steady_rate: float | None,
        steady_wait: float | None,
    ) -> dict[str, Any]:
        val = self._evaluate("val")
        self._log_eval("val", val, step)
        test = self._evaluate("test")
        self._log_eval("test", test, step)
        trained_samples = (step - first_step) * self.cfg.training.batch_size
        metrics = {
            "val": val,
            "test": test,
            "train": {
                "steps": step,
                "samples": samples_seen,
                "samples_per_sec": trained_samples / elapsed if elapsed > 0 else 0.0,
                # After the first logging window (start-up: first reads, allocations, warm caches left
                # out); None when the run had one window or fewer.
                "steady_samples_per_sec": steady_rate,
                "seconds": elapsed,
                "data_wait_fraction": self.data_wait_seconds / elapsed if elapsed > 0 else 0.0,
                # Over the same steps as steady_samples_per_sec: without the first batches' wait for
                # the first row groups, which dominates the share of a short run.
                "steady_data_wait_fraction": steady_wait,
                "reached_target_auc": reached_target,
            },
            "world_size": self.ctx.world_size,
            "precision": self.cfg.training.precision,
            "compiled": self.compiled,
            # Whether glibc was told to keep freed host memory (training.keep_freed_memory, cpu only).
            "keeps_freed_memory": self.keeps_freed_memory,
            # The peak rates used (after `optim.reference_batch_size` scaling), beside the recipe's.
            "learning_rates": {
                "lr": self.optim.lr,
                "embedding_lr": self.optim.embedding_lr,
                "stated_lr": self.cfg.optim.lr,
                "stated_embedding_lr": self.cfg.optim.embedding_lr,
                "warmup_steps": self.warmup_steps,
            },
            "model": {
                "name": self.cfg.model.name,
                "dense_parameters": self.dense_parameters,
                "sparse_parameters": self.sparse_parameters,
            },
            "memory": peak_memory_by_rank(self.ctx),
        }
        hparams = {
            "model": self.cfg.model.name, "embedding_dim": self.cfg.model.embedding_dim,
            "batch_size": self.cfg.training.batch_size, "lr": self.optim.lr,
            "embedding_lr": self.optim.embedding_lr, "dense_optimizer": self.cfg.optim.dense_optimizer,
            "embedding_optimizer": self.cfg.optim.embedding_optimizer, "world_size": self.ctx.world_size,
        }  # fmt: skip
        self.monitor.hparams(hparams, {"hparam/val_auc": val["auc"], "hparam/test_auc": test["auc"],
                                       "hparam/test_logloss": test["logloss"]})  # fmt: skip
        if self.is_writer:
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics
