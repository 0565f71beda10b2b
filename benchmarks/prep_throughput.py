"""Throughput and memory of `dlrm-prep criteo` on differently shaped data, against baselines measured in
the same run.

Datasets (each 4 day files, `--layout terabyte`):
  synthetic    `data_prep.synth.generate`: the project's click model, Kaggle-like cardinalities capped at
               100k, Lomax integers.
  criteo-like  `criteo_like.generate`: missing rates, integer values and categorical popularity (a heavy
               Zipf tail, up to 40k values a column) measured from the real Criteo sample; skipped, with a
               message, when the sample is absent.
  multi-hot    `synth.generate` with MLPerf DLRMv2's bag sizes (214 values a row when all present),
               prepared with `--multi-hot`; 1/10 of `--rows`, its lines are ~7x longer.
  table        one CSV with a header: a 0/1 label, 5 dense decimals (10% missing), 20 string
               categoricals (Zipf-popular, up to 100k distinct, 5% missing), prepared with
               `dlrm-prep table` (target with one worker: hash and vocab >= 0.25 of the bare parse).

Baselines:
  bare parse   pyarrow's single-threaded CSV parse of the same files, typed columns (label int8,
               integers int64, categoricals as strings), nothing else: the floor of any pipeline that
               reads this text. Measured before, between and after the prep runs of a dataset, the
               median is the baseline (the machine may be shared), its spread is printed.
  pandas       a straightforward pandas script (read_csv in chunks, fillna/log1p, int(x, 16) % N,
               to_parquet), on a prefix of the one-hot data because it is slow.

Every timed run starts from an input in the page cache (`prep_measure.warm_page_cache`). Prints per dataset: rows/s and rows/s per core of each run, the ratio to bare parse per core (targets with
one worker: hash >= 0.40 and vocab >= 0.25 one-hot, hash >= 0.10 multi-hot), the peak resident memory of
the whole process tree, the peak again on an input 4x as large (target: flat), and where the time of a
one-worker run goes (from a separate cProfile run, see `prep_measure`). Usage:

    .venv/bin/python benchmarks/prep_throughput.py [--rows 1000000] [--datasets synthetic,criteo-like,multi-hot,table]
        [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import criteo_like
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from prep_measure import STAGE_HELP, bare_parse, run_measured, stage_seconds, warm_page_cache

from data_prep.schema import DENSE_COLUMNS, RAW_COLUMNS, SPARSE_COLUMNS
from data_prep.synth import MLPERF_MULTI_HOT_SIZES
from data_prep.synth import generate as synth_generate

DAYS = 4
MULTI_HOT_ROW_DIVISOR = 10
ENCODINGS = {"hash": ["--hash-buckets", "1000000"], "vocab": ["--vocab-min-count", "2"]}
TARGETS = {("one-hot", "hash"): 0.40, ("one-hot", "vocab"): 0.25, ("multi-hot", "hash"): 0.10}
TABLE_DENSE, TABLE_CATEGORICAL = 5, 20
TABLE_TARGET = 0.25


def _synthetic(out: Path, rows: int, seed: int) -> list[Path]:
    synth_generate(out, days=DAYS, rows_per_day=rows // DAYS, seed=seed, progress=False)
    return sorted(out.glob("day_?"))


def _multi_hot(out: Path, rows: int, seed: int) -> list[Path]:
    synth_generate(
        out,
        days=DAYS,
        rows_per_day=rows // DAYS,
        seed=seed,
        multi_hot_sizes=MLPERF_MULTI_HOT_SIZES,
        progress=False,
    )
    return sorted(out.glob("day_?"))


def _criteo_like(out: Path, rows: int, seed: int) -> list[Path]:
    stats = criteo_like.measure()
    return criteo_like.generate(out, days=DAYS, rows_per_day=rows // DAYS, seed=seed, stats=stats)


def pandas_baseline(path: Path, rows: int, out: Path, buckets: int) -> float:
    """The way many home-made scripts do it, for comparison only."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    reader = pd.read_csv(path, sep="\t", header=None, names=list(RAW_COLUMNS), nrows=rows, chunksize=100_000)
    for index, frame in enumerate(reader):
        for name in DENSE_COLUMNS:
            frame[name] = np.log1p(frame[name].fillna(0).clip(lower=0)).astype(np.float32)
        for name in SPARSE_COLUMNS:
            frame[name] = frame[name].fillna("0").map(lambda value: int(value, 16) % buckets).astype(np.int32)
        frame.to_parquet(out / f"part-{index:05d}.parquet")
    return time.perf_counter() - started


def prep_command(inputs: Path, out: Path, options: list[str], workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "data_prep",
        "criteo",
        "--input",
        str(inputs),
        "--out",
        str(out),
        "--layout",
        "terabyte",
        *options,
        "--workers",
        str(workers),
        "--no-progress",
    ]


def _row(label: str, workers: int, rate: float, ratio: float, peak: str) -> str:
    return f"  {label:<34}{workers:>8}{rate:>12,.0f}{rate / workers:>13,.0f}{ratio:>9.2f}{peak:>10}"


def bench_dataset(
    name: str, make: Callable[[Path, int, int], list[Path]], rows: int, work: Path, args: argparse.Namespace
) -> list[tuple[str, float, float]]:
    """Measures one dataset; returns (target name, ratio, target) of its one-worker runs."""
    kind = "multi-hot" if name == "multi-hot" else "one-hot"
    flags = ["--multi-hot"] if kind == "multi-hot" else []
    encodings = {"hash": ENCODINGS["hash"]} if kind == "multi-hot" else ENCODINGS
    inputs = work / name
    files = make(inputs, rows, 1)
    input_bytes = sum(path.stat().st_size for path in files)
    print(
        f"\n== {name}: {rows:,} rows, {input_bytes / 1e9:.2f} GB in {DAYS} days, {input_bytes / rows:.0f} B/row"
    )

    bare_rates: list[float] = []

    def measure_bare() -> None:
        warm_page_cache(files)
        seconds, parsed = bare_parse(files)
        bare_rates.append(parsed / seconds)

    runs = []
    workers_list = sorted({1, min(2, os.cpu_count() or 1)})
    measure_bare()
    for encoding, options in encodings.items():
        for workers in workers_list:
            out = work / f"out-{name}-{encoding}-{workers}"
            warm_page_cache(files)
            seconds, peak = run_measured(prep_command(inputs, out, [*options, *flags], workers))
            runs.append((encoding, workers, rows / seconds, peak))
            shutil.rmtree(out)
            measure_bare()
    bare_rate = statistics.median(bare_rates)
    print(f"  {'pipeline':<34}{'workers':>8}{'rows/s':>12}{'rows/s/core':>13}{'vs bare':>9}{'peak RSS':>10}")
    spread = f"{min(bare_rates) / bare_rate:.2f}..{max(bare_rates) / bare_rate:.2f}"
    print(_row(f"pyarrow bare parse (x{len(bare_rates)}: {spread})", 1, bare_rate, 1.0, "-"))
    if kind == "one-hot":
        pandas_rows = min(200_000, rows // DAYS)
        pandas_rate = pandas_rows / pandas_baseline(files[0], pandas_rows, work / "pandas", 1_000_000)
        shutil.rmtree(work / "pandas")
        print(_row("pandas straightforward (prefix)", 1, pandas_rate, pandas_rate / bare_rate, "-"))
    results = []
    for encoding, workers, rate, peak in runs:
        ratio = rate / workers / bare_rate
        print(_row(f"dlrm-prep criteo {encoding}", workers, rate, ratio, f"{peak / 2**30:.2f}G"))
        if workers == 1:
            results.append((f"{name} {encoding}", ratio, TARGETS[(kind, encoding)]))

    if not args.skip_breakdown:
        print("  where a 1-worker run's time goes (a cProfile run of the same command):")
        for encoding, options in encodings.items():
            out = work / f"profile-{name}-{encoding}"
            seconds = stage_seconds(prep_command(inputs, out, [*options, *flags], 1), work / "prep.prof")
            shutil.rmtree(out)
            total = seconds.pop("total")
            shares = "  ".join(
                f"{stage} {value / total:.0%}" for stage, value in seconds.items() if value > 0
            )
            print(f"    {encoding:<6} {total:5.1f} s: {shares}")

    if not args.skip_4x:
        large = work / f"{name}-4x"
        make(large, 4 * rows, 2)
        workers = workers_list[-1]
        for encoding, options in encodings.items():
            out = work / f"out4x-{name}-{encoding}"
            seconds, peak_4x = run_measured(prep_command(large, out, [*options, *flags], workers))
            shutil.rmtree(out)
            base = next(peak for e, w, _, peak in runs if e == encoding and w == workers)
            print(
                f"  {encoding}, {workers} workers, 4x input ({4 * rows:,} rows): peak RSS {peak_4x / 2**30:.2f} GiB vs "
                f"{base / 2**30:.2f} GiB (ratio {peak_4x / base:.2f}; flat means about 1), {4 * rows / seconds:,.0f} rows/s"
            )
        shutil.rmtree(large)
    shutil.rmtree(inputs)
    return results


def _table_csv(path: Path, rows: int, seed: int) -> None:
    """The `table` dataset: label, d0..d4, c0..c19 as a CSV with a header."""
    rng = np.random.default_rng(seed)
    columns = {"label": pa.array(rng.integers(0, 2, rows, dtype=np.int8))}
    for index in range(TABLE_DENSE):
        values = np.round(rng.lognormal(1.0, 1.5, rows), 2)
        columns[f"d{index}"] = pa.array(values, mask=rng.random(rows) < 0.1)
    for index in range(TABLE_CATEGORICAL):
        cardinality = min(100_000, 10 ** (1 + index % 5))
        ids = pa.array((rng.zipf(1.2, rows) % cardinality).astype(np.int64)).cast(pa.string())
        text = pc.binary_join_element_wise(f"v{index}x", ids, "")
        columns[f"c{index}"] = pc.if_else(pa.array(rng.random(rows) < 0.05), "", text)
    pa_csv.write_csv(pa.table(columns), path)


def _table_bare_parse(path: Path) -> float:
    """Seconds of pyarrow's single-threaded parse of the table CSV into typed columns."""
    types = {"label": pa.int8(), **{f"d{i}": pa.float64() for i in range(TABLE_DENSE)}}
    types.update({f"c{i}": pa.string() for i in range(TABLE_CATEGORICAL)})
    started = time.perf_counter()
    pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(use_threads=False),
        convert_options=pa_csv.ConvertOptions(column_types=types),
    )
    return time.perf_counter() - started


def table_command(path: Path, out: Path, encoding: list[str], workers: int) -> list[str]:
    dense = ",".join(f"d{i}" for i in range(TABLE_DENSE))
    categorical = ",".join(f"c{i}" for i in range(TABLE_CATEGORICAL))
    return [sys.executable, "-m", "data_prep", "table", "--input", str(path), "--out", str(out),
            "--format", "csv", "--header", "--label", "label", "--dense", dense, "--categorical", categorical,
            *encoding, "--workers", str(workers), "--no-progress"]  # fmt: skip


def bench_table(rows: int, work: Path, rounds: int = 1) -> list[tuple[str, float, float]]:
    """Measures `dlrm-prep table` against the bare parse of the same CSV, as `bench_dataset` does; with
    `rounds` > 1 every run is repeated in alternating rounds and its median rate is used."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "table.csv"
    _table_csv(path, rows, 1)
    size = path.stat().st_size
    print(
        f"\n== table: {rows:,} rows, {size / 1e9:.2f} GB, {size / rows:.0f} B/row, 20 categoricals + 5 dense"
    )
    warm_page_cache([path])
    bare_rates = [rows / _table_bare_parse(path)]
    measured: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for _ in range(rounds):
        for encoding, options in ENCODINGS.items():
            for workers in sorted({1, min(2, os.cpu_count() or 1)}):
                out = work / f"out-table-{encoding}-{workers}"
                warm_page_cache([path])
                seconds, peak = run_measured(table_command(path, out, options, workers))
                measured.setdefault((encoding, workers), []).append((rows / seconds, peak))
                shutil.rmtree(out)
                warm_page_cache([path])
                bare_rates.append(rows / _table_bare_parse(path))
    runs = [
        (encoding, workers, statistics.median(rate for rate, _ in results), max(peak for _, peak in results))
        for (encoding, workers), results in measured.items()
    ]
    bare_rate = statistics.median(bare_rates)
    spread = f"{min(bare_rates) / bare_rate:.2f}..{max(bare_rates) / bare_rate:.2f}"
    print(f"  {'pipeline':<34}{'workers':>8}{'rows/s':>12}{'rows/s/core':>13}{'vs bare':>9}{'peak RSS':>10}")
    print(_row(f"pyarrow bare parse (x{len(bare_rates)}: {spread})", 1, bare_rate, 1.0, "-"))
    results = []
    for encoding, workers, rate, peak in runs:
        ratio = rate / workers / bare_rate
        print(_row(f"dlrm-prep table {encoding}", workers, rate, ratio, f"{peak / 2**30:.2f}G"))
        if workers == 1:
            results.append((f"table {encoding}", ratio, TABLE_TARGET))
    path.unlink()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="one-hot rows per dataset (default 1M)")
    parser.add_argument(
        "--datasets",
        default="synthetic,criteo-like,multi-hot,table",
        help="comma-separated, of the four above",
    )
    parser.add_argument("--workdir", default="/tmp/prep-bench", help="scratch directory (deleted at the end)")
    parser.add_argument("--skip-4x", action="store_true", help="skip the 4x-input memory check")
    parser.add_argument("--skip-breakdown", action="store_true", help="skip the profiled run per encoding")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="table: repeat each run in this many alternating rounds and use its median (default 1)",
    )
    args = parser.parse_args(argv)
    makers = {"synthetic": _synthetic, "criteo-like": _criteo_like, "multi-hot": _multi_hot}
    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = sorted(set(names) - {*makers, "table"})
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(unknown)} (known: {', '.join(makers)})")
    if "criteo-like" in names and not criteo_like.SAMPLE_PATH.exists():
        print(f"criteo-like: skipped, the real sample {criteo_like.SAMPLE_PATH} is absent")
        names.remove("criteo-like")
    elif "criteo-like" in names:
        print(
            f"criteo-like, measured from {criteo_like.SAMPLE_PATH}: {criteo_like.describe(criteo_like.measure())}"
        )
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    print(f"{os.cpu_count()} cores; the same text is parsed bare before, between and after the prep runs")
    print(f"stages of the time breakdown: {STAGE_HELP}")
    results = []
    for name in names:
        if name == "table":
            results.extend(bench_table(args.rows, work / "table", args.rounds))
            continue
        rows = args.rows // MULTI_HOT_ROW_DIVISOR if name == "multi-hot" else args.rows
        results.extend(bench_dataset(name, makers[name], rows, work, args))
    print()
    for label, ratio, target in results:
        verdict = "PASS" if ratio >= target else "FAIL"
        print(f"{label}: {ratio:.2f} x bare parse, 1 worker (target >= {target:.2f}): {verdict}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
