"""The phase driver of `dlrm-prep criteo` and `dlrm-prep table`: the output directory, the worker pool,
the progress bars, and the order of the phases (parse -> plan -> vocab -> write -> manifest).

What each phase does depends on the input format and lives in that format's module (`data_prep.criteo`,
`data_prep.table`); how the phases follow one another, resume and end is the same for every format and
lives here, once. `run_phases` is that sequence; a format hands it a `Phases`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from data_prep import startup, tasks
from data_prep.inputs import InputFile, check_unchanged
from data_prep.manifest import build_manifest


class PrepError(RuntimeError):
    """A run that cannot go on: its message says what to change."""


class RunOptions(Protocol):
    """The options every format's run has (`criteo.PrepOptions`, `table.TableOptions`)."""

    out: str
    encoding: str
    hash_buckets: tuple[int, ...]
    workers: int
    progress: bool

    def fingerprint(self, input_files: list[InputFile]) -> dict[str, Any]: ...

    def encoding_spec(self) -> dict[str, Any]: ...


class Runner:
    """Runs tasks inline (1 worker) or in a process pool, with a progress bar fed by their results."""

    def __init__(self, workers: int) -> None:
        self.pool = (
            ProcessPoolExecutor(
                workers,
                mp_context=get_context("spawn"),
                initializer=startup.init_worker,
                initargs=(os.getpid(),),
            )
            if workers > 1
            else None
        )

    def map(self, function: Callable, calls: list[dict[str, Any]], on_result: Callable[[dict], None]) -> None:
        self.run([(function, kwargs) for kwargs in calls], on_result)

    def run(self, calls: list[tuple[Callable, dict[str, Any]]], on_result: Callable[[dict], None]) -> None:
        """Runs `function(**kwargs)` for each call; stops at the first failure and re-raises it."""
        if self.pool is None:
            for function, kwargs in calls:
                on_result(function(**kwargs))
            return
        futures: list[Future] = [self.pool.submit(function, **kwargs) for function, kwargs in calls]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            if any(future.exception() is not None for future in done):
                for future in pending:
                    future.cancel()
                wait(pending)
                # Report the failure of the earliest task, so that --on-bad-row error names the first
                # bad line of those the workers reached, not whichever worker happened to finish first.
                raise next(f.exception() for f in futures if f.done() and not f.cancelled() and f.exception())
            for future in done:
                on_result(future.result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def progress_bar(options: RunOptions, description: str, total: int | None, unit: str) -> tqdm:
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        unit_scale=True,
        disable=not options.progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )


def prepare_output(options: RunOptions, fingerprint: dict[str, Any]) -> Path | None:
    """Creates or checks the output directory. Returns None when an identical run already finished."""
    out = Path(options.out)
    manifest_path = out / "manifest.json"
    state_path = out / ".work" / "state.json"
    for path in (manifest_path, state_path):
        if path.exists():
            previous = json.loads(path.read_text()).get("fingerprint")
            if previous != fingerprint:
                keys = set(fingerprint) | set(previous or {})
                changed = sorted(
                    key for key in keys if previous is None or previous.get(key) != fingerprint.get(key)
                )
                raise PrepError(
                    f"{out} holds the output of a run with other arguments (differs in: {', '.join(changed)}); "
                    "use another --out or delete it"
                )
            if path == manifest_path:
                return None
            return out / ".work"
    if out.exists() and any(out.iterdir()):
        raise PrepError(
            f"--out {out} is not empty and was not written by dlrm-prep; use an empty or new directory"
        )
    (out / ".work" / "chunks").mkdir(parents=True, exist_ok=True)
    tasks.write_json_atomic(state_path, {"fingerprint": fingerprint})
    return out / ".work"


def train_bag_lengths(stats_paths: list[Path], num_columns: int) -> tuple[list[float], list[int]]:
    """The mean (to 4 decimals) and the max bag length of each multi-hot column over the train shards.

    Args:
        stats_paths: each train shard's statistics, `{"rows", "sum", "max"}` as its write task left them.
        num_columns: how many multi-hot columns the statistics hold.

    Returns:
        (means, maxima), one value per column.
    """
    rows, sums, maxima = 0, np.zeros(num_columns, np.int64), np.zeros(num_columns, np.int64)
    for path in stats_paths:
        stats = json.loads(path.read_text())
        rows += stats["rows"]
        sums += stats["sum"]
        maxima = np.maximum(maxima, stats["max"])
    return [round(float(total) / max(rows, 1), 4) for total in sums], maxima.tolist()


@dataclass(frozen=True)
class Phases:
    """What one input format does in each phase; `run_phases` calls them in order, each with the scratch
    directory `work` (`<out>/.work`) and the shared `Runner`. Each skips the work a killed run finished."""

    parse: Callable[[Path, Runner], object]
    """Parses every input chunk into `<work>/chunks`."""
    plan: Callable[[Path], dict[str, Any]]
    """Reads the parsed chunks: `"pieces"` per split (for `vocab` and `write`), and the `"file_lines"`,
    `"bad_counts"` and `"bad_examples"` that the manifest records."""
    vocab: Callable[[dict[str, Any], Path, Runner], list[str]]
    """Vocabulary encoding only: builds each column's vocabulary under `<out>/vocab`, returns their paths."""
    write: Callable[[dict[str, Any], Path, list[str] | None, list[int], Runner], tuple[dict, dict[str, Any]]]
    """Writes the shards from (plan, work, vocab paths or None, table sizes, runner); returns the splits and
    the arguments of `build_manifest` that only this format gives (`bag_lengths`, `features`)."""


def run_phases(
    options: RunOptions,
    phases: Phases,
    *,
    input_files: list[InputFile],
    input_stats: dict[str, tuple[int, int]],
    recorded_options: dict[str, Any],
    arguments: dict[str, Any] | None,
    started: float,
) -> dict[str, Any]:
    """Runs (or resumes) the phases of one preparation and returns the manifest it wrote.

    Args:
        options: the format's validated options.
        phases: what the format does in each phase.
        input_files: the inputs, in order.
        input_stats: `stat_inputs(input_files)`, taken before anything read them.
        recorded_options: the options as the manifest records them.
        arguments: the command line as the user gave it, recorded in the manifest.
        started: when the run began (`time.time()`), for the manifest's `seconds`.

    Returns:
        The manifest, as written to `<out>/manifest.json`.
    """
    fingerprint = options.fingerprint(input_files)
    out = Path(options.out)
    work = prepare_output(options, fingerprint)
    if work is None:
        # A run killed between writing the manifest and removing its scratch space leaves `.work/`.
        shutil.rmtree(out / ".work", ignore_errors=True)
        return json.loads((out / "manifest.json").read_text())
    runner = Runner(options.workers)
    try:
        phases.parse(work, runner)
        # The parse phase is the only reader of the inputs: past it, what they hold is in the chunks.
        check_unchanged(input_files, input_stats)
        plan = phases.plan(work)
        vocab_paths = phases.vocab(plan, work, runner) if options.encoding == "vocab" else None
        num_embeddings = (
            list(options.hash_buckets)
            if vocab_paths is None
            else [len(np.load(path, mmap_mode="r")) + 1 for path in vocab_paths]
        )
        splits, format_fields = phases.write(plan, work, vocab_paths, num_embeddings, runner)
    finally:
        runner.close()
    manifest = build_manifest(
        options=recorded_options,
        arguments=arguments or {},
        fingerprint=fingerprint,
        encoding=options.encoding_spec(),
        vocab_files=[str(Path(p).relative_to(out)) for p in vocab_paths] if vocab_paths else None,
        num_embeddings=num_embeddings,
        splits=splits,
        input_files=input_files,
        file_lines=plan["file_lines"],
        bad_counts=plan["bad_counts"],
        bad_examples=plan["bad_examples"],
        seconds=time.time() - started,
        **format_fields,
    )
    tasks.write_json_atomic(out / "manifest.json", manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest
