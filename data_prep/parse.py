"""Parse one chunk of Criteo TSV text into validated, cleaned columns, and account for every bad line.

The fast path hands the whole chunk to pyarrow's CSV reader with typed columns (int8 label, int64
dense, binary categoricals) and decodes the hex categoricals with vectorized uint64 bit tricks. Only
when pyarrow rejects a value does the chunk take the slow path, which reads every column as bytes and
finds the offending lines one column at a time. Both paths accept exactly the same values: "integer"
means what pyarrow's int64 parser accepts (decimal, leading '-', surrounding spaces, 0x-prefixed hex).

A line is bad, for the first reason that applies, when it has:
  field_count  not 40 tab-separated fields (an empty line counts here)
  label        a label other than 0 or 1
  dense        an integer feature that is not an integer
  categorical  a categorical feature that is not 1 to 8 hex digits (empty means missing, which is fine)

Multi-hot (`multi_hot=True`, this project's extension of the Criteo layout): a categorical field holds a
bag of values separated by commas, each 1 to 8 hex digits, e.g. `0a1b2c3d,00ff12aa`; an empty field is
an empty bag. A bag with an empty or malformed value (`a,,b`, `a,`, `xyz`) makes the line bad
(categorical). Without `multi_hot`, a comma is just a character that is not a hex digit, so a bag is
a bad categorical, and parsing one-hot text takes exactly the path it always did.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from data_prep.schema import DENSE_COLUMNS, LABEL, NUM_FIELDS, RAW_COLUMNS, SPARSE_COLUMNS

BAD_ROW_REASONS = ("field_count", "label", "dense", "categorical")
MAX_EXAMPLES_PER_REASON = 5
DENSE_TRANSFORMS = ("log1p", "none")

_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_LOW_BITS = np.uint64(0x0101010101010101)
_LOWERCASE_BIT = np.uint64(0x2020202020202020)


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


def decode_hex_words(words: np.ndarray) -> np.ndarray:
    """Decodes uint64 words, each 8 ASCII hex digits (first digit in the lowest byte), to uint32.

    Bit-parallel instead of a per-character table lookup: a digit's nibble is its low 4 bits, plus 9
    for letters (bit 6 set), and three shift-or steps pack 8 nibbles into 32 bits. About 6x faster than
    a gather per character in numpy, which made hex decoding as costly as the CSV parse itself.
    """
    chars = words.byteswap() | _LOWERCASE_BIT
    nibbles = (chars & _LOW_NIBBLES) + ((chars >> np.uint64(6)) & _LOW_BITS) * np.uint64(9)
    nibbles = (nibbles | (nibbles >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    nibbles = (nibbles | (nibbles >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    nibbles = (nibbles | (nibbles >> np.uint64(16))) & np.uint64(0xFFFFFFFF)
    return nibbles.astype(np.uint32)


def _all_hex_digits(raw: np.ndarray) -> np.ndarray:
    """For uint8 data of 8-byte words, True per word whose 8 bytes are all 0-9, a-f or A-F."""
    is_digit = (raw - np.uint8(48)) < 10
    is_letter = ((raw | np.uint8(0x20)) - np.uint8(97)) < 6
    return (is_digit | is_letter).view(np.uint64) == _LOW_BITS


def _offsets_and_data(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.frombuffer(array.buffers()[1], np.int32)[array.offset : array.offset + len(array) + 1]
    data_buffer = array.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return offsets, data


def decode_hex_column(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Decodes a binary column of 0-8 hex digits to uint32 values (empty -> 0).

    Returns:
        (values, invalid): uint32 values and a bool mask of entries that are not 1 to 8 hex digits.
    """
    offsets, data = _offsets_and_data(array)
    lengths = np.diff(offsets)
    present = lengths != 0
    values = np.zeros(len(array), np.uint32)
    invalid = lengths > 8
    if ((lengths == 8) | ~present).all():
        # Real Criteo values are always 8 digits or missing, so the present values' bytes lie back to
        # back in the data buffer: view them as one uint64 word each, no gather needed.
        raw = np.ascontiguousarray(data[offsets[0] : offsets[-1]])
        words = raw.view(np.uint64)
        values[present] = decode_hex_words(words)
        invalid[present] = ~_all_hex_digits(raw)
        return values, invalid
    short = present & ~invalid
    starts = offsets[:-1][short]
    short_lengths = lengths[short]
    # Left-pad with '0' by gathering each value's bytes right-aligned in an 8-byte window.
    positions = starts[:, None] + short_lengths[:, None] - 8 + np.arange(8)
    in_value = np.arange(8) >= (8 - short_lengths[:, None])
    raw = np.where(in_value, data[np.clip(positions, 0, max(len(data) - 1, 0))], np.uint8(48))
    raw = np.ascontiguousarray(raw.astype(np.uint8)).ravel()
    values[short] = decode_hex_words(raw.view(np.uint64))
    invalid[short] = ~_all_hex_digits(raw)
    return values, invalid


def decode_hex_bags(array: pa.Array) -> tuple[pa.ListArray, np.ndarray]:
    """Decodes a binary column of comma-separated hex values into bags of uint32 values.

    An empty field is an empty bag; an empty value inside a non-empty field (`a,,b`, `a,`) is invalid.

    Returns:
        (bags, invalid): a `list<uint32>` array with one bag per entry, and a bool mask of the entries
        holding a value that is not 1 to 8 hex digits (their bags are incomplete: drop those rows).
    """
    parts = pc.split_pattern(array, ",")
    # Every value of every bag in one flat binary array: the one-hot decoder does the digit work.
    flat = parts.flatten()
    values, invalid_values = decode_hex_column(flat)
    parents = pc.list_parent_indices(parts).to_numpy()
    value_offsets, _ = _offsets_and_data(flat)
    empty_values = np.diff(value_offsets) == 0
    field_offsets, _ = _offsets_and_data(array)
    empty_fields = np.diff(field_offsets) == 0
    # split_pattern turns an empty field into one empty value: that is the empty bag, not an error.
    invalid_values |= empty_values & ~empty_fields[parents]
    invalid = np.bincount(parents[invalid_values], minlength=len(array)) > 0
    kept = ~empty_values
    lengths = np.bincount(parents[kept], minlength=len(array))
    offsets = np.zeros(len(array) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[kept])), invalid


def transform_dense(column: pa.Array, dense_transform: str) -> pa.Array:
    """Missing -> 0; with `log1p`, negatives -> 0 then log(1 + x); float32 either way."""
    filled = pc.fill_null(column, 0)
    if dense_transform == "log1p":
        filled = pc.log1p(pc.max_element_wise(filled, 0))
    return pc.cast(filled, pa.float32())


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


def _read_csv(data: bytes, column_types: dict[str, pa.DataType], invalid_rows: list) -> pa.Table:
    def on_invalid_row(row: pa_csv.InvalidRow) -> str:
        invalid_rows.append((row.number, row.actual_columns, row.text))
        return "skip"

    return pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(
            column_names=list(RAW_COLUMNS), use_threads=False, block_size=max(len(data), 1 << 20)
        ),
        parse_options=pa_csv.ParseOptions(
            delimiter="\t",
            quote_char=False,
            escape_char=False,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid_row,
        ),
        convert_options=pa_csv.ConvertOptions(
            column_types=column_types, null_values=[""], strings_can_be_null=False
        ),
    )


def _fast_types() -> dict[str, pa.DataType]:
    return {
        LABEL: pa.int8(),
        **{name: pa.int64() for name in DENSE_COLUMNS},
        **{name: pa.binary() for name in SPARSE_COLUMNS},
    }


def _cast_with_errors(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Casts a binary column the way the CSV reader would, nulling values it would reject.

    Only used on the slow path: the bad values are rare, so each failing value is found by casting
    the halves of the failing range until the culprits are isolated.
    """
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string(), safe=False))
    failed = np.zeros(len(column), bool)

    def mark(start: int, stop: int) -> None:
        try:
            pc.cast(text.slice(start, stop - start), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if stop - start == 1:
                failed[start] = True
                return
            middle = (start + stop) // 2
            mark(start, middle)
            mark(middle, stop)

    mark(0, len(column))
    cleaned = pc.if_else(pa.array(failed), pa.scalar(None, pa.string()), text)
    empty = pc.equal(cleaned, "")
    cleaned = pc.if_else(pc.fill_null(empty, False), pa.scalar(None, pa.string()), cleaned)
    return pc.cast(cleaned, target), failed


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
    empty_lines = _empty_line_numbers(data)
    invalid_rows: list = []
    slow_path = False
    try:
        table = _read_csv(data, _fast_types(), invalid_rows)
    except pa.ArrowInvalid:
        slow_path = True
        invalid_rows = []
        table = _read_csv(data, dict.fromkeys(RAW_COLUMNS, pa.binary()), invalid_rows)

    num_lines = table.num_rows + len(invalid_rows)
    invalid_numbers = np.array([number for number, _, _ in invalid_rows], np.int64)
    lines = np.setdiff1d(np.arange(1, num_lines + 1, dtype=np.int64), invalid_numbers, assume_unique=True)
    for number, actual_columns, text in invalid_rows:
        bad.add(
            number,
            "field_count",
            f"{actual_columns} fields, expected {NUM_FIELDS}: {_describe(text.encode())}",
        )

    rejected = np.zeros(table.num_rows, bool)
    if len(empty_lines):
        is_empty = np.isin(lines, empty_lines)
        for number in lines[is_empty]:
            bad.add(int(number), "field_count", f"empty line, expected {NUM_FIELDS} fields")
        rejected |= is_empty

    label_column = table.column(LABEL).combine_chunks()
    if slow_path:
        label_column, _ = _cast_with_errors(label_column, pa.int8())
    label_values = label_column.to_numpy(zero_copy_only=False)
    label_missing = np.asarray(label_column.is_null().to_numpy(zero_copy_only=False))
    bad_label = ~rejected & (
        label_missing | ((np.nan_to_num(label_values, nan=-1) != 0) & (label_values != 1))
    )
    raw_labels = table.column(LABEL).combine_chunks()
    for row in np.flatnonzero(bad_label):
        shown = raw_labels[row].as_py()
        shown = shown if isinstance(shown, bytes) else str(shown).encode() if shown is not None else b""
        bad.add(int(lines[row]), "label", f"label {_describe(shown)} is not 0 or 1")
    rejected |= bad_label

    dense_columns = []
    for name in DENSE_COLUMNS:
        column = table.column(name).combine_chunks()
        if slow_path:
            raw_column = column
            column, failed = _cast_with_errors(column, pa.int64())
            for row in np.flatnonzero(failed & ~rejected):
                bad.add(
                    int(lines[row]), "dense", f"{name}={_describe(raw_column[row].as_py())} is not an integer"
                )
            rejected |= failed
        dense_columns.append(transform_dense(column, dense_transform))

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

    labels = pa.array(np.nan_to_num(label_values, nan=0).astype(np.int8))
    result = pa.Table.from_arrays(
        [labels, *dense_columns, *sparse_columns], schema=intermediate_schema(multi_hot).remove(0)
    )
    if rejected.any():
        keep = ~rejected
        result = result.filter(pa.array(keep))
        lines = lines[keep]
    bad.examples.sort()
    return ParsedChunk(table=result, lines=lines, num_lines=num_lines, bad=bad)
