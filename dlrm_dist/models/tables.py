"""The embedding tables every model family is built on: one `EmbeddingBagCollection` per kind of table.

Two kinds exist, both one table per categorical feature of the data set (its schema's names, e.g.
C1..C26 for Criteo), fed by the same `sparse_features` keys:

    field tables         "C1".."C26"             D wide   the field embeddings e_f of every family
    first-order tables   "wide_C1".."wide_C26"   4 wide   the first-order weights w_f(v) of the families
                                                          with a linear part (wide_deep, deepfm, xdeepfm,
                                                          lr, fm)

A field table pools a multi-hot bag's rows with `model.pooling` (sum or mean); a first-order table
always sums (see `first_order_collection`). Both are created here, usually on the meta device, so that the planner and `DistributedModelParallel`
find, shard and materialise every table of every family alike. Table names are unique across
collections because the planner's per-table constraints (`[sharding] tables`) are keyed by name.

A first-order weight is a scalar per id, but fbgemm's table-batched kernels (the `fused` kernel behind
every sharding type other than data_parallel) only take rows whose width is a multiple of 4. So each
first-order table is 4 wide and the weight of id v is the sum of its row, w_f(v) = sum_c W_f[v, c]: a
scalar per id, sharded like any other table, at 4 floats per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

FIRST_ORDER_TABLE_PREFIX = "wide_"
# fbgemm's narrowest row (split_table_batched_embeddings_ops_training asserts dim % 4 == 0).
FIRST_ORDER_TABLE_DIM = 4
POOLING_TYPES: dict[str, PoolingType] = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


def default_feature_names(count: int) -> tuple[str, ...]:
    """C1..C<count>: the names of tables given by size alone (Criteo's layout when count is 26)."""
    return tuple(f"C{index}" for index in range(1, count + 1))


def check_num_embeddings(num_embeddings: Sequence[int], feature_names: Sequence[str]) -> None:
    """Fails unless `num_embeddings` gives one positive table size per categorical feature.

    Raises:
        ValueError: naming `num_embeddings`.
    """
    if not num_embeddings:
        raise ValueError("num_embeddings: a model needs at least one categorical feature (table)")
    if len(num_embeddings) != len(feature_names):
        raise ValueError(
            f"num_embeddings: expected one table size per categorical feature ({len(feature_names)}), "
            f"got {len(num_embeddings)}"
        )
    if min(num_embeddings) < 1:
        raise ValueError(f"num_embeddings: every table needs at least one row, got {list(num_embeddings)}")


def build_embedding_bag_collection(
    embedding_dim: int,
    num_embeddings: Sequence[int],
    device: torch.device,
    name_prefix: str = "",
    pooling: str = "sum",
    feature_names: Sequence[str] = (),
) -> EmbeddingBagCollection:
    """Table `<name_prefix><f>` for each feature `f`, `embedding_dim` wide, pooling its bags by `pooling`.

    Args:
        embedding_dim: width of every table.
        num_embeddings: rows of each table, in the order of `feature_names`.
        device: "meta" when DistributedModelParallel will shard and materialise it; a real device for an
            unsharded model.
        name_prefix: prepended to each table's name (not to its feature), so that several collections
            over the same features have distinct table names.
        pooling: "sum" or "mean" of the rows of a bag's ids (an empty bag pools to zeros either way).
        feature_names: the categorical features, one per table (empty: C1..Cn).

    Returns:
        The `EmbeddingBagCollection`.

    Raises:
        ValueError: when `num_embeddings` does not give one positive size per feature, or naming
            `model.pooling` when `pooling` is not sum or mean.
    """
    feature_names = tuple(feature_names) or default_feature_names(len(num_embeddings))
    check_num_embeddings(num_embeddings, feature_names)
    if pooling not in POOLING_TYPES:
        raise ValueError(f"model.pooling: {pooling!r} is not one of {', '.join(POOLING_TYPES)}")
    tables = [
        EmbeddingBagConfig(
            name=f"{name_prefix}{column}",
            embedding_dim=embedding_dim,
            num_embeddings=int(rows),
            feature_names=[column],
            pooling=POOLING_TYPES[pooling],
        )
        for column, rows in zip(feature_names, num_embeddings, strict=True)
    ]
    return EmbeddingBagCollection(tables=tables, device=device)


@dataclass(frozen=True)
class EmbeddingTables:
    """Sizes, names and device of the tables; the one way model builders get an `EmbeddingBagCollection`.

    Args:
        num_embeddings: rows of each table (checked on construction).
        device: where the tables are created ("meta" until DistributedModelParallel shards them).
        pooling: how the field tables pool a bag, "sum" or "mean" (`model.pooling`).
        feature_names: the categorical feature each table reads, in the data's order (empty: C1..Cn).

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("meta"))
        fields = tables.field_collection(embedding_dim=16)   # tables C1..C26, 16 wide
        first_order = tables.first_order_collection()        # tables wide_C1..wide_C26, 4 wide
    """

    num_embeddings: tuple[int, ...]
    device: torch.device
    pooling: str = "sum"
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.feature_names:
            object.__setattr__(self, "feature_names", default_feature_names(len(self.num_embeddings)))
        check_num_embeddings(self.num_embeddings, self.feature_names)

    @property
    def num_features(self) -> int:
        return len(self.num_embeddings)

    def field_collection(self, embedding_dim: int) -> EmbeddingBagCollection:
        """One table per feature, `embedding_dim` wide: pooled (by `pooling`) into the field embeddings [B, F, D]."""
        return build_embedding_bag_collection(
            embedding_dim,
            self.num_embeddings,
            self.device,
            pooling=self.pooling,
            feature_names=self.feature_names,
        )

    def first_order_collection(self) -> EmbeddingBagCollection:
        """Tables wide_<f> per feature, `FIRST_ORDER_TABLE_DIM` wide: each row sums to a first-order weight."""
        # Always summed, whatever `pooling` says: the first-order term of a bag is the sum of its ids'
        # weights, sum_v w_f(v), as in the linear model over multi-hot indicator features; a mean would
        # make it a different model for the same data.
        return build_embedding_bag_collection(
            FIRST_ORDER_TABLE_DIM,
            self.num_embeddings,
            self.device,
            name_prefix=FIRST_ORDER_TABLE_PREFIX,
            pooling="sum",
            feature_names=self.feature_names,
        )
