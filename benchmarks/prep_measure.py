"""Measuring tools of `prep_throughput.py`: timed runs with the process tree's peak memory, pyarrow's
bare CSV parse (the baseline), and where the time of a `dlrm-prep criteo` run goes.

The breakdown comes from a separate run of the same command under cProfile (`python -m cProfile`), so
the timed runs carry no instrumentation and the library no timing code. The pipeline's hot work is a
few hundred calls into numpy and pyarrow per chunk, so the profiler's per-call cost hardly changes the
shares; the stage functions' cumulative times are subtracted from one another (validate = parse_chunk
less splitting the fields, stage = writing a parsed chunk less parsing it, ...).
"""

from __future__ import annotations

import os
import pstats
import subprocess
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from data_prep.schema import DENSE_COLUMNS, LABEL, RAW_COLUMNS, SPARSE_COLUMNS

# (stage, function whose cumulative time it is, functions whose cumulative time it excludes)
_STAGES = (
    ("read", ("inputs.py", "read_plain_chunk"), ()),
    ("parse", ("parse.py", "_split_fields"), ()),
    ("validate", ("parse.py", "parse_chunk"), (("parse.py", "_split_fields"),)),
    ("stage", ("tasks.py", "_process_chunk"), (("parse.py", "parse_chunk"),)),
    ("count", ("tasks.py", "count_train_rows"), ()),
    ("vocab", ("tasks.py", "build_vocab_column"), ()),
    ("encode", ("tasks.py", "_encode_sparse"), ()),
    ("write", ("tasks.py", "write_shard"), (("tasks.py", "_encode_sparse"),)),
)
STAGE_HELP = (
    "read: the chunk's bytes from disk; parse: pyarrow splits them into fields (bytes); validate: "
    "integer and hex checks, cleaning, the bad-row tally; stage: the parsed chunk to .work/ (Arrow "
    "IPC); count/vocab: vocabulary counting and reduce; encode: hash or vocabulary ids; write: "
    "reading staged rows back and writing Parquet; other: start-up, planning, manifest"
)


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of `root` and all its descendants, from /proc.

    Descendants are found through each thread's `children` file rather than by reading every process's
    stat: the sampler runs next to the measured command on the same cores, and a scan of all of /proc
    every 20 ms slowed the runs it measured by about 10%.
    """
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES
            for thread in os.listdir(f"/proc/{pid}/task"):
                stack.extend(int(c) for c in Path(f"/proc/{pid}/task/{thread}/children").read_text().split())
        except (OSError, IndexError, ValueError):
            continue
    return total


def warm_page_cache(paths: list[Path]) -> None:
    """Reads the files once, so that the timed run after it reads them from the page cache.

    This machine reclaims idle page cache (a DAMON reclaimer runs), so a run that followed a pause read
    its input from disk: the same command took 2.1 s or 3.7 s, the bare parse 0.6 s or 3.4 s. Every timed
    run, bare parse and prep alike, now starts from a cached input, with the inputs just generated (and
    the previous run's outputs) written back first, so that the writeback does not run during it.
    """
    os.sync()
    for path in paths:
        with open(path, "rb") as source:
            while source.read(16 << 20):
                pass


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
    """pyarrow's single-threaded CSV parse of the files, typed columns (categoricals as strings).

    Returns:
        (seconds, rows).
    """
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


def _cumulative(stats: pstats.Stats, where: tuple[str, str]) -> float:
    module, function = where
    return sum(
        entry[3]
        for (path, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
        if name == function and path.endswith(f"data_prep/{module}")
    )


def stage_seconds(command: list[str], profile_path: Path) -> dict[str, float]:
    """Runs `command` (a `python -m data_prep ...` line) under cProfile; seconds per stage, and `other`.

    Args:
        command: the command of a timed run, starting with the interpreter and `-m data_prep`.
        profile_path: where the profile is written.

    Returns:
        {stage: seconds} for the stages of `STAGE_HELP` and `total`.
    """
    interpreter, _, module, *rest = command
    profiled = [interpreter, "-m", "cProfile", "-o", str(profile_path), "-m", module, *rest]
    subprocess.run(profiled, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stats = pstats.Stats(str(profile_path))
    seconds = {
        stage: _cumulative(stats, function) - sum(_cumulative(stats, other) for other in excluded)
        for stage, function, excluded in _STAGES
    }
    total = stats.total_tt  # type: ignore[attr-defined]
    seconds["other"] = total - sum(seconds.values())
    seconds["total"] = total
    return seconds
