"""Training samples/s of `dlrm-train` against the DLRM paper's own implementation, in the same run.

  reference:  facebookresearch/dlrm `dlrm_s_pytorch.py` (the unmodified copy in ../shared/anchors, run
              as a separate process from a scratch directory): random one-hot data generated in memory,
              SGD for tables and MLPs, fp32, all cores.
  dlrm-dist:  `dlrm-train` reading prepared Parquet shards (background reader, KeyedJaggedTensor,
              TorchRec sharded tables with the fused SGD, MLPs with SGD, DDP on 2 ranks), on 1 rank
              (all cores as intra-op threads) and on 2 ranks started by torchrun (gloo, 1 thread
              each). `--variants` (comma-separated) picks the rows: fp32; bf16
              (`--training.precision=bf16`); fp32+table_wise (every table table_wise or
              data_parallel: on 1 rank the default plan already is, on 2 ranks the planner would choose
              table_row_wise); fp32+compile and bf16+compile (`--training.compile=true`).
  extra rows: the reference with the glibc allocator thresholds that dlrm-train sets in-process
              (`dlrm_dist/host_memory.py`, through GLIBC_TUNABLES), to show what they alone are worth;
              `benchmarks/plain_dlrm.py`, a plain PyTorch DLRM over in-memory tensors with one dense
              Adagrad over every parameter (the former baseline, kept for comparison only).

Shapes (the issue's): 26 tables of 100k rows x D 16, bottom MLP 13-512-256-64-16, top 367-512-256-1,
batch 2048. The reference and the dlrm-train rows alternate over `--rounds` rounds; the table shows
each row's median and its ratio to the reference's median (targets: fp32 >= 1.2, bf16 >= 2.0). Both
sides leave out their first quarter of steps (start-up): the reference its first print window, dlrm-train
its first logging window (`steady_samples_per_sec` in metrics.json). The reference's clock also leaves
out making its batches; dlrm-train's includes reading them (the data wait column: its share of the
steady steps in the last round, `steady_data_wait_fraction` in metrics.json). Then
where one rank's step goes (data wait, embedding lookup and fused update, MLPs and interaction, dense
optimizer), from a torch.profiler pass over the same steps.

    .venv/bin/python benchmarks/train_throughput.py [--steps 60] [--rounds 3] [--workdir /tmp/train-bench]
        [--variants fp32,bf16] [--ranks 1,2]

Needs scikit-learn (the reference imports it): `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from plain_dlrm import PlainSettings, build, load_split, table_sizes, train
from torch.profiler import ProfilerActivity, profile

from dlrm_dist.host_memory import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REFERENCE = REPO_ROOT.parent / "shared" / "anchors" / "facebookresearch-dlrm" / "dlrm_s_pytorch.py"
BATCH = 2048
# The reference's settings: SGD at 0.1 for tables and MLPs, no warmup or decay, fp32.
SHAPES = [
    "--model.name=dlrm", "--model.embedding_dim=16", "--model.bottom_mlp=512,256,64,16",
    "--model.top_mlp=512,256,1", f"--training.batch_size={BATCH}", f"--optim.reference_batch_size={BATCH}",
    "--optim.embedding_optimizer=sgd", "--optim.dense_optimizer=sgd", "--optim.lr=0.1",
    "--optim.embedding_lr=0.1", "--optim.warmup_steps=0", "--optim.warmup_fraction=0", "--optim.decay=none",
]  # fmt: skip
VARIANTS = {
    "fp32": [],
    "fp32+table_wise": ["--sharding.types=table_wise,data_parallel"],
    "bf16": ["--training.precision=bf16"],
    "fp32+compile": ["--training.compile=true"],
    "bf16+compile": ["--training.precision=bf16", "--training.compile=true"],
}


def prepare(work: Path, rows_per_day: int) -> Path:
    """Two synthetic days hashed into 100k-row tables: day_0 is the train split."""
    # One directory per size, so that a run with another --rows-per-day does not train on the last one's.
    data = work / f"rows-per-day-{rows_per_day}"
    synth, prepared = data / "synth", data / "prepared"
    if not (prepared / "manifest.json").exists():
        subprocess.run([str(BIN / "dlrm-prep"), "synth", "--out", str(synth), "--days", "2",
                        "--rows-per-day", str(rows_per_day), "--seed", "5"], check=True)  # fmt: skip
        subprocess.run([str(BIN / "dlrm-prep"), "criteo", "--input", str(synth), "--out", str(prepared),
                        "--layout", "terabyte", "--hash-buckets", "100000", "--no-progress"], check=True)  # fmt: skip
    return prepared


# dlrm-train raises glibc's mmap and trim thresholds in-process (dlrm_dist/host_memory.py); the extra
# reference row gets the same thresholds through glibc's tunables, to show what that setting alone is worth.
SAME_ALLOCATOR = {
    "GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD_BYTES}:"
    f"glibc.malloc.trim_threshold={TRIM_THRESHOLD_BYTES}"
}
REFERENCE_ROW = "reference (facebookresearch/dlrm, fp32)"
REFERENCE_SAME_ALLOCATOR_ROW = "extra: reference, fp32, with dlrm-train's allocator thresholds"


def reference(work: Path, steps: int, env: dict[str, str] | None = None) -> float:
    """Samples/s of facebookresearch/dlrm on the same shapes, leaving out its first (warm-up) window."""
    scratch = work / "reference"
    scratch.mkdir(parents=True, exist_ok=True)
    window = max(5, steps // 4)
    command = [
        sys.executable, str(REFERENCE), "--arch-sparse-feature-size", "16",
        "--arch-embedding-size", "-".join(["100000"] * 26), "--arch-mlp-bot", "13-512-256-64-16",
        "--arch-mlp-top", "512-256-1", "--data-generation", "random", "--mini-batch-size", str(BATCH),
        "--num-batches", str(window * 4), "--num-indices-per-lookup", "1",
        "--num-indices-per-lookup-fixed", "True", "--print-freq", str(window), "--print-time",
        "--loss-function", "bce", "--round-targets", "True", "--learning-rate", "0.1", "--nepochs", "1",
    ]  # fmt: skip
    output = subprocess.run(
        command, check=True, capture_output=True, text=True, cwd=scratch, env={**os.environ, **(env or {})}
    ).stdout
    times = [float(match) for match in re.findall(r"([0-9.]+) ms/it", output)]
    if len(times) < 2:
        raise RuntimeError(f"no timing in the reference's output:\n{output[-2000:]}")
    return BATCH / (statistics.mean(times[1:]) / 1000)


def dlrm_train(prepared: Path, run_dir: Path, ranks: int, steps: int, extra: list[str] = ()) -> dict:
    """Runs dlrm-train on `ranks` local ranks; returns its metrics.json `train` section."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [
        *(launcher if ranks > 1 else [sys.executable]), str(REPO_ROOT / "dlrm_dist/train.py"),
        "--config", str(REPO_ROOT / "configs/criteo_kaggle.toml"), "--data", str(prepared),
        "--run-dir", str(run_dir), *SHAPES, f"--training.max_steps={steps}", "--training.device=cpu",
        "--checkpoint.enabled=false", "--metrics.progress_bar=false", "--metrics.tensorboard=false",
        "--eval.every_steps=0", f"--training.log_every_steps={max(5, steps // 4)}", *extra,
    ]  # fmt: skip
    shutil.rmtree(run_dir, ignore_errors=True)
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
        # Epoch after epoch: a small train split holds fewer batches than the two passes take.
        epochs = (
            iter_train_batches(trainer.groups["train"], 0, 1, trainer.batch_size, 0, epoch,
                               cfg.data.shuffle_buffer, features=trainer.features)
            for epoch in itertools.count()
        )  # fmt: skip
        batches = Prefetcher(itertools.chain.from_iterable(epochs), cfg.data.prefetch_batches)
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
        "--rounds", type=int, default=3, help="alternating rounds; medians are shown (default 3)"
    )
    parser.add_argument(
        "--rows-per-day", type=int, default=160_000, help="synthetic rows per day (default 160000)"
    )
    parser.add_argument(
        "--workdir", default="/tmp/train-bench", help="scratch directory (data kept for reruns)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"dlrm-train rows (default: {','.join(VARIANTS)})"
    )
    parser.add_argument(
        "--ranks", default="1,2", help="dlrm-train rank counts, comma-separated (default: 1,2)"
    )
    parser.add_argument("--skip-breakdown", action="store_true", help="leave out the per-phase breakdown")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("sklearn") is None:
        # The reference imports scikit-learn at start; without it every round would fail with its traceback.
        print(
            "train_throughput: facebookresearch/dlrm needs scikit-learn: pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    work = Path(args.workdir)
    prepared = prepare(work, args.rows_per_day)
    cores = os.cpu_count() or 1
    variants = [name.strip() for name in args.variants.split(",")]
    rank_counts = [int(count) for count in args.ranks.split(",")]
    print(
        f"criteo_kaggle shapes, batch {BATCH}, SGD, {args.steps} steps each, {args.rounds} rounds, {cores} cores"
    )
    rows: dict[str, list[float]] = {REFERENCE_ROW: [], REFERENCE_SAME_ALLOCATOR_ROW: []}
    for variant in variants:
        for ranks in rank_counts:
            rows[f"dlrm-train, {ranks} rank{'s' if ranks > 1 else ''}, {variant}"] = []
    waits: dict[str, float] = {}
    for round_index in range(args.rounds):
        rows[REFERENCE_ROW].append(reference(work, args.steps))
        rows[REFERENCE_SAME_ALLOCATOR_ROW].append(reference(work, args.steps, SAME_ALLOCATOR))
        for variant in variants:
            for ranks in rank_counts:
                label = f"dlrm-train, {ranks} rank{'s' if ranks > 1 else ''}, {variant}"
                stats = dlrm_train(prepared, work / f"run-{ranks}", ranks, args.steps, VARIANTS[variant])
                rows[label].append(stats["steady_samples_per_sec"])
                # Over the steady steps, as the rate: the whole run's share is mostly the first batch's
                # wait for its first row groups (10-17% of a 40-step run, 0.1-0.3% after it).
                waits[label] = stats["steady_data_wait_fraction"]
        print(f"round {round_index + 1}: " + ", ".join(f"{v[-1]:,.0f}" for v in rows.values()), flush=True)
    plain = plain_baseline(prepared, args.steps)["samples_per_sec"]
    anchor = statistics.median(rows[REFERENCE_ROW])
    print("\n| trainer | samples/s (median) | per round | vs reference | data wait (last round) |")
    print("|---|---|---|---|---|")
    for label, values in rows.items():
        median = statistics.median(values)
        wait = f"{waits[label]:.1%}" if label in waits else "-"
        per_round = " / ".join(f"{value:,.0f}" for value in values)
        print(f"| {label} | {median:,.0f} | {per_round} | {median / anchor:.2f} | {wait} |")
    print(f"| extra: plain PyTorch DLRM, in-memory tensors, dense Adagrad (former baseline) | {plain:,.0f} | "
          f"1 round | {plain / anchor:.2f} | - |")  # fmt: skip
    for variant, target in (("fp32", 1.2), ("bf16", 2.0)):
        if variant not in variants:
            continue
        best = max(
            statistics.median(rows[f"dlrm-train, {r} rank{'s' if r > 1 else ''}, {variant}"])
            for r in rank_counts
        )
        verdict = "PASS" if best / anchor >= target else "FAIL"
        print(
            f"best dlrm-train {variant} / reference fp32: {best / anchor:.2f} (target >= {target}): {verdict}"
        )

    if not args.skip_breakdown:
        torch.set_num_threads(cores)
        phases = time_breakdown(prepared, work, args.steps)
        step_time = sum(phases.values())
        print(
            f"\nwhere one rank's step goes ({step_time * 1e3:.1f} ms per step of {BATCH} samples, 1 rank, fp32):"
        )
        for name, seconds in phases.items():
            print(f"  {name:<46}{seconds * 1e3:>8.1f} ms {seconds / step_time:>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
