"""Training samples/s of `dlrm-train` against a plain PyTorch DLRM, measured in the same run.

  dlrm-dist:  `dlrm-train` reading prepared Parquet shards (background reader, KeyedJaggedTensor,
              TorchRec sharded tables with the fused row-wise Adagrad, DDP MLPs with dense Adagrad), on
              1 rank (all cores as intra-op threads) and on 2 ranks started by torchrun (gloo, 1 thread each).
  baseline:   `benchmarks/plain_dlrm.py`: one `nn.EmbeddingBag` per feature, the same MLPs, one dense
              Adagrad over every parameter, the split already in memory as tensors, all cores.

Both use the `criteo_kaggle` shapes: 26 tables of 100k rows (`dlrm-prep criteo --hash-buckets 100000`),
D = 16, bottom MLP 512-256-64-16, top MLP 512-256-1, batch 2048. Prints samples/s of each and the ratio
dlrm-dist / baseline (target >= 1.0), then where one rank's time goes (data wait, embedding lookup and
fused update, MLPs and interaction, dense optimizer), from a torch.profiler pass over the same steps.

    .venv/bin/python benchmarks/train_throughput.py [--steps 60] [--workdir /tmp/train-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from plain_dlrm import PlainSettings, build, load_split, table_sizes, train
from torch.profiler import ProfilerActivity, profile

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHAPES = [
    "--model.name=dlrm", "--model.embedding_dim=16", "--model.bottom_mlp=512,256,64,16",
    "--model.top_mlp=512,256,1", "--training.batch_size=2048",
    "--optim.embedding_optimizer=rowwise_adagrad", "--optim.dense_optimizer=adagrad",
]  # fmt: skip


def prepare(work: Path, rows_per_day: int) -> Path:
    """Two synthetic days hashed into 100k-row tables: day_0 is the train split."""
    synth, prepared = work / "synth", work / "prepared"
    if not (prepared / "manifest.json").exists():
        subprocess.run([str(BIN / "dlrm-prep"), "synth", "--out", str(synth), "--days", "2",
                        "--rows-per-day", str(rows_per_day), "--seed", "5"], check=True)  # fmt: skip
        subprocess.run([str(BIN / "dlrm-prep"), "criteo", "--input", str(synth), "--out", str(prepared),
                        "--layout", "terabyte", "--hash-buckets", "100000", "--no-progress"], check=True)  # fmt: skip
    return prepared


def dlrm_train(prepared: Path, run_dir: Path, ranks: int, steps: int) -> dict:
    """Runs dlrm-train on `ranks` local ranks; returns its metrics.json `train` section."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [
        *(launcher if ranks > 1 else [sys.executable]), str(REPO_ROOT / "dlrm_dist/train.py"),
        "--config", str(REPO_ROOT / "configs/criteo_kaggle.toml"), "--data", str(prepared),
        "--run-dir", str(run_dir), *SHAPES, f"--training.max_steps={steps}", "--training.device=cpu",
        "--checkpoint.enabled=false", "--metrics.progress_bar=false", "--metrics.tensorboard=false",
        "--eval.every_steps=0", f"--training.log_every_steps={steps}",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return json.loads((run_dir / "metrics.json").read_text())["train"]


def plain_baseline(prepared: Path, steps: int) -> dict:
    data = load_split(prepared, "train")
    settings = PlainSettings(optimizer="adagrad", lr=0.01, max_steps=steps)
    model, optimizer = build(settings, table_sizes(prepared))
    return train(model, optimizer, data, settings)


def _is_embedding_op(name: str) -> bool:
    # fbgemm's table-batched lookups, their backward with the fused optimizer, and the KJT permutes.
    return "fbgemm" in name or "embedding" in name.lower()


def time_breakdown(prepared: Path, work: Path, steps: int) -> dict[str, float]:
    """Seconds per step of one in-process rank, by phase: wall clock per phase, profiler for the split."""
    from dlrm_dist.config import load_config
    from dlrm_dist.data import Prefetcher, iter_train_batches
    from dlrm_dist.distributed import destroy_distributed, init_distributed
    from dlrm_dist.trainer import Trainer

    cfg = load_config(REPO_ROOT / "configs/criteo_kaggle.toml", [*SHAPES, "--training.device=cpu"],
                      {"data": {"path": str(prepared)}, "run_dir": str(work / "breakdown")})  # fmt: skip
    ctx = init_distributed("cpu")
    try:
        trainer = Trainer(cfg, ctx)
        model, optimizer = trainer.model, trainer.optimizer
        batches = Prefetcher(
            iter_train_batches(
                trainer.groups["train"],
                0,
                1,
                trainer.batch_size,
                0,
                0,
                cfg.data.shuffle_buffer,
                features=trainer.features,
            ),
            cfg.data.prefetch_batches,
        )
        phases = dict.fromkeys(("data wait", "forward + backward", "dense optimizer"), 0.0)
        model.train()
        # The first steps pay one-off costs (allocations, DDP buckets); leave them out of both passes.
        for _ in range(3):
            loss, _ = model(next(batches))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        for _ in range(steps):
            started = time.perf_counter()
            batch = next(batches)
            fetched = time.perf_counter()
            loss, _ = model(batch)
            loss.backward()
            backward_done = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad()
            phases["data wait"] += fetched - started
            phases["forward + backward"] += backward_done - fetched
            phases["dense optimizer"] += time.perf_counter() - backward_done
        # A second pass, forward + backward only, under the profiler: the share of op time spent in
        # embedding ops (the fused optimizer runs inside backward, so its update is in that share).
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(max(5, steps // 4)):
                loss, _ = model(next(batches))
                loss.backward()
                optimizer.zero_grad()
        batches.close()
        averages = profiler.key_averages()
        top_ops = sorted(averages, key=lambda event: event.self_cpu_time_total, reverse=True)[:8]
        print("top ops by self CPU time (forward + backward):")
        for event in top_ops:
            kind = "embedding" if _is_embedding_op(event.key) else "other"
            print(f"  {event.key[:60]:<60}{event.self_cpu_time_total / 1e3:>10.1f} ms  {kind}")
        embedding_self = sum(event.self_cpu_time_total for event in averages if _is_embedding_op(event.key))
        embedding_share = embedding_self / max(1e-9, sum(event.self_cpu_time_total for event in averages))
        forward_backward = phases.pop("forward + backward")
        phases["embeddings (lookup, backward, fused update)"] = forward_backward * embedding_share
        phases["MLPs, interaction, loss"] = forward_backward * (1 - embedding_share)
        return {name: seconds / steps for name, seconds in phases.items()}
    finally:
        destroy_distributed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps", type=int, default=60, help="training steps of each measurement (default 60)"
    )
    parser.add_argument(
        "--rows-per-day", type=int, default=160_000, help="synthetic rows per day (default 160000)"
    )
    parser.add_argument(
        "--workdir", default="/tmp/train-bench", help="scratch directory (data kept for reruns)"
    )
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    prepared = prepare(work, args.rows_per_day)
    cores = os.cpu_count() or 1
    print(f"criteo_kaggle shapes, batch 2048, {args.steps} steps each, {cores} cores")
    print(f"{'trainer':<52}{'samples/s':>11}{'vs baseline':>13}{'data wait':>11}")
    baseline = plain_baseline(prepared, args.steps)["samples_per_sec"]
    print(f"{'plain PyTorch DLRM, in-memory tensors (baseline)':<52}{baseline:>11,.0f}{1.0:>13.2f}{'-':>11}")
    results = {}
    for ranks in (1, 2):
        stats = dlrm_train(prepared, work / f"run-{ranks}", ranks, args.steps)
        results[ranks] = stats["samples_per_sec"]
        label = f"dlrm-train, Parquet, {ranks} rank{'s' if ranks > 1 else ''}"
        print(f"{label:<52}{results[ranks]:>11,.0f}{results[ranks] / baseline:>13.2f}"
              f"{stats['data_wait_fraction']:>10.1%}")  # fmt: skip
    best = max(results, key=results.get)
    ratio = results[best] / baseline
    print(
        f"\nbest dlrm-dist ({best} rank(s)) / baseline: {ratio:.2f} (target >= 1.0): {'PASS' if ratio >= 1 else 'FAIL'}"
    )

    torch.set_num_threads(cores)
    phases = time_breakdown(prepared, work, args.steps)
    step_time = sum(phases.values())
    print(f"\nwhere one rank's step goes ({step_time * 1e3:.1f} ms per step of 2048 samples, 1 rank):")
    for name, seconds in phases.items():
        print(f"  {name:<46}{seconds * 1e3:>8.1f} ms {seconds / step_time:>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
