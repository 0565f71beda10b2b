"""`dlrm-prep table`: any CSV/TSV/Parquet table to Parquet shards and a manifest, in resumable phases.

The phases, outputs and guarantees are those of `dlrm-prep criteo` (see `data_prep.criteo`); their
order, the worker pool, the progress bars and the output-directory checks are `data_prep.phases`'s:
  1. parse    every chunk (a byte range of whole lines, or a Parquet row group) -> `.work/chunks/*.arrow`
  2. plan     per-chunk row counts -> which rows go to which split and shard
  3. vocab    (vocabulary encoding only) count the train rows' value hashes, keep those seen K times
  4. write    each shard = fixed row ranges of the parsed chunks, encoded, as Parquet
  5. manifest written last (schema version 3, with the feature schema); `.work/` is removed

Splits: `ordered` cuts the kept rows, in input order (files in the order given), into the first
round(n * train) rows, the next rows up to round(n * (train + val)), and the rest. `random` assigns each
line on its own from a seeded hash of (file index, line number) (`data_prep.table_hash`).
"""

from __future__ import annotations

import csv
import gzip
import json
import time
import zlib
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep import table_tasks
from data_prep.features import Categorical, FeatureSchema
from data_prep.inputs import InputError, InputFile, count_plain_chunks, stat_inputs
from data_prep.parse import MAX_EXAMPLES_PER_REASON
from data_prep.phases import Phases, Runner, progress_bar, run_phases, train_bag_lengths
from data_prep.schema import SPLITS
from data_prep.table_hash import random_split_codes
from data_prep.table_parse import BAD_ROW_REASONS, TableSpec
from data_prep.tasks import chunk_name, gzip_chunks_parsed

SPLIT_MODES = ("ordered", "random")


@dataclass(frozen=True)
class TableOptions:
    """Everything `dlrm-prep table` needs; see `data_prep.cli` for each option's meaning.

    `spec.columns` may be empty for `--header` and Parquet input: `resolve_spec` reads them.
    """

    inputs: tuple[str, ...]
    out: str
    spec: TableSpec
    encoding: str
    header: bool = False
    hash_buckets: tuple[int, ...] = ()
    vocab_min_count: int = 0
    split: str = "ordered"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    rows_per_shard: int = 1 << 20
    row_group_rows: int = 1 << 16
    chunk_bytes: int = 16 << 20
    compression: str = "snappy"
    workers: int = 1
    on_bad_row: str = "skip"
    vocab_memory_bytes: int = 256 << 20
    progress: bool = True
    layout: str = "table"

    def fingerprint(self, input_files: list[InputFile]) -> dict[str, Any]:
        """The options the output depends on (not workers, progress or memory budgets), as JSON reads back."""
        fingerprint = {
            "layout": self.layout,
            "spec": asdict(self.spec),
            "header": self.header,
            "encoding": self.encoding_spec(),
            "split": {"mode": self.split, "fractions": list(self.split_fractions), "seed": self.seed},
            "rows_per_shard": self.rows_per_shard,
            "row_group_rows": self.row_group_rows,
            "chunk_bytes": self.chunk_bytes,
            "compression": self.compression,
            "on_bad_row": self.on_bad_row,
            "input_files": [{"path": f.path, "bytes": f.bytes} for f in input_files],
        }
        # Tuples become lists, as in the copy a resumed run reads from disk and compares with this.
        return json.loads(json.dumps(fingerprint))

    def encoding_spec(self) -> dict[str, Any]:
        if self.encoding == "hash":
            return {"mode": "hash", "hash": "fnv1a64+fmix64", "hash_buckets": list(self.hash_buckets)}
        return {"mode": "vocab", "hash": "fnv1a64+fmix64", "min_count": self.vocab_min_count}


def discover_files(paths: list[str]) -> list[InputFile]:
    """Files as given; a directory stands for its files (not hidden ones), sorted by name."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                raise InputError(f"--input {raw}: directory holds no files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"--input {raw}: no such file or directory")
    return [InputFile(path=str(p.resolve()), bytes=p.stat().st_size) for p in files]


def _header_of(input_file: InputFile, delimiter: str, quoting: bool) -> tuple[str, ...]:
    try:
        with (gzip.open if input_file.is_gzip else open)(input_file.path, "rb") as handle:
            line = handle.readline()
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{input_file.name}: cannot read its header line: {error}") from None
    if not line.strip(b"\r\n"):
        raise InputError(f"{input_file.name}: --header given but the first line is empty")
    text = line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", errors="replace")
    reader = csv.reader([text], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    return tuple(next(reader))


def _parquet_columns(input_file: InputFile) -> tuple[str, ...]:
    try:
        return tuple(pq.read_schema(input_file.path).names)
    except (OSError, pa.ArrowInvalid) as error:
        raise InputError(f"{input_file.name}: not a readable Parquet file: {error}") from None


def resolve_spec(options: TableOptions, input_files: list[InputFile]) -> TableSpec:
    """The spec with the file's columns filled in; names that do not exist fail here, in one line."""
    spec = options.spec
    if spec.format == "parquet":
        for input_file in input_files:
            if input_file.is_gzip:
                raise InputError(
                    f"{input_file.name}: --format parquet reads .parquet files (compressed inside), not .gz"
                )
        per_file = [_parquet_columns(f) for f in input_files]
        for input_file, columns in zip(input_files, per_file, strict=True):
            missing = [name for name in spec.needed if name not in columns]
            if missing:
                raise InputError(f"{input_file.name}: no column named {', '.join(missing)}")
        columns = tuple(spec.needed)
    elif options.header:
        headers = [_header_of(f, spec.delimiter, spec.format == "csv") for f in input_files]
        for input_file, header in zip(input_files[1:], headers[1:], strict=True):
            if header != headers[0]:
                raise InputError(f"{input_file.name}: header differs from {input_files[0].name}'s")
        columns = headers[0]
    else:
        columns = spec.columns
    duplicates = sorted({name for name in columns if columns.count(name) > 1})
    if duplicates:
        raise InputError(f"input columns named more than once: {', '.join(duplicates)}")
    for flag, names in (
        ("--label", [spec.label]),
        ("--dense", spec.dense),
        ("--categorical", spec.categorical),
    ):
        missing = [name for name in names if name not in columns]
        if missing:
            raise InputError(f"{flag}: no column named {', '.join(missing)} (columns: {', '.join(columns)})")
    return TableSpec(**{**asdict(spec), "columns": tuple(columns), "multi_hot": spec.multi_hot})


def _num_chunks(input_file: InputFile, file_index: int, options: TableOptions, chunk_dir: Path) -> int:
    """Chunks of a parsed file. A .gz file's count is known once it is parsed (a stream cannot be cut
    by byte offset): its parse task records it (`data_prep.tasks.gzip_chunks_parsed`)."""
    if options.spec.format == "parquet":
        return pq.ParquetFile(input_file.path).metadata.num_row_groups
    if input_file.is_gzip:
        return gzip_chunks_parsed(chunk_dir, file_index)
    return count_plain_chunks(input_file, options.chunk_bytes)


def _parse_phase(
    options: TableOptions, spec: TableSpec, files: list[InputFile], work: Path, runner: Runner
) -> None:
    chunk_dir = work / "chunks"
    calls = []
    for file_index, input_file in enumerate(files):
        common = {
            "input_file": input_file,
            "file_index": file_index,
            "chunk_dir": str(chunk_dir),
            "spec": spec,
        }
        if input_file.is_gzip:
            # One task reads the whole stream; it skips the chunks an interrupted run left complete.
            if gzip_chunks_parsed(chunk_dir, file_index) is None:
                call = {**common, "chunk_bytes": options.chunk_bytes, "header": options.header}
                calls.append((table_tasks.parse_gzip_text_file, call))
            continue
        for chunk_index in range(_num_chunks(input_file, file_index, options, chunk_dir)):
            if (chunk_dir / f"{chunk_name(file_index, chunk_index)}.json").exists():
                continue
            if spec.format == "parquet":
                calls.append((table_tasks.parse_parquet_group, {**common, "group": chunk_index}))
            else:
                call = {**common, "chunk_index": chunk_index, "chunk_bytes": options.chunk_bytes}
                calls.append((table_tasks.parse_text_chunk, {**call, "header": options.header}))
    with progress_bar(options, "parse", None, "rows") as bar:
        runner.run(
            [(function, {**kwargs, "on_bad_row": options.on_bad_row}) for function, kwargs in calls],
            lambda result: bar.update(result["lines"]),
        )


def _plan(options: TableOptions, files: list[InputFile], work: Path) -> dict[str, Any]:
    """Tallies lines and bad rows, numbers every chunk's lines within its file, assigns rows to splits."""
    chunk_dir = work / "chunks"
    bad_counts = dict.fromkeys(BAD_ROW_REASONS, 0)
    examples: list[dict[str, Any]] = []
    file_lines: list[int] = []
    chunks: list[tuple[str, int, int, int]] = []  # (path, rows, file index, lines before it)
    header_lines = 1 if options.header and options.spec.format != "parquet" else 0
    for file_index, input_file in enumerate(files):
        first_line = header_lines
        for chunk_index in range(_num_chunks(input_file, file_index, options, chunk_dir)):
            name = chunk_name(file_index, chunk_index)
            meta = json.loads((chunk_dir / f"{name}.json").read_text())
            for reason, count in meta["bad_counts"].items():
                bad_counts[reason] += count
            for line, reason, detail in meta["bad_examples"]:
                examples.append(
                    {"where": f"{input_file.name}:{first_line + line}", "reason": reason, "detail": detail}
                )
            chunks.append((str(chunk_dir / f"{name}.arrow"), meta["rows"], file_index, first_line))
            first_line += meta["num_lines"]
        file_lines.append(first_line - header_lines)
    pieces: dict[str, list[table_tasks.Piece]] = {split: [] for split in SPLITS}
    if options.split == "ordered":
        total = sum(rows for _, rows, _, _ in chunks)
        ends = [
            round(total * options.split_fractions[0]),
            round(total * sum(options.split_fractions[:2])),
            total,
        ]
        position = 0
        for path, rows, file_index, first_line in chunks:
            for split, begin, end in zip(SPLITS, [0, *ends[:2]], ends, strict=True):
                start, stop = max(begin, position), min(end, position + rows)
                if stop > start:
                    pieces[split].append(
                        (path, start - position, stop - position, -1, file_index, first_line)
                    )
            position += rows
    else:
        for path, rows, file_index, first_line in chunks:
            if not rows:
                continue
            with pa.memory_map(path) as source:
                lines = pa.ipc.open_file(source).read_all().column("line").to_numpy().astype(np.int64)
            codes = random_split_codes(options.seed, file_index, lines + first_line, options.split_fractions)
            for code, split in enumerate(SPLITS):
                count = int((codes == code).sum())
                if count:
                    pieces[split].append((path, 0, count, code, file_index, first_line))
    kept = []
    for reason in BAD_ROW_REASONS:
        kept.extend(
            [example for example in examples if example["reason"] == reason][:MAX_EXAMPLES_PER_REASON]
        )
    return {"pieces": pieces, "bad_counts": bad_counts, "bad_examples": kept, "file_lines": file_lines}


def _shard_ranges(pieces: list[table_tasks.Piece], rows_per_shard: int) -> list[list[table_tasks.Piece]]:
    """Cuts a split's pieces into shards of exactly `rows_per_shard` rows (the last may be short)."""
    shards, current, filled = [], [], 0
    for path, start, stop, code, file_index, first_line in pieces:
        position = start
        while position < stop:
            take = min(stop - position, rows_per_shard - filled)
            current.append((path, position, position + take, code, file_index, first_line))
            filled += take
            position += take
            if filled == rows_per_shard:
                shards.append(current)
                current, filled = [], 0
    if current:
        shards.append(current)
    return shards


def _vocab_phase(options: TableOptions, spec: TableSpec, plan: dict, work: Path, runner: Runner) -> list[str]:
    counts_dir = work / "counts"
    counts_dir.mkdir(exist_ok=True)
    by_chunk: dict[str, list[table_tasks.Piece]] = {}
    for piece in plan["pieces"]["train"]:
        by_chunk.setdefault(piece[0], []).append(piece)
    prefixes = [str(counts_dir / Path(path).stem) for path in by_chunk]
    shared = {
        "num_categorical": len(spec.categorical),
        "fractions": options.split_fractions,
        "seed": options.seed,
    }
    calls = [
        {"pieces": chunk_pieces, "out_prefix": prefix, **shared}
        for prefix, chunk_pieces in zip(prefixes, by_chunk.values(), strict=True)
        if not (counts_dir / f"{Path(prefix).name}.offsets.npy").exists()
    ]
    with progress_bar(options, "count", sum(p[2] - p[1] for p in plan["pieces"]["train"]), "rows") as bar:
        runner.map(table_tasks.count_train_rows, calls, lambda result: bar.update(result["rows"]))
    vocab_dir = Path(options.out) / "vocab"
    vocab_dir.mkdir(exist_ok=True)
    paths = [str(vocab_dir / f"{index:04d}.npy") for index in range(len(spec.categorical))]
    missing = [index for index, path in enumerate(paths) if not Path(path).exists()]
    # One task per worker, the columns dealt round robin (neighbouring columns often differ in size):
    # each task opens every chunk's spilled counts once for all its columns.
    groups = [missing[start :: options.workers] for start in range(min(options.workers, len(missing)))]
    calls = [
        {
            "count_prefixes": prefixes,
            "columns": group,
            "min_count": options.vocab_min_count,
            "memory_budget": options.vocab_memory_bytes,
            "out_paths": [paths[index] for index in group],
        }
        for group in groups
    ]
    with progress_bar(options, "vocab", len(paths), "cols") as bar:
        bar.update(len(paths) - len(missing))
        runner.map(table_tasks.build_vocab_columns, calls, lambda result: bar.update(len(result["columns"])))
    return paths


def _features(spec: TableSpec, sizes: list[int], bags: dict[str, tuple[float, int]]) -> FeatureSchema:
    separators = spec.separators
    categorical = tuple(
        Categorical(name, size, name in separators, *(bags.get(name, (None, None))))
        for name, size in zip(spec.categorical, sizes, strict=True)
    )
    return FeatureSchema(categorical=categorical, dense=spec.dense, label=spec.label)


def _write_phase(options, spec, plan, work, vocab_paths, sizes, runner) -> tuple[dict, dict[str, Any]]:
    """Writes the shards; returns the splits and the manifest's `features` (with the train bag lengths)."""
    out = Path(options.out)
    schema = _features(spec, sizes, {}).parquet_schema()
    multi_hot = [name for name in spec.categorical if name in spec.separators]
    (work / "bags").mkdir(exist_ok=True)
    splits: dict[str, dict[str, Any]] = {}
    calls = []
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        files = []
        for index, pieces in enumerate(_shard_ranges(plan["pieces"][split], options.rows_per_shard)):
            relative = f"{split}/part-{index:05d}.parquet"
            files.append({"path": relative, "rows": sum(stop - start for _, start, stop, *_ in pieces)})
            stats = str(work / "bags" / f"part-{index:05d}.json") if split == "train" and multi_hot else None
            # A shard counts as done only with its bag statistics (written before it is renamed).
            if not (out / relative).exists() or (stats is not None and not Path(stats).exists()):
                calls.append({"pieces": pieces, "out_path": str(out / relative), "bag_stats_path": stats})
        splits[split] = {"rows": sum(f["rows"] for f in files), "files": files}
    common = {
        "schema": schema,
        "hash_buckets": list(options.hash_buckets) if options.encoding == "hash" else None,
        "vocab_paths": vocab_paths,
        "row_group_rows": options.row_group_rows,
        "compression": options.compression,
        "fractions": options.split_fractions,
        "seed": options.seed,
    }
    total = sum(split["rows"] for split in splits.values())
    with progress_bar(options, "write", total, "rows") as bar:
        bar.update(total - sum(sum(p[2] - p[1] for p in call["pieces"]) for call in calls))
        runner.map(table_tasks.write_shard, [{**c, **common} for c in calls], lambda r: bar.update(r["rows"]))
    bags = {}
    if multi_hot:
        num_train_shards = len(splits["train"]["files"])
        stats_paths = [work / "bags" / f"part-{index:05d}.json" for index in range(num_train_shards)]
        means, maxima = train_bag_lengths(stats_paths, len(multi_hot))
        bags = dict(zip(multi_hot, zip(means, maxima, strict=True), strict=True))
    return splits, {"bag_lengths": None, "features": _features(spec, sizes, bags)}


def run(options: TableOptions, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs (or resumes) the preparation of a table and returns the manifest it wrote.

    Args:
        options: the validated options.
        arguments: the command line as the user gave it, recorded in the manifest.

    Returns:
        The manifest, as written to `<out>/manifest.json`.
    """
    started = time.time()
    files = discover_files(list(options.inputs))
    input_stats = stat_inputs(files)
    spec = resolve_spec(options, files)
    if options.encoding == "hash" and len(options.hash_buckets) != len(spec.categorical):
        raise ValueError(
            f"--hash-buckets: give 1 or {len(spec.categorical)} values, got {len(options.hash_buckets)}"
        )
    phases = Phases(
        parse=partial(_parse_phase, options, spec, files),
        plan=partial(_plan, options, files),
        vocab=partial(_vocab_phase, options, spec),
        write=partial(_write_phase, options, spec),
    )
    return run_phases(
        options,
        phases,
        input_files=files,
        input_stats=input_stats,
        recorded_options={**asdict(options), "dense_transform": spec.dense_transform},
        arguments=arguments,
        started=started,
    )
