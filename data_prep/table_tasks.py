"""The units of work that `dlrm-prep table` farms out to worker processes.

As in `data_prep.tasks` (Criteo's), every task writes its outputs under a temporary name and renames
them when complete, takes only picklable arguments and returns a small dict. A parsed chunk holds the
kept rows as `line` (1-based within the chunk), `label`, `d0..` (cleaned dense), `c0..` (uint64 value
hashes, 0 = missing: a dictionary of the chunk's distinct hashes with int32 indices, or `list<uint64>`
for multi-hot).

A piece of a split is `(chunk path, start, stop, split_code, file_index, first_line)`: rows
[start, stop) of the chunk, counted among the rows of split `split_code` when the split is random
(recomputed from each row's line, see `data_prep.table_hash`), or among all rows when it is -1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_prep import encode
from data_prep.inputs import InputFile, iter_gzip_chunks, read_plain_chunk
from data_prep.parse import BadRowError
from data_prep.table_hash import random_split_codes
from data_prep.table_parse import ParsedTable, TableSpec, parse_batch, parse_text
from data_prep.tasks import chunk_name, count_lines_before, mark_gzip_parsed, write_json_atomic

Piece = tuple[str, int, int, int, int, int]


def _save(
    parsed: ParsedTable, chunk_dir: Path, name: str, where: str, first_line: int, on_bad_row: str
) -> dict:
    if on_bad_row == "error" and parsed.bad.total:
        line, reason, detail = min(parsed.bad.examples)
        raise BadRowError(f"{where}:{first_line + line}: bad row ({reason}): {detail}")
    temporary = chunk_dir / f"{name}.arrow.tmp"
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, parsed.table.schema) as writer:
        writer.write_table(parsed.table)
    os.replace(temporary, chunk_dir / f"{name}.arrow")
    meta = {
        "num_lines": parsed.num_lines,
        "rows": parsed.table.num_rows,
        "bad_counts": parsed.bad.counts,
        "bad_examples": parsed.bad.examples,
    }
    write_json_atomic(chunk_dir / f"{name}.json", meta)
    return {"rows": meta["rows"], "lines": meta["num_lines"]}


def parse_text_chunk(
    input_file: InputFile,
    file_index: int,
    chunk_index: int,
    chunk_bytes: int,
    chunk_dir: str,
    spec: TableSpec,
    header: bool,
    on_bad_row: str,
) -> dict[str, Any]:
    """Parses the lines that start in one byte range of a CSV/TSV file (the header line left out)."""
    data, start = read_plain_chunk(input_file, chunk_index, chunk_bytes)
    skipped = 0
    if header and start == 0:
        cut = data.find(b"\n") + 1
        data, skipped = (data[cut:], 1) if cut else (b"", 1)
    parsed = parse_text(data, spec)
    if on_bad_row == "error" and parsed.bad.total:
        # Only then are the lines before the chunk counted, to name the file's line.
        first_line = count_lines_before(input_file.path, start) if start else skipped
    else:
        first_line = 0
    return _save(
        parsed, Path(chunk_dir), chunk_name(file_index, chunk_index), input_file.name, first_line, on_bad_row
    )


def parse_gzip_text_file(
    input_file: InputFile,
    file_index: int,
    chunk_bytes: int,
    chunk_dir: str,
    spec: TableSpec,
    header: bool,
    on_bad_row: str,
) -> dict[str, Any]:
    """Parses a whole .gz CSV/TSV file, chunk after chunk of about `chunk_bytes` uncompressed bytes
    ending at a newline (the header line left out); chunks already on disk are read past."""
    directory = Path(chunk_dir)
    rows = lines = 0
    chunk_index = -1
    # Lines of the file before the current chunk: the header, then every chunk's lines.
    first_line = 0
    for chunk_index, (data, _) in enumerate(iter_gzip_chunks(input_file, chunk_bytes)):
        if header and chunk_index == 0:
            cut = data.find(b"\n") + 1
            data, first_line = (data[cut:] if cut else b""), 1
        name = chunk_name(file_index, chunk_index)
        meta_path = directory / f"{name}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            result = {"rows": meta["rows"], "lines": meta["num_lines"]}
        else:
            result = _save(parse_text(data, spec), directory, name, input_file.name, first_line, on_bad_row)
        rows += result["rows"]
        lines += result["lines"]
        first_line += result["lines"]
    if chunk_index < 0:
        # An empty stream still gets a chunk, as an empty plain file does: the plan reads one per file.
        _save(parse_text(b"", spec), directory, chunk_name(file_index, 0), input_file.name, 0, on_bad_row)
        chunk_index = 0
    mark_gzip_parsed(directory, file_index, chunk_index + 1)
    return {"rows": rows, "lines": lines}


def parse_parquet_group(
    input_file: InputFile, file_index: int, group: int, chunk_dir: str, spec: TableSpec, on_bad_row: str
) -> dict[str, Any]:
    """Parses row group `group` of a Parquet file; its rows' lines are row numbers within the group."""
    parquet = pq.ParquetFile(input_file.path)
    table = parquet.read_row_group(group, columns=spec.needed)
    first_row = sum(parquet.metadata.row_group(index).num_rows for index in range(group))
    parsed = parse_batch(table, spec)
    return _save(
        parsed, Path(chunk_dir), chunk_name(file_index, group), input_file.name, first_row, on_bad_row
    )


def read_piece(piece: Piece, fractions: tuple[float, float, float], seed: int) -> pa.Table:
    """The rows of one piece, in order."""
    path, start, stop, code, file_index, first_line = piece
    with pa.memory_map(path) as source:
        table = pa.ipc.open_file(source).read_all()
    if code >= 0:
        lines = table.column("line").to_numpy().astype(np.int64) + first_line
        codes = random_split_codes(seed, file_index, lines, fractions)
        table = table.filter(pa.array(codes == code))
    return table.slice(start, stop - start)


def _counts(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The (hash, count) pairs of a staged categorical column's values, missing (hash 0) left out."""
    if pa.types.is_dictionary(column.type):
        # Counted per dictionary entry (a bincount of the indices) rather than by gathering and sorting
        # every row's hash: a chunk's rows hold far fewer distinct hashes than rows.
        hashes = [np.zeros(0, np.uint64)] + [chunk.dictionary.to_numpy() for chunk in column.chunks]
        counts = [np.zeros(0, np.int64)] + [
            np.bincount(chunk.indices.to_numpy(), minlength=len(chunk.dictionary)) for chunk in column.chunks
        ]
        values, totals = np.concatenate(hashes), np.concatenate(counts)
        # Distinct strings may share a hash, and the null slot and empty strings are both 0.
        keep = (totals > 0) & (values != 0)
        return encode.sum_counts(values[keep], totals[keep])
    values = pc.list_flatten(column).to_numpy() if pa.types.is_list(column.type) else column.to_numpy()
    return np.unique(values[values != 0], return_counts=True)


def count_train_rows(
    pieces: list[Piece], out_prefix: str, num_categorical: int, fractions: tuple, seed: int
) -> dict[str, Any]:
    """Spills the (hash, count) pairs of each categorical column of train rows; missing is not counted."""
    # Piece by piece, not concatenated: a chunk staged before one-hot columns became dictionaries (a
    # resumed older run) has plain uint64 columns, which `_counts` reads as well.
    tables = [read_piece(piece, fractions, seed) for piece in pieces]
    pairs = []
    for index in range(num_categorical):
        parts = [_counts(table.column(f"c{index}")) for table in tables]
        if len(parts) == 1:
            pairs.append(parts[0])
        else:
            values = np.concatenate([np.zeros(0, np.uint64)] + [values for values, _ in parts])
            counts = np.concatenate([np.zeros(0, np.int64)] + [counts for _, counts in parts])
            pairs.append(encode.sum_counts(values, counts, sorted_runs=True))
    encode.spill_counts(pairs, Path(out_prefix), value_dtype=np.uint64)
    return {"rows": sum(table.num_rows for table in tables)}


def build_vocab_columns(
    count_prefixes: list[str], columns: list[int], min_count: int, memory_budget: int, out_paths: list[str]
) -> dict[str, Any]:
    """Writes the vocabulary of each of `columns` (the spilled counts of each chunk are opened once for
    all of them)."""
    per_column = encode.count_slices([Path(p) for p in count_prefixes], columns)
    kept_sizes = []
    for slices, out_path in zip(per_column, out_paths, strict=True):
        kept, _ = encode.reduce_slices(slices, min_count, memory_budget, 64)
        temporary = out_path + ".tmp.npy"
        np.save(temporary, kept)
        os.replace(temporary, out_path)
        kept_sizes.append(len(kept))
    return {"columns": columns, "kept": kept_sizes}


def _ids(
    hashes: np.ndarray,
    index: int,
    hash_buckets: list[int] | None,
    vocabularies: list | None,
    distinct: bool = False,
) -> np.ndarray:
    """Ids of column `index`'s hashes; `distinct`: the hashes of a chunk's dictionary (few repeats)."""
    if vocabularies is not None:
        kept = vocabularies[index]
        if len(kept) <= len(hashes):
            # A hash-table lookup of each row (pyarrow builds the table from the vocabulary per call,
            # which costs less than the rows' lookups while the vocabulary is not larger than them).
            found = pc.index_in(pa.array(hashes), value_set=pa.array(kept)).fill_null(-1)
            return (found.to_numpy() + 1).astype(np.int32)
        if distinct:
            return encode.vocab_ids(hashes, kept)
        # A large vocabulary: a binary search per distinct value of the row group (pyarrow's hash-based
        # dictionary encoding finds them in one pass), not per row.
        encoded = pc.dictionary_encode(pa.array(hashes))
        return encode.vocab_ids(encoded.dictionary.to_numpy(), kept)[encoded.indices.to_numpy()]
    return (hashes % np.uint64(hash_buckets[index])).astype(np.int32)


def _encode(table: pa.Table, schema: pa.Schema, hash_buckets: list[int] | None, vocabularies: list | None):
    arrays = [table.column("label")]
    num_dense = sum(1 for name in table.column_names if name.startswith("d"))
    arrays += [table.column(f"d{index}") for index in range(num_dense)]
    lengths = []
    for index in range(len(schema) - 1 - num_dense):
        chunks = table.column(f"c{index}")
        if pa.types.is_dictionary(chunks.type):
            # One-hot columns: ids of each chunk's distinct hashes, gathered by its indices (ids are a
            # function of the hash alone; see `data_prep.table_hash.hash_dictionary`).
            parts = [np.zeros(0, np.int32)] + [
                _ids(chunk.dictionary.to_numpy(), index, hash_buckets, vocabularies, distinct=True)[
                    chunk.indices.to_numpy()
                ]
                for chunk in chunks.chunks
            ]
            arrays.append(pa.array(np.concatenate(parts)))
            continue
        column = chunks.combine_chunks()
        if pa.types.is_list(column.type):
            offsets = column.offsets.to_numpy()
            ids = _ids(column.flatten().to_numpy(), index, hash_buckets, vocabularies)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets - offsets[0]), pa.array(ids)))
            lengths.append(np.diff(offsets))
        else:
            arrays.append(pa.array(_ids(column.to_numpy(), index, hash_buckets, vocabularies)))
    return pa.Table.from_arrays(arrays, schema=schema), lengths


def write_shard(
    pieces: list[Piece],
    out_path: str,
    schema: pa.Schema,
    hash_buckets: list[int] | None,
    vocab_paths: list[str] | None,
    row_group_rows: int,
    compression: str,
    fractions: tuple[float, float, float],
    seed: int,
    bag_stats_path: str | None,
) -> dict[str, Any]:
    """Writes one Parquet shard from pieces of parsed chunks: each piece encoded to ids whole, then
    written a row group at a time.

    `bag_stats_path` (train shards with multi-hot features) receives the shard's rows and the sum and
    maximum of each multi-hot column's bag lengths, before the shard is renamed into place.
    """
    vocabularies = [encode.load_vocabulary(path) for path in vocab_paths] if vocab_paths else None
    temporary = out_path + ".tmp"
    rows = 0
    sums: list[int] = []
    maxima: list[int] = []
    with pq.ParquetWriter(temporary, schema, compression=compression) as writer:
        pending: list[pa.Table] = []
        pending_rows = 0

        def flush() -> None:
            # One chunk per column (the file's bytes do not depend on how the row group's rows were
            # split among pieces either way).
            writer.write_table(pa.concat_tables(pending).combine_chunks(), row_group_size=row_group_rows)

        for piece in pieces:
            # Each piece is encoded whole, before it is cut into row groups: a chunk's dictionary of
            # distinct hashes is then looked up once, however many row groups its rows fall in.
            table, lengths = _encode(read_piece(piece, fractions, seed), schema, hash_buckets, vocabularies)
            if not sums:
                sums.extend([0] * len(lengths))
                maxima.extend([0] * len(lengths))
            for index, bag_lengths in enumerate(lengths):
                sums[index] += int(bag_lengths.sum())
                maxima[index] = max(maxima[index], int(bag_lengths.max(initial=0)))
            position = 0
            while position < table.num_rows:
                take = min(table.num_rows - position, row_group_rows - pending_rows)
                pending.append(table.slice(position, take))
                pending_rows += take
                position += take
                if pending_rows == row_group_rows:
                    flush()
                    rows += pending_rows
                    pending, pending_rows = [], 0
        if pending_rows:
            flush()
            rows += pending_rows
    if bag_stats_path is not None:
        write_json_atomic(Path(bag_stats_path), {"rows": rows, "sum": sums, "max": maxima})
    os.replace(temporary, out_path)
    return {"rows": rows}
