"""One command that proves the CUDA path on one GPU and measures it: the GPU checks, then samples/s.

    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --out DIR     # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --out DIR --smoke               # the same code on cpu, tiny

1. The stack (`dlrm_dist.doctor`): versions, GPUs, NCCL; a stack that does not fit stops here.
2. The GPU checks of `tests/gpu/checks.py` (what tests/gpu runs under pytest), in a subprocess, on cuda
   (`--smoke`: on cpu). The GPU machines have no pytest, so they run without it.
3. Throughput on one device, 1 rank, synthetic batches made in memory (no data set), each case a fresh
   model sharded by TorchRec's planner:
   - criteo_kaggle: configs/criteo_kaggle.toml's DLRM on the Kaggle tables (33.8M rows, D = 16), fp32 and
     bf16 autocast, batch 16,384 and 65,536;
   - dlrm_dcnv2: configs/criteo_1tb_dcnv2.toml's DCNv2 with its multi-hot bags (214 ids a sample) and
     its tables capped so that weights plus per-element Adagrad state take at most 45% of the GPU;
   For each: samples/s of the plain loop and of `TrainPipelineSparseDist` (the trainer's cuda loop, which
   overlaps the next batch's copy), and a per-phase breakdown of the plain loop from CUDA events
   (H2D copy, forward, backward with the fused embedding update, dense optimizer step).
   Ratios are against the fp32 case of the same shapes and batch, measured in this run.
Writes DIR/gpu_check.json, DIR/gpu_check.md and DIR/gpu_tests.json. Meant to finish in under 4 minutes
on one H100/H200: a case that would start after `--budget-s` is skipped and listed as such.
fp16 is not measured: the trainer refuses it (see dlrm_dist/precision.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist  # noqa: E402

from data_prep.schema import KAGGLE_CARDINALITIES  # noqa: E402
from dlrm_dist import doctor  # noqa: E402
from dlrm_dist.compat import check_stack  # noqa: E402
from dlrm_dist.config import ModelConfig, OptimConfig, ShardingConfig, load_config  # noqa: E402
from dlrm_dist.models import build_model  # noqa: E402
from dlrm_dist.models.train_module import CTRTrainModule  # noqa: E402
from dlrm_dist.optim import build_optimizer  # noqa: E402
from dlrm_dist.sharding import shard_model  # noqa: E402
from tests.gpu.checks import one_rank, random_batch, run_checks  # noqa: E402

ANCHORS = [
    (
        "NVIDIA DeepLearningExamples PyTorch DLRM, Criteo Kaggle-size model, AMP",
        "1x A100-80GB",
        4.02e6,
        4.02e6,
    ),
    ("MLPerf Training DLRM-DCNv2 (Criteo 1TB multi-hot)", "8x H200", 15.1e6, 1.9e6),
]
PHASES = ("h2d", "forward", "backward", "optimizer")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
# --smoke: the recipes' families and tables, with narrow layers, so that a cpu run takes seconds.
SMOKE_MODEL = {"embedding_dim": 8, "bottom_mlp": [16, 8], "top_mlp": [16, 1], "low_rank_dim": 8}
# Per-element Adagrad keeps one state value per weight: a table row costs 2 x D x 4 bytes.
TABLE_MEMORY_SHARE = 0.45


@dataclass(frozen=True)
class Case:
    """One throughput measurement: a model family's shapes, a batch size and a precision."""

    family: str
    batch_size: int
    precision: str


@dataclass(frozen=True)
class Family:
    """A model family's shapes as the benchmark builds them."""

    model: ModelConfig
    optim: OptimConfig
    num_embeddings: list[int]
    ids_per_bag: list[int]
    table_cap: int


def capped_sizes(sizes: list[int], bytes_per_row: int, budget_bytes: int) -> tuple[list[int], int]:
    """The largest per-table row cap whose capped tables fit in `budget_bytes`; returns (sizes, cap)."""
    low, high = 1, max(sizes)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(min(rows, cap) for rows in sizes) * bytes_per_row <= budget_bytes:
            low = cap
        else:
            high = cap - 1
    return [min(rows, low) for rows in sizes], low


def build_families(device: torch.device, smoke: bool) -> dict[str, Family]:
    """The Kaggle DLRM and MLPerf DCNv2 shapes from their recipes, tables capped to the device."""
    kaggle = load_config(REPO_ROOT / "configs" / "criteo_kaggle.toml")
    dcnv2 = load_config(REPO_ROOT / "configs" / "criteo_1tb_dcnv2.toml")
    if device.type == "cuda":
        budget = int(torch.cuda.get_device_properties(device).total_memory * TABLE_MEMORY_SHARE)
    else:
        budget = 2 * 2**20 if smoke else 4 * 2**30
    families = {}
    for name, cfg, sizes, bags in [
        ("criteo_kaggle", kaggle, list(KAGGLE_CARDINALITIES), [1] * len(KAGGLE_CARDINALITIES)),
        ("dlrm_dcnv2", dcnv2, list(dcnv2.model.num_embeddings), list(dcnv2.model.multi_hot_sizes)),
    ]:
        # The recipe's size checks are for prepared data; here the tables are what the device holds.
        model_cfg = dataclasses.replace(cfg.model, num_embeddings=[], max_table_rows=0)
        if smoke:
            model_cfg = dataclasses.replace(model_cfg, **SMOKE_MODEL)
        bytes_per_row = 2 * model_cfg.embedding_dim * 4
        capped, cap = capped_sizes(sizes, bytes_per_row, budget)
        families[name] = Family(model_cfg, cfg.optim, capped, bags, cap)
    return families


def build_cases(smoke: bool) -> list[Case]:
    if smoke:
        return [
            Case(family, 64, precision)
            for family in ("criteo_kaggle", "dlrm_dcnv2")
            for precision in PRECISIONS
        ]
    return [
        *(Case("criteo_kaggle", batch, precision) for batch in (16_384, 65_536) for precision in PRECISIONS),
        Case("dlrm_dcnv2", 16_384, "fp32"),
        Case("dlrm_dcnv2", 16_384, "bf16"),
        Case("dlrm_dcnv2", 65_536, "bf16"),
    ]


class PhaseClock:
    """Marks phase boundaries: CUDA events on the current stream (no host sync), or wall time on cpu."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        """Durations between consecutive marks (synchronises once, at the end)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [start.elapsed_time(end) / 1e3 for start, end in itertools.pairwise(self.marks)]
        return [end - start for start, end in itertools.pairwise(self.marks)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_case(case: Case, family: Family, ctx, steps: int, warmup: int) -> dict[str, Any]:
    """Builds the case's model and measures the plain loop (with its phases) and the train pipeline."""
    device = ctx.device
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net = build_model(family.model, family.num_embeddings, dense_device=device)
    module = CTRTrainModule(net, PRECISIONS[case.precision], device.type)
    built = time.perf_counter()
    model, plan = shard_model(module, ShardingConfig(), family.optim, ctx, case.batch_size)
    optimizer = build_optimizer(model, family.optim)
    sharded_seconds = time.perf_counter() - built
    pool = [
        random_batch(family.num_embeddings, case.batch_size, family.ids_per_bag, seed) for seed in range(4)
    ]
    if device.type == "cuda":
        pool = [batch.pin_memory() for batch in pool]

    def step(batch, clock: PhaseClock | None) -> torch.Tensor:
        on_device = batch.to(device, non_blocking=True)
        if clock:
            clock.mark()
        loss, _ = model(on_device)
        if clock:
            clock.mark()
        loss.backward()
        if clock:
            clock.mark()
        optimizer.step()
        optimizer.zero_grad()
        if clock:
            clock.mark()
        return loss

    for batch in itertools.islice(itertools.cycle(pool), warmup):
        step(batch, None)
    _sync(device)
    began = time.perf_counter()
    for batch in itertools.islice(itertools.cycle(pool), steps):
        loss = step(batch, None)
    _sync(device)
    plain_seconds = time.perf_counter() - began
    final_loss = float(loss.detach())

    clock = PhaseClock(device)
    for batch in itertools.islice(itertools.cycle(pool), steps):
        clock.mark()
        step(batch, clock)
    durations = clock.seconds()
    # Four phases per step; the gap between one step's last mark and the next step's first is ~0.
    per_phase = {name: 0.0 for name in PHASES}
    for index in range(steps):
        for offset, name in enumerate(PHASES):
            per_phase[name] += durations[index * 5 + offset]

    pipeline = TrainPipelineSparseDist(model, optimizer, device)
    source = itertools.cycle(pool)
    for _ in range(warmup):
        pipeline.progress(source)
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        # progress() returns the model's second output: (loss.detach(), logits, labels).
        pipeline_loss, _, _ = pipeline.progress(source)
    _sync(device)
    pipeline_seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    if not (
        torch.isfinite(torch.tensor(final_loss)) and torch.isfinite(pipeline_loss.detach().float().cpu())
    ):
        raise RuntimeError(f"{case}: the loss is not finite ({final_loss}, {float(pipeline_loss)})")
    result = {
        **dataclasses.asdict(case),
        "steps": steps,
        "samples_per_s_plain": steps * case.batch_size / plain_seconds,
        "samples_per_s_pipeline": steps * case.batch_size / pipeline_seconds,
        "phase_ms": {name: 1e3 * total / steps for name, total in per_phase.items()},
        "loss": final_loss,
        "peak_memory_gib": peak / 2**30 if peak is not None else None,
        "shard_seconds": sharded_seconds,
        "sharding_types": sorted({s.sharding_type for tables in plan.plan.values() for s in tables.values()}),
    }
    return result


def run_tests(device: torch.device, out: Path) -> list[dict[str, Any]]:
    """The GPU checks; on cuda in a child process, so that a crashing kernel cannot take the measurements
    (and the report) down with it; on cpu in this one, which saves the smoke run a second start-up."""
    path = out / "gpu_tests.json"
    if device.type == "cpu":
        results = run_checks(device)
        path.write_text(json.dumps(results, indent=2) + "\n")
        return results
    command = [sys.executable, "-m", "tests.gpu.checks", "--device", device.type, "--json", str(path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, timeout=300, check=False)
    if path.is_file():
        return json.loads(path.read_text())
    return [
        {"name": "tests.gpu.checks", "passed": False, "seconds": 0.0, "error": f"exit {completed.returncode}"}
    ]


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Each case's samples/s over its fp32 twin's (same family and batch); the pipeline's over plain."""
    for result in results:
        if "samples_per_s_plain" not in result:
            continue
        twin = next(
            (r for r in results if r.get("family") == result["family"] and r.get("batch_size") == result["batch_size"]
             and r.get("precision") == "fp32" and "samples_per_s_plain" in r),
            None,
        )  # fmt: skip
        result["vs_fp32"] = (
            result["samples_per_s_pipeline"] / twin["samples_per_s_pipeline"] if twin else None
        )
        result["pipeline_vs_plain"] = result["samples_per_s_pipeline"] / result["samples_per_s_plain"]


def markdown(report: dict[str, Any]) -> str:
    """DIR/gpu_check.md: the machine, the checks, the throughput table, the phases and the anchors."""
    env = report["environment"]
    lines = [
        f"# gpu_check ({'smoke, cpu' if report['smoke'] else report['device']})",
        "",
        f"Command: `{report['command']}`; {report['seconds']:.0f} s in all.",
        "",
        "```",
        env["report"],
        "```",
        "",
        "## Checks (tests/gpu)",
        "",
        "| check | result | seconds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t['name']} | {'passed' if t['passed'] else 'FAILED'} | {t['seconds']:.1f} |"
        for t in report["tests"]
    ]
    lines += [
        "",
        "## Throughput (one device, 1 rank, synthetic batches)",
        "",
        "| shapes | table cap (rows) | batch | precision | samples/s plain | samples/s pipeline | vs fp32 | pipeline / plain | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "skipped" in r or "error" in r:
            lines.append(
                f"| {r['family']} | | {r['batch_size']:,} | {r['precision']} | {r.get('skipped') or r['error']} | | | | |"
            )
            continue
        vs = f"{r['vs_fp32']:.2f}" if r.get("vs_fp32") else "-"
        peak = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        cap = report["families"][r["family"]]["table_cap"]
        lines.append(
            f"| {r['family']} | {cap:,} | {r['batch_size']:,} | {r['precision']} | {r['samples_per_s_plain']:,.0f} | "
            f"{r['samples_per_s_pipeline']:,.0f} | {vs} | {r['pipeline_vs_plain']:.2f} | {peak} |"
        )
    lines += ["", "Per-phase time of the plain loop (ms per step, CUDA events; wall time on cpu):", ""]
    lines += [
        "| shapes | batch | precision | " + " | ".join(PHASES) + " |",
        "|---|---|---|" + "---|" * len(PHASES),
    ]
    for r in report["results"]:
        if "phase_ms" in r:
            phases = " | ".join(f"{r['phase_ms'][name]:.2f}" for name in PHASES)
            lines.append(f"| {r['family']} | {r['batch_size']:,} | {r['precision']} | {phases} |")
    lines += [
        "",
        "## Anchors (published, other machines)",
        "",
        "| system | machine | samples/s | per GPU |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {machine} | {total / 1e6:.2f}M | {per_gpu / 1e6:.2f}M |"
        for name, machine, total, per_gpu in ANCHORS
    ]
    lines += [
        "",
        "The anchors' Kaggle model is the same shape as criteo_kaggle here; MLPerf's DCNv2 has its full 40M-row",
        "tables and 8 GPUs, so per GPU is the comparable figure.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="directory for gpu_check.json, gpu_check.md, gpu_tests.json"
    )
    parser.add_argument("--smoke", action="store_true", help="run the same code on cpu in tiny shapes")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per loop (default 20; smoke 2)")
    parser.add_argument("--budget-s", type=float, default=210.0, help="start no case after this many seconds")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu") if args.smoke else torch.device("cuda", 0)
    if not args.smoke and not torch.cuda.is_available():
        print(
            "gpu_check: error: no CUDA device (torch.cuda.is_available() is False); use --smoke on cpu",
            file=sys.stderr,
        )
        return 2
    steps, warmup = (args.steps or 2, 1) if args.smoke else (args.steps or 20, 5)

    env = doctor.collect_environment()
    check = check_stack(env.stack)
    ops_problem = None if check.problems else doctor.operator_problem([device])
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "host": platform.node(),
        "environment": {
            **dataclasses.asdict(env),
            "report": doctor.report(env, check, ops_problem),
        },
        "tests": [],
        "results": [],
        "families": {},
    }
    problem = doctor.diagnose(env.stack, check, ops_problem)
    if problem is None:
        report["tests"] = run_tests(device, out)
        with one_rank(device.type) as ctx:
            families = build_families(ctx.device, args.smoke)
            report["families"] = {name: dataclasses.asdict(family) for name, family in families.items()}
            for case in build_cases(args.smoke):
                if time.perf_counter() - started > args.budget_s:
                    report["results"].append({**dataclasses.asdict(case), "skipped": "skipped: time budget"})
                    continue
                try:
                    report["results"].append(measure_case(case, families[case.family], ctx, steps, warmup))
                except Exception as error:  # one case's failure (e.g. out of memory) must not hide the others
                    report["results"].append(
                        {**dataclasses.asdict(case), "error": f"{type(error).__name__}: {error}"[:300]}
                    )
                # The case's model and tables are garbage now: give their memory back before the next case.
                gc.collect()
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
                print(
                    f"gpu_check: {case} -> {report['results'][-1].get('samples_per_s_pipeline', report['results'][-1])}",
                    flush=True,
                )
        add_ratios(report["results"])
    report["seconds"] = time.perf_counter() - started
    report["problem"] = problem
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    if problem is not None:
        print(f"gpu_check: error: {problem}", file=sys.stderr)
        return 2
    failed = [t["name"] for t in report["tests"] if not t["passed"]] + [
        f"{r['family']}/{r['batch_size']}/{r['precision']}" for r in report["results"] if "error" in r
    ]
    if failed:
        print(f"gpu_check: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
