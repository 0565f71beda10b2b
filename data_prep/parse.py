r"""Parse one chunk of Criteo TSV text into validated, cleaned columns, and account for every bad line.

The format, as this module reads it (and as `tests/reference_parser.py` restates it, one line at a time):
  line         the bytes up to a `\n` (the last line of a file may lack it), less one trailing `\r` (CRLF)
  fields       the line split at every tab; there must be exactly 40: label, I1..I13, C1..C26
  integer      an optional `-` then one or more ASCII digits (leading zeros allowed), within int64;
               nothing else: no spaces, no `+`, no hex, no decimal point
  label        an integer equal to 0 or 1 (missing is bad)
  I1..I13      empty (missing) or an integer
  C1..C26      empty (missing, value 0) or 1 to 8 hex digits, either case, read as a 32-bit value

A line is bad, for the first reason that applies, when it has:
  field_count  not 40 fields (an empty line counts here)
  label        a label other than 0 or 1
  dense        an integer feature that is not an integer (the first such field is named)
  categorical  a categorical feature that is not 1 to 8 hex digits (the first such field is named)

Cleaning: a dense value becomes float32: missing -> 0, then with `log1p` negatives -> 0 and log(1 + x)
computed in float64, with `none` the value itself (through float64 either way, then rounded to float32).

Multi-hot (`multi_hot=True`, this project's extension of the Criteo layout): a categorical field holds a
bag of values separated by commas, each 1 to 8 hex digits, e.g. `0a1b2c3d,00ff12aa`; an empty field is
an empty bag. A bag with an empty or malformed value (`a,,b`, `a,`, `xyz`) makes the line bad
(categorical). Without `multi_hot`, a comma is just a character that is not a hex digit, so a bag is
a bad categorical, and parsing one-hot text takes exactly the path it always did.

One implementation of the rules. pyarrow's CSV reader splits the chunk into fields, every one read
as bytes (its own integer parser is more lenient than the rules above: spaces, `0x` hex); integers
are then validated and converted by `parse_integers`, categoricals by `data_prep.hex_fields`. When a
line has not 40 fields (pyarrow stops) or a `\r` stands alone (pyarrow would end a line there), the
lines and fields are counted with numpy instead and only the 40-field lines go to pyarrow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from data_prep.hex_fields import decode_hex_bags, decode_hex_column, offsets_and_data
from data_prep.schema import DENSE_COLUMNS, LABEL, NUM_FIELDS, RAW_COLUMNS, SPARSE_COLUMNS

BAD_ROW_REASONS = ("field_count", "label", "dense", "categorical")
MAX_EXAMPLES_PER_REASON = 5
DENSE_TRANSFORMS = ("log1p", "none")


class BadRowError(ValueError):
    """A bad line under `--on-bad-row error`; the message names the line and the reason."""


@dataclass
class BadRows:
    """Per-reason counts of rejected lines and the first few examples, as (line, reason, detail)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_ROW_REASONS, 0))
    examples: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, line: int, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        if sum(1 for _, r, _ in self.examples if r == reason) < MAX_EXAMPLES_PER_REASON:
            self.examples.append((line, reason, detail))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ParsedChunk:
    """The valid rows of a chunk, cleaned, plus the accounting of its lines.

    `lines` holds each kept row's 1-based line number within the chunk; `num_lines` counts every line,
    kept or rejected, so that num_lines == len(lines) + bad.total.
    """

    table: pa.Table
    lines: np.ndarray
    num_lines: int
    bad: BadRows


def intermediate_schema(multi_hot: bool = False) -> pa.Schema:
    """Parsed rows before encoding: raw 32-bit categorical values and the line number within the chunk.

    Args:
        multi_hot: categorical columns are bags, `list<uint32>`, instead of one `uint32` each.

    Returns:
        The schema of the parsed chunks that `dlrm-prep criteo` keeps in its work directory.
    """
    sparse_type = pa.list_(pa.uint32()) if multi_hot else pa.uint32()
    return pa.schema(
        [pa.field("line", pa.int32()), pa.field(LABEL, pa.int8())]
        + [pa.field(name, pa.float32()) for name in DENSE_COLUMNS]
        + [pa.field(name, sparse_type) for name in SPARSE_COLUMNS]
    )


def _log1p_float32(values: np.ndarray) -> np.ndarray:
    """float32(log1p(float64(v))) of int64 values, computed by pyarrow (the cleaning's one definition)."""
    # Unsafe casts: a safe int64 -> float cast refuses values beyond 2**53 (2**24 for float32), which
    # are valid integers here; rounding them to the nearest float is the intended cleaning.
    as_float = pc.cast(pa.array(values), pa.float64(), safe=False)
    return pc.cast(pc.log1p(as_float), pa.float32(), safe=False).to_numpy()


# Criteo's counts are mostly small: their log1p is looked up instead of computed, the table built with
# the very computation it replaces, so the cleaned values are the same bits.
_LOG1P_TABLE_SIZE = 1 << 16
_LOG1P_TABLE = _log1p_float32(np.arange(_LOG1P_TABLE_SIZE, dtype=np.int64))
_LOG1P_TABLE.flags.writeable = False


def clean_dense(values: np.ndarray, dense_transform: str) -> np.ndarray:
    """int64 values (missing already 0) to float32: with `log1p`, negatives -> 0 then log(1 + x), in
    float64; with `none`, the value itself through float64."""
    if dense_transform != "log1p":
        as_float = pc.cast(pa.array(values), pa.float64(), safe=False)
        return pc.cast(as_float, pa.float32(), safe=False).to_numpy()
    # Negatives clip to index 0, and log1p(max(x, 0)) is log1p(0) = 0 for them.
    cleaned = _LOG1P_TABLE[np.clip(values, 0, _LOG1P_TABLE_SIZE - 1)]
    large = values >= _LOG1P_TABLE_SIZE
    if large.any():
        cleaned[large] = _log1p_float32(values[large])
    return cleaned


def _empty_line_numbers(data: bytes) -> np.ndarray:
    """1-based numbers of the empty lines in `data` (pyarrow would read them as rows of empty fields)."""
    if not (data.startswith((b"\n", b"\r\n")) or b"\n\n" in data or b"\n\r\n" in data):
        return np.zeros(0, np.int64)
    buffer = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buffer == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    widths = ends - starts
    carriage_return_only = (widths == 1) & (buffer[np.minimum(starts, len(buffer) - 1)] == 13)
    return np.flatnonzero((widths == 0) | carriage_return_only) + 1


def _read_binary_csv(data: bytes) -> pa.Table:
    """Every field as bytes, no conversion: pyarrow raises on a line without 40 fields."""
    return pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(
            column_names=list(RAW_COLUMNS), use_threads=False, block_size=max(len(data), 1 << 20)
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=False
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(RAW_COLUMNS, pa.binary()), strings_can_be_null=False
        ),
    )


def _has_lone_carriage_return(data: bytes) -> bool:
    r"""True when a `\r` is not part of a line ending: pyarrow would end a line there."""
    # `in` and `count` are single C passes over the chunk (memchr-fast), a few percent of the parse.
    if b"\r" not in data:
        return False
    return data.count(b"\r") - data.count(b"\r\n") - data.endswith(b"\r") > 0


def parse_integers(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads a binary column of integers by the module's rules, without pyarrow's leniency.

    Returns:
        (values, present, invalid): int64 values, 0 where missing (empty) or invalid, a bool mask of
        the non-empty entries and one of the entries that are not integers.
    """
    offsets, data = offsets_and_data(array)
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    # Non-digit bytes per value, from a running count over the column's bytes (one pass, no gather).
    non_digit = np.zeros(len(data) + 1, np.int32)
    np.cumsum((data - np.uint8(48)) > 9, out=non_digit[1:])
    non_digits = non_digit[offsets[1:]] - non_digit[starts]
    present = lengths > 0
    # A leading minus only matters for the values with exactly one non-digit byte (few): look only there.
    one_non_digit = np.flatnonzero(non_digits == 1)
    minus = np.zeros(len(array), bool)
    minus[one_non_digit] = data[starts[one_non_digit]] == ord("-")
    valid = ~present | (non_digits == 0) | (minus & (lengths >= 2))
    # Up to 18 digits always fits in int64; longer ones (rare: leading zeros or a real overflow) are
    # checked one by one.
    for row in np.flatnonzero(valid & (lengths - minus >= 19)):
        value = int(data[starts[row] : offsets[row + 1]].tobytes())
        valid[row] = -(1 << 63) <= value < (1 << 63)
    kept = pc.if_else(pa.array(valid & present), array, pa.scalar(None, array.type))
    values = pc.fill_null(pc.cast(kept, pa.int64()), 0).to_numpy()
    return values, present, ~valid


def _concat_binary(arrays: list[pa.Array]) -> pa.Array:
    """One `large_binary` array of the values of several binary arrays, in order (one copy of the bytes).

    Columns are validated together because the per-value work is the same and one call per column
    costs more in numpy and pyarrow call overhead than the values themselves.
    """
    parts = [offsets_and_data(array) for array in arrays]
    datas = [data[offsets[0] : offsets[-1]] for offsets, data in parts]
    bases = np.cumsum([0] + [len(data) for data in datas])
    offsets = np.concatenate(
        [np.zeros(1, np.int64)]
        + [o[1:].astype(np.int64) - o[0] + base for (o, _), base in zip(parts, bases, strict=False)]
    )
    data = np.concatenate(datas) if datas else np.zeros(0, np.uint8)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, buffers)


@dataclass
class _Fields:
    """The raw fields, as bytes, of a chunk's lines that have 40 of them.

    `table` has one row per such line; `lines` gives each row's 1-based line number in the chunk, and
    `num_lines` counts every line of the chunk.
    """

    table: pa.Table
    lines: np.ndarray
    num_lines: int


def _split_fields(data: bytes, bad: BadRows) -> _Fields:
    r"""Splits a chunk into fields, recording the lines without 40 of them as `field_count` bad rows.

    pyarrow's reader does it fastest, and agrees with the format when every line has 40 fields and no
    `\r` stands alone; otherwise (it raises, or would split a line at that `\r`) the lines and fields
    are counted with numpy and only the 40-field lines are handed to pyarrow.
    """
    if not data:
        return _Fields(_empty_raw_table(), np.zeros(0, np.int64), 0)
    if not _has_lone_carriage_return(data):
        try:
            table = _read_binary_csv(data)
        except pa.ArrowInvalid:
            pass
        else:
            # pyarrow reads an empty line as a row of empty fields: it has 1 field, not 40.
            lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
            # Such a row has an empty label; when no row has one, there is no empty line and the
            # byte search for them (as costly as validating all integers) is skipped.
            label_offsets, _ = offsets_and_data(table.column(LABEL).combine_chunks())
            has_empty_label = (label_offsets[1:] == label_offsets[:-1]).any()
            empty_lines = _empty_line_numbers(data) if has_empty_label else np.zeros(0, np.int64)
            if len(empty_lines):
                for number in empty_lines:
                    bad.add(int(number), "field_count", f"empty line, expected {NUM_FIELDS} fields")
                keep = ~np.isin(lines, empty_lines)
                table, lines = table.filter(pa.array(keep)), lines[keep]
            return _Fields(table, lines, len(lines) + len(empty_lines))
    return _fields_counted(data, bad)


def _fields_counted(data: bytes, bad: BadRows) -> _Fields:
    """Counts lines and fields with numpy, then reads the 40-field lines as bytes."""
    buffer = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buffer == 10)
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(buffer))
    starts = np.concatenate([[0], newlines + 1])[: len(ends)]
    # One trailing carriage return per line is part of its line ending.
    carriage = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 13)
    content_ends = ends - carriage
    tabs = np.flatnonzero(buffer == 9)
    fields = np.searchsorted(tabs, content_ends) - np.searchsorted(tabs, starts) + 1
    good = fields == NUM_FIELDS
    for index in np.flatnonzero(~good):
        text = data[starts[index] : content_ends[index]]
        detail = (
            f"empty line, expected {NUM_FIELDS} fields"
            if not text
            else f"{fields[index]} fields, expected {NUM_FIELDS}: {_describe(text)}"
        )
        bad.add(int(index) + 1, "field_count", detail)
    lines = np.flatnonzero(good) + 1
    if not good.any():
        return _Fields(_empty_raw_table(), lines, len(ends))
    # The 40-field lines alone, each ending in one newline. Any other carriage return is inside a
    # field, which it makes invalid either way: it becomes a NUL byte, at which pyarrow ends no line.
    keep = np.repeat(good, np.diff(np.append(starts, len(buffer))))
    keep[content_ends[good & carriage]] = False
    clean = buffer[keep]
    clean[clean == 13] = 0
    clean = clean.tobytes()
    if not clean.endswith(b"\n"):
        clean += b"\n"
    return _Fields(_read_binary_csv(clean), lines, len(ends))


def _empty_raw_table() -> pa.Table:
    return pa.table({name: pa.array([], pa.binary()) for name in RAW_COLUMNS})


def _describe(value: bytes | None) -> str:
    text = (value or b"").decode("utf-8", "replace")
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _categorical_detail(name: str, value: bytes | None, multi_hot: bool) -> str:
    if multi_hot:
        return f"{name}={_describe(value)} is not a comma-separated list of 1 to 8 hex digits"
    hint = " (a comma-separated bag needs --multi-hot)" if value and b"," in value else ""
    return f"{name}={_describe(value)} is not 1 to 8 hex digits{hint}"


def parse_chunk(data: bytes, dense_transform: str = "log1p", multi_hot: bool = False) -> ParsedChunk:
    """Parses whole lines of Criteo TSV (the last one may lack its newline; CRLF is accepted).

    Args:
        data: the chunk's bytes, starting at a line start and ending at a line end.
        dense_transform: `log1p` (missing/negative -> 0, then log1p) or `none` (missing -> 0).
        multi_hot: read each categorical field as a comma-separated bag (see the module docstring).

    Returns:
        The valid rows (`intermediate_schema` minus `line`) with their line numbers and the bad-row tally.
    """
    bad = BadRows()
    fields = _split_fields(data, bad)
    table, lines = fields.table, fields.lines

    raw_labels = table.column(LABEL).combine_chunks()
    label_values, label_present, label_invalid = parse_integers(raw_labels)
    bad_label = label_invalid | ~label_present | ((label_values != 0) & (label_values != 1))
    for row in np.flatnonzero(bad_label):
        bad.add(int(lines[row]), "label", f"label {_describe(raw_labels[row].as_py())} is not 0 or 1")
    rejected = bad_label.copy()

    raw_dense = [table.column(name).combine_chunks() for name in DENSE_COLUMNS]
    dense_values, _, dense_invalid = parse_integers(_concat_binary(raw_dense))
    dense_values = clean_dense(dense_values, dense_transform).reshape(len(DENSE_COLUMNS), -1)
    dense_invalid = dense_invalid.reshape(len(DENSE_COLUMNS), -1)
    for name, raw_column, failed in zip(DENSE_COLUMNS, raw_dense, dense_invalid, strict=True):
        for row in np.flatnonzero(failed & ~rejected):
            bad.add(
                int(lines[row]), "dense", f"{name}={_describe(raw_column[row].as_py())} is not an integer"
            )
        rejected |= failed
    dense_columns = [pa.array(column) for column in dense_values]

    sparse_columns = []
    for name in SPARSE_COLUMNS:
        column = table.column(name).combine_chunks()
        if multi_hot:
            values, invalid = decode_hex_bags(column)
        else:
            decoded, invalid = decode_hex_column(column)
            values = pa.array(decoded)
        for row in np.flatnonzero(invalid & ~rejected):
            detail = _categorical_detail(name, column[row].as_py(), multi_hot)
            bad.add(int(lines[row]), "categorical", detail)
        rejected |= invalid
        sparse_columns.append(values)

    labels = pa.array(np.where(bad_label, 0, label_values).astype(np.int8))
    result = pa.Table.from_arrays(
        [labels, *dense_columns, *sparse_columns], schema=intermediate_schema(multi_hot).remove(0)
    )
    if rejected.any():
        keep = ~rejected
        result = result.filter(pa.array(keep))
        lines = lines[keep]
    bad.examples.sort()
    return ParsedChunk(table=result, lines=lines, num_lines=fields.num_lines, bad=bad)
