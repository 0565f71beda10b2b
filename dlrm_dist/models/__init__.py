"""Model families for CTR prediction, all on one shared sparse backbone, chosen by `model.name`.

The families are the DLRM paper's model and the baselines it is compared with (see each module's
docstring for the formula and shapes):

    dlrm         DLRM: bottom MLP, pairwise dot products, top MLP (TorchRec's `DLRM`)           dlrm.py
    dlrm_dcnv2   MLPerf DLRMv2: DLRM with a low-rank DCN-v2 cross network (TorchRec's `DLRM_DCN`) dcnv2.py
    wide_deep    Wide & Deep: first-order term + deep MLP                                        wide_deep.py
    deepfm       DeepFM: first-order term + factorization machine + deep MLP                     deepfm.py
    dcn          Deep & Cross Network (v1): vector cross layers beside a deep MLP               dcn.py
    xdeepfm      xDeepFM: first-order term + Compressed Interaction Network + deep MLP           xdeepfm.py
    lr           logistic regression: first-order term only (the paper's floor)                 linear.py
    fm           factorization machine: first-order term + pairwise FM term (paper section 2.1) linear.py

Every family gets its `EmbeddingBagCollection`s from `EmbeddingTables` (one table per categorical
feature of the data's schema, pooled by `model.pooling`; the families with a linear part add a second
collection of first-order tables wide_<f>), created on the meta device, so that sharding, fused optimizers
and checkpoints are the same whatever sits on top. Shared sub-networks live in `components`. A family
is a builder function in `MODEL_REGISTRY`; adding one means writing its module and one registry line.

Every model's forward is `(dense_features [B, num_dense], sparse_features KeyedJaggedTensor) -> logits [B]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from data_prep.features import FeatureSchema
from data_prep.schema import NUM_DENSE
from dlrm_dist.config import ModelConfig
from dlrm_dist.models.dcn import build_dcn
from dlrm_dist.models.dcnv2 import build_dlrm_dcnv2
from dlrm_dist.models.deepfm import build_deepfm
from dlrm_dist.models.dlrm import build_dlrm
from dlrm_dist.models.linear import build_fm, build_lr
from dlrm_dist.models.perceptron import use_fast_perceptrons
from dlrm_dist.models.tables import EmbeddingTables, build_embedding_bag_collection
from dlrm_dist.models.wide_deep import build_wide_deep
from dlrm_dist.models.xdeepfm import build_xdeepfm

__all__ = [
    "MODEL_REGISTRY",
    "EmbeddingTables",
    "build_embedding_bag_collection",
    "build_model",
    "parameter_counts",
]

# (model_cfg, embedding_tables, dense_in_features, dense_device) -> model
ModelBuilder = Callable[[ModelConfig, EmbeddingTables, int, torch.device], nn.Module]

MODEL_REGISTRY: dict[str, ModelBuilder] = {
    "dlrm": build_dlrm,
    "dlrm_dcnv2": build_dlrm_dcnv2,
    "wide_deep": build_wide_deep,
    "deepfm": build_deepfm,
    "dcn": build_dcn,
    "xdeepfm": build_xdeepfm,
    "lr": build_lr,
    "fm": build_fm,
}

META_DEVICE = torch.device("meta")
CPU_DEVICE = torch.device("cpu")


def build_model(
    model_cfg: ModelConfig,
    features: FeatureSchema | Sequence[int],
    dense_in_features: int | None = None,
    sparse_device: torch.device = META_DEVICE,
    dense_device: torch.device = CPU_DEVICE,
) -> nn.Module:
    """Builds the model family named by `model_cfg.name` on the shared sparse backbone.

    Args:
        model_cfg: the `[model]` section.
        features: the data set's schema (`FeatureSchema.from_manifest`: its categorical features name
            and size the tables, its dense features the input width); or bare table sizes, for tables
            named C1..Cn over 13 dense features (Criteo's layout).
        dense_in_features: number of dense features, when it differs from what `features` says.
        sparse_device: device of the embedding tables ("meta" to let DistributedModelParallel shard
            and initialise them).
        dense_device: device of the dense layers.

    Returns:
        The model: `(dense_features [B, dense_in_features], sparse_features KJT) -> logits [B]`.

    Raises:
        ValueError: naming `model.name` for an unknown family, `features` for wrong table sizes,
            or the offending field of `model_cfg`.
    """
    builder = MODEL_REGISTRY.get(model_cfg.name)
    if builder is None:
        raise ValueError(
            f"model.name: {model_cfg.name!r} is not a known model family (known: "
            f"{', '.join(sorted(MODEL_REGISTRY))})"
        )
    if isinstance(features, FeatureSchema):
        sizes, names, num_dense = features.num_embeddings, features.categorical_names, features.num_dense
    else:
        sizes, names, num_dense = tuple(int(rows) for rows in features), (), NUM_DENSE
    tables = EmbeddingTables(
        num_embeddings=sizes, device=sparse_device, pooling=model_cfg.pooling, feature_names=names
    )
    model = builder(
        model_cfg, tables, num_dense if dense_in_features is None else dense_in_features, dense_device
    )
    return use_fast_perceptrons(model)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """`(dense, sparse)` parameter counts of an unsharded model (meta-device tables count too).

    Sparse parameters are the rows of every `EmbeddingBagCollection`; dense ones are all the others.
    """
    sparse = sum(
        param.numel()
        for module in model.modules()
        if isinstance(module, EmbeddingBagCollection)
        for param in module.parameters()
    )
    return sum(param.numel() for param in model.parameters()) - sparse, sparse
