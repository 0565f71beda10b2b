"""The units of work that `dlrm-prep criteo` farms out to worker processes.

Each task reads its inputs, writes its outputs under a temporary name and renames them when complete,
so that a run killed at any point (kill -9 included) can be started again and skip what is done. Tasks
take only plain, picklable arguments and return small dicts; they never share state.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep import encode
from data_prep.inputs import InputFile, iter_gzip_chunks, read_plain_chunk
from data_prep.parse import BadRowError, parse_chunk
from data_prep.schema import DENSE_COLUMNS, LABEL, SPARSE_COLUMNS, output_schema


def init_worker(parent_pid: int) -> None:
    """Keeps each worker process on one core (the parallelism comes from the processes) and ties its life
    to its parent's. Called by `data_prep.startup.init_worker`, after the memory and import settings
    that must come before pyarrow loads.

    Args:
        parent_pid: the pid of the process that made the pool, passed from there: a parent killed while
            this worker was still starting has already been replaced by init in `os.getppid()`.
    """
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    _exit_with_parent(parent_pid)


def _exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Ends this worker once its parent is gone (kill -9 of dlrm-prep alone would otherwise leave the
    pool's workers blocked on its queue forever).

    A watchdog thread polling `os.getppid()` (which changes when the parent dies and the worker is
    re-parented) rather than Linux's prctl(PR_SET_PDEATHSIG): that signal fires when the *thread* that
    started the worker ends, and the executor may start workers from any thread that submits; it is also
    Linux-only. The cost is one wake-up every `interval_s`.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def chunk_name(file_index: int, chunk_index: int) -> str:
    return f"f{file_index:05d}-c{chunk_index:06d}"


def write_json_atomic(path: Path, payload: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def count_lines_before(path: str, offset: int) -> int:
    """Lines that end before byte `offset` of a plain file (only needed to name a line in an error)."""
    lines = 0
    with open(path, "rb") as handle:
        remaining = offset
        while remaining > 0:
            block = handle.read(min(remaining, 1 << 24))
            if not block:
                break
            lines += block.count(b"\n")
            remaining -= len(block)
    return lines


def _process_chunk(
    data: bytes,
    chunk_dir: Path,
    name: str,
    dense_transform: str,
    multi_hot: bool,
    on_bad_row: str,
    where: str,
    first_line: int | None,
) -> dict[str, Any]:
    parsed = parse_chunk(data, dense_transform, multi_hot)
    if on_bad_row == "error" and parsed.bad.total:
        line, reason, detail = parsed.bad.examples[0]
        raise BadRowError(f"{where}:{line}: bad row ({reason}): {detail}")
    table = parsed.table.add_column(0, "line", pa.array(parsed.lines.astype(np.int32)))
    temporary = chunk_dir / f"{name}.arrow.tmp"
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(temporary, chunk_dir / f"{name}.arrow")
    meta = {
        "num_lines": parsed.num_lines,
        "rows": table.num_rows,
        "bad_counts": parsed.bad.counts,
        "bad_examples": parsed.bad.examples,
        "first_line": first_line,
    }
    write_json_atomic(chunk_dir / f"{name}.json", meta)
    return meta


def parse_plain_chunk(
    input_file: InputFile,
    file_index: int,
    chunk_index: int,
    chunk_bytes: int,
    chunk_dir: str,
    dense_transform: str,
    multi_hot: bool,
    on_bad_row: str,
) -> dict[str, Any]:
    """Parses one byte range of a plain file into `<chunk_dir>/<name>.arrow` and its `.json` meta."""
    name = chunk_name(file_index, chunk_index)
    data, start = read_plain_chunk(input_file, chunk_index, chunk_bytes)
    try:
        meta = _process_chunk(
            data, Path(chunk_dir), name, dense_transform, multi_hot, on_bad_row, input_file.name, None
        )
    except BadRowError as error:
        # The chunk only knows its own line numbers; count the lines before it to name the file's line.
        where, line_text, rest = str(error).split(":", 2)
        offset = count_lines_before(input_file.path, start) if start else 0
        raise BadRowError(f"{where}:{offset + int(line_text)}:{rest}") from None
    return {"rows": meta["rows"], "lines": meta["num_lines"], "bytes": len(data)}


def gzip_chunks_parsed(chunk_dir: str | Path, file_index: int) -> int | None:
    """The number of chunks of .gz input `file_index`, or None while its parse has not finished.

    A gzip stream cannot be cut by byte offset, so its chunk count is known only once one task has read
    it all; that task records it last (`mark_gzip_parsed`), which also marks the file as done.
    """
    done = Path(chunk_dir) / f"f{file_index:05d}.done.json"
    return json.loads(done.read_text())["num_chunks"] if done.exists() else None


def mark_gzip_parsed(chunk_dir: str | Path, file_index: int, num_chunks: int) -> None:
    write_json_atomic(Path(chunk_dir) / f"f{file_index:05d}.done.json", {"num_chunks": num_chunks})


def parse_gzip_file(
    input_file: InputFile,
    file_index: int,
    chunk_bytes: int,
    chunk_dir: str,
    dense_transform: str,
    multi_hot: bool,
    on_bad_row: str,
) -> dict[str, Any]:
    """Parses a whole .gz file, chunk after chunk; chunks already on disk are read past, not parsed again."""
    directory = Path(chunk_dir)
    rows = lines = 0
    chunk_index = -1
    for chunk_index, (data, _) in enumerate(iter_gzip_chunks(input_file, chunk_bytes)):
        name = chunk_name(file_index, chunk_index)
        meta_path = directory / f"{name}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
        else:
            try:
                meta = _process_chunk(
                    data, directory, name, dense_transform, multi_hot, on_bad_row, input_file.name, lines
                )
            except BadRowError as error:
                where, line_text, rest = str(error).split(":", 2)
                raise BadRowError(f"{where}:{lines + int(line_text)}:{rest}") from None
        rows += meta["rows"]
        lines += meta["num_lines"]
    mark_gzip_parsed(directory, file_index, chunk_index + 1)
    return {"rows": rows, "lines": lines, "bytes": input_file.bytes}


def _read_rows(path: str, start: int, stop: int) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all().slice(start, stop - start)


def _raw_values(column: pa.ChunkedArray) -> np.ndarray:
    """A categorical column's raw values; for multi-hot, every value of every bag, in row order."""
    if pa.types.is_list(column.type):
        return pc.list_flatten(column).to_numpy()
    return column.to_numpy()


def count_train_rows(pieces: list[tuple[str, int, int]], out_prefix: str) -> dict[str, Any]:
    """Spills the (value, count) pairs of the categorical columns of train row ranges (vocab mode).

    A multi-hot bag counts each of its values once, so a value's count is its number of occurrences.
    """
    tables = [_read_rows(path, start, stop) for path, start, stop in pieces]
    table = pa.concat_tables(tables)
    columns = [_raw_values(table.column(name)) for name in SPARSE_COLUMNS]
    encode.count_chunk(columns, Path(out_prefix))
    return {"rows": table.num_rows}


def build_vocab_column(
    count_prefixes: list[str], column: int, min_count: int, memory_budget: int, out_path: str
) -> dict[str, Any]:
    kept, partitions = encode.reduce_column(
        [Path(p) for p in count_prefixes], column, min_count, memory_budget
    )
    temporary = out_path + ".tmp.npy"
    np.save(temporary, kept)
    os.replace(temporary, out_path)
    return {"column": column, "kept": len(kept), "partitions": partitions}


def _encode_values(
    values: np.ndarray, index: int, encoding: dict[str, Any], vocabularies: list[np.ndarray] | None
) -> np.ndarray:
    if vocabularies is None:
        return encode.hash_ids(values, encoding["hash_buckets"][index])
    return encode.vocab_ids(values, vocabularies[index])


def _encode_sparse(table: pa.Table, encoding: dict[str, Any], vocabularies: list[np.ndarray] | None) -> list:
    """Embedding ids of every categorical column; a multi-hot bag keeps its length, each value encoded
    exactly as a one-hot value would be."""
    arrays = []
    for index, name in enumerate(SPARSE_COLUMNS):
        column = table.column(name)
        if not pa.types.is_list(column.type):
            arrays.append(pa.array(_encode_values(column.to_numpy(), index, encoding, vocabularies)))
            continue
        bags = column.combine_chunks()
        offsets = bags.offsets.to_numpy()
        ids = _encode_values(bags.flatten().to_numpy(), index, encoding, vocabularies)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets - offsets[0]), pa.array(ids)))
    return arrays


def _bag_lengths(encoded: pa.Table) -> np.ndarray:
    """[26, rows] bag lengths of the encoded multi-hot columns."""
    return np.stack([pc.list_value_length(encoded.column(name)).to_numpy() for name in SPARSE_COLUMNS])


def write_shard(
    pieces: list[tuple[str, int, int]],
    out_path: str,
    encoding: dict[str, Any],
    vocab_paths: list[str] | None,
    row_group_rows: int,
    compression: str,
    multi_hot: bool = False,
    bag_stats_path: str | None = None,
) -> dict[str, Any]:
    """Writes one Parquet shard from row ranges of parsed chunks, one row group at a time.

    Only a row group's worth of rows is held at once, so memory does not grow with the shard size.

    Args:
        pieces: (parsed chunk path, start row, stop row) ranges, in shard order.
        out_path: the shard's path.
        encoding: `PrepOptions.encoding_spec()`.
        vocab_paths: the vocabulary of each column (vocab mode), else None.
        row_group_rows: rows per Parquet row group.
        compression: Parquet compression.
        multi_hot: write `list<int32>` bags (the parsed chunks hold `list<uint32>`).
        bag_stats_path: where to write the shard's bag lengths per column, {"rows", "sum", "max"}
            (multi-hot only); written before the shard is renamed into place, so that a complete shard
            always has its statistics when a resumed run skips it.

    Returns:
        {"rows": rows written}.
    """
    schema = output_schema(multi_hot)
    vocabularies = [np.load(path, mmap_mode="r") for path in vocab_paths] if vocab_paths else None
    temporary = out_path + ".tmp"
    rows = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    length_sums = np.zeros(len(SPARSE_COLUMNS), np.int64)
    length_maxima = np.zeros(len(SPARSE_COLUMNS), np.int64)

    def flush(writer: pq.ParquetWriter, tables: list[pa.Table]) -> None:
        table = pa.concat_tables(tables)
        columns = [table.column(LABEL), *(table.column(name) for name in DENSE_COLUMNS)]
        encoded = pa.Table.from_arrays(
            [*columns, *_encode_sparse(table, encoding, vocabularies)], schema=schema
        )
        writer.write_table(encoded, row_group_size=row_group_rows)
        if bag_stats_path is not None:
            lengths = _bag_lengths(encoded)
            length_sums[:] += lengths.sum(axis=1)
            np.maximum(length_maxima, lengths.max(axis=1, initial=0), out=length_maxima)

    with pq.ParquetWriter(temporary, schema, compression=compression) as writer:
        for path, start, stop in pieces:
            with pa.memory_map(path) as source:
                table = pa.ipc.open_file(source).read_all()
            position = start
            while position < stop:
                take = min(stop - position, row_group_rows - pending_rows)
                pending.append(table.slice(position, take))
                pending_rows += take
                position += take
                if pending_rows == row_group_rows:
                    flush(writer, pending)
                    rows += pending_rows
                    pending, pending_rows = [], 0
        if pending_rows:
            flush(writer, pending)
            rows += pending_rows
    if bag_stats_path is not None:
        stats = {"rows": rows, "sum": length_sums.tolist(), "max": length_maxima.tolist()}
        write_json_atomic(Path(bag_stats_path), stats)
    os.replace(temporary, out_path)
    return {"rows": rows}
