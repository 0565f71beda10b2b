"""Multi-hot batches: the KeyedJaggedTensor's lengths and values against the Parquet bags, exactly-once eval
with padding, shuffled training, and an EmbeddingBagCollection's pooled values against numpy."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.modules.embedding_configs import PoolingType

from data_prep.cli import main
from data_prep.manifest import load_manifest
from data_prep.schema import DENSE_COLUMNS, SPARSE_COLUMNS
from data_prep.synth import MLPERF_MULTI_HOT_SIZES, generate
from dlrm_dist.config import ModelConfig, load_config
from dlrm_dist.data import iter_eval_batches, iter_train_batches, list_row_groups, train_steps_per_epoch
from dlrm_dist.models import EmbeddingTables, build_embedding_bag_collection
from tests.conftest import features_of

BUCKETS = 97


@pytest.fixture(scope="module")
def multi_hot_data(tmp_path_factory):
    """2 synthetic days of 1200 rows with MLPerf's bag sizes, prepared with --multi-hot in small row groups."""
    root = tmp_path_factory.mktemp("multi_hot_loader")
    generate(root / "days", days=2, rows_per_day=1200, seed=11, cardinalities=[300] * 26,
             multi_hot_sizes=MLPERF_MULTI_HOT_SIZES, progress=False)  # fmt: skip
    out = root / "prepared"
    args = ["criteo", "--input", str(root / "days"), "--out", str(out), "--layout", "terabyte", "--multi-hot",
            "--hash-buckets", str(BUCKETS), "--rows-per-shard", "500", "--row-group-rows", "128",
            "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return out


def split_rows(data_dir, split) -> list[tuple]:
    """Each row of a split as (label, dense values, bags), straight from the Parquet files."""
    rows = []
    for entry in load_manifest(data_dir)["splits"][split]["files"]:
        table = pq.read_table(data_dir / entry["path"])
        dense = np.stack([table.column(c).to_numpy() for c in DENSE_COLUMNS], 1)
        bags = list(zip(*(table.column(c).to_pylist() for c in SPARSE_COLUMNS), strict=True))
        rows += [
            (float(label), tuple(d.tolist()), tuple(map(tuple, row_bags)))
            for label, d, row_bags in zip(table.column("label").to_numpy(), dense, bags, strict=True)
        ]
    return rows


def batch_rows(batch, valid=None) -> list[tuple]:
    """The batch's rows in the form of `split_rows`, the bags read back through TorchRec's KJT API."""
    size = batch.labels.shape[0]
    per_key = batch.sparse_features.to_dict()
    bags = [per_key[name].to_dense() for name in SPARSE_COLUMNS]
    return [
        (
            float(batch.labels[i]),
            tuple(batch.dense_features[i].tolist()),
            tuple(tuple(bags[key][i].tolist()) for key in range(len(SPARSE_COLUMNS))),
        )
        for i in range(size if valid is None else valid)
    ]


def test_kjt_is_key_major_with_the_bag_lengths(multi_hot_data):
    groups = list_row_groups(multi_hot_data, load_manifest(multi_hot_data), "val")
    batch, valid = next(
        iter_eval_batches(
            groups,
            rank=0,
            world_size=1,
            batch_size=100,
            features=features_of(multi_hot_data),
        )
    )
    assert valid == 100
    first_rows = split_rows(multi_hot_data, "val")[:100]
    # All of C1's bags for the batch, then all of C2's, ...: TorchRec's KJT layout.
    want_lengths = [len(row[2][key]) for key in range(26) for row in first_rows]
    want_values = [value for key in range(26) for row in first_rows for value in row[2][key]]
    kjt = batch.sparse_features
    assert kjt.keys() == list(SPARSE_COLUMNS)
    assert kjt.lengths().tolist() == want_lengths
    assert kjt.values().tolist() == want_values
    assert kjt.values().dtype == torch.int64
    assert max(want_lengths) == 100 and min(want_lengths) == 0  # C21's full bags and missing fields


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 256), (2, 128), (3, 500)])
def test_eval_covers_every_row_once_and_pads_with_real_rows(multi_hot_data, world_size, batch_size):
    groups = list_row_groups(multi_hot_data, load_manifest(multi_hot_data), "test")
    split = split_rows(multi_hot_data, "test")
    seen = []
    padded = 0
    for rank in range(world_size):
        for batch, valid in iter_eval_batches(
            groups,
            rank,
            world_size,
            batch_size,
            features=features_of(multi_hot_data),
        ):
            rows = batch_rows(batch)
            assert len(rows) == batch_size
            seen += rows[:valid]
            padding = rows[valid:]
            padded += len(padding)
            assert all(row in split for row in padding), "a padded row must be a copy of a real row"
    assert padded > 0
    assert sorted(seen) == sorted(split)


def test_shuffled_train_batches_serve_real_rows_at_most_once(multi_hot_data):
    groups = list_row_groups(multi_hot_data, load_manifest(multi_hot_data), "train")
    world_size, batch_size = 2, 64
    steps = train_steps_per_epoch(groups, world_size, batch_size)
    per_rank = [
        list(
            iter_train_batches(
                groups,
                rank,
                world_size,
                batch_size,
                seed=1,
                epoch=0,
                shuffle_buffer=300,
                features=features_of(multi_hot_data),
            )
        )
        for rank in range(world_size)
    ]
    assert [len(batches) for batches in per_rank] == [steps, steps]
    remaining = split_rows(multi_hot_data, "train")
    for batch in per_rank[0] + per_rank[1]:
        for row in batch_rows(batch):
            remaining.remove(row)  # raises if a row is served twice or does not exist
    assert len(remaining) == len(split_rows(multi_hot_data, "train")) - steps * batch_size * world_size
    again = list(
        iter_train_batches(
            groups,
            0,
            world_size,
            batch_size,
            seed=1,
            epoch=0,
            shuffle_buffer=300,
            features=features_of(multi_hot_data),
        )
    )
    for first, second in zip(per_rank[0], again, strict=True):
        assert torch.equal(first.sparse_features.lengths(), second.sparse_features.lengths())
        assert torch.equal(first.sparse_features.values(), second.sparse_features.values())


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_pooled_values_equal_a_numpy_sum_or_mean_of_the_rows(multi_hot_data, pooling):
    groups = list_row_groups(multi_hot_data, load_manifest(multi_hot_data), "val")
    batch, _ = next(
        iter_eval_batches(
            groups,
            rank=0,
            world_size=1,
            batch_size=64,
            features=features_of(multi_hot_data),
        )
    )
    torch.manual_seed(0)
    collection = build_embedding_bag_collection(8, [BUCKETS] * 26, torch.device("cpu"), pooling=pooling)
    with torch.no_grad():
        pooled = collection(batch.sparse_features).to_dict()
    reduce = np.sum if pooling == "sum" else np.mean
    for key, column in enumerate(SPARSE_COLUMNS):
        weights = collection.embedding_bags[column].weight.detach().numpy()
        for row, (_, _, bags) in enumerate(batch_rows(batch)):
            bag = list(bags[key])
            want = reduce(weights[bag], axis=0) if bag else np.zeros(8, np.float32)  # empty bag pools to 0
            np.testing.assert_allclose(pooled[column][row].numpy(), want, rtol=1e-5, atol=1e-6)


def test_first_order_tables_sum_whatever_the_field_pooling():
    tables = EmbeddingTables(num_embeddings=(10,) * 26, device=torch.device("meta"), pooling="mean")
    assert {c.pooling for c in tables.field_collection(8).embedding_bag_configs()} == {PoolingType.MEAN}
    assert {c.pooling for c in tables.first_order_collection().embedding_bag_configs()} == {PoolingType.SUM}


def test_model_pooling_is_validated():
    assert ModelConfig().pooling == "sum"
    with pytest.raises(ValueError, match=r"model\.pooling: 'max' is not one of sum, mean"):
        ModelConfig(pooling="max")


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        (["--sharding.types=table_wise"], True),
        (["--sharding.types=row_wise,table_row_wise"], True),
        (["--sharding.types=table_wise", "--sharding.tables.C3=column_wise"], True),
        ([], False),  # the planner could mix them
        (["--sharding.types=row_wise,table_wise"], False),
        (["--sharding.types=table_wise", "--sharding.tables.C3=row_wise"], False),
    ],
)
def test_mean_pooling_refuses_plans_that_mix_row_split_and_other_tables(overrides, accepted):
    overrides = ["--model.pooling=mean", *overrides]
    if accepted:
        assert load_config(None, overrides).model.pooling == "mean"
    else:
        with pytest.raises(ValueError, match=r"model\.pooling: mean pooling needs sharding\.types"):
            load_config(None, overrides)
