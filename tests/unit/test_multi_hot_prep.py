"""Multi-hot data through `dlrm-prep`: synth writes bags, criteo writes list columns whose ids, lengths,
bag statistics and row accounting match a direct computation from the TSV text, in both encodings."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import criteo, tasks
from data_prep.cli import main
from data_prep.oracle import oracle_auc
from data_prep.parse import parse_chunk
from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS, output_schema
from data_prep.synth import MLPERF_MULTI_HOT_SIZES, add_cli_arguments, generate, run_cli
from tests.conftest import tsv_line

ROWS_PER_DAY = 1500
CARDINALITY_CAP = 400
BUCKETS = 97
FIRST_SPARSE_FIELD = 1 + NUM_DENSE


def synth_days(out_dir: Path, sizes=MLPERF_MULTI_HOT_SIZES, **kwargs) -> Path:
    cardinalities = [CARDINALITY_CAP] * len(SPARSE_COLUMNS)
    generate(out_dir, days=2, rows_per_day=ROWS_PER_DAY, seed=5, cardinalities=cardinalities,
             multi_hot_sizes=sizes, progress=False, **kwargs)  # fmt: skip
    return out_dir


@pytest.fixture(scope="module")
def multi_hot_days(tmp_path_factory) -> Path:
    return synth_days(tmp_path_factory.mktemp("multi_hot_synth"))


def raw_bags(day_file: Path) -> list[list[list[int]]]:
    """Per line, per categorical column, the bag's raw values, decoded with Python's int(x, 16)."""
    return [
        [[int(value, 16) for value in field.split(",")] if field else [] for field in fields]
        for fields in (line.split("\t")[FIRST_SPARSE_FIELD:] for line in day_file.read_text().splitlines())
    ]


def prep(inputs: list[Path], out: Path, *extra: str) -> int:
    """`dlrm-prep criteo` in-process, on one worker unless `extra` says otherwise (spawning costs seconds)."""
    workers = [] if "--workers" in extra else ["--workers", "1"]
    return main(
        ["criteo", "--input", *map(str, inputs), "--out", str(out), "--no-progress", *workers, *extra]
    )


def split_column(out: Path, split: str, column: str) -> list[list[int]]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [bag for f in manifest["splits"][split]["files"] for bag in pq.read_table(out / f["path"])[column].to_pylist()]  # fmt: skip


def test_synth_fields_hold_exactly_their_bag_size(multi_hot_days):
    for bags in raw_bags(multi_hot_days / "day_0"):
        lengths = [len(bag) for bag in bags]
        assert all(length in (0, size) for length, size in zip(lengths, MLPERF_MULTI_HOT_SIZES, strict=True))
    c1_lengths = [len(bags[0]) for bags in raw_bags(multi_hot_days / "day_0")]
    assert set(c1_lengths) == {3}, "C1 is never missing, so every C1 bag holds 3 values"
    metadata = json.loads((multi_hot_days / "synth.json").read_text())
    assert metadata["multi_hot_sizes"] == list(MLPERF_MULTI_HOT_SIZES)


def test_synth_multi_hot_keeps_the_one_hot_draws_as_first_values(multi_hot_days, tmp_path):
    one_hot = synth_days(tmp_path, sizes=None)
    assert "multi_hot_sizes" not in json.loads((one_hot / "synth.json").read_text())
    one_hot_lines = (one_hot / "day_1").read_text().splitlines()
    multi_hot_lines = (multi_hot_days / "day_1").read_text().splitlines()
    for plain, bagged in zip(one_hot_lines, multi_hot_lines, strict=True):
        plain_fields, bag_fields = plain.split("\t"), bagged.split("\t")
        assert plain_fields[1:FIRST_SPARSE_FIELD] == bag_fields[1:FIRST_SPARSE_FIELD]  # dense fields
        assert plain_fields[FIRST_SPARSE_FIELD:] == [f.split(",")[0] for f in bag_fields[FIRST_SPARSE_FIELD:]]


def test_synth_multi_hot_is_chunking_independent_and_learnable(multi_hot_days, tmp_path):
    synth_days(tmp_path, chunk_rows=311)
    for name in ("day_0", "day_1", "day_0.prob.npy", "synth.json"):
        assert (tmp_path / name).read_bytes() == (multi_hot_days / name).read_bytes(), name
    labels = np.array([int(line[0]) for line in (multi_hot_days / "day_0").read_text().splitlines()])
    assert labels.mean() == pytest.approx(0.25, abs=0.04)
    assert 0.65 < oracle_auc(multi_hot_days, day=0) < 0.95


@pytest.mark.parametrize("value", ["1,2", "0", "x", ",".join(["2000"] * 26)])
def test_synth_cli_rejects_bad_multi_hot_sizes(tmp_path, value):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "out"), "--multi-hot-sizes", value])
    with pytest.raises(ValueError, match="--multi-hot-sizes"):
        run_cli(args)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def multi_hot_prepared(multi_hot_days, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("multi_hot_prep") / "hash"
    assert prep([multi_hot_days], out, "--layout", "terabyte", "--multi-hot", "--hash-buckets", str(BUCKETS),
                "--rows-per-shard", "700", "--row-group-rows", "200") == 0  # fmt: skip
    return out


def test_prep_hash_ids_and_lengths_equal_a_direct_computation(multi_hot_days, multi_hot_prepared):
    out = multi_hot_prepared
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_read"] == manifest["rows_written"] == 2 * ROWS_PER_DAY
    assert manifest["bad_rows"]["total"] == 0
    assert (manifest["schema_version"], manifest["multi_hot"]) == (2, True)
    schema = pq.read_schema(out / manifest["splits"]["train"]["files"][0]["path"])
    assert schema.equals(output_schema(multi_hot=True)) and pa.types.is_list(schema.field("C21").type)
    day_0, day_1 = raw_bags(multi_hot_days / "day_0"), raw_bags(multi_hot_days / "day_1")
    expected = {"train": day_0, "val": day_1[: ROWS_PER_DAY // 2], "test": day_1[ROWS_PER_DAY // 2 :]}
    for split, rows in expected.items():
        for index, column in enumerate(SPARSE_COLUMNS):
            want = [[value % BUCKETS for value in bags[index]] for bags in rows]
            assert split_column(out, split, column) == want, (split, column)
    lengths = np.array([[len(bag) for bag in bags] for bags in day_0])
    assert manifest["bag_lengths"]["max"] == lengths.max(axis=0).tolist()
    assert manifest["bag_lengths"]["mean"] == pytest.approx(lengths.mean(axis=0).tolist(), abs=1e-4)
    assert manifest["bag_lengths"]["max"][20] == 100  # C21, MLPerf's longest bag


def test_prep_vocab_counts_every_value_of_every_bag(multi_hot_days, tmp_path):
    out = tmp_path / "vocab"
    assert prep([multi_hot_days], out, "--layout", "terabyte", "--multi-hot", "--vocab-min-count", "3") == 0
    train = raw_bags(multi_hot_days / "day_0")
    for index in (0, 4, 20):  # C1 (3 values), C5 (6), C21 (100)
        column = SPARSE_COLUMNS[index]
        counts = Counter(value for bags in train for value in bags[index])
        kept = sorted(value for value, count in counts.items() if count >= 3)
        assert np.load(out / "vocab" / f"{column}.npy").tolist() == kept
        position = {value: rank + 1 for rank, value in enumerate(kept)}
        for split, rows in (
            ("train", train),
            ("test", raw_bags(multi_hot_days / "day_1")[ROWS_PER_DAY // 2 :]),
        ):
            want = [[position.get(value, 0) for value in bags[index]] for bags in rows]
            assert split_column(out, split, column) == want, (split, column)


def write_tiny(path: Path, fields: list[str]) -> None:
    """7 lines whose C1 and C2 are `fields` (the rest one value), so kaggle puts 6 in train, 1 in test."""
    lines = [tsv_line(sparse=[c1, c2] + ["1"] * 24) for c1, c2 in fields]
    path.write_text("\n".join(lines) + "\n")


TINY_FIELDS = [
    ("0a,0b,0c", "ff"),
    ("0a", ""),
    ("", "ff,ff"),
    ("0B,000000c,ffffffff", "1,2"),
    ("0a,0d", "2"),
    ("0a", "3"),
    ("0d,0e", "ff"),  # the test line: 0e never seen in train
]


@pytest.mark.parametrize(
    ("encoding", "want_c1", "want_c2"),
    [
        (
            [
                "--hash-buckets",
                "7",
            ],  # 0x0a=10 -> 3, 0x0b=11 -> 4, 0x0c=12 -> 5, 0x0d=13 -> 6, 0xffffffff -> 3
            [[3, 4, 5], [3], [], [4, 5, 3], [3, 6], [3], [6, 0]],
            [[3], [], [3, 3], [1, 2], [2], [3], [3]],  # 0xff = 255 -> 3
        ),
        (
            # Train counts of C1: 0a x4, 0b x2, 0c x2, 0d x1, ffffffff x1 -> kept 0a:1, 0b:2, 0c:3.
            ["--vocab-min-count", "2"],
            [[1, 2, 3], [1], [], [2, 3, 0], [1, 0], [1], [0, 0]],
            # C2: ff x3, 2 x2, 1 x1, 3 x1 -> kept 2:1, ff:2.
            [[2], [], [2, 2], [0, 1], [1], [0], [2]],
        ),
    ],
)
def test_hand_made_multi_hot_ids(tmp_path, encoding, want_c1, want_c2):
    write_tiny(tmp_path / "train.txt", TINY_FIELDS)
    out = tmp_path / "out"
    assert prep([tmp_path / "train.txt"], out, "--layout", "kaggle", "--multi-hot", *encoding) == 0
    got_c1 = split_column(out, "train", "C1") + split_column(out, "test", "C1")
    got_c2 = split_column(out, "train", "C2") + split_column(out, "test", "C2")
    assert (got_c1, got_c2) == (want_c1, want_c2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bag_lengths"]["max"][:2] == [3, 2]
    assert manifest["bag_lengths"]["mean"][:2] == pytest.approx([10 / 6, 7 / 6], abs=1e-4)


def test_comma_without_multi_hot_is_a_bad_categorical(tmp_path):
    write_tiny(tmp_path / "train.txt", TINY_FIELDS)
    out = tmp_path / "out"
    assert prep([tmp_path / "train.txt"], out, "--layout", "kaggle", "--hash-buckets", "7") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_read"] == manifest["rows_written"] + manifest["bad_rows"]["total"]
    # Lines 1, 3, 4, 5 and 7 hold a comma in C1 or C2; lines 2 and 6 are plain one-hot.
    assert manifest["bad_rows"]["counts"]["categorical"] == 5 and manifest["rows_written"] == 2
    assert "needs --multi-hot" in manifest["bad_rows"]["examples"][0]["detail"]
    assert (manifest["schema_version"], manifest["multi_hot"]) == (1, False)
    assert "bag_lengths" not in manifest
    assert pq.read_schema(out / "train/part-00000.parquet").equals(output_schema())


@pytest.mark.parametrize("field", ["0a,,0b", "0a,", ",0a", "0a,zz", "0a,123456789"])
def test_malformed_bags_are_bad_rows(field):
    data = "\n".join([tsv_line(sparse=["0a,0b"] * 26), tsv_line(sparse=[field] + ["1"] * 25)]) + "\n"
    parsed = parse_chunk(data.encode(), multi_hot=True)
    assert parsed.bad.counts["categorical"] == 1 and parsed.num_lines == 2
    assert parsed.table.column("C1").to_pylist() == [[10, 11]]
    assert parsed.lines.tolist() == [1]


def test_multi_hot_flag_is_part_of_the_fingerprint(tmp_path, capsys):
    write_tiny(tmp_path / "train.txt", TINY_FIELDS)
    out = tmp_path / "out"
    assert prep([tmp_path / "train.txt"], out, "--layout", "kaggle", "--hash-buckets", "7") == 0
    assert (
        prep([tmp_path / "train.txt"], out, "--layout", "kaggle", "--hash-buckets", "7", "--multi-hot") == 2
    )
    assert "differs in: multi_hot" in capsys.readouterr().err


PREPARED_ARGS = ["--layout", "terabyte", "--multi-hot", "--hash-buckets", str(BUCKETS), "--rows-per-shard", "700",
                 "--row-group-rows", "200"]  # fmt: skip


def assert_same_output(out: Path, reference: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bag_lengths"] == json.loads((reference / "manifest.json").read_text())["bag_lengths"]
    assert manifest["rows_read"] == manifest["rows_written"] + manifest["bad_rows"]["total"]
    shards = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    assert len(shards) == 7  # train 1500 rows: 700 + 700 + 100; val and test 750 rows: 700 + 50
    for shard in shards:
        assert (out / shard).read_bytes() == (reference / shard).read_bytes(), shard


def test_resumed_run_writes_the_same_shards_and_bag_lengths(multi_hot_days, multi_hot_prepared, tmp_path,
                                                            monkeypatch):  # fmt: skip
    write_shard, written = tasks.write_shard, []

    def crash_after_two_shards(**kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt("simulated crash")
        written.append(kwargs["out_path"])
        return write_shard(**kwargs)

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(tasks, "write_shard", crash_after_two_shards)
    with pytest.raises(KeyboardInterrupt):
        criteo.run(criteo.PrepOptions(inputs=(str(multi_hot_days),), out=str(interrupted), layout="terabyte",
                                      encoding="hash", hash_buckets=(BUCKETS,) * 26, rows_per_shard=700,
                                      row_group_rows=200, multi_hot=True, progress=False))  # fmt: skip
    monkeypatch.undo()
    assert not (interrupted / "manifest.json").exists()
    assert len(list(interrupted.rglob("*.parquet"))) == 2
    assert prep([multi_hot_days], interrupted, *PREPARED_ARGS) == 0
    assert_same_output(interrupted, multi_hot_prepared)


@pytest.mark.slow
def test_output_does_not_depend_on_workers_or_chunks(multi_hot_days, multi_hot_prepared, tmp_path):
    out = tmp_path / "two_workers"
    assert prep([multi_hot_days], out, *PREPARED_ARGS, "--workers", "2", "--chunk-mb", "0.5") == 0
    assert_same_output(out, multi_hot_prepared)
