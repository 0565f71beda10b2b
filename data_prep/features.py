"""The feature schema: what a prepared data set holds, as the trainer and every tool below data_prep read it.

A data set is a label, zero or more dense (float) features and one or more categorical features, each
with its embedding table size and a kind: one-hot (one id per row, an `int32` Parquet column) or
multi-hot (a bag of ids per row, `list<int32>`). `manifest.json` records it under `"features"`:

    "features": {
      "label": "label",
      "dense": ["I1", "I2"],
      "categorical": [
        {"name": "C1", "num_embeddings": 1000, "multi_hot": false},
        {"name": "genres", "num_embeddings": 20, "multi_hot": true, "mean_bag_length": 1.7,
         "max_bag_length": 6}
      ]
    }

`mean_bag_length` and `max_bag_length` (multi-hot features only) are measured on the train split; the
planner uses the mean as the pooling factor. Manifests written before the schema existed (Criteo's
13 dense and 26 categorical columns, `num_embeddings`, `multi_hot`, `bag_lengths`) read as the same
schema through `FeatureSchema.from_manifest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from data_prep.schema import DENSE_COLUMNS, LABEL


@dataclass(frozen=True)
class Categorical:
    """One categorical feature: its column, table rows, and whether a row holds a bag of ids."""

    name: str
    num_embeddings: int
    multi_hot: bool = False
    mean_bag_length: float | None = None
    max_bag_length: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "num_embeddings": self.num_embeddings,
            "multi_hot": self.multi_hot,
        }
        if self.mean_bag_length is not None:
            out["mean_bag_length"] = self.mean_bag_length
        if self.max_bag_length is not None:
            out["max_bag_length"] = self.max_bag_length
        return out


@dataclass(frozen=True)
class FeatureSchema:
    """The label, dense and categorical features of a prepared data set, in column order."""

    categorical: tuple[Categorical, ...]
    dense: tuple[str, ...] = ()
    label: str = LABEL

    def __post_init__(self) -> None:
        if not self.categorical:
            raise ValueError("features.categorical: a data set needs at least one categorical feature")
        names = [self.label, *self.dense, *self.categorical_names]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"features: column {duplicates[0]!r} is named more than once")
        for feature in self.categorical:
            if feature.num_embeddings < 1:
                raise ValueError(
                    f"features.categorical: {feature.name} needs at least one table row, got {feature.num_embeddings}"
                )

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.categorical)

    @property
    def num_embeddings(self) -> tuple[int, ...]:
        return tuple(feature.num_embeddings for feature in self.categorical)

    @property
    def num_dense(self) -> int:
        return len(self.dense)

    @property
    def any_multi_hot(self) -> bool:
        return any(feature.multi_hot for feature in self.categorical)

    def with_num_embeddings(self, sizes: Sequence[int]) -> FeatureSchema:
        """The same schema with other table sizes (e.g. capped by `model.max_table_rows`)."""
        if len(sizes) != len(self.categorical):
            raise ValueError(
                f"num_embeddings: expected {len(self.categorical)} table sizes, got {len(sizes)}"
            )
        tables = tuple(
            Categorical(f.name, int(rows), f.multi_hot, f.mean_bag_length, f.max_bag_length)
            for f, rows in zip(self.categorical, sizes, strict=True)
        )
        return FeatureSchema(categorical=tables, dense=self.dense, label=self.label)

    def parquet_schema(self) -> pa.Schema:
        """The schema of every shard: int8 label, float32 dense, int32 ids (`list<int32>` multi-hot)."""
        return pa.schema(
            [pa.field(self.label, pa.int8(), nullable=False)]
            + [pa.field(name, pa.float32(), nullable=False) for name in self.dense]
            + [
                pa.field(f.name, pa.list_(pa.int32()) if f.multi_hot else pa.int32(), nullable=False)
                for f in self.categorical
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "dense": list(self.dense),
            "categorical": [feature.to_json() for feature in self.categorical],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSchema:
        """Reads the manifest's `"features"`; errors name the bad field."""
        try:
            categorical = tuple(
                Categorical(
                    name=str(item["name"]),
                    num_embeddings=int(item["num_embeddings"]),
                    multi_hot=bool(item.get("multi_hot", False)),
                    mean_bag_length=None
                    if item.get("mean_bag_length") is None
                    else float(item["mean_bag_length"]),
                    max_bag_length=None
                    if item.get("max_bag_length") is None
                    else int(item["max_bag_length"]),
                )
                for item in data["categorical"]
            )
            return cls(
                categorical=categorical,
                dense=tuple(map(str, data.get("dense", []))),
                label=str(data["label"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"features: malformed schema ({type(error).__name__}: {error})") from None

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> FeatureSchema:
        """The schema of a manifest: its `"features"`, or for older Criteo manifests their fixed layout."""
        if "features" in manifest:
            return cls.from_json(manifest["features"])
        sizes = [int(rows) for rows in manifest["num_embeddings"]]
        columns = manifest.get("columns", {})
        sparse = columns.get("sparse") or [f"C{index}" for index in range(1, len(sizes) + 1)]
        if len(sparse) != len(sizes):
            raise ValueError(
                f"manifest: columns.sparse names {len(sparse)} columns but num_embeddings gives {len(sizes)} sizes"
            )
        multi_hot = bool(manifest.get("multi_hot", False))
        bags = manifest.get("bag_lengths") if multi_hot else None
        categorical = tuple(
            Categorical(
                name=name,
                num_embeddings=rows,
                multi_hot=multi_hot,
                mean_bag_length=float(bags["mean"][index]) if bags else None,
                max_bag_length=int(bags["max"][index]) if bags else None,
            )
            for index, (name, rows) in enumerate(zip(sparse, sizes, strict=True))
        )
        return cls(
            categorical=categorical,
            dense=tuple(columns.get("dense", DENSE_COLUMNS)),
            label=columns.get("label", LABEL),
        )


def criteo_schema(
    num_embeddings: Sequence[int], multi_hot: bool = False, bag_lengths: dict[str, list] | None = None
) -> FeatureSchema:
    """The Criteo layout: label, I1..I13, C1..C26 with the given table sizes (and measured bag lengths)."""
    return FeatureSchema.from_manifest(
        {
            "num_embeddings": list(num_embeddings),
            "multi_hot": multi_hot,
            **({"bag_lengths": bag_lengths} if bag_lengths else {}),
        }
    )
