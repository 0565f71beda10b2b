"""Prepared data sets of any feature schema, with a planted signal, written straight to Parquet.

`dlrm-prep` writes Criteo's layout (and `table` any other); the trainer must take whatever a manifest's
`"features"` says. These tests need schemas that no raw format is convenient for (no dense feature,
one categorical, 100 categoricals, tables of one row), so they write the shards themselves, with rows
drawn from a known model, and the manifest with `data_prep.manifest.build_manifest`:

    logit = sum_f effect_f[id_f] (mean over a bag's ids) + 0.8 * sum_d dense_d - bias

so that a trained model's AUC has something to find.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.features import Categorical, FeatureSchema
from data_prep.inputs import InputFile
from data_prep.manifest import build_manifest

SPLIT_ROWS = {"train": 4096, "val": 1024, "test": 1024}
ROW_GROUP_ROWS = 512


def odd_schema(shape: str) -> FeatureSchema:
    """A schema by name: the edge cases the trainer must handle."""
    if shape == "no_dense":
        return FeatureSchema(categorical=tuple(Categorical(f"cat{i}", 50) for i in range(4)))
    if shape == "one_categorical":
        return FeatureSchema(categorical=(Categorical("item", 200),), dense=("price", "age"))
    if shape == "many_categoricals":
        return FeatureSchema(
            categorical=tuple(Categorical(f"f{i:03d}", 20 + i) for i in range(100)), dense=("x",)
        )
    if shape == "constant":
        # Tables of 1 and 2 rows: a feature that is always missing, and one with one value.
        tables = (Categorical("always_missing", 1), Categorical("one_value", 2), Categorical("user", 300))
        return FeatureSchema(categorical=tables, dense=("d0", "d_const"))
    if shape == "mixed_bags":
        tables = (
            Categorical("user", 100),
            Categorical("genres", 19, multi_hot=True, mean_bag_length=1.7, max_bag_length=6),
        )
        return FeatureSchema(categorical=tables, dense=("year",), label="clicked")
    raise ValueError(shape)


ODD_SHAPES = ("no_dense", "one_categorical", "many_categoricals", "constant", "mixed_bags")


def write_prepared(
    directory: Path, features: FeatureSchema, seed: int = 0, rows_per_file: int = 2048
) -> Path:
    """Writes train/val/test shards and manifest.json for `features` under `directory`; returns it."""
    rng = np.random.default_rng(seed)
    effects = [rng.normal(0, 1.5, f.num_embeddings) for f in features.categorical]
    for effect in effects:
        effect[0] = 0.0  # id 0 is missing / out of vocabulary
    directory.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, rows in SPLIT_ROWS.items():
        columns: dict[str, pa.Array] = {}
        logit = np.full(rows, -0.3)
        for name in features.dense:
            values = (
                rng.exponential(1.0, rows).astype(np.float32)
                if name != "d_const"
                else np.ones(rows, np.float32)
            )
            columns[name] = pa.array(values)
            logit += 0.8 * (values - 1.0)
        for feature, effect in zip(features.categorical, effects, strict=True):
            if feature.multi_hot:
                lengths = rng.integers(0, 4, rows)
                ids = rng.integers(1, feature.num_embeddings, lengths.sum())
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
                sums = np.bincount(np.repeat(np.arange(rows), lengths), weights=effect[ids], minlength=rows)
                logit += np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)
                columns[feature.name] = pa.ListArray.from_arrays(
                    pa.array(offsets), pa.array(ids.astype(np.int32))
                )
            else:
                ids = rng.integers(0, feature.num_embeddings, rows)
                logit += effect[ids]
                columns[feature.name] = pa.array(ids.astype(np.int32))
        labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        table = pa.table({features.label: pa.array(labels), **columns}).cast(features.parquet_schema())
        files = []
        for index, start in enumerate(range(0, rows, rows_per_file)):
            path = f"{split}/part-{index:05d}.parquet"
            (directory / split).mkdir(exist_ok=True)
            part = table.slice(start, rows_per_file)
            pq.write_table(part, directory / path, row_group_size=ROW_GROUP_ROWS)
            files.append({"path": path, "rows": part.num_rows})
        splits[split] = {"rows": rows, "files": files}
    manifest = build_manifest(
        options={
            "layout": "test",
            "dense_transform": "none",
            "rows_per_shard": rows_per_file,
            "row_group_rows": ROW_GROUP_ROWS,
        },
        arguments={},
        fingerprint={},
        encoding={"mode": "vocab", "min_count": 1},
        vocab_files=None,
        num_embeddings=list(features.num_embeddings),
        bag_lengths=None,
        splits=splits,
        # No file was read: one stands for the drawn rows, so that rows read == rows written holds.
        input_files=[InputFile(path="drawn", bytes=0)],
        file_lines=[sum(SPLIT_ROWS.values())],
        bad_counts={},
        bad_examples=[],
        seconds=0.0,
        features=features,
    )
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory
