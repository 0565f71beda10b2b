"""Hypothesis strategies for `dlrm-prep table` inputs: tables of odd shapes and every kind of bad row.

A case is a schema (0-3 dense columns, 1-3 categorical ones or ~100, multi-hot bags, unused columns, any
column order), a format (csv, tsv, parquet), 1-2 files of rows, and the options (header or names, CRLF,
hash or vocabulary, ordered or random split, chunk sizes that put boundaries mid-line). Row values come
from a `random.Random` seeded by one hypothesis draw per file (drawing each field through hypothesis
is slow); hypothesis still picks the shape and shrinks a failure.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

CATEGORICAL_VALUES = [
    "",
    "a",
    "b",
    "7",
    "007",
    "héllo",
    "日本",
    "x,y",
    'say "hi"',
    " a",
    "a b",
    "'",
    "z;q",
    "-1",
]
NUMBERS = ["0", "1", "2.5", "-3", "1e3", ".5", "5.", "+4", "007", "1E-2", "123456789", " 5", "5 ", "\t-1 "]
BAD_NUMBERS = [
    "abc",
    "1.2.3",
    "  ",
    "5 5",
    "- 5",
    "NA",
    "Infinity",
    '"',
    "nan",
    "inf",
    "0x10",
    "1e",
    "-",
    "1e400",
    "\u0661",
]  # the last: an Arabic-Indic digit one
LABELS = ["0", "1", "1.0", "0.0", "01"]
RATINGS = ["1", "2", "3", "3.5", "4", "5", "4.0"]
BAD_LABELS = ["", "2", "-1", "yes", " 1"]
BAG_ITEMS = ["Action", "Comedy", "é", "x", "7", ""]


def _field_text(value: str, fmt: str, delimiter: str, rng: random.Random) -> str:
    if fmt != "csv":
        return value
    if delimiter in value or '"' in value or rng.random() < 0.2:
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def table_case(draw, wide: bool = False, formats: tuple[str, ...] = ("csv", "tsv", "parquet")) -> dict:
    fmt = draw(st.sampled_from(formats))
    num_dense = draw(st.integers(0, 3))
    num_categorical = 100 if wide else draw(st.integers(1, 3))
    multi_hot_count = 0 if wide else draw(st.integers(0, num_categorical))
    dense = [f"d{index}" for index in range(num_dense)]
    categorical = [f"c{index}" for index in range(num_categorical)]
    separator = draw(st.sampled_from(["|", ";"]))
    separators = {name: separator for name in categorical[:multi_hot_count]}
    unused = ["unused"] if draw(st.booleans()) else []
    columns = ["y", *dense, *categorical, *unused]
    draw(st.randoms(use_true_random=False)).shuffle(columns)
    threshold = draw(st.sampled_from([None, 4.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    num_files = draw(st.integers(1, 2))
    max_rows = 6 if wide else 25
    files = []
    for _ in range(num_files):
        num_rows = draw(st.integers(0, max_rows))
        bad_share = draw(st.sampled_from([0.0, 0.1, 0.4]))
        rows = []
        for _ in range(num_rows):
            values = {}
            for name in columns:
                if name == "y":
                    values[name] = rng.choice(RATINGS if threshold else LABELS)
                elif name in dense:
                    values[name] = rng.choice(["", *NUMBERS]) if rng.random() < 0.9 else ""
                elif name in separators:
                    items = [rng.choice(BAG_ITEMS) for _ in range(rng.randint(0, 3))]
                    values[name] = separator.join(items)
                else:
                    values[name] = rng.choice(CATEGORICAL_VALUES[: rng.randint(1, len(CATEGORICAL_VALUES))])
            kind = "good"
            if rng.random() < bad_share:
                kinds = (
                    ["label", "dense", "field_count", "empty", "quote", "carriage"]
                    if fmt != "parquet"
                    else ["label", "dense"]
                )
                kind = rng.choice(kinds)
                if kind == "label":
                    values["y"] = rng.choice(BAD_LABELS)
                elif kind == "dense" and dense:
                    values[rng.choice(dense)] = rng.choice(BAD_NUMBERS)
            if fmt == "tsv":
                values = {k: v.replace("\t", " ") for k, v in values.items()}
            rows.append((kind, values))
        files.append(rows)
    return {
        "format": fmt,
        "columns": columns,
        "dense": dense,
        "categorical": categorical,
        "separators": separators,
        "threshold": threshold,
        "files": files,
        "text_seed": seed,
        "header": draw(st.booleans()),
        "crlf": draw(st.booleans()),
        "final_newline": draw(st.booleans()),
        "null_missing": draw(st.booleans()),
        "encoding": draw(
            st.sampled_from(
                [
                    {"hash_buckets": 1},
                    {"hash_buckets": 7},
                    {"hash_buckets": 1000},
                    {"vocab_min_count": 1},
                    {"vocab_min_count": 2},
                ]
            )
        ),
        "split": draw(st.sampled_from(["ordered", "random"])),
        "fractions": draw(st.sampled_from([(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)])),
        "seed": draw(st.integers(0, 3)),
        "dense_transform": draw(st.sampled_from(["log1p", "none"])),
        "chunk_bytes": draw(st.sampled_from([40, 150, 1 << 20])),
        "rows_per_shard": draw(st.sampled_from([3, 1 << 20])),
    }


def render_text(case: dict, rows: list[tuple[str, dict]]) -> bytes:
    """A file's bytes: the header (if any), then each row as a line, bad rows broken as their kind says."""
    rng = random.Random(case["text_seed"])
    fmt, delimiter = case["format"], "," if case["format"] == "csv" else "\t"
    ending = "\r\n" if case["crlf"] else "\n"
    lines = []
    if case["header"]:
        lines.append(delimiter.join(case["columns"]))
    for kind, values in rows:
        fields = [_field_text(values[name], fmt, delimiter, rng) for name in case["columns"]]
        if kind == "field_count":
            fields = fields[:-1] if rng.random() < 0.5 else [*fields, "extra"]
        line = delimiter.join(fields)
        if kind == "empty":
            line = ""
        elif kind == "quote" and fmt == "csv":
            line = '"' + line
        elif kind == "carriage":
            line = line + "\r" + "x"
        lines.append(line)
    text = ending.join(lines)
    if lines and case["final_newline"]:
        text += ending
    return text.encode("utf-8")
