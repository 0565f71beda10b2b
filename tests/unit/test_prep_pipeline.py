"""`dlrm-prep criteo` end to end in-process: accounting, splits, encodings, errors, gzip, workers."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.cli import main
from data_prep.schema import output_schema
from tests.conftest import tsv_line


def prep(inputs: list[Path], out: Path, *extra: str) -> int:
    return main(["criteo", "--input", *map(str, inputs), "--out", str(out), "--no-progress", *extra])


def read_split(out: Path, split: str):
    manifest = json.loads((out / "manifest.json").read_text())
    tables = [pq.read_table(out / f["path"]) for f in manifest["splits"][split]["files"]]
    return manifest, tables


def split_into_days(sample: Path, directory: Path, days: int) -> list[Path]:
    lines = sample.read_bytes().splitlines(keepends=True)
    per_day = -(-len(lines) // days)
    directory.mkdir()
    paths = []
    for day in range(days):
        path = directory / f"day_{day}"
        path.write_bytes(b"".join(lines[day * per_day : (day + 1) * per_day]))
        paths.append(path)
    return paths


def assert_accounted(manifest: dict) -> None:
    assert manifest["rows_read"] == manifest["rows_written"] + sum(manifest["bad_rows"]["counts"].values())
    for split in manifest["splits"].values():
        assert split["rows"] == sum(f["rows"] for f in split["files"])
    assert manifest["rows_written"] == sum(s["rows"] for s in manifest["splits"].values())


@pytest.mark.parametrize("encoding", [["--hash-buckets", "1000"], ["--vocab-min-count", "2"]])
def test_real_sample_kaggle_layout(criteo_sample, tmp_path, encoding):
    out = tmp_path / "out"
    assert prep([criteo_sample], out, "--layout", "kaggle", "--rows-per-shard", "2000", *encoding) == 0
    manifest, train = read_split(out, "train")
    assert_accounted(manifest)
    assert manifest["rows_read"] == 8000 and manifest["rows_written"] == 8000
    # 6/7 of 8000 lines is train; the last 1143 are split into val (571) then test (572).
    assert [manifest["splits"][s]["rows"] for s in ("train", "val", "test")] == [6857, 571, 572]
    assert [f["rows"] for f in manifest["splits"]["train"]["files"]] == [2000, 2000, 2000, 857]
    assert train[0].schema.equals(output_schema())
    first = train[0].slice(0, 1).to_pylist()[0]
    # Line 1 of the sample: label 0, I5 = 1382, I12 missing, C1 = 68fd1e64.
    assert first["label"] == 0
    assert first["I5"] == pytest.approx(math.log1p(1382), rel=1e-6)
    assert first["I12"] == 0.0
    if encoding[0] == "--hash-buckets":
        assert first["C1"] == 0x68FD1E64 % 1000
        assert manifest["num_embeddings"] == [1000] * 26


def test_real_sample_vocab_id_is_the_same_in_every_split(criteo_sample, tmp_path):
    out = tmp_path / "out"
    assert prep([criteo_sample], out, "--layout", "kaggle", "--vocab-min-count", "1") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    vocab = np.load(out / "vocab" / "C1.npy")
    expected_id = int(np.searchsorted(vocab, 0x68FD1E64)) + 1
    assert vocab[expected_id - 1] == 0x68FD1E64
    raw_c1 = [line.split(b"\t")[14] for line in criteo_sample.read_bytes().splitlines()]
    bounds = {"train": (0, 6857), "val": (6857, 7428), "test": (7428, 8000)}
    for split, (start, stop) in bounds.items():
        _, tables = read_split(out, split)
        ids = np.concatenate([t.column("C1").to_numpy() for t in tables])
        is_value = np.array([value == b"68fd1e64" for value in raw_c1[start:stop]])
        assert is_value.any()
        assert (ids[is_value] == expected_id).all(), split
        assert (ids[~is_value] != expected_id).all(), split
    assert manifest["num_embeddings"][0] == len(vocab) + 1


@pytest.mark.parametrize("encoding", [["--hash-buckets", "997"], ["--vocab-min-count", "3"]])
def test_real_sample_terabyte_layout(criteo_sample, tmp_path, encoding):
    days = split_into_days(criteo_sample, tmp_path / "days", 4)
    out = tmp_path / "out"
    assert prep([days[0].parent], out, "--layout", "terabyte", *encoding) == 0
    manifest, _ = read_split(out, "train")
    assert_accounted(manifest)
    assert manifest["rows_read"] == 8000
    assert [manifest["splits"][s]["rows"] for s in ("train", "val", "test")] == [6000, 1000, 1000]
    _, test = read_split(out, "test")
    last_line = criteo_sample.read_bytes().splitlines()[-1].split(b"\t")
    assert test[-1].slice(test[-1].num_rows - 1).to_pylist()[0]["label"] == int(last_line[0])


def test_vocab_threshold_on_known_counts(tmp_path):
    # C1 in train: aaaa x3, bbbb x2, cccc x1; val/test hold aaaa, cccc and the unseen dddd.
    c1_train = ["aaaa"] * 3 + ["bbbb"] * 2 + ["cccc"]
    lines = [tsv_line(sparse=[value] + ["1"] * 25) for value in c1_train]
    lines += [tsv_line(sparse=[value] + ["1"] * 25) for value in ["aaaa", "dddd"]]
    # 8 lines: train = 8 * 6 // 7 = 6 lines; val and test one line each.
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert prep([tmp_path / "train.txt"], out, "--layout", "kaggle", "--vocab-min-count", "2") == 0
    assert np.load(out / "vocab" / "C1.npy").tolist() == [0xAAAA, 0xBBBB]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_embeddings"][0] == 3
    assert manifest["num_embeddings"][1] == 2  # "1" is seen 6 times: id 1, plus the reserved 0
    ids = {
        split: np.concatenate([t.column("C1").to_numpy() for t in read_split(out, split)[1]]).tolist()
        for split in ("train", "val", "test")
    }
    assert ids == {"train": [1, 1, 1, 2, 2, 0], "val": [1], "test": [0]}


def write_with_bad_rows(path: Path) -> dict[int, str]:
    bad = {
        3: ("1\t2", "field_count"),
        5: (tsv_line(label="x"), "label"),
        8: (tsv_line(dense=["1.5"] + ["1"] * 12), "dense"),
        13: (tsv_line(sparse=["nothex"] + ["1"] * 25), "categorical"),
    }
    lines = [bad[i][0] if i in bad else tsv_line(label=str(i % 2)) for i in range(1, 29)]
    path.write_text("\n".join(lines) + "\n")
    return {line: reason for line, (_, reason) in bad.items()}


def test_bad_rows_skipped_counted_and_located(tmp_path):
    bad = write_with_bad_rows(tmp_path / "train.txt")
    out = tmp_path / "out"
    assert prep([tmp_path / "train.txt"], out, "--layout", "kaggle", "--hash-buckets", "10") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert_accounted(manifest)
    assert manifest["rows_read"] == 28 and manifest["rows_written"] == 24
    assert manifest["bad_rows"]["counts"] == {"field_count": 1, "label": 1, "dense": 1, "categorical": 1}
    assert {e["where"]: e["reason"] for e in manifest["bad_rows"]["examples"]} == {
        f"train.txt:{line}": reason for line, reason in bad.items()
    }


@pytest.mark.parametrize("chunk_mb", ["16", "0.001"])
def test_bad_row_error_policy_names_file_and_line(tmp_path, capsys, chunk_mb):
    write_with_bad_rows(tmp_path / "train.txt")
    out = tmp_path / "out"
    code = prep(
        [tmp_path / "train.txt"],
        out,
        "--layout",
        "kaggle",
        "--hash-buckets",
        "10",
        "--on-bad-row",
        "error",
        "--chunk-mb",
        chunk_mb,
        "--workers",
        "2",
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "train.txt:3: bad row (field_count)" in error
    assert not (out / "manifest.json").exists()


def test_gzip_input_gives_the_same_shards(criteo_sample, tmp_path):
    days = split_into_days(criteo_sample, tmp_path / "plain", 3)
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    for day in days:
        (gz_dir / f"{day.name}.gz").write_bytes(gzip.compress(day.read_bytes()))
    for source in ("plain", "gz"):
        assert (
            prep(
                [tmp_path / source],
                tmp_path / f"out_{source}",
                "--layout",
                "terabyte",
                "--vocab-min-count",
                "2",
                "--chunk-mb",
                "0.2",
            )
            == 0
        )
    plain, gz = tmp_path / "out_plain", tmp_path / "out_gz"
    shards = sorted(p.relative_to(plain) for p in plain.rglob("*.parquet"))
    assert shards
    for shard in shards:
        assert (plain / shard).read_bytes() == (gz / shard).read_bytes(), shard


def test_truncated_gzip_names_the_file(criteo_sample, tmp_path, capsys):
    days = tmp_path / "days"
    days.mkdir()
    (days / "day_0.gz").write_bytes(gzip.compress(criteo_sample.read_bytes()))
    (days / "day_1.gz").write_bytes(gzip.compress(criteo_sample.read_bytes())[:5000])
    assert prep([days], tmp_path / "out", "--layout", "terabyte", "--hash-buckets", "10") == 2
    assert "day_1.gz: cannot read gzip data" in capsys.readouterr().err


def test_other_arguments_on_existing_output_are_refused(criteo_sample, tmp_path, capsys):
    out = tmp_path / "out"
    assert prep([criteo_sample], out, "--layout", "kaggle", "--hash-buckets", "10") == 0
    assert prep([criteo_sample], out, "--layout", "kaggle", "--hash-buckets", "10") == 0
    assert prep([criteo_sample], out, "--layout", "kaggle", "--hash-buckets", "11") == 2
    assert "differs in: encoding" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hash-buckets", "0"], "--hash-buckets: 0 is outside"),
        (["--hash-buckets", "1,2"], "--hash-buckets: give 1 or 26 values"),
        (["--vocab-min-count", "0"], "--vocab-min-count: must be >= 1"),
        (["--hash-buckets", "9", "--workers", "0"], "--workers: must be >= 1"),
    ],
)
def test_bad_options_name_the_flag(criteo_sample, tmp_path, capsys, args, message):
    assert prep([criteo_sample], tmp_path / "out", "--layout", "kaggle", *args) == 2
    assert message in capsys.readouterr().err


def test_terabyte_layout_wants_day_files(criteo_sample, tmp_path, capsys):
    assert prep([criteo_sample], tmp_path / "out", "--layout", "terabyte", "--hash-buckets", "9") == 2
    assert "is not named day_N" in capsys.readouterr().err


@pytest.mark.slow
def test_output_does_not_depend_on_workers(criteo_sample, tmp_path):
    days = split_into_days(criteo_sample, tmp_path / "days", 3)
    for workers in ("1", "2"):
        assert (
            prep(
                [days[0].parent],
                tmp_path / f"w{workers}",
                "--layout",
                "terabyte",
                "--vocab-min-count",
                "2",
                "--workers",
                workers,
                "--chunk-mb",
                "0.1",
                "--rows-per-shard",
                "1500",
            )
            == 0
        )
    one, two = tmp_path / "w1", tmp_path / "w2"
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert len(files) > 26
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    first, second = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    for manifest in (first, second):
        for key in ("created_at", "seconds", "arguments", "options"):
            manifest.pop(key)
    assert first == second
    shutil.rmtree(one)


def test_data_prep_never_imports_torch():
    import subprocess
    import sys

    code = "import sys, data_prep.cli, data_prep.synth, data_prep.oracle; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
