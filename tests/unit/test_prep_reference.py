"""Differential tests of the whole `dlrm-prep criteo` pipeline against the reference, on generated files.

`tests/unit/test_parse_reference.py` proves one chunk's parse line by line. This proves what lies around
it: chunks that end mid-line, line numbers across chunks and files, gzip inputs, the split of each file,
the shards' row order, hash and vocabulary encoding, worker processes, and the manifest's accounting.
For every generated input the Parquet rows of each split, the per-reason bad counts and the bad-row
examples (`file:line`, reason, field) must equal what `reference_parser.prepare` derives one line at a
time from the format's definition.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.criteo import PrepOptions, run
from data_prep.parse import MAX_EXAMPLES_PER_REASON
from tests import reference_parser as reference
from tests.criteo_strategies import criteo_text

# Chunks from a few lines to many: most generated lines are 100-300 bytes (multi-hot up to ~2 KB), so
# the small sizes put several chunk boundaries in every file, mid-line, and 1 MiB puts none.
CHUNK_BYTES = [200, 700, 4096, 1 << 20]


@st.composite
def prep_case(draw, multi_hot: bool | None = None) -> dict:
    layout = draw(st.sampled_from(["kaggle", "terabyte"]))
    multi_hot = draw(st.booleans()) if multi_hot is None else multi_hot
    num_files = 1 if layout == "kaggle" else draw(st.integers(2, 3))
    max_lines = 12 if multi_hot else 30
    texts = [draw(criteo_text(multi_hot, max_lines=max_lines)) for _ in range(num_files)]
    if draw(st.booleans()):
        # One bucket count for every table (as `--hash-buckets N` gives), or one per table.
        buckets = draw(st.sampled_from([(1,) * 26, (7,) * 26, (1000,) * 26, tuple(range(2, 28))]))
        encoding = {"hash_buckets": buckets}
    else:
        encoding = {"vocab_min_count": draw(st.integers(1, 3))}
    return {
        "layout": layout,
        "multi_hot": multi_hot,
        "texts": texts,
        "gzip": draw(st.lists(st.booleans(), min_size=num_files, max_size=num_files)),
        "encoding": encoding,
        "dense_transform": draw(st.sampled_from(["log1p", "none"])),
        "chunk_bytes": draw(st.sampled_from(CHUNK_BYTES)),
        "rows_per_shard": draw(st.sampled_from([3, 10, 1 << 20])),
    }


def write_inputs(case: dict, directory: Path) -> list[tuple[str, bytes]]:
    """Writes the case's input files; returns (file name, decompressed bytes) in time order."""
    files = []
    for index, (text, compressed) in enumerate(zip(case["texts"], case["gzip"], strict=True)):
        name = "train.txt" if case["layout"] == "kaggle" else f"day_{index}"
        if compressed:
            name += ".gz"
            # mtime=0: the bytes, and so the input fingerprint, do not depend on the clock.
            (directory / name).write_bytes(gzip.compress(text, mtime=0))
        else:
            (directory / name).write_bytes(text)
        files.append((name, text))
    return files


def expected_examples(bad_lines: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    """The manifest keeps the first examples of each reason, in input order, grouped by reason."""
    kept = []
    for reason in reference.REASONS:
        kept.extend([line for line in bad_lines if line[1] == reason][:MAX_EXAMPLES_PER_REASON])
    return kept


def assert_pipeline_matches_reference(case: dict, workers: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        files = write_inputs(case, directory)
        out = directory / "out"
        options = PrepOptions(
            inputs=(str(directory),),
            out=str(out),
            layout=case["layout"],
            encoding="hash" if "hash_buckets" in case["encoding"] else "vocab",
            dense_transform=case["dense_transform"],
            rows_per_shard=case["rows_per_shard"],
            row_group_rows=2,
            chunk_bytes=case["chunk_bytes"],
            workers=workers,
            progress=False,
            multi_hot=case["multi_hot"],
            **case["encoding"],
        )
        run(options)
        manifest = json.loads((out / "manifest.json").read_text())
        got_rows = {
            split: [row for f in info["files"] for row in pq.read_table(out / f["path"]).to_pylist()]
            for split, info in manifest["splits"].items()
        }
    expected = reference.prepare(
        files,
        case["layout"],
        hash_buckets=list(case["encoding"]["hash_buckets"]) if "hash_buckets" in case["encoding"] else None,
        vocab_min_count=case["encoding"].get("vocab_min_count", 0),
        dense_transform=case["dense_transform"],
        multi_hot=case["multi_hot"],
    )
    for split, rows in expected.rows.items():
        # The shards hold dense values as float32; the reference computes them in float64.
        for row in rows:
            for index in range(1, 14):
                row[f"I{index}"] = float(np.float32(row[f"I{index}"]))
        assert got_rows[split] == rows, split
    assert manifest["bad_rows"]["counts"] == expected.bad_counts
    got_examples = [(e["where"], e["reason"], e["detail"]) for e in manifest["bad_rows"]["examples"]]
    wanted = expected_examples(expected.bad_lines)
    assert [(where, reason) for where, reason, _ in got_examples] == [(w, r) for w, r, _ in wanted]
    for (_, _, detail), (_, _, field) in zip(got_examples, wanted, strict=True):
        if field is not None:
            assert detail.startswith(f"{field}="), (detail, field)
    assert manifest["num_embeddings"] == expected.num_embeddings
    assert manifest["rows_read"] == sum(len(reference.split_lines(text)) for _, text in files)


# A pipeline run costs ~0.3 s against ~1 ms for a chunk parse, so these take a share of the profile's
# example count: 60 and 12 in CI, 10,000 and 2,000 under `make fuzz`.
@settings(max_examples=settings.default.max_examples // 2)
@given(case=prep_case())
def test_prep_agrees_with_the_reference(case):
    assert_pipeline_matches_reference(case, workers=1)


# Worker processes cost a pool start-up per example, so fewer examples; the output must not depend on
# the worker count, and the small chunk sizes spread each file's chunks over both workers.
@settings(max_examples=settings.default.max_examples // 10)
@given(case=prep_case())
def test_prep_with_two_workers_agrees_with_the_reference(case):
    assert_pipeline_matches_reference(case, workers=2)
