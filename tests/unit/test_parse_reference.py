"""Differential tests: `parse_chunk` against the one-line-at-a-time reference, on generated text.

Every line must agree: kept or rejected, the first reason that applies (and the field it names), and
every cleaned value. `make fuzz` runs the same properties with many more examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from data_prep.parse import MAX_EXAMPLES_PER_REASON, parse_chunk
from tests import reference_parser as reference
from tests.criteo_strategies import criteo_text, malformed_line, valid_line

MODES = [("log1p", False), ("none", False), ("log1p", True)]


def expected_examples(lines: list[reference.Line]) -> list[tuple[int, str, str | None]]:
    kept: list[tuple[int, str, str | None]] = []
    for reason in reference.REASONS:
        numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.reason == reason]
        kept.extend((number, reason, line.column) for number, line in numbered[:MAX_EXAMPLES_PER_REASON])
    return sorted(kept)


def expected_row(line: reference.Line) -> dict:
    row = {"label": line.label}
    row.update({f"I{index + 1}": value for index, value in enumerate(line.dense)})
    row.update({f"C{index + 1}": value for index, value in enumerate(line.sparse)})
    return row


def assert_matches_reference(data: bytes, dense_transform: str, multi_hot: bool) -> None:
    parsed = parse_chunk(data, dense_transform, multi_hot)
    expected = reference.parse_text(data, dense_transform, multi_hot)
    assert parsed.num_lines == len(expected)
    assert parsed.lines.tolist() == [
        number for number, line in enumerate(expected, start=1) if line.reason is None
    ]
    assert parsed.bad.counts == {
        reason: sum(line.reason == reason for line in expected) for reason in reference.REASONS
    }
    got = [(line, reason, detail) for line, reason, detail in parsed.bad.examples]
    wanted = expected_examples(expected)
    assert [(line, reason) for line, reason, _ in got] == [(line, reason) for line, reason, _ in wanted]
    for (_, _, detail), (_, _, field) in zip(got, wanted, strict=True):
        if field is not None:
            assert detail.startswith(f"{field}="), (detail, field)
    assert parsed.table.to_pylist() == [expected_row(line) for line in expected if line.reason is None]


@pytest.mark.parametrize(("dense_transform", "multi_hot"), MODES)
@given(data=st.data())
def test_parse_chunk_agrees_with_the_reference_on_every_line(dense_transform, multi_hot, data):
    assert_matches_reference(data.draw(criteo_text(multi_hot)), dense_transform, multi_hot)


@pytest.mark.parametrize("multi_hot", [False, True])
@given(data=st.data())
def test_no_valid_line_is_ever_rejected(multi_hot, data):
    text = data.draw(criteo_text(multi_hot, bad_share=0))
    parsed = parse_chunk(text, multi_hot=multi_hot)
    assert parsed.bad.total == 0
    assert parsed.table.num_rows == parsed.num_lines == len(reference.split_lines(text))


@pytest.mark.parametrize("multi_hot", [False, True])
@given(data=st.data())
def test_one_bad_line_costs_only_itself(multi_hot, data):
    """The reported defect: one malformed line made its chunk reject valid rows with missing values."""
    valid = data.draw(st.lists(valid_line(multi_hot), min_size=1, max_size=20))
    bad = data.draw(malformed_line(multi_hot))
    position = data.draw(st.integers(0, len(valid)))
    lines = [*valid[:position], bad, *valid[position:]]
    parsed = parse_chunk(b"\n".join(lines) + b"\n", multi_hot=multi_hot)
    kept_valid = [number for number in parsed.lines.tolist() if number != position + 1]
    assert len(kept_valid) == len(valid)


def test_real_sample_with_malformed_lines_keeps_every_valid_row(criteo_sample):
    """The real Criteo sample (most rows miss a dense value), 100 bad lines of six kinds mixed in."""
    good = criteo_sample.read_bytes().splitlines()
    bad_kinds = [
        b"1\t2\t3",  # too few fields
        good[0] + b"\textra",  # too many
        b"1\t" + b"\t".join([b"x1"] + [b""] * 12) + b"\t" + b"\t".join([b""] * 26),  # dense not an integer
        b"\t".join([b"1", *[b""] * 13, b"zzzz", *[b""] * 25]),  # categorical not hex
        b"\t".join([b"7", *good[1].split(b"\t")[1:]]),  # label
        b"\t".join([b"0", *[b""] * 13, b"\xff\xfe\xfd", *[b""] * 25]),  # not UTF-8
    ]
    rng = np.random.default_rng(0)
    lines = list(good)
    for index, position in enumerate(sorted(rng.choice(len(good), 100, replace=False), reverse=True)):
        lines.insert(int(position), bad_kinds[index % len(bad_kinds)])
    text = (
        b"\r\n".join(lines[:4000]) + b"\n" + b"\n".join(lines[4000:])
    )  # CRLF on some rows, no final newline
    parsed = parse_chunk(text)
    assert parsed.table.num_rows == len(good)
    assert parsed.bad.total == 100
    assert parsed.bad.counts == {"field_count": 34, "label": 16, "dense": 17, "categorical": 33}
    assert_matches_reference(text, "log1p", False)
