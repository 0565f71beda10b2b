"""`dlrm-tune`: a search for the optimizers, learning rates, batch size and warmup on the user's own data.

    dlrm-tune --data DIR --config RECIPE --out TUNED.toml --budget-minutes M [--nproc-per-node N]
        [--section.key=value ...]

Optuna's TPE sampler proposes settings; Optuna's successive-halving pruner (asynchronous, ASHA-style)
stops the weak ones early. A trial is one `dlrm-train` run, trained in rungs on growing fractions of one
epoch of the train split (1/9, 1/3, then all of it, reduction factor 3): each rung resumes the trial's
own checkpoint with a larger `training.max_steps`, so no step is trained twice, and reports the val
AUC the run writes to metrics.json. Only val AUC decides; the test split is never looked at. New trials
start while their first rung fits in what is left of the budget, and a running trial is stopped when
the budget ends. The best trial (the best val AUC at the highest rung any trial reached) becomes
TUNED.toml: the whole resolved config, which `dlrm-train --config TUNED.toml --data DIR` runs as is.

Rates are sampled as the recipe states them: with `optim.reference_batch_size` set they are rates at
that batch size, and a sampled batch size scales them by the recipe's rule (`dlrm_dist.optim`). With a
learning-rate decay, a rung's schedule is that of the shorter run it continues (a known simplification
of resumed successive halving).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.manifest import load_manifest
from dlrm_dist.config import JobConfig, load_config

RUNG_FRACTIONS = (1 / 9, 1 / 3, 1.0)
REDUCTION_FACTOR = 3
TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
# Settings every trial run gets: no periodic evaluation or TensorBoard (the rung's final val AUC is what
# counts), one checkpoint kept (the rung to resume), no progress bar in the search's own output.
TRIAL_SETTINGS = (
    "--eval.every_steps=0", "--eval.per_epoch=0", "--metrics.tensorboard=false",
    "--metrics.progress_bar=false", "--checkpoint.every_steps=0", "--checkpoint.keep=1",
    "--checkpoint.enabled=true", "--training.epochs=1", "--training.target_auc=0",
)  # fmt: skip


@dataclass
class TrialRecord:
    """One trial: its settings, how far it got, its val AUC at each rung, and how it ended."""

    number: int
    params: dict[str, Any]
    rung_aucs: list[float]
    state: str = "running"
    seconds: float = 0.0

    @property
    def best_rung(self) -> int:
        return len(self.rung_aucs)


def trainer_command(
    nproc_per_node: int, data: str, run_dir: str, config: str | None, overrides: list[str]
) -> list[str]:
    """The `dlrm-train` command line of one run, on 1 process or under torch.distributed.run."""
    launcher = [sys.executable]
    if nproc_per_node > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc_per_node}"]  # fmt: skip
    return [*launcher, str(TRAIN_SCRIPT), "--data", data, "--run-dir", run_dir,
            *(["--config", config] if config else []), *overrides]  # fmt: skip


def recipe_warmup_fraction(base: JobConfig, train_rows: int, world_size: int) -> float:
    """The recipe's warmup as a share of one epoch (a trial's run): its `warmup_fraction`, or its
    `warmup_steps` over the epoch's steps at its batch size (below 1, the largest share allowed)."""
    if base.optim.warmup_fraction or not base.optim.warmup_steps:
        return base.optim.warmup_fraction
    epoch = max(1, steps_per_epoch(train_rows, base.training.batch_size, world_size))
    return min(0.99, base.optim.warmup_steps / epoch)


def search_space(base: JobConfig, device_type: str, recipe_warmup: float) -> dict[str, Any]:
    """What is searched, around the recipe: optimizers and rates, batch size, warmup.

    The ranges hold the recipe's own values (`recipe_warmup`: its warmup as a share of the epoch), so
    that the recipe is a point of the space (trial 0).
    """
    batch = base.training.batch_size
    embedding_optimizers = ["rowwise_adagrad", "adagrad"] + (["adam"] if device_type == "cuda" else [])
    optim = base.optim

    def around(low: float, high: float, value: float) -> tuple[float, float]:
        return min(low, value), max(high, value)

    return {
        "embedding_optimizer": embedding_optimizers,
        "embedding_lr": around(1e-3, 0.5, optim.embedding_lr),
        "dense_optimizer": ["adagrad", "adam"],
        "lr": {
            "adagrad": around(1e-3, 0.1, optim.lr) if optim.dense_optimizer == "adagrad" else (1e-3, 0.1),
            "adam": around(1e-4, 1e-2, optim.lr) if optim.dense_optimizer == "adam" else (1e-4, 1e-2),
        },
        "batch_size": sorted({max(64, batch // 4), max(64, batch // 2), batch, batch * 2}),
        # A share of the epoch, which each rung trains a prefix of (see optim.warmup_fraction).
        "warmup_fraction": sorted({0.0, 0.1, 0.3, 0.6, recipe_warmup}),
    }


def sample(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """One point of `space` drawn through an Optuna trial (log-uniform rates)."""
    dense = trial.suggest_categorical("dense_optimizer", space["dense_optimizer"])
    low, high = space["lr"][dense]
    return {
        "embedding_optimizer": trial.suggest_categorical("embedding_optimizer", space["embedding_optimizer"]),
        "embedding_lr": trial.suggest_float("embedding_lr", *space["embedding_lr"], log=True),
        "dense_optimizer": dense,
        "lr": trial.suggest_float(f"lr_{dense}", low, high, log=True),
        "batch_size": trial.suggest_categorical("batch_size", space["batch_size"]),
        "warmup_fraction": trial.suggest_categorical("warmup_fraction", space["warmup_fraction"]),
    }


def params_overrides(params: dict[str, Any]) -> list[str]:
    return [
        f"--optim.embedding_optimizer={params['embedding_optimizer']}",
        f"--optim.embedding_lr={params['embedding_lr']:.6g}",
        f"--optim.dense_optimizer={params['dense_optimizer']}",
        f"--optim.lr={params['lr']:.6g}",
        f"--training.batch_size={params['batch_size']}",
        "--optim.warmup_steps=0",
        f"--optim.warmup_fraction={params['warmup_fraction']:.6g}",
    ]


def steps_per_epoch(train_rows: int, batch_size: int, world_size: int) -> int:
    """Steps in one epoch, as the trainer counts them (full batches of the smallest rank's share)."""
    return (train_rows // world_size) // (batch_size // world_size)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def config_to_toml(cfg: JobConfig, header: str) -> str:
    """The config's sections as TOML (what `load_config` reads back to the same config).

    Written by hand: Python has a TOML reader (tomllib) but no writer, and the config is flat tables of
    scalars and lists, plus `sharding.tables`, a table of strings.
    """
    data = cfg.to_dict()
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section, values in data.items():
        if not isinstance(values, dict) or section == "data":
            continue
        lines.append(f"\n[{section}]")
        nested = {}
        for key, value in values.items():
            if isinstance(value, dict):
                nested[key] = value
            elif not (section == "checkpoint" and key == "resume"):
                lines.append(f"{key} = {_toml_value(value)}")
        for key, table in nested.items():
            lines.append(f"\n[{section}.{key}]")
            lines.extend(f"{json.dumps(name)} = {_toml_value(item)}" for name, item in table.items())
    lines.append("\n[data]")
    lines.extend(f"{key} = {_toml_value(value)}" for key, value in data["data"].items() if key != "path")
    return "\n".join(lines) + "\n"


class Search:
    """Runs the trials of one `dlrm-tune` call; see the module docstring."""

    def __init__(self, args: argparse.Namespace, overrides: list[str]) -> None:
        self.args = args
        self.overrides = overrides
        self.base = load_config(args.config, overrides, {"data": {"path": args.data}})
        manifest = load_manifest(args.data)
        self.train_rows = int(manifest["splits"]["train"]["rows"])
        self.work = Path(args.work_dir) if args.work_dir else Path(str(args.out) + ".trials")
        self.deadline = time.monotonic() + args.budget_minutes * 60
        self.records: list[TrialRecord] = []
        self.rung_seconds: list[float] = []  # seconds per rung-0 run, to tell whether a new trial fits

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _run_rung(self, record: TrialRecord, rung: int) -> float | None:
        """Trains trial `record` up to rung `rung`; returns its val AUC, or None if stopped or failed."""
        params = record.params
        epoch = steps_per_epoch(self.train_rows, params["batch_size"], self.args.nproc_per_node)
        max_steps = max(1, math.ceil(RUNG_FRACTIONS[rung] * epoch))
        run_dir = self.work / f"trial-{record.number:03d}"
        command = trainer_command(
            self.args.nproc_per_node, self.args.data, str(run_dir), self.args.config,
            [*self.overrides, *TRIAL_SETTINGS, *params_overrides(params), f"--training.max_steps={max_steps}",
             "--checkpoint.resume=auto"],
        )  # fmt: skip
        log = run_dir.with_suffix(".log")
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log.open("a") as handle:
            try:
                code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT,
                                      timeout=max(1.0, self._remaining())).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                record.state = "stopped (budget)"
                return None
        record.seconds += time.monotonic() - started
        if rung == 0:
            self.rung_seconds.append(time.monotonic() - started)
        if code != 0:
            record.state = f"failed (exit {code}, see {log})"
            return None
        return float(json.loads((run_dir / "metrics.json").read_text())["val"]["auc"])

    def run(self) -> TrialRecord:
        """Runs trials until the budget is spent; returns the best."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=self.base.training.seed),
            pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION_FACTOR),
        )
        device_type = "cuda" if self.base.training.device == "cuda" else "cpu"
        recipe_warmup = recipe_warmup_fraction(self.base, self.train_rows, self.args.nproc_per_node)
        space = search_space(self.base, device_type, recipe_warmup)
        # The recipe itself is the first trial, so that the search can only improve on it.
        recipe = {
            "embedding_optimizer": self.base.optim.embedding_optimizer, "embedding_lr": self.base.optim.embedding_lr,
            "dense_optimizer": self.base.optim.dense_optimizer, "lr": self.base.optim.lr,
            "batch_size": self.base.training.batch_size, "warmup_fraction": recipe_warmup,
        }  # fmt: skip
        if (
            recipe["embedding_optimizer"] in space["embedding_optimizer"]
            and recipe["dense_optimizer"] in space["lr"]
        ):
            study.enqueue_trial(
                {
                    **{k: v for k, v in recipe.items() if k != "lr"},
                    f"lr_{recipe['dense_optimizer']}": recipe["lr"],
                }
            )
        while True:
            estimate = sum(self.rung_seconds) / len(self.rung_seconds) if self.rung_seconds else 0.0
            if self._remaining() <= estimate or self._remaining() <= 0:
                break
            trial = study.ask()
            record = TrialRecord(len(self.records), sample(trial, space), [])
            self.records.append(record)
            for rung in range(len(RUNG_FRACTIONS)):
                auc = self._run_rung(record, rung)
                if auc is None:
                    break
                record.rung_aucs.append(auc)
                # Steps 1, 3, 9: the rungs of a pruner with min_resource 1 and reduction factor 3.
                trial.report(auc, step=REDUCTION_FACTOR**rung)
                self._print_progress(record, rung)
                if rung < len(RUNG_FRACTIONS) - 1 and trial.should_prune():
                    record.state = f"pruned after rung {rung + 1}"
                    break
            else:
                record.state = "complete"
            if record.state == "complete":
                study.tell(trial, record.rung_aucs[-1])
            elif record.rung_aucs:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        finished = [r for r in self.records if r.rung_aucs]
        if not finished:
            raise RuntimeError(
                f"no trial finished its first rung within {self.args.budget_minutes} minutes; raise "
                f"--budget-minutes (trial logs: {self.work})"
            )
        top = max(r.best_rung for r in finished)
        return max((r for r in finished if r.best_rung == top), key=lambda r: r.rung_aucs[-1])

    def _print_progress(self, record: TrialRecord, rung: int) -> None:
        left = max(0.0, self._remaining()) / 60
        print(f"trial {record.number:3d} rung {rung + 1}/{len(RUNG_FRACTIONS)}: val AUC {record.rung_aucs[-1]:.4f}  "
              f"({format_params(record.params)}; {left:.1f} min left)", flush=True)  # fmt: skip


def format_params(params: dict[str, Any]) -> str:
    return (f"emb {params['embedding_optimizer']} {params['embedding_lr']:.3g}, dense {params['dense_optimizer']} "
            f"{params['lr']:.3g}, batch {params['batch_size']}, warmup {params['warmup_fraction']:.0%}")  # fmt: skip


def trials_table(records: list[TrialRecord]) -> str:
    lines = ["| trial | embedding opt | emb lr | dense opt | lr | batch | warmup | val AUC by rung | state |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        p = r.params
        aucs = " / ".join(f"{auc:.4f}" for auc in r.rung_aucs) or "-"
        lines.append(f"| {r.number} | {p['embedding_optimizer']} | {p['embedding_lr']:.3g} | {p['dense_optimizer']} | "
                     f"{p['lr']:.3g} | {p['batch_size']} | {p['warmup_fraction']:.0%} | {aucs} | {r.state} |")  # fmt: skip
    return "\n".join(lines)


def tune(args: argparse.Namespace, overrides: list[str]) -> tuple[Path, TrialRecord, list[TrialRecord]]:
    """Runs the search and writes the tuned recipe; returns (its path, the best trial, all trials)."""
    search = Search(args, overrides)
    best = search.run()
    tuned = load_config(
        args.config, [*overrides, *params_overrides(best.params)], {"data": {"path": args.data}}
    )
    table = trials_table(search.records)
    header = (
        f"Written by dlrm-tune: {args.config or 'defaults'} tuned on {args.data} in {args.budget_minutes} minutes, "
        f"{len(search.records)} trials on {args.nproc_per_node} rank(s).\n"
        f"Best: trial {best.number}, val AUC {best.rung_aucs[-1]:.4f} at rung {best.best_rung}/{len(RUNG_FRACTIONS)} "
        f"({format_params(best.params)}).\n\n" + table
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(config_to_toml(tuned, header))
    (search.work / "trials.md").write_text(table + "\n")
    if not args.keep_trials:
        for record in search.records:
            shutil.rmtree(search.work / f"trial-{record.number:03d}" / "checkpoints", ignore_errors=True)
    return out, best, search.records


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlrm-tune",
        description="Search embedding and dense optimizers, learning rates, batch size and warmup on your data "
        "within a time budget (Optuna TPE + successive halving on fractions of one epoch), choose by val AUC, "
        "and write a complete recipe for dlrm-train.",
        epilog="Any other --section.key=value is applied to every trial and kept in the tuned recipe.",
    )
    parser.add_argument("--data", required=True, help="prepared data directory (manifest.json)")
    parser.add_argument("--config", help="the recipe to start from (TOML), e.g. configs/tiny.toml")
    parser.add_argument("--out", required=True, help="where to write the tuned recipe (TOML)")
    parser.add_argument("--budget-minutes", type=float, required=True, help="wall-clock budget of the search")
    parser.add_argument("--nproc-per-node", type=int, default=1, help="ranks per trial (default 1)")
    parser.add_argument("--work-dir", help="trial runs and logs (default: OUT.trials/)")
    parser.add_argument("--keep-trials", action="store_true", help="keep the trials' checkpoints")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, overrides = build_arg_parser().parse_known_args(argv)
    try:
        if args.budget_minutes <= 0:
            raise ValueError(f"--budget-minutes: must be > 0, got {args.budget_minutes}")
        if args.nproc_per_node < 1:
            raise ValueError(f"--nproc-per-node: must be >= 1, got {args.nproc_per_node}")
        out, best, records = tune(args, overrides)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"dlrm-tune: error: {error}", file=sys.stderr)
        return 2
    print(f"\n{trials_table(records)}\n\nbest: trial {best.number}, val AUC {best.rung_aucs[-1]:.4f} "
          f"({format_params(best.params)})\nwritten: {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
