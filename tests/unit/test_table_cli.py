"""`dlrm-prep table` through its command line: user errors, --on-bad-row error, resume, stable hashes,
typed Parquet input, gzipped text input."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import table_tasks
from data_prep.cli import main
from data_prep.inputs import InputFile
from data_prep.table_hash import hash_values
from data_prep.table_parse import TableSpec
from data_prep.tasks import chunk_name, gzip_chunks_parsed
from tests import reference_table as reference

CSV = 'clicked,price,city,tags\n1,2.5,"Paris, FR",a|b\n0,,Köln,\r\n1,x,Oslo,c\n0,3,Oslo,a\n'


def _table(tmp_path: Path, *extra: str, text: str = CSV) -> tuple[int, Path]:
    source = tmp_path / "in.csv"
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["table", "--input", str(source), "--out", str(out), "--format", "csv", "--header", "--label", "clicked",
            "--dense", "price", "--categorical", "city", "--multi-hot", "tags:|", "--hash-buckets", "1000",
            "--workers", "1", "--no-progress", "--rows-per-shard", "1", *extra]  # fmt: skip
    return main(argv), out


def test_bad_rows_are_counted_with_file_and_line(tmp_path):
    code, out = _table(tmp_path)
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_read"] == 4 and manifest["rows_written"] == 3
    assert manifest["bad_rows"]["counts"]["dense"] == 1
    assert manifest["bad_rows"]["examples"][0]["where"] == "in.csv:4"
    assert manifest["schema_version"] == 3
    assert manifest["features"]["categorical"][1]["name"] == "tags"
    assert manifest["features"]["categorical"][1]["multi_hot"] is True


def test_on_bad_row_error_names_file_and_line(tmp_path, capsys):
    code, _ = _table(tmp_path, "--on-bad-row", "error")
    assert code == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "in.csv:4" in message and "price=" in message


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--dense", "price,nope,gone"], "--dense: no column named nope, gone"),
        (["--split", "sorted:0.8,0.1,0.1"], "--split"),
        (["--split", "ordered:0.8,0.1"], "--split"),
        (["--hash-buckets", "5,6,7"], "--hash-buckets: give 1 or 2 values"),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, extra, needle):
    code, _ = _table(tmp_path, *extra)
    message = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in message and message.count("\n") == 0


def test_rerun_is_byte_identical_and_resumes(tmp_path):
    code, out = _table(tmp_path)
    assert code == 0
    shards = sorted(out.glob("*/*.parquet"))
    digests = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in shards}
    # As if killed after writing some shards: the manifest and one shard gone, the scratch state kept.
    manifest = json.loads((out / "manifest.json").read_text())
    (out / ".work" / "chunks").mkdir(parents=True)
    (out / ".work" / "state.json").write_text(json.dumps({"fingerprint": manifest["fingerprint"]}))
    (out / "manifest.json").unlink()
    shards[0].unlink()
    assert _table(tmp_path)[0] == 0
    assert {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in shards} == digests
    assert _table(tmp_path, "--seed", "3")[0] == 2  # other arguments on the same --out are refused


def test_hashes_are_stable_and_match_the_reference():
    values = [b"a", b"Paris, FR", "K\u00f6ln".encode(), b"7", b""]
    hashes = hash_values(pa.array(values, pa.binary()))
    assert hashes.tolist() == [reference.hash_value(value) for value in values]
    # Golden values: a change of hash changes every id of every prepared data set.
    assert hashes[:2].tolist() == [0x82A2A958A9BECE5B, 0xDC28E1EEC8B6A03E]
    assert hashes[-1] == 0


def test_typed_parquet_input(tmp_path):
    source = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "y": pa.array([1, 0, None, 1], pa.int64()),
                "x": pa.array([1.5, None, 2.0, float("nan")]),
                "item": pa.array([7, 7, 8, None], pa.int32()),
            }
        ),
        source,
    )
    out = tmp_path / "out"
    argv = ["table", "--input", str(source), "--out", str(out), "--format", "parquet", "--label", "y", "--dense", "x",
            "--categorical", "item", "--vocab-min-count", "1", "--split", "ordered:1,0,0", "--no-progress",
            "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["bad_rows"]["counts"]["label"] == 1
    assert manifest["bad_rows"]["examples"][0]["where"] == "in.parquet:3"
    rows = pq.read_table(out / "train" / "part-00000.parquet").to_pylist()
    assert [row["item"] for row in rows] == [1, 1, 0]  # 7 seen twice -> id 1; missing -> 0
    assert np.allclose([row["x"] for row in rows], [np.log1p(1.5), 0.0, 0.0])


def test_parquet_dictionary_columns_with_narrow_indices_hash_like_their_values(tmp_path):
    # 128 distinct values and a null in an int8-indexed dictionary: the null's slot (index 128) does
    # not fit the column's own index type.
    names = [f"s{i}" for i in range(128)]
    values = [names[i % 128] for i in range(300)] + [None]
    labels = pa.array([i % 2 for i in range(len(values))], pa.int8())
    outputs = []
    for kind, column in (
        ("dictionary", pa.array(values).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string()))),
        ("plain", pa.array(values)),
    ):
        source = tmp_path / f"{kind}.parquet"
        pq.write_table(pa.table({"y": labels, "c": column}), source)
        if kind == "dictionary":  # as the reader gives it back
            assert pq.read_table(source).column("c").type.index_type == pa.int8()
        out = tmp_path / f"out-{kind}"
        argv = ["table", "--input", str(source), "--out", str(out), "--format", "parquet", "--label", "y",
                "--categorical", "c", "--hash-buckets", "1000", "--split", "ordered:1,0,0", "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        outputs.append(pq.read_table(out / "train" / "part-00000.parquet").column("c").to_pylist())
    assert outputs[0] == outputs[1]
    assert outputs[0][-1] == 0 and len(set(outputs[0])) > 100


@pytest.mark.parametrize("command", ["criteo", "synth", "table", "movielens"])
def test_help_of_every_command_prints(command, capsys):
    from data_prep.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_gzipped_input_gives_the_plain_files_shards(tmp_path):
    _, plain_out = _table(tmp_path)
    source = tmp_path / "in.csv.gz"
    source.write_bytes(gzip.compress(CSV.encode(), mtime=0))
    out = tmp_path / "out-gz"
    argv = ["table", "--input", str(source), "--out", str(out), "--format", "csv", "--header", "--label", "clicked",
            "--dense", "price", "--categorical", "city", "--multi-hot", "tags:|", "--hash-buckets", "1000",
            "--workers", "1", "--no-progress", "--rows-per-shard", "1"]  # fmt: skip
    assert main(argv) == 0
    shards = sorted(path.relative_to(plain_out) for path in plain_out.glob("*/*.parquet"))
    assert shards == sorted(path.relative_to(out) for path in out.glob("*/*.parquet")) and shards
    for shard in shards:
        assert (plain_out / shard).read_bytes() == (out / shard).read_bytes(), shard
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_read"] == 4 and manifest["bad_rows"]["examples"][0]["where"] == "in.csv.gz:4"


def test_gzip_parse_resumes_past_the_chunks_it_finished(tmp_path):
    lines = [f"{index % 2},{index}.5,city{index % 7}" for index in range(400)]
    source = tmp_path / "big.csv.gz"
    source.write_bytes(gzip.compress(("y,x,c\n" + "\n".join(lines) + "\n").encode(), mtime=0))
    input_file = InputFile(path=str(source), bytes=source.stat().st_size)
    spec = TableSpec(format="csv", columns=("y", "x", "c"), label="y", categorical=("c",), dense=("x",))
    chunk_dir = tmp_path / "chunks"
    chunk_dir.mkdir()

    def parse() -> dict:
        return table_tasks.parse_gzip_text_file(input_file, 0, 1000, str(chunk_dir), spec, True, "skip")

    assert parse() == {"rows": 400, "lines": 400}
    num_chunks = gzip_chunks_parsed(chunk_dir, 0)
    assert num_chunks is not None and num_chunks > 3
    first = {path.name: path.read_bytes() for path in chunk_dir.iterdir()}
    kept = chunk_dir / f"{chunk_name(0, 0)}.arrow"
    kept_mtime = kept.stat().st_mtime_ns
    # As if killed while parsing the last chunk: no done marker, the last chunk missing.
    (chunk_dir / "f00000.done.json").unlink()
    for suffix in (".arrow", ".json"):
        (chunk_dir / f"{chunk_name(0, num_chunks - 1)}{suffix}").unlink()
    assert gzip_chunks_parsed(chunk_dir, 0) is None
    assert parse() == {"rows": 400, "lines": 400}
    assert {path.name: path.read_bytes() for path in chunk_dir.iterdir()} == first
    assert kept.stat().st_mtime_ns == kept_mtime  # read past, not parsed again


def test_gzipped_parquet_is_refused_in_one_line(tmp_path, capsys):
    source = tmp_path / "t.parquet.gz"
    source.write_bytes(gzip.compress(b"PAR1"))
    argv = ["table", "--input", str(source), "--out", str(tmp_path / "o"), "--format", "parquet", "--label", "y",
            "--categorical", "c", "--hash-buckets", "10", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    message = capsys.readouterr().err.strip()
    assert "t.parquet.gz" in message and "not .gz" in message and message.count("\n") == 0
