"""Synthetic Criteo-format click logs with a planted click model whose true probabilities are known.

Tests, the demo and the benchmarks need Criteo-shaped data without the 1 TB download, and they need to know
how well a model *could* do on it. `generate` writes `day_0 .. day_{N-1}` (or `day_i.gz`) in the exact
Criteo TSV layout of `data_prep.schema`, next to each a `day_i.prob.npy` with the true click probability of
every line, and a `synth.json` with the parameters plus each day's positive rate and oracle AUC (the AUC of
the true probabilities: the ceiling a trained model approaches). `data_prep.oracle.oracle_auc` recomputes it for any
line range, e.g. the val/test split, so it can be printed next to the model's.

This module writes the files: the argument checks, `generate` and its day files (streamed chunk by chunk,
the oracle AUC counted as they go), `SynthSummary` and the `dlrm-prep synth` CLI. What goes in them, the
click model (vocabularies, planted effects, how each field of a row and each multi-hot bag is drawn),
lives in `data_prep.synth_model`. Multi-hot sizes (`multi_hot_sizes`, e.g. MLPerf DLRMv2's
`MLPERF_MULTI_HOT_SIZES`) are checked here and drawn there.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from gzip import GzipFile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
from tqdm import tqdm

from data_prep import synth_signal
from data_prep.oracle import METADATA_FILE, auc_from_counts
from data_prep.schema import DENSE_COLUMNS, KAGGLE_CARDINALITIES, LABEL, NUM_SPARSE, SPARSE_COLUMNS
from data_prep.synth_model import (
    MAX_CARDINALITY,
    ONE_HOT_SIZES,
    TARGET_POSITIVE_RATE,
    _build_click_model,
    _ClickModel,
    _draw_rows,
)
from data_prep.synth_signal import DEFAULT_SIGNAL, SignalKnobs

DEFAULT_CARDINALITY_CAP = 100_000
# Kaggle's shape with the seven multi-million columns capped, so a laptop can hold and train every table.
DEFAULT_CARDINALITIES: tuple[int, ...] = tuple(min(c, DEFAULT_CARDINALITY_CAP) for c in KAGGLE_CARDINALITIES)
# Values per present field of C1..C26 in MLPerf DLRMv2's multi-hot Criteo (materialize_synthetic_multihot).
MLPERF_MULTI_HOT_SIZES: tuple[int, ...] = (
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
)  # fmt: skip
MAX_MULTI_HOT_SIZE = 1024
_AUC_BINS = 1 << 20  # probability buckets of the streaming per-day AUC: ties below 1e-6 apart


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: one entry per day in each tuple."""

    out_dir: Path
    day_files: tuple[Path, ...]
    probability_files: tuple[Path, ...]
    rows_per_day: int
    positive_rates: tuple[float, ...]
    oracle_aucs: tuple[float, ...]
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return len(self.day_files) * self.rows_per_day / max(self.seconds, 1e-9)


def _check_at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")


def _check_cardinalities(name: str, cardinalities: Sequence[int]) -> tuple[int, ...]:
    if len(cardinalities) != NUM_SPARSE:
        raise ValueError(f"{name}: needs {NUM_SPARSE} values (C1..C26), got {len(cardinalities)}")
    for column, cardinality in zip(SPARSE_COLUMNS, cardinalities, strict=True):
        if not 1 <= cardinality <= MAX_CARDINALITY:
            raise ValueError(f"{name}: {column} must be in [1, 2**32], got {cardinality}")
    return tuple(int(c) for c in cardinalities)


def _check_multi_hot_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    if len(sizes) != NUM_SPARSE:
        raise ValueError(f"{name}: needs {NUM_SPARSE} values (C1..C26), got {len(sizes)}")
    for column, size in zip(SPARSE_COLUMNS, sizes, strict=True):
        if not 1 <= size <= MAX_MULTI_HOT_SIZE:
            raise ValueError(f"{name}: {column} must be in [1, {MAX_MULTI_HOT_SIZE}], got {size}")
    return tuple(int(size) for size in sizes)


def _write_day(
    model: _ClickModel,
    seed: int,
    day: int,
    rows_per_day: int,
    chunk_rows: int,
    *,
    day_path: Path,
    probability_path: Path,
    progress_bar: tqdm,
) -> tuple[float, float]:
    """Streams one day file and its probability sidecar to disk, chunk by chunk.

    Returns:
        The day's positive rate and oracle AUC (NaN when all its labels are equal). The AUC comes from
        label counts in `_AUC_BINS` probability buckets, so memory does not grow with `rows_per_day`; it
        agrees with the exact `oracle_auc` to about 1e-6.
    """
    schema = pa.schema(
        [pa.field(LABEL, pa.int8())]
        + [pa.field(name, pa.int64()) for name in DENSE_COLUMNS]
        + [pa.field(name, pa.string()) for name in SPARSE_COLUMNS]
    )
    write_options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    # mtime=0 keeps the gzip header free of a timestamp, so the same arguments give the same bytes;
    # level 1 compresses ~4x faster than the default 9 for a 13% larger file: this is test data.
    is_gzip = day_path.suffix == ".gz"
    sink = GzipFile(day_path, "wb", compresslevel=1, mtime=0) if is_gzip else pa.OSFile(str(day_path), "wb")
    probabilities = np.lib.format.open_memmap(
        probability_path, mode="w+", dtype=np.float32, shape=(rows_per_day,)
    )
    rows_per_bin = np.zeros(_AUC_BINS, dtype=np.int64)
    positives_per_bin = np.zeros(_AUC_BINS, dtype=np.int64)
    with sink, pa_csv.CSVWriter(sink, schema, write_options=write_options) as writer:
        for first_row in range(0, rows_per_day, chunk_rows):
            num_rows = min(chunk_rows, rows_per_day - first_row)
            table, chunk_probabilities, labels = _draw_rows(model, seed, day, first_row, num_rows)
            writer.write_table(table)
            probabilities[first_row : first_row + num_rows] = chunk_probabilities
            prob_bin = np.minimum((chunk_probabilities * _AUC_BINS).astype(np.int64), _AUC_BINS - 1)
            rows_per_bin += np.bincount(prob_bin, minlength=_AUC_BINS)
            positives_per_bin += np.bincount(prob_bin[labels == 1], minlength=_AUC_BINS)
            progress_bar.update(num_rows)
    probabilities.flush()
    num_positive = int(positives_per_bin.sum())
    if not 0 < num_positive < rows_per_day:
        return num_positive / rows_per_day, float("nan")
    return num_positive / rows_per_day, auc_from_counts(positives_per_bin, rows_per_bin - positives_per_bin)


def generate(
    out_dir: str | Path,
    *,
    days: int,
    rows_per_day: int,
    seed: int = 0,
    gzip: bool = False,
    cardinalities: Sequence[int] | None = None,
    multi_hot_sizes: Sequence[int] | None = None,
    signal: SignalKnobs | None = None,
    chunk_rows: int = 65536,
    progress: bool = True,
) -> SynthSummary:
    """Writes `days` synthetic Criteo day files, their probability sidecars and `synth.json`.

    Memory stays bounded by `chunk_rows` and the vocabularies, whatever `rows_per_day` is.

    Args:
        out_dir: directory to write into (created if missing; existing files of the same name are replaced).
        days: number of day files, `day_0 .. day_{days-1}`.
        rows_per_day: lines per day file.
        seed: fixes every byte written; the output does not depend on `chunk_rows`.
        gzip: write `day_i.gz` instead of plain `day_i`.
        cardinalities: vocabulary size of C1..C26 (default: `DEFAULT_CARDINALITIES`).
        multi_hot_sizes: values per present field of C1..C26, each in [1, MAX_MULTI_HOT_SIZE]
            (default: all 1, one-hot; `MLPERF_MULTI_HOT_SIZES` is MLPerf DLRMv2's).
        signal: popularity and the scale of each part of the planted logit (default: `SignalKnobs()`).
        chunk_rows: rows drawn and written at a time.
        progress: show a tqdm bar counting rows.

    Returns:
        The files written and each day's positive rate and oracle AUC (also in `synth.json`).
    """
    _check_at_least("days", days, 1)
    _check_at_least("rows_per_day", rows_per_day, 1)
    _check_at_least("seed", seed, 0)
    _check_at_least("chunk_rows", chunk_rows, 1)
    cardinalities = _check_cardinalities(
        "cardinalities", DEFAULT_CARDINALITIES if cardinalities is None else cardinalities
    )
    multi_hot_sizes = _check_multi_hot_sizes(
        "multi_hot_sizes", ONE_HOT_SIZES if multi_hot_sizes is None else multi_hot_sizes
    )
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    signal = DEFAULT_SIGNAL if signal is None else signal
    model = _build_click_model(seed, cardinalities, multi_hot_sizes, signal)
    day_names = [f"day_{day}.gz" if gzip else f"day_{day}" for day in range(days)]
    probability_names = [f"day_{day}.prob.npy" for day in range(days)]
    positive_rates, oracle_aucs = [], []
    with tqdm(total=days * rows_per_day, unit="rows", unit_scale=True, disable=not progress) as bar:
        for day in range(days):
            positive_rate, day_auc = _write_day(
                model,
                seed,
                day,
                rows_per_day,
                chunk_rows,
                day_path=out_dir / day_names[day],
                probability_path=out_dir / probability_names[day],
                progress_bar=bar,
            )
            positive_rates.append(positive_rate)
            oracle_aucs.append(day_auc)

    metadata = {
        "seed": seed,
        "days": days,
        "rows_per_day": rows_per_day,
        "gzip": gzip,
        "cardinalities": list(cardinalities),
        # Only multi-hot data names its sizes, so that one-hot output stays byte for byte what it was.
        **({"multi_hot_sizes": list(multi_hot_sizes)} if multi_hot_sizes != ONE_HOT_SIZES else {}),
        # Likewise the knobs: no "signal" key means `SignalKnobs()`, Zipf 1.1 and every factor 1.
        **({"signal": signal.to_json()} if not signal.is_default else {}),
        "files": day_names,
        "probability_files": probability_names,
        "target_positive_rate": TARGET_POSITIVE_RATE,
        "positive_rate": positive_rates,
        "oracle_auc": [None if np.isnan(day_auc) else day_auc for day_auc in oracle_aucs],
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return SynthSummary(
        out_dir=out_dir,
        day_files=tuple(out_dir / name for name in day_names),
        probability_files=tuple(out_dir / name for name in probability_names),
        rows_per_day=rows_per_day,
        positive_rates=tuple(positive_rates),
        oracle_aucs=tuple(oracle_aucs),
        seconds=time.perf_counter() - started,
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of `dlrm-prep synth`; `run_cli` checks their ranges and runs it."""
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="directory for day_0 .. day_{N-1}, their day_i.prob.npy true click probabilities and synth.json",
    )  # fmt: skip
    parser.add_argument(
        "--days", type=int, default=3, metavar="N", help="day files to write, >= 1 (default: 3)"
    )
    parser.add_argument(
        "--rows-per-day", type=int, default=100_000, metavar="R", help="lines per day, >= 1 (default: 100000)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="fixes every byte written, >= 0 (default: 0)"
    )
    parser.add_argument("--gzip", action="store_true", help="write day_i.gz instead of plain day_i")
    parser.add_argument(
        "--cardinalities", default=None, metavar="LIST|CAP",
        help=f"vocabulary sizes of C1..C26: {NUM_SPARSE} comma-separated ints in [1, 2**32], or one int that "
        f"caps Criteo Kaggle's sizes (default: {DEFAULT_CARDINALITY_CAP}, laptop-sized)",
    )  # fmt: skip
    parser.add_argument(
        "--multi-hot-sizes", default=None, metavar="LIST",
        help=f"values per present categorical field of C1..C26: {NUM_SPARSE} comma-separated ints in "
        f"[1, {MAX_MULTI_HOT_SIZE}], written comma-joined in the field, or `mlperf` for MLPerf DLRMv2's "
        "sizes (default: all 1, one-hot Criteo)",
    )  # fmt: skip
    parser.add_argument(
        "--chunk-rows", type=int, default=65536, metavar="ROWS",
        help="rows drawn and written at a time, >= 1: bounds memory, never changes the output (default: 65536)",
    )  # fmt: skip
    synth_signal.add_cli_arguments(parser)


def _parse_cardinalities(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--cardinalities: expected {NUM_SPARSE} comma-separated ints or one int, got {text!r}"
        ) from None
    if len(values) == 1:
        _check_at_least("--cardinalities", values[0], 1)
        return tuple(min(c, values[0]) for c in KAGGLE_CARDINALITIES)
    return _check_cardinalities("--cardinalities", values)


def _parse_multi_hot_sizes(text: str) -> tuple[int, ...]:
    if text == "mlperf":
        return MLPERF_MULTI_HOT_SIZES
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--multi-hot-sizes: expected {NUM_SPARSE} comma-separated ints or `mlperf`, got {text!r}"
        ) from None
    return _check_multi_hot_sizes("--multi-hot-sizes", sizes)


def run_cli(args: argparse.Namespace) -> int:
    """Checks the flags of `add_cli_arguments`, generates the data and prints what was written.

    Args:
        args: parsed flags (not modified).

    Returns:
        The process exit code, 0.
    """
    _check_at_least("--days", args.days, 1)
    _check_at_least("--rows-per-day", args.rows_per_day, 1)
    _check_at_least("--seed", args.seed, 0)
    _check_at_least("--chunk-rows", args.chunk_rows, 1)
    signal = synth_signal.from_cli_arguments(args)
    cardinalities = None if args.cardinalities is None else _parse_cardinalities(args.cardinalities)
    sizes = None if args.multi_hot_sizes is None else _parse_multi_hot_sizes(args.multi_hot_sizes)
    summary = generate(
        args.out,
        days=args.days,
        rows_per_day=args.rows_per_day,
        seed=args.seed,
        gzip=args.gzip,
        cardinalities=cardinalities,
        multi_hot_sizes=sizes,
        signal=signal,
        chunk_rows=args.chunk_rows,
    )
    print(
        f"wrote {summary.day_files[0].name} .. {summary.day_files[-1].name} ({summary.rows_per_day:,} rows each), "
        f"their .prob.npy sidecars and {METADATA_FILE} to {summary.out_dir} "
        f"in {summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s)"
    )
    for day_file, positive_rate, day_auc in zip(
        summary.day_files, summary.positive_rates, summary.oracle_aucs, strict=True
    ):
        print(f"  {day_file.name}: positive rate {positive_rate:.3f}, oracle AUC {day_auc:.4f}")
    return 0
