"""Model families for CTR prediction, all on one shared sparse backbone, chosen by `model.name`.

Every family gets the same `EmbeddingBagCollection` (one table per Criteo categorical column C1..C26,
sum pooling, width `model.embedding_dim`) so that sharding, fused optimizers and checkpoints are the same
whatever sits on top. A family is a builder function in `MODEL_REGISTRY`; adding one (Wide&Deep, DeepFM,
DCN, ...) means writing its module and one registry line.

Every model's forward is `(dense_features [B, 13], sparse_features KeyedJaggedTensor) -> logits [B]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS
from dlrm_dist.config import ModelConfig
from dlrm_dist.models.dlrm import build_dlrm

# (model_cfg, embedding_bag_collection, dense_in_features, dense_device) -> model
ModelBuilder = Callable[[ModelConfig, EmbeddingBagCollection, int, torch.device], nn.Module]

MODEL_REGISTRY: dict[str, ModelBuilder] = {
    "dlrm": build_dlrm,
}

META_DEVICE = torch.device("meta")
CPU_DEVICE = torch.device("cpu")


def build_embedding_bag_collection(
    embedding_dim: int, num_embeddings: Sequence[int], device: torch.device
) -> EmbeddingBagCollection:
    """The sparse backbone: table `C<i>` for feature `C<i>`, sum pooling, `embedding_dim` wide.

    Args:
        embedding_dim: width D of every table.
        num_embeddings: rows of each table, in the order of `SPARSE_COLUMNS` (C1..C26).
        device: "meta" when DistributedModelParallel will shard and materialise it; a real device for an
            unsharded model.

    Returns:
        The `EmbeddingBagCollection`.

    Raises:
        ValueError: when `num_embeddings` does not give one positive size per sparse column.
    """
    if len(num_embeddings) != len(SPARSE_COLUMNS):
        raise ValueError(
            f"num_embeddings: expected one table size per sparse column ({len(SPARSE_COLUMNS)}: "
            f"{SPARSE_COLUMNS[0]}..{SPARSE_COLUMNS[-1]}), got {len(num_embeddings)}"
        )
    if min(num_embeddings) < 1:
        raise ValueError(f"num_embeddings: every table needs at least one row, got {list(num_embeddings)}")
    tables = [
        EmbeddingBagConfig(
            name=column,
            embedding_dim=embedding_dim,
            num_embeddings=int(rows),
            feature_names=[column],
            pooling=PoolingType.SUM,
        )
        for column, rows in zip(SPARSE_COLUMNS, num_embeddings, strict=True)
    ]
    return EmbeddingBagCollection(tables=tables, device=device)


def build_model(
    model_cfg: ModelConfig,
    num_embeddings: Sequence[int],
    dense_in_features: int = NUM_DENSE,
    sparse_device: torch.device = META_DEVICE,
    dense_device: torch.device = CPU_DEVICE,
) -> nn.Module:
    """Builds the model family named by `model_cfg.name` on the shared sparse backbone.

    Args:
        model_cfg: the `[model]` section.
        num_embeddings: rows of each table C1..C26 (from the manifest, already capped by the caller).
        dense_in_features: number of dense features (13 for Criteo).
        sparse_device: device of the embedding tables ("meta" to let DistributedModelParallel shard
            and initialise them).
        dense_device: device of the dense layers.

    Returns:
        The model: `(dense_features [B, dense_in_features], sparse_features KJT) -> logits [B]`.

    Raises:
        ValueError: naming `model.name` for an unknown family, or the offending field of `model_cfg`.
    """
    builder = MODEL_REGISTRY.get(model_cfg.name)
    if builder is None:
        raise ValueError(
            f"model.name: {model_cfg.name!r} is not a known model family (known: "
            f"{', '.join(sorted(MODEL_REGISTRY))})"
        )
    embedding_bag_collection = build_embedding_bag_collection(
        model_cfg.embedding_dim, num_embeddings, sparse_device
    )
    return builder(model_cfg, embedding_bag_collection, dense_in_features, dense_device)
