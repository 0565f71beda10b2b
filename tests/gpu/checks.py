"""The GPU path's checks, as plain functions of a device: tests/gpu/test_gpu.py runs them under pytest on
cuda, and `benchmarks/gpu_check.py` runs them without pytest (the GPU machines have none) on cuda, or on
cpu with `--smoke`, which the CPU test suite runs, so that this code runs on every commit.

    python -m tests.gpu.checks --device cuda [--json PATH]

Each check builds a small DLRM on a 1-rank process group of its own (nccl on cuda, gloo on cpu) and
raises AssertionError when the behaviour it checks does not hold:
- one sharded step on the device (fused SGD for the tables in backward, SGD for the MLPs) equals the
  same step of the unsharded model on cpu: loss, logits and every weight after the step;
- `TrainPipelineSparseDist` (the trainer's cuda loop) gives the losses and weights of the plain loop;
- a torch.distributed.checkpoint written on the device restores the weights bit for bit, and the steps
  after the restore give the losses of the run that was never interrupted;
- bf16 autocast steps (`training.precision = "bf16"`) have finite losses close to fp32's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.datasets.utils import Batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.checkpoint import Checkpointer, TrainerState
from dlrm_dist.config import CheckpointConfig, ModelConfig, OptimConfig, ShardingConfig
from dlrm_dist.distributed import DistContext, destroy_distributed, init_distributed
from dlrm_dist.models import build_model
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.optim import build_lr_scheduler, build_optimizer
from dlrm_dist.sharding import shard_model

NUM_DENSE = 13
TABLE_ROWS = [50, 61, 73, 97]
MODEL_CFG = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16, 1])
# Different rates, so that a parameter stepped by the wrong optimizer cannot pass.
SGD_CFG = OptimConfig(lr=0.1, embedding_lr=0.5, dense_optimizer="sgd", embedding_optimizer="sgd")
ADAGRAD_CFG = OptimConfig(lr=0.01, embedding_lr=0.05)
BATCH_SIZE = 64
# Float32 on both sides; the tolerance covers cuBLAS / fbgemm summing in another order than the CPU.
ATOL, RTOL = 2e-5, 1e-4


def random_batch(
    num_embeddings: list[int], batch_size: int, ids_per_bag: list[int], seed: int, num_dense: int = NUM_DENSE
) -> Batch:
    """A synthetic batch on cpu: uniform dense features in [0, 1), ids uniform per table, labels 0/1.

    Args:
        num_embeddings: rows of each table (the KJT's keys are C1..Cn, as `build_model` names them).
        batch_size: B.
        ids_per_bag: ids of each bag, per table (1: one-hot), the same for every sample as in MLPerf's
            synthetic multi-hot data.
        seed: the generator's seed (the same seed gives the same batch).
        num_dense: width of the dense features.

    Returns:
        The batch, its KJT key-major with lengths [F * B].
    """
    generator = torch.Generator().manual_seed(seed)
    values = [
        torch.randint(0, rows, (batch_size * bag,), generator=generator)
        for rows, bag in zip(num_embeddings, ids_per_bag, strict=True)
    ]
    lengths = torch.cat([torch.full((batch_size,), bag, dtype=torch.int32) for bag in ids_per_bag])
    sparse_features = KeyedJaggedTensor(
        keys=[f"C{index + 1}" for index in range(len(num_embeddings))],
        values=torch.cat(values),
        lengths=lengths,
    )
    return Batch(
        dense_features=torch.rand(batch_size, num_dense, generator=generator),
        sparse_features=sparse_features,
        labels=torch.randint(0, 2, (batch_size,), generator=generator).float(),
    )


def small_batches(count: int, first_seed: int = 0) -> list[Batch]:
    """`count` distinct small batches of the checks' model (bags of 1 to 3 ids)."""
    bags = [1 + index % 3 for index in range(len(TABLE_ROWS))]
    return [random_batch(TABLE_ROWS, BATCH_SIZE, bags, first_seed + index) for index in range(count)]


@contextlib.contextmanager
def one_rank(device_type: str) -> Iterator[DistContext]:
    """A 1-rank process group (nccl on cuda, gloo on cpu), destroyed on the way out."""
    ctx = init_distributed(device_type)
    try:
        yield ctx
    finally:
        destroy_distributed()


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state on cpu, each ShardedTensor assembled from its shards (all local on 1 rank)."""
    state = {}
    for name, value in model.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype)
            for shard in value.local_shards():
                where = tuple(
                    slice(offset, offset + size)
                    for offset, size in zip(
                        shard.metadata.shard_offsets, shard.metadata.shard_sizes, strict=True
                    )
                )
                full[where] = shard.tensor.detach().cpu()
            value = full
        state[name] = value.detach().cpu().clone()
    return state


def sharded_model(
    ctx: DistContext, optim_cfg: OptimConfig, seed: int, autocast_dtype: torch.dtype | None = None
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The checks' DLRM, its tables sharded table-wise by TorchRec (fused optimizer), and its optimizer."""
    torch.manual_seed(seed)
    module = CTRTrainModule(
        build_model(MODEL_CFG, TABLE_ROWS, dense_device=ctx.device), autocast_dtype, ctx.device.type
    )
    model, _ = shard_model(module, ShardingConfig(types=["table_wise"]), optim_cfg, ctx, BATCH_SIZE)
    return model, build_optimizer(model, optim_cfg)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(
        actual.detach().cpu(),
        expected.detach().cpu(),
        atol=ATOL,
        rtol=RTOL,
        msg=lambda detail: f"{what}: {detail}",
    )


def plain_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device
) -> torch.Tensor:
    """The trainer's cpu step: forward, backward (tables updated inside it), dense step."""
    loss, _ = model(batch.to(device))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def check_sharded_step_matches_cpu(device: torch.device, workdir: Path) -> None:
    """One sharded step on `device` equals the unsharded model's step on cpu."""
    with one_rank(device.type) as ctx:
        device = ctx.device
        model, optimizer = sharded_model(ctx, SGD_CFG, seed=1)
        reference = CTRTrainModule(build_model(MODEL_CFG, TABLE_ROWS, sparse_device=torch.device("cpu")))
        reference.load_state_dict(full_state(model))
        batch = small_batches(1)[0]

        loss, (_, logits, _) = model(batch.to(device))
        reference_loss, (_, reference_logits, _) = reference(batch)
        _assert_close(logits, reference_logits, f"logits on {device}")
        _assert_close(loss, reference_loss, f"loss on {device}")

        loss.backward()
        optimizer.step()
        reference_loss.backward()
        reference_params = dict(reference.named_parameters())
        dense_names = set(dict(in_backward_optimizer_filter(model.named_parameters())))
        torch.optim.SGD([p for n, p in reference_params.items() if n in dense_names], lr=SGD_CFG.lr).step()
        tables = [p for n, p in reference_params.items() if n not in dense_names]
        assert tables, "no parameter was left to the fused embedding optimizer: the tables are not sharded"
        torch.optim.SGD(tables, lr=SGD_CFG.embedding_lr).step()
        stepped = full_state(model)
        for name, value in reference.state_dict().items():
            _assert_close(stepped[name], value, f"{name} after one step on {device}")


def check_pipeline_matches_plain_loop(device: torch.device, workdir: Path, steps: int = 6) -> None:
    """`TrainPipelineSparseDist` gives the losses and final weights of the plain loop."""
    batches = small_batches(steps)
    with one_rank(device.type) as ctx:
        device = ctx.device
        plain, plain_optimizer = sharded_model(ctx, ADAGRAD_CFG, seed=2)
        piped, piped_optimizer = sharded_model(ctx, ADAGRAD_CFG, seed=3)
        piped.load_state_dict(plain.state_dict())
        plain_losses = [plain_step(plain, plain_optimizer, batch, device) for batch in batches]
        pipeline = TrainPipelineSparseDist(piped, piped_optimizer, device)
        source = iter(batches)
        piped_losses = [pipeline.progress(source)[0].detach() for _ in batches]
        _assert_close(torch.stack(piped_losses), torch.stack(plain_losses), f"pipeline losses on {device}")
        piped_state, plain_state = full_state(piped), full_state(plain)
        for name, value in plain_state.items():
            _assert_close(piped_state[name], value, f"{name} after {steps} steps, pipeline vs plain loop")


def check_checkpoint_resumes_identically(device: torch.device, workdir: Path, steps: int = 4) -> None:
    """A DCP checkpoint written on `device` restores every weight and continues with the same losses."""
    batches = small_batches(2 * steps, first_seed=10)
    with one_rank(device.type) as ctx:
        device = ctx.device
        checkpointer = Checkpointer(workdir / "run", CheckpointConfig(), ctx)
        model, optimizer = sharded_model(ctx, ADAGRAD_CFG, seed=4)
        scheduler = build_lr_scheduler(optimizer, ADAGRAD_CFG, 2 * steps)
        for batch in batches[:steps]:
            plain_step(model, optimizer, batch, device)
            scheduler.step()
        saved_state = full_state(model)
        path = checkpointer.save(
            model, optimizer, scheduler, TrainerState(steps, steps * BATCH_SIZE, 0, steps, 1)
        )
        continued = [plain_step(model, optimizer, batch, device) for batch in batches[steps:]]

        resumed, resumed_optimizer = sharded_model(ctx, ADAGRAD_CFG, seed=5)
        resumed_scheduler = build_lr_scheduler(resumed_optimizer, ADAGRAD_CFG, 2 * steps)
        state = checkpointer.load(path, resumed, resumed_optimizer, resumed_scheduler)
        assert state.step == steps, f"restored step {state.step}, saved {steps}"
        for name, value in full_state(resumed).items():
            assert torch.equal(value, saved_state[name]), f"{name} differs after the restore on {device}"
        after_resume = [plain_step(resumed, resumed_optimizer, batch, device) for batch in batches[steps:]]
        torch.testing.assert_close(
            torch.stack(after_resume).cpu(), torch.stack(continued).cpu(), atol=1e-6, rtol=0.0,
            msg=lambda detail: f"losses after the restore on {device}: {detail}",
        )  # fmt: skip


def check_bf16_steps_are_finite(device: torch.device, workdir: Path, steps: int = 5) -> None:
    """bf16 autocast steps have finite losses, within 0.02 of the fp32 loss on the first batch."""
    batches = small_batches(steps, first_seed=20)
    with one_rank(device.type) as ctx:
        device = ctx.device
        fp32, _ = sharded_model(ctx, ADAGRAD_CFG, seed=6)
        bf16, bf16_optimizer = sharded_model(ctx, ADAGRAD_CFG, seed=7, autocast_dtype=torch.bfloat16)
        bf16.load_state_dict(fp32.state_dict())
        fp32_loss, _ = fp32(batches[0].to(device))
        losses = [plain_step(bf16, bf16_optimizer, batch, device) for batch in batches]
        values = torch.stack(losses).float().cpu()
        assert torch.isfinite(values).all(), f"bf16 losses on {device}: {values.tolist()}"
        assert abs(values[0].item() - fp32_loss.item()) < 0.02, (
            f"bf16 loss {values[0].item():.5f} vs fp32 {fp32_loss.item():.5f} on {device}"
        )


CHECKS: dict[str, Callable[[torch.device, Path], None]] = {
    "test_sharded_step_matches_cpu": check_sharded_step_matches_cpu,
    "test_pipeline_matches_plain_loop": check_pipeline_matches_plain_loop,
    "test_checkpoint_resumes_identically": check_checkpoint_resumes_identically,
    "test_bf16_steps_are_finite": check_bf16_steps_are_finite,
}


def run_checks(device: torch.device) -> list[dict]:
    """Runs every check on `device`, each in a fresh temporary directory; returns one record per check."""
    results = []
    for name, check in CHECKS.items():
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dlrm-gpu-check-") as workdir:
            try:
                check(device, Path(workdir))
                error = None
            except Exception:
                error = traceback.format_exc()
        results.append(
            {"name": name, "passed": error is None, "seconds": time.perf_counter() - began, "error": error}
        )
        print(
            f"{'PASSED' if error is None else 'FAILED'} {name} ({results[-1]['seconds']:.1f} s)", flush=True
        )
        if error:
            print(error, file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the GPU path's checks without pytest.")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = run_checks(torch.device(args.device))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    passed = sum(result["passed"] for result in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
