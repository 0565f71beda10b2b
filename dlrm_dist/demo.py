"""`make demo`: the whole product in a few minutes on a laptop CPU, through its real command lines.

  1. dlrm-prep synth   5 synthetic days with a planted signal (4 train days, 1 eval day)
  2. dlrm-prep criteo  to Parquet shards + manifest.json (terabyte layout, frequency vocabulary)
  3. torchx run        2 ranks on this machine (gloo), configs/tiny.toml, one epoch
  4. the val and test AUC beside the oracle AUC of the planted model, and the TensorBoard command

Each step prints the command it runs, so it can be copied; steps 1-2 are skipped when their output is
already there with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from data_prep.oracle import oracle_split_aucs

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], env: dict[str, str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default=str(REPO_ROOT / "demo"), help="where data and the run go (default demo/)"
    )
    parser.add_argument(
        "--rows-per-day", type=int, default=200_000, help="synthetic rows per day (default 200000)"
    )
    parser.add_argument("--ranks", type=int, default=2, help="training ranks on this machine (default 2)")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    synth_dir, prepared, run_dir = work / "synth", work / "prepared", work / "run"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    metadata = synth_dir / "synth.json"
    if not metadata.exists() or json.loads(metadata.read_text())["rows_per_day"] != args.rows_per_day:
        shutil.rmtree(synth_dir, ignore_errors=True)
        shutil.rmtree(prepared, ignore_errors=True)
        _run(
            [
                str(bin_dir / "dlrm-prep"),
                "synth",
                "--out",
                str(synth_dir),
                "--days",
                "5",
                "--rows-per-day",
                str(args.rows_per_day),
                "--seed",
                "0",
            ],
            env,
        )
    _run(
        [
            str(bin_dir / "dlrm-prep"),
            "criteo",
            "--input",
            str(synth_dir),
            "--out",
            str(prepared),
            "--layout",
            "terabyte",
            "--vocab-min-count",
            "2",
        ],
        env,
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    _run(
        [
            str(bin_dir / "torchx"),
            "run",
            "-s",
            "local_cwd",
            "launch/components.py:train",
            "-j",
            f"1x{args.ranks}",
            "--",
            "--config",
            "configs/tiny.toml",
            "--data",
            str(prepared),
            "--run-dir",
            str(run_dir),
            "--metrics.progress_bar=false",
        ],
        env,
    )

    metrics = json.loads((run_dir / "metrics.json").read_text())
    oracle = oracle_split_aucs(synth_dir)
    print()
    print(f"{'split':<6}{'model AUC':>11}{'oracle AUC':>12}{'logloss':>9}{'rows':>10}")
    for split in ("val", "test"):
        result = metrics[split]
        print(
            f"{split:<6}{result['auc']:>11.4f}{oracle[split]:>12.4f}{result['logloss']:>9.4f}{result['rows']:>10,}"
        )
    train = metrics["train"]
    print(
        f"trained {train['steps']} steps, {train['samples']:,} samples at {train['samples_per_sec']:,.0f} samples/s "
        f"on {metrics['world_size']} ranks"
    )
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
