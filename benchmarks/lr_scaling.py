"""Does the learning-rate scaling rule hold? One recipe at its reference batch and at 4x and 1/4 of it.

Data: `dlrm-prep synth` (4 days of 60k rows, seed 0) prepared with `--layout terabyte --vocab-min-count 2`
(180k train rows, 30k val, 30k test). For each batch size, one epoch of `configs/tiny.toml` (rates stated
for batch 512) on one rank, twice: with the rates scaled by the recipe's rule (`optim.lr_scaling=auto`:
sqrt for its Adagrad optimizers) and with the rates as stated (`none`). The rule holds when the scaled
runs stay closer to the reference batch's val AUC than the unscaled ones.

    .venv/bin/python benchmarks/lr_scaling.py [--workdir /tmp/lr-scaling]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REFERENCE = 512


def prepare(workdir: Path) -> Path:
    prepared = workdir / "prepared"
    if not (prepared / "manifest.json").exists():
        subprocess.run([BIN / "dlrm-prep", "synth", "--out", workdir / "synth", "--days", "4",
                        "--rows-per-day", "60000", "--seed", "0"], check=True)  # fmt: skip
        subprocess.run([BIN / "dlrm-prep", "criteo", "--input", workdir / "synth", "--out", prepared,
                        "--layout", "terabyte", "--vocab-min-count", "2", "--no-progress"], check=True)  # fmt: skip
    return prepared


def train(prepared: Path, run_dir: Path, batch: int, scaling: str) -> dict:
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        subprocess.run([BIN / "dlrm-train", "--config", REPO_ROOT / "configs/tiny.toml", "--data", prepared,
                        "--run-dir", run_dir, f"--training.batch_size={batch}", f"--optim.lr_scaling={scaling}",
                        "--training.device=cpu", "--metrics.progress_bar=false", "--eval.every_steps=0",
                        "--checkpoint.every_steps=0", "--metrics.tensorboard=false"],
                       check=True, capture_output=True)  # fmt: skip
    return json.loads(metrics.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/lr-scaling")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    prepared = prepare(workdir)
    reference = train(prepared, workdir / "runs" / f"b{REFERENCE}", REFERENCE, "auto")["val"]["auc"]
    print(f"| batch | rates | lr | embedding_lr | val AUC | minus batch {REFERENCE} |")
    print("|---|---|---|---|---|---|")
    print(f"| {REFERENCE} | as stated (reference) | 0.01 | 0.05 | {reference:.4f} | 0 |")
    for batch in (REFERENCE // 4, REFERENCE * 4):
        for scaling in ("auto", "none"):
            metrics = train(prepared, workdir / "runs" / f"b{batch}-{scaling}", batch, scaling)
            rates = metrics["learning_rates"]
            label = "scaled (sqrt)" if scaling == "auto" else "as stated"
            print(f"| {batch} | {label} | {rates['lr']:.4g} | {rates['embedding_lr']:.4g} | "
                  f"{metrics['val']['auc']:.4f} | {metrics['val']['auc'] - reference:+.4f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
