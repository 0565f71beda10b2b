"""`dlrm-compare`: the DLRM paper's model comparison as one command, on the same sharded backbone.

    dlrm-compare --data DIR --config configs/tiny.toml --run-dir runs/compare \
        [--models lr,fm,dlrm,dlrm_dcnv2,wide_deep,deepfm,dcn,xdeepfm] [--nproc-per-node 2] [--synth DIR] \
        [--tune-minutes M] [--section.key=value ...]

Each model is trained by the very entry point users launch (`dlrm_dist/train.py`, under torchrun when
`--nproc-per-node` > 1) with the same data, config, overrides, seed, steps, batch size and world size;
only `--model.name` differs. Its run lands in `RUN_DIR/<model>/`, and a model whose metrics.json is
already there is not trained again, so an interrupted comparison continues where it stopped.

With `--tune-minutes M` each model is first tuned by `dlrm-tune` for M minutes on the same data (by val
AUC, from `--config`), and trains with its own tuned recipe `RUN_DIR/tuned/<model>.toml`: a comparison
of each family at its own settings rather than of one family's settings imposed on all.

Written to RUN_DIR: `comparison.md` and `comparison.csv` (one row per model: dense and sparse parameter
counts, val and test AUC and logloss, training samples/s, peak memory per rank), and a TensorBoard
hparams entry per model under `RUN_DIR/tb` (`tensorboard --logdir RUN_DIR/tb`, HPARAMS tab). With
`--synth DIR` (the `dlrm-prep synth` output the data was prepared from) the table ends with the oracle
AUC of the planted model: the ceiling of every row.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from data_prep.oracle import oracle_split_aucs
from dlrm_dist.config import load_config, parse_overrides
from dlrm_dist.models import MODEL_REGISTRY
from dlrm_dist.tune import format_params, trainer_command, tune

DEFAULT_MODELS = ("lr", "fm", "dlrm", "dlrm_dcnv2", "wide_deep", "deepfm", "dcn", "xdeepfm")


@dataclass(frozen=True)
class ModelResult:
    """One row of the comparison, read from a model's metrics.json."""

    model: str
    dense_parameters: int
    sparse_parameters: int
    val_auc: float
    val_logloss: float
    test_auc: float
    test_logloss: float
    samples_per_sec: float
    peak_memory_gib: float

    @classmethod
    def from_metrics(cls, model: str, metrics: dict) -> ModelResult:
        return cls(
            model=model,
            dense_parameters=metrics["model"]["dense_parameters"],
            sparse_parameters=metrics["model"]["sparse_parameters"],
            val_auc=metrics["val"]["auc"],
            val_logloss=metrics["val"]["logloss"],
            test_auc=metrics["test"]["auc"],
            test_logloss=metrics["test"]["logloss"],
            samples_per_sec=metrics["train"]["samples_per_sec"],
            peak_memory_gib=metrics["memory"]["peak_bytes_max_rank"] / 2**30,
        )


def parse_models(text: str) -> list[str]:
    """`--models` as a list, each checked against the registry.

    Raises:
        ValueError: naming `--models` and the unknown family.
    """
    models = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in models if name not in MODEL_REGISTRY]
    if not models or unknown:
        raise ValueError(
            f"--models: {', '.join(unknown) or 'empty'} not known (known: {', '.join(sorted(MODEL_REGISTRY))})"
        )
    return models


def model_config(model: str, args: argparse.Namespace) -> str | None:
    """The recipe one model trains with: its tuned one under `--tune-minutes`, else `--config`."""
    return str(Path(args.run_dir) / "tuned" / f"{model}.toml") if args.tune_minutes else args.config


def train_command(model: str, args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """The command line that trains one model: the user's entry point, only `--model.name` differs."""
    return trainer_command(args.nproc_per_node, args.data, str(Path(args.run_dir) / model),
                           model_config(model, args), [*overrides, f"--model.name={model}"])  # fmt: skip


def tune_model(model: str, args: argparse.Namespace, overrides: list[str]) -> None:
    """Tunes one model for `--tune-minutes` (unless its tuned recipe exists) into `model_config`."""
    out = Path(model_config(model, args))
    if out.exists():
        print(f"{model}: tuned recipe {out} exists, reusing it", flush=True)
        return
    tune_args = argparse.Namespace(
        data=args.data, config=args.config, out=str(out), budget_minutes=args.tune_minutes,
        nproc_per_node=args.nproc_per_node, work_dir=str(out.with_suffix(".trials")), keep_trials=False,
    )  # fmt: skip
    print(f"{model}: tuning for {args.tune_minutes:g} minutes", flush=True)
    _, best, _ = tune(tune_args, [*overrides, f"--model.name={model}"])
    print(f"{model}: tuned, val AUC {best.rung_aucs[-1]:.4f} ({format_params(best.params)})", flush=True)


def format_table(results: list[ModelResult], oracle: dict[str, float] | None) -> str:
    """The comparison as a markdown table, one row per model (and the oracle ceiling when known)."""
    header = ("model", "dense params", "sparse params", "val AUC", "val logloss", "test AUC",
              "test logloss", "samples/s", "peak GiB/rank")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in results:
        cells = (row.model, f"{row.dense_parameters:,}", f"{row.sparse_parameters:,}", f"{row.val_auc:.4f}",
                 f"{row.val_logloss:.4f}", f"{row.test_auc:.4f}", f"{row.test_logloss:.4f}",
                 f"{row.samples_per_sec:,.0f}", f"{row.peak_memory_gib:.2f}")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if oracle:
        cells = (
            "oracle (planted model)",
            "-",
            "-",
            f"{oracle['val']:.4f}",
            "-",
            f"{oracle['test']:.4f}",
            "-",
            "-",
            "-",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(run_dir: Path, results: list[ModelResult], oracle: dict[str, float] | None) -> str:
    """Writes comparison.md, comparison.csv and the TensorBoard hparams entries; returns the table."""
    table = format_table(results, oracle)
    (run_dir / "comparison.md").write_text(table + "\n")
    with (run_dir / "comparison.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(ModelResult.__dataclass_fields__))
        for row in results:
            writer.writerow(list(row.__dict__.values()))
    with SummaryWriter(log_dir=str(run_dir / "tb")) as tensorboard:
        for row in results:
            metrics = {f"compare/{name}": value for name, value in row.__dict__.items() if name != "model"}
            tensorboard.add_hparams({"model": row.model}, metrics, run_name=row.model)
    return table


def _check_same_config(model_dir: Path, args: argparse.Namespace, overrides: list[str]) -> None:
    """A finished run is reused only if it was trained with exactly this comparison's config.

    Raises:
        ValueError: naming the run directory whose config.json differs.
    """
    expected = load_config(
        model_config(model_dir.name, args),
        overrides,
        {"data": {"path": args.data}, "run_dir": str(model_dir)},
    )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{model_dir}: has a metrics.json but no config.json; delete that directory")
    world_size = json.loads((model_dir / "metrics.json").read_text())["world_size"]
    if json.loads(config_path.read_text()) != expected.to_dict() or world_size != args.nproc_per_node:
        raise ValueError(
            f"{model_dir}: holds a finished run with another config or world size ({world_size} ranks) "
            "than this comparison's; use another --run-dir or delete that directory"
        )


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train several model families with identical data, config, steps, seed and world size, "
        "and tabulate their quality and cost (comparison.md, comparison.csv, TensorBoard hparams).",
        epilog="Any other --section.key=value is passed to every run, e.g. --training.max_steps=500.",
    )
    parser.add_argument("--data", required=True, help="directory written by `dlrm-prep criteo`")
    parser.add_argument(
        "--run-dir", required=True, help="output directory; each model trains in RUN_DIR/<model>"
    )
    parser.add_argument("--config", help="TOML recipe shared by every model (e.g. configs/tiny.toml)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated model families (default: {','.join(DEFAULT_MODELS)})")  # fmt: skip
    parser.add_argument("--nproc-per-node", type=int, default=1,
                        help="ranks per model run on this machine (default 1; >1 starts torchrun)")  # fmt: skip
    parser.add_argument(
        "--synth", help="the `dlrm-prep synth` directory the data came from: adds the oracle AUC row"
    )
    parser.add_argument(
        "--tune-minutes", type=float, default=0.0,
        help="first tune each model with dlrm-tune for this many minutes (by val AUC) and train it with its "
        "tuned recipe, RUN_DIR/tuned/<model>.toml, so that every family gets its own settings (default 0: "
        "every model trains with --config as is)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args, overrides = build_arg_parser().parse_known_args(argv)
    try:
        models = parse_models(args.models)
        if args.nproc_per_node < 1:
            raise ValueError(f"--nproc-per-node: must be >= 1, got {args.nproc_per_node}")
        if args.tune_minutes < 0:
            raise ValueError(f"--tune-minutes: must be >= 0, got {args.tune_minutes}")
        if any(key == "model" and "name" in value for key, value in parse_overrides(overrides).items()):
            raise ValueError(
                "--model.name: set by dlrm-compare for each run; choose the models with --models"
            )
        # Fails now, naming the field, rather than once per model inside the runs.
        load_config(args.config, overrides, {"data": {"path": args.data}})
    except ValueError as error:
        print(f"dlrm-compare: error: {error}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        results = _train_all(models, args, overrides, run_dir)
    except (ValueError, RuntimeError) as error:
        print(f"dlrm-compare: error: {error}", file=sys.stderr)
        return 1
    oracle = oracle_split_aucs(args.synth) if args.synth else None
    table = write_outputs(run_dir, results, oracle)
    print(f"\n{table}\n\nwritten: {run_dir / 'comparison.md'}, {run_dir / 'comparison.csv'}; "
          f"tensorboard --logdir {run_dir / 'tb'}")  # fmt: skip
    return 0


def _train_all(
    models: list[str], args: argparse.Namespace, overrides: list[str], run_dir: Path
) -> list[ModelResult]:
    """Trains (or reuses) each model's run in turn; returns their rows in `models` order."""
    results = []
    for index, model in enumerate(models, start=1):
        metrics_path = run_dir / model / "metrics.json"
        if metrics_path.exists():
            _check_same_config(run_dir / model, args, [*overrides, f"--model.name={model}"])
            print(f"[{index}/{len(models)}] {model}: already trained ({metrics_path})", flush=True)
        else:
            if args.tune_minutes:
                tune_model(model, args, overrides)
            command = train_command(model, args, overrides)
            print(f"[{index}/{len(models)}] {model}: $ {' '.join(command)}", flush=True)
            if subprocess.run(command).returncode != 0:
                raise RuntimeError(f"training {model} failed (its log is above)")
        results.append(ModelResult.from_metrics(model, json.loads(metrics_path.read_text())))
    return results


if __name__ == "__main__":
    sys.exit(main())
