"""A plain, one-row-at-a-time restatement of `dlrm-prep table`'s format, written from its specification
(`data_prep/table_parse.py`'s and `data_prep/table_hash.py`'s docstrings), sharing no code with it.

Fields are split by Python's `csv` module (the independent reference for RFC 4180 quoting), numbers are
checked with `re` and `float`, hashes are computed with Python integers. `prepare` derives, from input
files' bytes, every split's rows as the shards must hold them, the bad counts and the bad lines.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field

import numpy as np

REASONS = ("line", "field_count", "label", "dense")
SPLITS = ("train", "val", "test")
NUMBER = re.compile(r"[ \t]*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[ \t]*")
MASK = 2**64 - 1


def fmix64(value: int) -> int:
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & MASK
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & MASK
    return value ^ (value >> 33)


def hash_value(data: bytes) -> int:
    """FNV-1a 64 then fmix64; empty (missing) is 0, and a real hash of 0 becomes 1."""
    if not data:
        return 0
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & MASK
    return fmix64(value) or 1


def split_of(seed: int, file_index: int, line: int, fractions: tuple[float, float, float]) -> str:
    mixed = fmix64((seed * 0x9E3779B97F4A7C15 + file_index * 2**40 + line) & MASK)
    train = min(int(fractions[0] * 2**64), MASK)
    val = min(train + int(fractions[1] * 2**64), MASK)
    return "train" if mixed < train else "val" if mixed < val else "test"


def number(text: bytes) -> float | None:
    """The value of a number field, or None when it is not one."""
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not NUMBER.fullmatch(decoded):
        return None
    value = float(decoded.strip(" \t"))
    return value if math.isfinite(value) else None


@dataclass
class Spec:
    format: str
    columns: list[str]
    label: str
    dense: list[str]
    categorical: list[str]
    separators: dict[str, str] = field(default_factory=dict)
    delimiter: str = ","
    label_threshold: float | None = None
    dense_transform: str = "log1p"


def split_fields(text: bytes, spec: Spec) -> list[bytes]:
    quoting = csv.QUOTE_MINIMAL if spec.format == "csv" else csv.QUOTE_NONE
    row = next(csv.reader([text.decode("latin-1")], delimiter=spec.delimiter, quoting=quoting), [])
    return [value.encode("latin-1") for value in row]


def parse_row(values: dict[str, bytes | None], spec: Spec) -> tuple[str, str | None] | dict:
    """A row's cleaned values, or (reason, field) for a bad row; None or b"" is missing."""
    raw_label = values[spec.label] or b""
    label = number(raw_label)
    if label is None or (spec.label_threshold is None and label not in (0.0, 1.0)):
        return ("label", spec.label)
    row: dict = {
        spec.label: int(label >= spec.label_threshold) if spec.label_threshold is not None else int(label)
    }
    for name in spec.dense:
        text = values[name] or b""
        value = 0.0 if text == b"" else number(text)
        if value is None:
            return ("dense", name)
        if spec.dense_transform == "log1p":
            value = float(np.float32(np.log1p(max(value, 0.0))))
        else:
            value = float(np.float32(value))
        row[name] = value
    for name in spec.categorical:
        text = values[name] or b""
        if name in spec.separators:
            row[name] = [hash_value(item) for item in text.split(spec.separators[name].encode()) if item]
        else:
            row[name] = hash_value(text)
    return row


def parse_line(text: bytes, spec: Spec) -> tuple[str, str | None] | dict:
    text = text[:-1] if text.endswith(b"\r") else text
    if (spec.format == "csv" and text.count(b'"') % 2 == 1) or b"\r" in text:
        return ("line", None)
    if text == b"":
        return ("field_count", None)
    fields = split_fields(text, spec)
    if len(fields) != len(spec.columns):
        return ("field_count", None)
    return parse_row(dict(zip(spec.columns, fields, strict=True)), spec)


def split_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


@dataclass
class Prepared:
    rows: dict[str, list[dict]]
    bad_counts: dict[str, int]
    bad_lines: list[tuple[str, str, str | None]]
    num_embeddings: list[int]
    rows_read: int


def prepare(
    files: list[tuple[str, bytes | list[dict]]],
    spec: Spec,
    header: bool,
    split: str,
    fractions: tuple[float, float, float],
    seed: int,
    hash_buckets: list[int] | None,
    vocab_min_count: int,
) -> Prepared:
    """The expected result of `dlrm-prep table` on `files`: (name, text bytes) for csv/tsv, or (name,
    list of {column: bytes | None} rows) for parquet."""
    kept: list[tuple[int, int, dict]] = []
    bad_counts = dict.fromkeys(REASONS, 0)
    bad_lines = []
    rows_read = 0
    for file_index, (name, content) in enumerate(files):
        if spec.format == "parquet":
            numbered = [(index + 1, parse_row(values, spec)) for index, values in enumerate(content)]
        else:
            lines = split_lines(content)[1 if header else 0 :]
            numbered = [(index + 1 + header, parse_line(text, spec)) for index, text in enumerate(lines)]
        rows_read += len(numbered)
        for line, result in numbered:
            if isinstance(result, tuple):
                bad_counts[result[0]] += 1
                bad_lines.append((f"{name}:{line}", *result))
            else:
                kept.append((file_index, line, result))
    by_split: dict[str, list[dict]] = {split_name: [] for split_name in SPLITS}
    if split == "ordered":
        total = len(kept)
        ends = [round(total * fractions[0]), round(total * (fractions[0] + fractions[1]))]
        for position, (_, _, row) in enumerate(kept):
            by_split["train" if position < ends[0] else "val" if position < ends[1] else "test"].append(row)
    else:
        for file_index, line, row in kept:
            by_split[split_of(seed, file_index, line, fractions)].append(row)
    if hash_buckets is not None:
        sizes = list(hash_buckets)
        lookups = [lambda value, buckets=buckets: value % buckets for buckets in hash_buckets]
    else:
        lookups, sizes = [], []
        for name in spec.categorical:
            counts: dict[int, int] = {}
            for row in by_split["train"]:
                values = row[name] if isinstance(row[name], list) else [row[name]]
                for value in values:
                    if value:
                        counts[value] = counts.get(value, 0) + 1
            vocabulary = sorted(value for value, count in counts.items() if count >= vocab_min_count)
            ids = {value: index + 1 for index, value in enumerate(vocabulary)}
            lookups.append(lambda value, ids=ids: ids.get(value, 0))
            sizes.append(len(vocabulary) + 1)
    for rows in by_split.values():
        for row in rows:
            for name, lookup in zip(spec.categorical, lookups, strict=True):
                value = row[name]
                row[name] = [lookup(item) for item in value] if isinstance(value, list) else lookup(value)
    return Prepared(by_split, bad_counts, bad_lines, sizes, rows_read)
