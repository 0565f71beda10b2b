r"""Parse one chunk of a CSV/TSV file (or one Parquet row group) into validated, cleaned columns.

The text format, as this module reads it (and as `tests/reference_table.py` restates it, a line at a time):
  line         the bytes up to a `\n` (the last line of a file may lack it), less one trailing `\r` (CRLF)
  fields       csv: the line split at the delimiter outside double quotes (RFC 4180: a field may be
               wrapped in `"`, with `""` for a quote inside it; quotes must wrap whole fields);
               tsv: split at every delimiter, quotes are ordinary characters
  number       an optional sign, decimal digits with an optional `.` and fraction, an optional exponent
               (`1`, `-2.5`, `.5`, `1e-3`), finite as a float64, with any spaces or tabs around it;
               not `nan`, `inf`, hex, or blanks alone
  label        with a threshold T: a number, label = number >= T; without: a number equal to 0 or 1
  dense        empty (missing, 0) or a number
  categorical  any bytes; empty is missing. Multi-hot: the field split at its separator, empty items
               dropped (an empty field is an empty bag)

A line is bad, for the first reason that applies, when:
  line         it cannot be split here: csv with an odd number of `"` (a quoted field that runs onto the
               next line, which is not supported, or a stray quote), or a `\r` inside the line
  field_count  it has not as many fields as there are columns (an empty line counts here)
  label        the label is missing or not as above
  dense        a dense field is not empty and not a number (the first such column is named)

pyarrow's CSV reader splits the text (every field as bytes, so any encoding passes through); the lines
it cannot be trusted with (empty, lone `\r`, odd quotes) are found with numpy and taken out first, and
its `invalid_row_handler` reports the lines with the wrong field count.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from data_prep.parse import MAX_EXAMPLES_PER_REASON
from data_prep.table_hash import hash_dictionary, hash_values

BAD_ROW_REASONS = ("line", "field_count", "label", "dense")
FORMATS = ("csv", "tsv", "parquet")
NUMBER_PATTERN = r"^[ \t]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t]*$"
NUMBER_RE = re.compile(NUMBER_PATTERN)


@dataclass(frozen=True)
class TableSpec:
    """How to read a table: its format and columns, and which column plays which role.

    Attributes:
        format: csv, tsv or parquet.
        columns: every column of the file in order (csv/tsv; for parquet the columns read).
        delimiter: the field delimiter (csv/tsv).
        label: the label column.
        label_threshold: label = value >= threshold; None: the value must be 0 or 1.
        dense: the dense columns, in output order.
        categorical: the categorical columns, in output order.
        multi_hot: (column, separator) of the categorical columns that hold bags.
        dense_transform: log1p or none.
    """

    format: str
    columns: tuple[str, ...]
    label: str
    categorical: tuple[str, ...]
    dense: tuple[str, ...] = ()
    delimiter: str = ","
    label_threshold: float | None = None
    multi_hot: tuple[tuple[str, str], ...] = ()
    dense_transform: str = "log1p"

    @property
    def separators(self) -> dict[str, str]:
        return dict(self.multi_hot)

    @property
    def needed(self) -> list[str]:
        return list(dict.fromkeys([self.label, *self.dense, *self.categorical]))


@dataclass
class BadTally:
    """Per-reason counts of bad lines and the first examples of each, as (line, reason, detail)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_ROW_REASONS, 0))
    examples: list[tuple[int, str, str]] = field(default_factory=list)

    def add_many(self, reason: str, lines: np.ndarray, details: list[str]) -> None:
        """Counts `lines` (ascending) under `reason`; `details` describe the first of them."""
        self.counts[reason] += len(lines)
        room = MAX_EXAMPLES_PER_REASON - sum(1 for _, r, _ in self.examples if r == reason)
        for line, detail in zip(lines[: max(room, 0)], details, strict=False):
            self.examples.append((int(line), reason, detail))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ParsedTable:
    """The kept rows of a chunk (`line`, `label`, `d0..`, `c0..`) and the accounting of all its lines."""

    table: pa.Table
    num_lines: int
    bad: BadTally


def _line_flags(data: bytes, csv_quotes: bool) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
    """(num_lines, starts, stops, reason) per line when some line needs care, else None (fast path).

    reason: 0 fine, 1 `line` (odd quotes, inner \r), 2 `field_count` (empty).
    """
    carriage = b"\r" in data and (
        data.count(b"\r") != data.count(b"\r\n") or b"\n\r\n" in data or data.startswith(b"\r\n")
    )
    # Quoted fields need the per-line pass anyway, which finds empty lines too: the search for them (a
    # scan of the whole chunk) is only worth it when it can spare that pass.
    if not (carriage or (csv_quotes and b'"' in data)) and not (data.startswith(b"\n") or b"\n\n" in data):
        return None
    buffer = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buffer == 10)
    if len(ends) == 0 or ends[-1] != len(buffer) - 1:
        ends = np.append(ends, len(buffer))
    starts = np.concatenate([[0], ends[:-1] + 1])
    stops = ends.copy()
    reason = np.zeros(len(starts), np.uint8)
    if b"\r" in data:
        has_cr = (stops > starts) & (buffer[np.maximum(stops - 1, 0)] == 13)
        stops[has_cr] -= 1
    else:
        has_cr = np.zeros(len(starts), bool)
    carriages = np.flatnonzero(buffer == 13) if carriage else ()
    if len(carriages) > has_cr.sum():
        inner = carriages[~np.isin(carriages, stops[has_cr])]
        reason[np.searchsorted(ends, inner)] = 1
    if csv_quotes:
        # Each line's quote-count parity: an XOR of the quote mask over the line's bytes [start, next
        # start), which is never empty (it holds the line's `\n`, or the file's last byte). One pass
        # over the bytes, no array of quote positions (most CSV writers quote every string field).
        odd = np.bitwise_xor.reduceat((buffer == 34).view(np.uint8), starts)
        reason[odd == 1] = 1
    reason[(stops == starts) & (reason == 0)] = 2
    return len(starts), starts, ends, reason


def _read_fields(data: bytes, spec: TableSpec, typed: bool) -> tuple[pa.Table, list[tuple[int, int]]]:
    """The needed columns, and (row number, field count) of the rows pyarrow skipped for their count.

    typed: label and dense columns are parsed as float64 by pyarrow (empty -> null), which raises on a
    value that is not a number; otherwise every field is read as bytes.
    """
    invalid: list[tuple[int, int]] = []
    numeric = [spec.label, *spec.dense] if typed else []
    # One-hot categoricals come as dictionaries: only their distinct values are hashed.
    types = {
        name: pa.dictionary(pa.int32(), pa.binary())
        for name in spec.categorical
        if name not in spec.separators
    }
    types.update(
        {name: pa.float64() if name in numeric else pa.binary() for name in spec.needed if name not in types}
    )

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append((row.number, row.actual_columns))
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(
            column_names=list(spec.columns), use_threads=False, block_size=max(len(data), 1 << 20)
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter=spec.delimiter,
            quote_char='"' if spec.format == "csv" else False,
            double_quote=True,
            newlines_in_values=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=types,
            include_columns=spec.needed,
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return table, invalid


def parse_text(data: bytes, spec: TableSpec) -> ParsedTable:
    """Parses whole lines of CSV/TSV text (no header); line numbers are 1-based within `data`."""
    bad = BadTally()
    if not data:
        empty = {name: pa.array([], pa.binary()) for name in spec.needed}
        return _clean(empty, np.zeros(0, np.int64), spec, 0, bad)
    flags = _line_flags(data, spec.format == "csv")
    # field_count lines come from two places (empty lines here, pyarrow's invalid rows below); their
    # examples are tallied together, in line order.
    short_lines, short_counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if flags is None:
        num_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        passed = np.arange(1, num_lines + 1)
        text = data
    else:
        num_lines, starts, ends, reason = flags
        unsplittable = np.flatnonzero(reason == 1) + 1
        detail = "an odd number of quotes (a quoted newline?) or a \\r inside the line"
        bad.add_many("line", unsplittable, [detail] * min(len(unsplittable), MAX_EXAMPLES_PER_REASON))
        short_lines = np.flatnonzero(reason == 2) + 1
        short_counts = np.zeros(len(short_lines), np.int64)
        good = np.flatnonzero(reason == 0)
        passed = good + 1
        # Each kept line with its own newline, so that pyarrow sees exactly these lines.
        text = b"".join(data[starts[i] : ends[i]] + b"\n" for i in good) if len(good) < num_lines else data
    if len(passed):
        table, invalid = _read_typed_or_bytes(text, spec)
        columns = {name: table.column(name).combine_chunks() for name in spec.needed}
    else:
        invalid = []
        columns = {name: pa.array([], pa.binary()) for name in spec.needed}
    if invalid or len(short_lines):
        positions = np.array([number for number, _ in invalid], np.int64) - 1
        lines = np.concatenate([short_lines, passed[positions]])
        counts = np.concatenate([short_counts, np.array([count for _, count in invalid], np.int64)])
        order = np.argsort(lines, kind="stable")
        details = [
            "empty line" if counts[i] == 0 else f"{counts[i]} fields, expected {len(spec.columns)}"
            for i in order[:MAX_EXAMPLES_PER_REASON]
        ]
        bad.add_many("field_count", lines[order], details)
        passed = np.delete(passed, positions)
    return _clean(columns, passed, spec, num_lines, bad)


def _read_typed_or_bytes(text: bytes, spec: TableSpec) -> tuple[pa.Table, list[tuple[int, int]]]:
    """Fields with label and dense already parsed by pyarrow (the common case, and the fast one), or,
    when a value is not a number pyarrow reads or is `nan`/`inf`, all fields as bytes, which the rules
    of this module then check one by one."""
    try:
        table, invalid = _read_fields(text, spec, typed=True)
    except pa.ArrowInvalid:
        return _read_fields(text, spec, typed=False)
    for name in (spec.label, *spec.dense):
        values = table.column(name).combine_chunks()
        if values.null_count < len(values) and not pc.all(pc.is_finite(values)).as_py():
            return _read_fields(text, spec, typed=False)
    return table, invalid


def parse_batch(table: pa.Table, spec: TableSpec) -> ParsedTable:
    """Parses rows of a Parquet file; a row's "line" is its 1-based row number within `table`."""
    columns = {name: table.column(name).combine_chunks() for name in spec.needed}
    return _clean(columns, np.arange(1, table.num_rows + 1), spec, table.num_rows, BadTally())


def _numbers(column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values float64, is_number, is_missing) of a text or numeric column."""
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_boolean(column.type)
    ):
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        missing = np.isnan(values)
        return np.where(missing, 0.0, values), ~missing, missing
    column = column.cast(pa.binary())
    missing = pc.fill_null(pc.equal(pc.binary_length(column), 0), True).to_numpy(zero_copy_only=False)
    matches = pc.fill_null(pc.match_substring_regex(column, NUMBER_PATTERN), False)
    text = pc.utf8_trim(pc.if_else(matches, column, pa.scalar(None, pa.binary())).cast(pa.string()), " \t")
    values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    is_number = matches.to_numpy(zero_copy_only=False) & np.isfinite(values)
    return np.where(is_number, values, 0.0), is_number, missing


def _clean_dense(values: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        return np.log1p(np.maximum(values, 0.0)).astype(np.float32)
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def _text(column: pa.Array) -> pa.Array:
    """A categorical column as binary text: integers as their decimal digits."""
    if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
        column = pc.cast(pc.cast(column, pa.int64()), pa.string())
    return column.cast(pa.binary())


def _bags(column: pa.Array, separator: str) -> pa.Array:
    """list<uint64> of the hashed items of each field, empty items dropped."""
    column = pc.fill_null(_text(column), b"")
    parts = pc.split_pattern(column, pattern=separator)
    flat = pc.list_flatten(parts)
    keep = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(parts).to_numpy()[keep]
    lengths = np.bincount(parents, minlength=len(column))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    hashes = hash_values(pc.filter(flat, pa.array(keep)))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(hashes, pa.uint64()))


def _clean(
    columns: dict[str, pa.Array], lines: np.ndarray, spec: TableSpec, num_lines: int, bad: BadTally
) -> ParsedTable:
    """Validates label and dense values of rows at `lines`, tallies the bad ones, cleans the rest."""
    label_values, label_ok, _ = _numbers(columns[spec.label])
    if spec.label_threshold is None:
        label_ok &= (label_values == 0) | (label_values == 1)
        labels = label_values
    else:
        labels = label_values >= spec.label_threshold
    raw_label = columns[spec.label]
    bad_label = ~label_ok
    _tally(bad, "label", lines, bad_label, spec.label, raw_label)
    alive = ~bad_label
    dense_values = []
    first_bad_dense = np.full(len(lines), -1)
    for index, name in enumerate(spec.dense):
        values, is_number, missing = _numbers(columns[name])
        wrong = ~is_number & ~missing & (first_bad_dense < 0)
        first_bad_dense[wrong] = index
        dense_values.append(values)
    bad_dense = alive & (first_bad_dense >= 0)
    if bad_dense.any():
        rows = np.flatnonzero(bad_dense)
        details = []
        for row in rows[:MAX_EXAMPLES_PER_REASON]:
            name = spec.dense[first_bad_dense[row]]
            details.append(f"{name}={columns[name][int(row)].as_py()!r}")
        bad.add_many("dense", lines[rows], details)
    keep = np.flatnonzero(alive & ~bad_dense)
    everything = len(keep) == len(lines)
    arrays = {
        "line": pa.array(lines[keep].astype(np.int32)),
        "label": pa.array(labels[keep].astype(np.int8)),
    }
    for index, values in enumerate(dense_values):
        arrays[f"d{index}"] = pa.array(_clean_dense(values[keep], spec.dense_transform))
    separators = spec.separators
    for index, name in enumerate(spec.categorical):
        column = columns[name] if everything else columns[name].take(pa.array(keep))
        if name in separators:
            arrays[f"c{index}"] = _bags(column, separators[name])
        else:
            text = column if pa.types.is_dictionary(column.type) else _text(column)
            hashes, indices = hash_dictionary(text)
            arrays[f"c{index}"] = pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(hashes))
    return ParsedTable(pa.table(arrays), num_lines, bad)


def _tally(bad: BadTally, reason: str, lines: np.ndarray, mask: np.ndarray, name: str, raw: pa.Array) -> None:
    rows = np.flatnonzero(mask)
    if len(rows):
        details = [f"{name}={raw[int(row)].as_py()!r}" for row in rows[:MAX_EXAMPLES_PER_REASON]]
        bad.add_many(reason, lines[rows], details)
