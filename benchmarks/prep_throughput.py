"""Throughput and memory of `dlrm-prep criteo`, against baselines measured in the same run.

  baseline 1: pyarrow's bare CSV parse of the same files (single-threaded, typed columns, nothing else):
              the floor of any pipeline that reads this text.
  baseline 2: a straightforward pandas implementation (read_csv in chunks, fillna/log1p, int(x, 16) % N,
              to_parquet), on a prefix of the data because it is slow.

Prints rows/s per core of each, the ratios (targets: hash >= 0.40 x bare parse, vocab >= 0.25 x), the
peak resident memory of the whole process tree (target < 2 GB), and the peak again on an input 4x as
large (target: flat). Usage:

    .venv/bin/python benchmarks/prep_throughput.py [--rows 2000000] [--workdir /tmp/prep-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from data_prep.schema import DENSE_COLUMNS, LABEL, RAW_COLUMNS, SPARSE_COLUMNS
from data_prep.synth import generate

DAYS = 4


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def run_measured(command: list[str]) -> tuple[float, int]:
    """Runs a command; returns (seconds, peak resident bytes of its process tree, sampled every 20 ms)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_bytes(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-2000:]}")
    return time.perf_counter() - started, peak


def bare_parse(files: list[Path]) -> tuple[float, int]:
    rows, started = 0, time.perf_counter()
    for path in files:
        reader = pa_csv.open_csv(
            str(path),
            read_options=pa_csv.ReadOptions(
                column_names=list(RAW_COLUMNS), use_threads=False, block_size=16 << 20
            ),
            parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={
                    LABEL: pa.int8(),
                    **dict.fromkeys(DENSE_COLUMNS, pa.int64()),
                    **dict.fromkeys(SPARSE_COLUMNS, pa.string()),
                }
            ),
        )
        rows += sum(batch.num_rows for batch in reader)
    return time.perf_counter() - started, rows


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


def prep_command(inputs: Path, out: Path, encoding: list[str], workers: int) -> list[str]:
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
        *encoding,
        "--workers",
        str(workers),
        "--no-progress",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="synthetic rows in all (default 2M)")
    parser.add_argument("--workdir", default="/tmp/prep-bench", help="scratch directory (deleted at the end)")
    parser.add_argument("--skip-4x", action="store_true", help="skip the 4x-input memory check")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    small, large = work / "input", work / "input4x"
    generate(small, days=DAYS, rows_per_day=args.rows // DAYS, seed=1, progress=False)
    files = sorted(small.glob("day_?"))
    input_bytes = sum(path.stat().st_size for path in files)
    print(
        f"input: {args.rows:,} synthetic rows, {input_bytes / 1e9:.2f} GB in {DAYS} days; {os.cpu_count()} cores"
    )

    bare_seconds, rows = bare_parse(files)
    bare_rate = rows / bare_seconds
    print(f"{'pipeline':<34}{'workers':>8}{'rows/s':>12}{'rows/s/core':>13}{'vs bare':>9}{'peak RSS':>10}")
    print(f"{'pyarrow bare CSV parse':<34}{1:>8}{bare_rate:>12,.0f}{bare_rate:>13,.0f}{1.0:>9.2f}{'-':>10}")
    pandas_rows = min(200_000, rows)
    pandas_rate = pandas_rows / pandas_baseline(files[0], pandas_rows, work / "pandas", 1_000_000)
    print(
        f"{'pandas straightforward (prefix)':<34}{1:>8}{pandas_rate:>12,.0f}{pandas_rate:>13,.0f}{pandas_rate / bare_rate:>9.2f}{'-':>10}"
    )

    encodings = {"hash": ["--hash-buckets", "1000000"], "vocab": ["--vocab-min-count", "2"]}
    targets = {"hash": 0.40, "vocab": 0.25}
    results = {}
    for name, encoding in encodings.items():
        for workers in sorted({1, min(2, os.cpu_count() or 1)}):
            out = work / f"out-{name}-{workers}"
            seconds, peak = run_measured(prep_command(small, out, encoding, workers))
            per_core = rows / seconds / workers
            results[(name, workers)] = (per_core, peak)
            print(
                f"{'dlrm-prep criteo ' + name:<34}{workers:>8}{rows / seconds:>12,.0f}{per_core:>13,.0f}"
                f"{per_core / bare_rate:>9.2f}{peak / 2**30:>9.2f}G"
            )
            shutil.rmtree(out)
    print()
    for name, target in targets.items():
        ratio = results[(name, 1)][0] / bare_rate
        print(
            f"{name}: {ratio:.2f} x bare parse per core (target >= {target:.2f}): {'PASS' if ratio >= target else 'FAIL'}"
        )
    peak = max(p for _, p in results.values())
    print(f"peak RSS {peak / 2**30:.2f} GiB (target < 2 GiB): {'PASS' if peak < 2**31 else 'FAIL'}")

    if not args.skip_4x:
        generate(large, days=DAYS, rows_per_day=4 * args.rows // DAYS, seed=2, progress=False)
        for name, encoding in encodings.items():
            workers = min(2, os.cpu_count() or 1)
            seconds, peak_4x = run_measured(prep_command(large, work / f"out4x-{name}", encoding, workers))
            base = results[(name, workers)][1]
            print(
                f"{name}: 4x input ({4 * rows:,} rows) peak RSS {peak_4x / 2**30:.2f} GiB vs {base / 2**30:.2f} GiB "
                f"(ratio {peak_4x / base:.2f}; flat means about 1), {4 * rows / seconds:,.0f} rows/s"
            )
            shutil.rmtree(work / f"out4x-{name}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
