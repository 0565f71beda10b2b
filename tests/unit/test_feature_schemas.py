"""Data sets that are not Criteo: the loader and every model family take the manifest's feature schema.

The edge cases the schema issue names (no dense feature, a single categorical, 100 categoricals,
constant features with tables of 1-2 rows) and a mix of one-hot and multi-hot features, each written
as a prepared data set (`tests/schema_data.py`), read by the loader and put through one training step
of every family on CPU tables.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from data_prep.features import FeatureSchema
from dlrm_dist.data import iter_eval_batches, iter_train_batches, list_row_groups
from dlrm_dist.models import MODEL_REGISTRY, build_model
from dlrm_dist.models.train_module import CTRTrainModule
from tests.conftest import features_of
from tests.schema_data import ODD_SHAPES, odd_schema, write_prepared
from tests.unit.test_model_zoo import SMALL_CFG


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("schemas")
    return {shape: str(write_prepared(root / shape, odd_schema(shape), seed=1)) for shape in ODD_SHAPES}


def first_batch(data_dir: str, batch_size: int = 64):
    features = features_of(data_dir)
    groups = list_row_groups(data_dir, _manifest(data_dir), "train")
    # Evaluation order is file order (training permutes row groups), so batches can be compared to shards.
    batch, _ = next(iter_eval_batches(groups, 0, 1, batch_size, features=features))
    return features, batch


def _manifest(data_dir: str) -> dict:
    from data_prep.manifest import load_manifest

    return load_manifest(data_dir)


def test_the_schema_round_trips_through_the_manifest(prepared):
    for shape in ODD_SHAPES:
        assert features_of(prepared[shape]) == odd_schema(shape)
        assert FeatureSchema.from_json(odd_schema(shape).to_json()) == odd_schema(shape)


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_batches_hold_the_schemas_columns(prepared, shape):
    features, batch = first_batch(prepared[shape])
    assert batch.dense_features.shape == (64, features.num_dense)
    assert batch.sparse_features.keys() == list(features.categorical_names)
    table = pq.read_table(f"{prepared[shape]}/train/part-00000.parquet").slice(0, 64)
    assert batch.labels.tolist() == table.column(features.label).to_numpy().astype(np.float32).tolist()
    jagged = batch.sparse_features.to_dict()
    for feature in features.categorical:
        column = table.column(feature.name).to_pylist()
        bags = column if feature.multi_hot else [[value] for value in column]
        got = [
            ids.tolist()
            for ids in torch.split(jagged[feature.name].values(), jagged[feature.name].lengths().tolist())
        ]
        assert got == bags, feature.name


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_train_and_eval_batches_cover_the_splits(prepared, shape):
    features = features_of(prepared[shape])
    groups = list_row_groups(prepared[shape], _manifest(prepared[shape]), "val")
    assert sum(valid for _, valid in iter_eval_batches(groups, 0, 1, 300, features=features)) == 1024
    train = list_row_groups(prepared[shape], _manifest(prepared[shape]), "train")
    labels = [b.labels for b in iter_train_batches(train, 0, 1, 512, 0, 0, 256, features=features)]
    assert len(labels) == 8 and sum(len(batch) for batch in labels) == 4096


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_every_family_takes_a_finite_step_on_every_shape(prepared, shape, name):
    features, batch = first_batch(prepared[shape])
    torch.manual_seed(0)
    model = CTRTrainModule(
        build_model(dataclasses.replace(SMALL_CFG, name=name), features, sparse_device=torch.device("cpu"))
    )
    loss, (_, logits, _) = model(batch)
    assert logits.shape == (64,) and torch.isfinite(logits).all()
    loss.backward()
    with_grad = [p for p in model.parameters() if p.grad is not None]
    assert with_grad and all(torch.isfinite(p.grad).all() for p in with_grad)
    # Every table took part: each has a gradient (tables of one row too).
    tables = {n for n, p in model.named_parameters() if "embedding_bag" in n and p.grad is not None}
    expected_tables = len(features.categorical) * (1 + (name in ("deepfm", "fm", "wide_deep", "xdeepfm")))
    assert len(tables) == (len(features.categorical) if name == "lr" else expected_tables), tables


def test_dlrm_without_dense_features_interacts_the_embeddings_alone(prepared):
    features, batch = first_batch(prepared["no_dense"])
    model = build_model(
        dataclasses.replace(SMALL_CFG, name="dlrm"), features, sparse_device=torch.device("cpu")
    )
    # The embeddings' sum (D) and the 4 choose 2 dot products feed the top MLP; no bottom MLP exists.
    assert not any("dense_arch" in name for name, _ in model.named_parameters())
    first = next(module for module in model.over_arch.modules() if isinstance(module, torch.nn.Linear))
    assert first.in_features == SMALL_CFG.embedding_dim + 6
    embeddings = model.sparse_arch(batch.sparse_features)
    pairs = [(f, g) for f in range(4) for g in range(f + 1, 4)]
    literal = torch.stack([(embeddings[:, f] * embeddings[:, g]).sum(-1) for f, g in pairs], dim=1)
    expected = model.over_arch(torch.cat([embeddings.sum(1), literal], dim=1)).squeeze(-1)
    torch.testing.assert_close(model(batch.dense_features, batch.sparse_features), expected)
