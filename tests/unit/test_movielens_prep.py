"""`dlrm-prep movielens` on the real MovieLens 100K files (skipped when they are absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data_prep.cli import main
from data_prep.features import FeatureSchema
from tests.conftest import REPO_ROOT

ML_100K = REPO_ROOT.parent / "shared" / "data" / "movielens" / "ml-100k"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    if not (ML_100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML_100K}")
    out = tmp_path_factory.mktemp("movielens") / "ml"
    assert (
        main(["movielens", "--input", str(ML_100K), "--out", str(out), "--workers", "1", "--no-progress"])
        == 0
    )
    return out


def _split(out: Path, split: str):
    manifest = json.loads((out / "manifest.json").read_text())
    (shard,) = manifest["splits"][split]["files"]
    return pq.read_table(out / shard["path"])


def test_row_counts_and_time_split(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["rows_read"] == 100_000 and manifest["bad_rows"]["total"] == 0
    assert [manifest["splits"][s]["rows"] for s in ("train", "val", "test")] == [80_000, 10_000, 10_000]
    # Rows in time order (ties by user, item): the labels line up with u.data sorted that way.
    ratings = np.loadtxt(ML_100K / "u.data", dtype=np.int64)
    order = np.lexsort((ratings[:, 1], ratings[:, 0], ratings[:, 3]))
    labels = np.concatenate(
        [_split(prepared, s).column("label").to_numpy() for s in ("train", "val", "test")]
    )
    assert (labels == (ratings[order, 2] >= 4)).all()


def test_label_share(prepared):
    labels = np.concatenate(
        [_split(prepared, s).column("label").to_numpy() for s in ("train", "val", "test")]
    )
    assert 0.53 < labels.mean() < 0.57


def test_schema_in_manifest(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    schema = FeatureSchema.from_manifest(manifest)
    assert manifest["schema_version"] == 3 and manifest["layout"] == "movielens"
    assert schema.label == "label" and schema.dense == ("age", "release_year")
    assert schema.categorical_names == ("user_id", "item_id", "gender", "occupation", "zip", "genres")
    assert [f.multi_hot for f in schema.categorical] == [False] * 5 + [True]
    sizes = dict(zip(schema.categorical_names, schema.num_embeddings, strict=True))
    assert sizes["gender"] == 3 and sizes["occupation"] == 22 and sizes["genres"] == 20
    assert sizes["user_id"] <= 944 and sizes["item_id"] <= 1683
    assert (
        pq.read_schema(prepared / manifest["splits"]["train"]["files"][0]["path"]) == schema.parquet_schema()
    )


def test_genre_bags(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    genres = next(f for f in manifest["features"]["categorical"] if f["name"] == "genres")
    train = _split(prepared, "train")
    lengths = pc.list_value_length(train.column("genres")).to_numpy()
    assert genres["max_bag_length"] == lengths.max() == 6
    assert genres["mean_bag_length"] == pytest.approx(lengths.mean(), abs=1e-4)
    assert 1.5 < lengths.mean() < 2.5 and lengths.min() >= 1
    # The join: each rating's bag is its movie's set flags, here counted from u.item directly.
    items = {}
    for line in (ML_100K / "u.item").read_bytes().decode("latin-1").splitlines():
        fields = line.split("|")
        items[int(fields[0])] = sum(flag == "1" for flag in fields[5:])
    ratings = np.loadtxt(ML_100K / "u.data", dtype=np.int64)
    order = np.lexsort((ratings[:, 1], ratings[:, 0], ratings[:, 3]))
    expected = [items[item] for item in ratings[order, 1][:80_000]]
    assert lengths.tolist() == expected
