"""The sweep that chose `configs/criteo_kaggle.toml`'s optimizers, learning rates, batch size and warmup.

Data: 1M rows of `dlrm-prep synth` (5 days of 200k, seed 0), `dlrm-prep criteo --layout terabyte
--vocab-min-count 2`: 800k train rows (days 0-3), 100k val and 100k test rows (day 4).

  dlrm-dist:  one epoch of `configs/criteo_kaggle.toml` on 2 ranks (torchrun, gloo), in stages: each stage
              starts from the best settings so far (by val AUC) and varies one thing: the embedding and
              dense optimizers, then the embedding learning rate, the dense learning rate, the batch size
              and the warmup.
  baseline:   the plain PyTorch DLRM of `benchmarks/plain_dlrm.py` (same shapes, one torch optimizer for
              every parameter, the split in memory), one epoch, over a small grid of its simple settings.

Selection is on val AUC; the table also shows test AUC and the oracle AUC of the planted model (the
ceiling). Each finished run is cached in WORKDIR/results-{dlrm,plain}.json, so an interrupted sweep continues.

    .venv/bin/python benchmarks/recipe_sweep.py [--workdir /tmp/recipe-sweep] [--only dlrm|plain]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import torch
from plain_dlrm import PlainSettings, run

from data_prep.oracle import oracle_auc

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROWS_PER_DAY = 200_000

# Where the sweep starts: the recipe's values before the sweep chose them, passed to every run so that the
# sweep does not depend on what it wrote into configs/criteo_kaggle.toml. Not part of the cache keys.
START = {"optim.embedding_lr": 0.05, "training.batch_size": 2048, "optim.warmup_steps": 0}
# (stage name, the override it varies, the values tried); stage 0 crosses the two optimizers.
OPTIMIZER_PAIRS = [
    {"optim.embedding_optimizer": emb, "optim.dense_optimizer": dense, "optim.lr": lr}
    for emb in ("rowwise_adagrad", "adagrad")
    for dense, lr in (("adagrad", 0.01), ("adam", 0.001))
]
STAGES = [
    ("embedding lr", "optim.embedding_lr", [0.02, 0.05, 0.1, 0.2]),
    ("dense lr", "optim.lr", None),  # values: the best dense lr x 0.5, 2, 4, 8
    ("batch size", "training.batch_size", [1024, 2048, 4096]),
    ("warmup steps", "optim.warmup_steps", [0, 100]),
]
PLAIN_GRID = [
    PlainSettings(optimizer="adagrad", lr=0.01),
    PlainSettings(optimizer="adagrad", lr=0.02),
    PlainSettings(optimizer="adagrad", lr=0.05),
    PlainSettings(optimizer="adam", lr=0.001),
    PlainSettings(optimizer="adam", lr=0.003),
    PlainSettings(optimizer="adam", lr=0.006),
    PlainSettings(optimizer="adam", lr=0.01),
    PlainSettings(optimizer="sgd", lr=0.1),
    PlainSettings(optimizer="sgd", lr=0.5),
]


def prepare(work: Path) -> tuple[Path, Path]:
    synth, prepared = work / "synth", work / "prepared"
    if not (prepared / "manifest.json").exists():
        subprocess.run([str(BIN / "dlrm-prep"), "synth", "--out", str(synth), "--days", "5",
                        "--rows-per-day", str(ROWS_PER_DAY), "--seed", "0"], check=True)  # fmt: skip
        subprocess.run([str(BIN / "dlrm-prep"), "criteo", "--input", str(synth), "--out", str(prepared),
                        "--layout", "terabyte", "--vocab-min-count", "2", "--no-progress"], check=True)  # fmt: skip
    return synth, prepared


class Sweep:
    """Runs (or recalls from the cache) one setting at a time and remembers every result."""

    def __init__(self, work: Path, prepared: Path) -> None:
        self.work, self.prepared = work, prepared
        # One cache file per kind, so that the two sweeps can run at the same time (`--only`).
        self.cache_paths = {kind: work / f"results-{kind}.json" for kind in ("dlrm", "plain")}
        self.results: dict[str, dict] = {}
        for path in self.cache_paths.values():
            if path.exists():
                self.results.update(json.loads(path.read_text()))

    def _save(self, kind: str) -> None:
        mine = {key: value for key, value in self.results.items() if key.startswith(kind + " ")}
        self.cache_paths[kind].write_text(json.dumps(mine, indent=2, sort_keys=True))

    def dlrm(self, overrides: dict[str, object]) -> dict:
        key = "dlrm " + " ".join(f"--{name}={value}" for name, value in sorted(overrides.items()))
        if key not in self.results:
            run_dir = self.work / "runs" / hashlib.sha1(key.encode()).hexdigest()[:12]
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       str(REPO_ROOT / "dlrm_dist/train.py"), "--config", str(REPO_ROOT / "configs/criteo_kaggle.toml"),
                       "--data", str(self.prepared), "--run-dir", str(run_dir), "--training.device=cpu",
                       "--metrics.progress_bar=false", "--checkpoint.enabled=false", "--eval.every_steps=0",
                       *(f"--{name}={value}" for name, value in {**START, **overrides}.items())]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"{key} failed:\n{result.stderr[-3000:]}")
            self.results[key] = json.loads((run_dir / "metrics.json").read_text())
            self._save("dlrm")
        print(
            f"  {key:<120} val {self.results[key]['val']['auc']:.4f}  test {self.results[key]['test']['auc']:.4f}",
            flush=True,
        )
        return self.results[key]

    def plain(self, settings: PlainSettings) -> dict:
        key = f"plain optimizer={settings.optimizer} lr={settings.lr} batch={settings.batch_size}"
        if key not in self.results:
            self.results[key] = run(settings, self.prepared)
            self._save("plain")
        print(
            f"  {key:<120} val {self.results[key]['val']['auc']:.4f}  test {self.results[key]['test']['auc']:.4f}",
            flush=True,
        )
        return self.results[key]


def sweep_dlrm(sweep: Sweep) -> tuple[dict, dict]:
    """The staged search; returns (best overrides, their metrics)."""
    print("stage: embedding x dense optimizer")
    scored = [(sweep.dlrm(pair)["val"]["auc"], pair) for pair in OPTIMIZER_PAIRS]
    best = max(scored, key=lambda item: item[0])[1]
    for stage, name, values in STAGES:
        print(f"stage: {stage}")
        current = best.get(name, START.get(name))
        if values is None:
            values = [current * factor for factor in (0.5, 2, 4, 8)]
        # The current best is one of the candidates already; it is not run again under another key.
        candidates = [best] + [{**best, name: value} for value in values if value != current]
        scored = [(sweep.dlrm(candidate)["val"]["auc"], candidate) for candidate in candidates]
        best = max(scored, key=lambda item: item[0])[1]
    return best, sweep.dlrm(best)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default="/tmp/recipe-sweep", help="data, runs and the results-*.json caches"
    )
    parser.add_argument("--only", choices=("dlrm", "plain"), help="sweep only one of the two")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    synth, prepared = prepare(work)
    sweep = Sweep(work, prepared)
    half = ROWS_PER_DAY // 2
    oracle = {"val": oracle_auc(synth, day=4, stop=half), "test": oracle_auc(synth, day=4, start=half)}
    rows = []
    if args.only != "plain":
        best, metrics = sweep_dlrm(sweep)
        rows.append(("dlrm-dist (criteo_kaggle, 2 ranks), best: " + json.dumps(best), metrics))
    if args.only != "dlrm":
        torch.set_num_threads(2)
        print("plain PyTorch DLRM grid")
        plain_results = [sweep.plain(settings) for settings in PLAIN_GRID]
        best_plain = max(plain_results, key=lambda metrics: metrics["val"]["auc"])
        rows.append((f"plain PyTorch DLRM, best: {best_plain['settings']['optimizer']} lr {best_plain['settings']['lr']}",
                     best_plain))  # fmt: skip
    print(f"\noracle AUC: val {oracle['val']:.4f}, test {oracle['test']:.4f}")
    for label, metrics in rows:
        print(f"{label}\n    val AUC {metrics['val']['auc']:.4f}  test AUC {metrics['test']['auc']:.4f}  "
              f"test logloss {metrics['test']['logloss']:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
