"""A deliberately plain reference for the Criteo TSV format and `dlrm-prep criteo`'s output.

Written from the format's definition (the rules in `data_prep/parse.py`'s docstring), one line at a
time in plain Python, sharing no code with `data_prep`: the differential tests check the vectorized
pipeline against it line by line. Slow and obvious on purpose; never use it for real data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
HEX_DIGITS = b"0123456789abcdefABCDEF"
REASONS = ("field_count", "label", "dense", "categorical")


@dataclass
class Line:
    """What the format says of one line: the first reason it is bad (and the column), or its values."""

    reason: str | None = None
    column: str | None = None
    label: int = 0
    dense: list[float] = field(default_factory=list)
    sparse: list = field(default_factory=list)


def split_lines(data: bytes) -> list[bytes]:
    """Lines end at `\\n`; the last may lack it; one trailing `\\r` of a line is part of its ending."""
    if not data:
        return []
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def is_integer(text: bytes) -> bool:
    digits = text[1:] if text.startswith(b"-") else text
    if not digits or any(byte not in b"0123456789" for byte in digits):
        return False
    return -(2**63) <= int(text) < 2**63


def is_hex_value(text: bytes) -> bool:
    return 1 <= len(text) <= 8 and all(byte in HEX_DIGITS for byte in text)


def clean_dense(text: bytes, dense_transform: str) -> float:
    value = float(int(text)) if text else 0.0
    if dense_transform == "log1p":
        value = math.log1p(max(value, 0.0))
    return float(np.float32(value))


def parse_line(line: bytes, dense_transform: str = "log1p", multi_hot: bool = False) -> Line:
    fields = line.split(b"\t")
    if len(fields) != NUM_FIELDS:
        return Line(reason="field_count")
    label, dense, sparse = fields[0], fields[1 : 1 + NUM_DENSE], fields[1 + NUM_DENSE :]
    if not is_integer(label) or int(label) not in (0, 1):
        return Line(reason="label")
    for index, text in enumerate(dense):
        if text and not is_integer(text):
            return Line(reason="dense", column=f"I{index + 1}")
    values = []
    for index, text in enumerate(sparse):
        if multi_hot:
            bag = text.split(b",") if text else []
            if not all(is_hex_value(value) for value in bag):
                return Line(reason="categorical", column=f"C{index + 1}")
            values.append([int(value, 16) for value in bag])
        else:
            if text and not is_hex_value(text):
                return Line(reason="categorical", column=f"C{index + 1}")
            values.append(int(text, 16) if text else 0)
    return Line(label=int(label), dense=[clean_dense(text, dense_transform) for text in dense], sparse=values)


def parse_text(data: bytes, dense_transform: str = "log1p", multi_hot: bool = False) -> list[Line]:
    return [parse_line(line, dense_transform, multi_hot) for line in split_lines(data)]


def split_of_lines(layout: str, file_index: int, num_files: int, num_lines: int) -> list[str]:
    """The split of each line of one input file (1-based line i is element i - 1)."""
    if layout == "terabyte":
        if file_index < num_files - 1:
            return ["train"] * num_lines
        half = num_lines // 2
        return ["val"] * half + ["test"] * (num_lines - half)
    train = num_lines * 6 // 7
    val = (num_lines - train) // 2
    return ["train"] * train + ["val"] * val + ["test"] * (num_lines - train - val)


@dataclass
class Prepared:
    """What `dlrm-prep criteo` must write for some inputs: rows per split, bad counts, bad lines."""

    rows: dict[str, list[dict]]
    bad_counts: dict[str, int]
    bad_lines: list[tuple[str, str, str | None]]  # (file:line, reason, field)
    num_embeddings: list[int]


def prepare(
    files: list[tuple[str, bytes]],
    layout: str,
    hash_buckets: list[int] | None = None,
    vocab_min_count: int = 0,
    dense_transform: str = "log1p",
    multi_hot: bool = False,
) -> Prepared:
    """The reference preparation of (file name, decompressed bytes) inputs, in time order."""
    parsed: dict[str, list[tuple[Line]]] = {"train": [], "val": [], "test": []}
    bad_counts = dict.fromkeys(REASONS, 0)
    bad_lines = []
    for file_index, (name, data) in enumerate(files):
        lines = parse_text(data, dense_transform, multi_hot)
        splits = split_of_lines(layout, file_index, len(files), len(lines))
        for number, (line, split) in enumerate(zip(lines, splits, strict=True), start=1):
            if line.reason is not None:
                bad_counts[line.reason] += 1
                bad_lines.append((f"{name}:{number}", line.reason, line.column))
            else:
                parsed[split].append(line)
    if hash_buckets is not None:
        buckets = hash_buckets if len(hash_buckets) == NUM_SPARSE else hash_buckets * NUM_SPARSE

        def encode(column: int, value: int) -> int:
            return value % buckets[column]

        num_embeddings = list(buckets)
    else:
        counts = [dict() for _ in range(NUM_SPARSE)]
        for line in parsed["train"]:
            for column, value in enumerate(line.sparse):
                for item in value if multi_hot else [value]:
                    counts[column][item] = counts[column].get(item, 0) + 1
        vocabularies = [
            {
                value: position + 1
                for position, value in enumerate(sorted(v for v, c in column.items() if c >= vocab_min_count))
            }
            for column in counts
        ]

        def encode(column: int, value: int) -> int:
            return vocabularies[column].get(value, 0)

        num_embeddings = [len(vocabulary) + 1 for vocabulary in vocabularies]
    rows = {}
    for split, lines in parsed.items():
        rows[split] = []
        for line in lines:
            row = {"label": line.label}
            row.update({f"I{index + 1}": value for index, value in enumerate(line.dense)})
            for column, value in enumerate(line.sparse):
                encoded = [encode(column, item) for item in value] if multi_hot else encode(column, value)
                row[f"C{column + 1}"] = encoded
            rows[split].append(row)
    return Prepared(rows=rows, bad_counts=bad_counts, bad_lines=bad_lines, num_embeddings=num_embeddings)
