"""`dlrm-prep criteo`: raw Criteo TSV to Parquet shards and a manifest, in resumable phases.

  1. parse    every chunk of every input -> validated, cleaned rows in `.work/chunks/*.arrow`
  2. plan     line counts per file -> which rows of which chunk go to which split and shard
  3. vocab    (vocabulary encoding only) count the train rows' values, then keep those seen K times
  4. write    each shard = fixed row ranges of the parsed chunks, encoded, as Parquet
  5. manifest written last; `.work/` is removed

This module holds what each phase does with Criteo's format; their order, the worker pool and the
output-directory checks are `data_prep.phases`'s, shared with `dlrm-prep table`.

Every output is written under a temporary name and renamed when complete, so a run killed at any
point and started again with the same arguments skips what is done and ends with the same shards.
Shards depend only on the row order and the options, never on `--workers` or on how the work was
interleaved. The options that decide the output are fingerprinted; a different set on an existing
output directory is refused instead of mixing two runs.

With `--multi-hot` each categorical field is a comma-separated bag (see `data_prep.parse`), the shards
hold `list<int32>` columns, and the manifest records the mean and max bag length of each column over
the train split (from per-shard statistics kept in `.work/bags/`, so a resumed run still has them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_prep import tasks
from data_prep.inputs import InputFile, count_plain_chunks, discover_inputs, split_line_ranges, stat_inputs
from data_prep.parse import BAD_ROW_REASONS
from data_prep.phases import Phases, Runner, progress_bar, run_phases, train_bag_lengths
from data_prep.schema import NUM_SPARSE, SPLITS


@dataclass(frozen=True)
class PrepOptions:
    """Everything `dlrm-prep criteo` needs; see `data_prep.cli` for each option's meaning."""

    inputs: tuple[str, ...]
    out: str
    layout: str
    encoding: str
    hash_buckets: tuple[int, ...] = ()
    vocab_min_count: int = 0
    dense_transform: str = "log1p"
    rows_per_shard: int = 1 << 20
    row_group_rows: int = 1 << 16
    chunk_bytes: int = 16 << 20
    compression: str = "snappy"
    workers: int = 1
    on_bad_row: str = "skip"
    vocab_memory_bytes: int = 256 << 20
    progress: bool = True
    multi_hot: bool = False

    def fingerprint(self, input_files: list[InputFile]) -> dict[str, Any]:
        """The options the output depends on (not workers, progress or memory budgets)."""
        # `multi_hot` only appears when set, so that one-hot outputs written before it existed still
        # resume with the same fingerprint.
        return {
            **({"multi_hot": True} if self.multi_hot else {}),
            "layout": self.layout,
            "encoding": self.encoding_spec(),
            "dense_transform": self.dense_transform,
            "rows_per_shard": self.rows_per_shard,
            "row_group_rows": self.row_group_rows,
            "chunk_bytes": self.chunk_bytes,
            "compression": self.compression,
            "on_bad_row": self.on_bad_row,
            "input_files": [{"path": f.path, "bytes": f.bytes} for f in input_files],
        }

    def encoding_spec(self) -> dict[str, Any]:
        if self.encoding == "hash":
            return {"mode": "hash", "hash_buckets": list(self.hash_buckets)}
        return {"mode": "vocab", "min_count": self.vocab_min_count}


@dataclass
class _Piece:
    """Rows [start, stop) of one parsed chunk that belong to one split."""

    path: str
    start: int
    stop: int


def _parse_phase(options: PrepOptions, input_files: list[InputFile], work: Path, runner: Runner) -> dict:
    chunk_dir = work / "chunks"
    calls = []
    for file_index, input_file in enumerate(input_files):
        if input_file.is_gzip:
            if tasks.gzip_chunks_parsed(chunk_dir, file_index) is None:
                calls.append((tasks.parse_gzip_file, {"input_file": input_file, "file_index": file_index}))
            continue
        for chunk_index in range(count_plain_chunks(input_file, options.chunk_bytes)):
            if not (chunk_dir / f"{tasks.chunk_name(file_index, chunk_index)}.json").exists():
                calls.append(
                    (
                        tasks.parse_plain_chunk,
                        {"input_file": input_file, "file_index": file_index, "chunk_index": chunk_index},
                    )
                )
    common = {
        "chunk_bytes": options.chunk_bytes,
        "chunk_dir": str(chunk_dir),
        "dense_transform": options.dense_transform,
        "multi_hot": options.multi_hot,
        "on_bad_row": options.on_bad_row,
    }
    stats = {"rows": 0, "lines": 0}
    with progress_bar(options, "parse", None, "rows") as bar:

        def on_result(result: dict) -> None:
            stats["rows"] += result["rows"]
            stats["lines"] += result["lines"]
            bar.update(result["lines"])

        runner.run([(function, {**kwargs, **common}) for function, kwargs in calls], on_result)
    return stats


def _chunk_names(input_file: InputFile, file_index: int, options: PrepOptions, chunk_dir: Path) -> list[str]:
    if input_file.is_gzip:
        count = tasks.gzip_chunks_parsed(chunk_dir, file_index)
    else:
        count = count_plain_chunks(input_file, options.chunk_bytes)
    return [tasks.chunk_name(file_index, index) for index in range(count)]


def _plan(options: PrepOptions, input_files: list[InputFile], work: Path) -> dict[str, Any]:
    """Assigns each parsed row to its split by line number and tallies lines and bad rows per file."""
    chunk_dir = work / "chunks"
    pieces: dict[str, list[_Piece]] = {split: [] for split in SPLITS}
    bad_counts = dict.fromkeys(BAD_ROW_REASONS, 0)
    examples: list[dict[str, Any]] = []
    file_lines = []
    for file_index, input_file in enumerate(input_files):
        names = _chunk_names(input_file, file_index, options, chunk_dir)
        metas = [json.loads((chunk_dir / f"{name}.json").read_text()) for name in names]
        num_lines = sum(meta["num_lines"] for meta in metas)
        file_lines.append(num_lines)
        ranges = split_line_ranges(options.layout, file_index, len(input_files), num_lines)
        first_line = 0
        for name, meta in zip(names, metas, strict=True):
            for reason, count in meta["bad_counts"].items():
                bad_counts[reason] += count
            for line, reason, detail in meta["bad_examples"]:
                examples.append(
                    {"where": f"{input_file.name}:{first_line + line}", "reason": reason, "detail": detail}
                )
            path = str(chunk_dir / f"{name}.arrow")
            if len(ranges) == 1:
                (split,) = ranges
                pieces[split].append(_Piece(path, 0, meta["rows"]))
            elif meta["rows"]:
                with pa.memory_map(path) as source:
                    lines = pa.ipc.open_file(source).read_all().column("line").to_numpy() + first_line
                for split, (begin, end) in ranges.items():
                    start, stop = np.searchsorted(lines, [begin, end])
                    if stop > start:
                        pieces[split].append(_Piece(path, int(start), int(stop)))
            first_line += meta["num_lines"]
    kept_examples = []
    for reason in BAD_ROW_REASONS:
        kept_examples.extend([example for example in examples if example["reason"] == reason][:5])
    return {
        "pieces": pieces,
        "bad_counts": bad_counts,
        "bad_examples": kept_examples,
        "file_lines": file_lines,
    }


def _shard_ranges(pieces: list[_Piece], rows_per_shard: int) -> list[list[tuple[str, int, int]]]:
    """Cuts the split's row sequence into shards of exactly `rows_per_shard` rows (the last may be short)."""
    shards: list[list[tuple[str, int, int]]] = []
    current: list[tuple[str, int, int]] = []
    filled = 0
    for piece in pieces:
        position = piece.start
        while position < piece.stop:
            take = min(piece.stop - position, rows_per_shard - filled)
            current.append((piece.path, position, position + take))
            filled += take
            position += take
            if filled == rows_per_shard:
                shards.append(current)
                current, filled = [], 0
    if current:
        shards.append(current)
    return shards


def _vocab_phase(options: PrepOptions, plan: dict, work: Path, runner: Runner) -> list[str]:
    counts_dir = work / "counts"
    counts_dir.mkdir(exist_ok=True)
    by_chunk: dict[str, list[tuple[str, int, int]]] = {}
    for piece in plan["pieces"]["train"]:
        by_chunk.setdefault(piece.path, []).append((piece.path, piece.start, piece.stop))
    prefixes = [str(counts_dir / Path(path).stem) for path in by_chunk]
    calls = [
        {"pieces": chunk_pieces, "out_prefix": prefix}
        for prefix, chunk_pieces in zip(prefixes, by_chunk.values(), strict=True)
        if not (counts_dir / f"{Path(prefix).name}.offsets.npy").exists()
    ]
    train_rows = sum(p.stop - p.start for p in plan["pieces"]["train"])
    with progress_bar(options, "count", train_rows, "rows") as bar:
        runner.map(tasks.count_train_rows, calls, lambda result: bar.update(result["rows"]))
    vocab_dir = Path(options.out) / "vocab"
    vocab_dir.mkdir(exist_ok=True)
    vocab_paths = [str(vocab_dir / f"C{index + 1}.npy") for index in range(NUM_SPARSE)]
    calls = [
        {
            "count_prefixes": prefixes,
            "column": index,
            "min_count": options.vocab_min_count,
            "memory_budget": options.vocab_memory_bytes,
            "out_path": path,
        }
        for index, path in enumerate(vocab_paths)
        if not Path(path).exists()
    ]
    with progress_bar(options, "vocab", NUM_SPARSE, "cols") as bar:
        bar.update(NUM_SPARSE - len(calls))
        runner.map(tasks.build_vocab_column, calls, lambda result: bar.update(1))
    return vocab_paths


def _bag_stats_path(work: Path, split: str, index: int) -> Path | None:
    """Where a train shard's bag lengths go (multi-hot); val and test are not measured."""
    return work / "bags" / f"{split}-part-{index:05d}.json" if split == "train" else None


def _bag_lengths(work: Path, num_train_shards: int) -> dict[str, list[float]]:
    """Mean and max bag length of each categorical column over the train split, from the shards' stats."""
    stats_paths = [_bag_stats_path(work, "train", index) for index in range(num_train_shards)]
    means, maxima = train_bag_lengths(stats_paths, NUM_SPARSE)
    return {"mean": means, "max": maxima}


def _write_phase(
    options: PrepOptions, plan: dict, work: Path, vocab_paths: list[str] | None, runner: Runner
) -> dict:
    out = Path(options.out)
    splits: dict[str, dict[str, Any]] = {}
    calls = []
    if options.multi_hot:
        (work / "bags").mkdir(exist_ok=True)
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        shards = _shard_ranges(plan["pieces"][split], options.rows_per_shard)
        files = []
        for index, ranges in enumerate(shards):
            relative = f"{split}/part-{index:05d}.parquet"
            files.append({"path": relative, "rows": sum(stop - start for _, start, stop in ranges)})
            if not (out / relative).exists():
                stats_path = _bag_stats_path(work, split, index) if options.multi_hot else None
                calls.append(
                    {
                        "pieces": ranges,
                        "out_path": str(out / relative),
                        "bag_stats_path": str(stats_path) if stats_path else None,
                    }
                )
        splits[split] = {"rows": sum(f["rows"] for f in files), "files": files}
    common = {
        "encoding": options.encoding_spec(),
        "vocab_paths": vocab_paths,
        "row_group_rows": options.row_group_rows,
        "compression": options.compression,
        "multi_hot": options.multi_hot,
    }
    total = sum(split["rows"] for split in splits.values())
    with progress_bar(options, "write", total, "rows") as bar:
        bar.update(total - sum(sum(stop - start for _, start, stop in call["pieces"]) for call in calls))
        runner.map(tasks.write_shard, [{**call, **common} for call in calls], lambda r: bar.update(r["rows"]))
    return splits


def run(options: PrepOptions, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs (or resumes) the whole preparation and returns the manifest it wrote.

    Args:
        options: the validated options.
        arguments: the command line as the user gave it, recorded in the manifest.

    Returns:
        The manifest, as written to `<out>/manifest.json`.
    """
    started = time.time()
    input_files = discover_inputs(list(options.inputs), options.layout)
    input_stats = stat_inputs(input_files)

    # Criteo's shards do not depend on the table sizes (`_sizes`); the manifest's bag lengths are its own.
    def write(plan: dict, work: Path, vocab_paths: list[str] | None, _sizes: list[int], runner: Runner):
        splits = _write_phase(options, plan, work, vocab_paths, runner)
        bag_lengths = _bag_lengths(work, len(splits["train"]["files"])) if options.multi_hot else None
        return splits, {"bag_lengths": bag_lengths}

    phases = Phases(
        parse=partial(_parse_phase, options, input_files),
        plan=partial(_plan, options, input_files),
        vocab=partial(_vocab_phase, options),
        write=write,
    )
    return run_phases(
        options,
        phases,
        input_files=input_files,
        input_stats=input_stats,
        recorded_options=asdict(options),
        arguments=arguments,
        started=started,
    )
