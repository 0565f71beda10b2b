"""Differential tests of `dlrm-prep table` against `tests/reference_table.py`, on generated tables.

For every generated case (csv/tsv/parquet, csv/tsv also gzipped; zero to three dense columns, one to three categorical or
100; multi-hot bags; quoted delimiters, CRLF, UTF-8, empty fields; bad rows of each kind; chunk sizes
that cut lines; hash and vocabulary; ordered and random split; 1 and 2 workers) each split's Parquet
rows, the bad counts, the `file:line` examples and the table sizes must equal the reference's.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings

from data_prep.parse import MAX_EXAMPLES_PER_REASON
from data_prep.table import TableOptions, run
from data_prep.table_parse import TableSpec
from tests import reference_table as reference
from tests.table_strategies import render_text, table_case


def input_name(case: dict, index: int) -> str:
    return f"part{index}.{case['format']}" + (".gz" if case.get("gzip") else "")


def write_inputs(case: dict, directory: Path) -> list[tuple[str, object]]:
    """Writes the case's files; returns what the reference reads: (name, bytes or rows)."""
    files = []
    for index, rows in enumerate(case["files"]):
        if case["format"] == "parquet":
            name = f"part{index}.parquet"
            values = [
                {k: (None if case["null_missing"] and v == "" else v) for k, v in row.items()}
                for _, row in rows
            ]
            arrays = {name: pa.array([row[name] for row in values], pa.string()) for name in case["columns"]}
            pq.write_table(pa.table(arrays), directory / name, row_group_size=4)
            encoded = [{k: None if v is None else v.encode() for k, v in row.items()} for row in values]
            files.append((name, encoded))
        else:
            name = input_name(case, index)
            data = render_text(case, rows)
            # mtime=0: the same case gives the same bytes. The reference reads the plain text.
            (directory / name).write_bytes(gzip.compress(data, mtime=0) if case.get("gzip") else data)
            files.append((name, data))
    return files


def spec_of(case: dict) -> TableSpec:
    return TableSpec(
        format=case["format"],
        columns=() if case["header"] or case["format"] == "parquet" else tuple(case["columns"]),
        label="y",
        categorical=tuple(case["categorical"]),
        dense=tuple(case["dense"]),
        delimiter="\t" if case["format"] == "tsv" else ",",
        label_threshold=case["threshold"],
        multi_hot=tuple(case["separators"].items()),
        dense_transform=case["dense_transform"],
    )


def run_case(case: dict, directory: Path, workers: int) -> dict:
    encoding = case["encoding"]
    options = TableOptions(
        inputs=tuple(str(directory / input_name(case, index)) for index in range(len(case["files"]))),
        out=str(directory / "out"),
        spec=spec_of(case),
        encoding="hash" if "hash_buckets" in encoding else "vocab",
        header=case["header"] and case["format"] != "parquet",
        hash_buckets=(encoding["hash_buckets"],) * len(case["categorical"])
        if "hash_buckets" in encoding
        else (),
        vocab_min_count=encoding.get("vocab_min_count", 0),
        split=case["split"],
        split_fractions=case["fractions"],
        seed=case["seed"],
        rows_per_shard=case["rows_per_shard"],
        row_group_rows=2,
        chunk_bytes=case["chunk_bytes"],
        workers=workers,
        progress=False,
    )
    return run(options)


def expected_of(case: dict, files: list) -> reference.Prepared:
    spec = reference.Spec(
        format=case["format"],
        columns=case["columns"],
        label="y",
        dense=case["dense"],
        categorical=case["categorical"],
        separators=case["separators"],
        delimiter="\t" if case["format"] == "tsv" else ",",
        label_threshold=case["threshold"],
        dense_transform=case["dense_transform"],
    )
    encoding = case["encoding"]
    buckets = [encoding["hash_buckets"]] * len(case["categorical"]) if "hash_buckets" in encoding else None
    return reference.prepare(
        files,
        spec,
        header=case["header"] and case["format"] != "parquet",
        split=case["split"],
        fractions=case["fractions"],
        seed=case["seed"],
        hash_buckets=buckets,
        vocab_min_count=encoding.get("vocab_min_count", 0),
    )


def assert_matches_reference(case: dict, workers: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        files = write_inputs(case, directory)
        run_case(case, directory, workers)
        out = directory / "out"
        manifest = json.loads((out / "manifest.json").read_text())
        got = {
            split: [row for f in info["files"] for row in pq.read_table(out / f["path"]).to_pylist()]
            for split, info in manifest["splits"].items()
        }
    expected = expected_of(case, files)
    for split in reference.SPLITS:
        assert got[split] == expected.rows[split], split
    assert manifest["bad_rows"]["counts"] == expected.bad_counts
    wanted = []
    for reason in reference.REASONS:
        wanted.extend([line for line in expected.bad_lines if line[1] == reason][:MAX_EXAMPLES_PER_REASON])
    examples = manifest["bad_rows"]["examples"]
    assert [(e["where"], e["reason"]) for e in examples] == [(where, reason) for where, reason, _ in wanted]
    for example, (_, _, name) in zip(examples, wanted, strict=True):
        if name is not None:
            assert example["detail"].startswith(f"{name}="), (example, name)
    assert manifest["num_embeddings"] == expected.num_embeddings
    assert manifest["rows_read"] == expected.rows_read
    assert manifest["features"]["label"] == "y"
    assert [f["multi_hot"] for f in manifest["features"]["categorical"]] == [
        name in case["separators"] for name in case["categorical"]
    ]


# A pipeline run costs ~0.2 s, so these take a share of the profile's example count (CI: 40, 6 and 4).
@settings(max_examples=settings.default.max_examples // 3)
@given(case=table_case())
def test_table_agrees_with_the_reference(case):
    assert_matches_reference(case, workers=1)


@settings(max_examples=settings.default.max_examples // 20)
@given(case=table_case())
def test_table_with_two_workers_agrees_with_the_reference(case):
    assert_matches_reference(case, workers=2)


@settings(max_examples=max(2, settings.default.max_examples // 30))
@given(case=table_case(wide=True))
def test_table_with_100_categoricals_agrees_with_the_reference(case):
    assert_matches_reference(case, workers=1)


@settings(max_examples=max(2, settings.default.max_examples // 6))
@given(case=table_case(formats=("csv", "tsv")))
def test_gzipped_table_agrees_with_the_reference(case):
    """The same text gzipped: one task streams each file, in chunks cut at newlines."""
    assert_matches_reference({**case, "gzip": True}, workers=1)
