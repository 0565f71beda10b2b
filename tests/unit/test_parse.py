"""Parsing one chunk: values, missing fields, line endings, and every bad-row reason."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from data_prep.hex_fields import decode_hex_column
from data_prep.parse import parse_chunk
from tests.conftest import tsv_line


def test_hex_decode_matches_python_int_for_all_lengths_and_cases():
    texts = ["68fd1e64", "ABCDEF12", "ab", "0", "ffffffff", "", "1234567"]
    values, invalid = decode_hex_column(pa.array([t.encode() for t in texts], pa.binary()))
    assert values.tolist() == [int(t, 16) if t else 0 for t in texts]
    assert not invalid.any()


@pytest.mark.parametrize("text", ["0000000g", "12345:78", "123456789", "zz", "\x1012345", "-1", " 1"])
def test_hex_decode_rejects_non_hex(text):
    _, invalid = decode_hex_column(pa.array([text.encode(), b"00000001"], pa.binary()))
    assert invalid.tolist() == [True, False]


def test_dense_log1p_missing_and_negative_become_zero():
    dense = ["1382", "", "-2", "0", *["5"] * 9]
    parsed = parse_chunk((tsv_line(dense=dense) + "\n").encode())
    row = parsed.table.to_pylist()[0]
    assert row["I1"] == pytest.approx(math.log1p(1382), rel=1e-6)
    assert row["I2"] == 0.0 and row["I3"] == 0.0 and row["I4"] == 0.0


def test_dense_transform_none_keeps_raw_values():
    parsed = parse_chunk((tsv_line(dense=["-2", "", *["7"] * 11]) + "\n").encode(), dense_transform="none")
    row = parsed.table.to_pylist()[0]
    assert (row["I1"], row["I2"], row["I3"]) == (-2.0, 0.0, 7.0)


def test_crlf_and_missing_final_newline_are_valid():
    data = (tsv_line() + "\r\n" + tsv_line(label="0")).encode()
    parsed = parse_chunk(data)
    assert parsed.bad.total == 0
    assert parsed.table.column("label").to_pylist() == [1, 0]
    assert parsed.table.column("C26").to_pylist() == [0x0A0B0C0D] * 2


def test_missing_categorical_is_zero_and_valid():
    parsed = parse_chunk((tsv_line(sparse=[""] * 26) + "\n").encode())
    assert parsed.bad.total == 0
    assert parsed.table.column("C1").to_pylist() == [0]


@pytest.mark.parametrize(
    ("bad_line", "reason", "detail"),
    [
        ("1\t2\t3", "field_count", "3 fields, expected 40"),
        (tsv_line() + "\textra", "field_count", "41 fields"),
        ("", "field_count", "empty line"),
        (tsv_line(label="2"), "label", "label '2' is not 0 or 1"),
        (tsv_line(label=""), "label", "is not 0 or 1"),
        (tsv_line(dense=["abc"] + ["1"] * 12), "dense", "I1='abc' is not an integer"),
        (tsv_line(dense=["1"] * 12 + ["1.5"]), "dense", "I13='1.5'"),
        (tsv_line(sparse=["xyz"] + ["00000001"] * 25), "categorical", "C1='xyz' is not 1 to 8 hex digits"),
        (tsv_line(sparse=["00000001"] * 25 + ["123456789"]), "categorical", "C26="),
    ],
)
def test_each_bad_row_reason_is_counted_with_its_line(bad_line, reason, detail):
    data = "\n".join([tsv_line(), bad_line, tsv_line(label="0")]).encode() + b"\n"
    parsed = parse_chunk(data)
    assert parsed.num_lines == 3
    assert parsed.bad.counts[reason] == 1
    assert parsed.bad.total == 1
    assert parsed.lines.tolist() == [1, 3]
    assert parsed.table.column("label").to_pylist() == [1, 0]
    ((line, got_reason, got_detail),) = parsed.bad.examples
    assert (line, got_reason) == (2, reason)
    assert detail in got_detail


def test_a_bad_line_leaves_the_other_rows_and_their_missing_values_alone():
    good = tsv_line(dense=["1382", "", "-5", *["1"] * 10])
    data = "\n".join([good, tsv_line(dense=["oops"] + ["1"] * 12), good]).encode()
    parsed = parse_chunk(data)
    assert parsed.bad.counts == {"field_count": 0, "label": 0, "dense": 1, "categorical": 0}
    first = parsed.table.to_pylist()[0]
    assert first["I1"] == pytest.approx(math.log1p(1382), rel=1e-6)
    assert first["I2"] == 0.0 and first["I3"] == 0.0
    assert parsed.lines.tolist() == [1, 3]


@pytest.mark.parametrize("value", ["0x10", " 5", "5 ", "+5", "1e3", "9223372036854775808"])
def test_integers_are_decimal_only_whatever_pyarrow_would_accept(value):
    parsed = parse_chunk((tsv_line(dense=[value] + ["1"] * 12) + "\n").encode())
    assert parsed.bad.counts["dense"] == 1
    assert parsed.bad.examples[0][2].startswith("I1=")


def test_integers_at_the_int64_limits_and_with_leading_zeros_are_kept():
    dense = ["9223372036854775807", "-9223372036854775808", "0000000000000000000000007", *["1"] * 10]
    parsed = parse_chunk((tsv_line(dense=dense) + "\n").encode(), dense_transform="none")
    row = parsed.table.to_pylist()[0]
    assert parsed.bad.total == 0
    assert (row["I1"], row["I2"], row["I3"]) == (float(np.float32(2.0**63)), -(2.0**63), 7.0)


def test_a_lone_carriage_return_does_not_split_a_line():
    data = (tsv_line(sparse=["0a\r0b"] + ["01"] * 25) + "\n" + tsv_line()).encode()
    parsed = parse_chunk(data)
    assert parsed.num_lines == 2
    assert parsed.bad.counts["categorical"] == 1
    assert parsed.lines.tolist() == [2]


def test_non_utf8_bytes_are_a_bad_row_not_a_crash():
    data = b"1\t\xff\xfe\n" + tsv_line().encode()
    parsed = parse_chunk(data)
    assert (parsed.num_lines, parsed.bad.counts["field_count"], parsed.table.num_rows) == (2, 1, 1)


def test_an_empty_chunk_has_no_lines():
    parsed = parse_chunk(b"")
    assert (parsed.num_lines, parsed.table.num_rows, parsed.bad.total) == (0, 0, 0)


def test_accounting_holds_on_a_mixed_chunk():
    lines = [tsv_line(), "", "a\tb", tsv_line(label="7"), tsv_line(sparse=["q"] * 26), tsv_line()]
    parsed = parse_chunk("\n".join(lines).encode())
    assert parsed.num_lines == len(lines)
    assert parsed.num_lines == parsed.table.num_rows + parsed.bad.total
    assert np.array_equal(parsed.lines, [1, 6])
