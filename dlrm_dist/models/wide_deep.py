"""The "wide_deep" family: Wide & Deep (Cheng et al. 2016, arXiv:1606.07792) on the sharded Criteo tables.

    logit = w_0 + dense_features . w_dense + sum_f w_f(v_f)         (wide: first-order, sharded tables)
          + MLP_deep(x_0)                                           (deep: ReLU MLP, last layer 1)
    x_0   = concat(dense_features, e_1, .., e_F)

The paper's wide part also holds hand-made cross-product features; Criteo comes with none, so the wide
part here is the first-order term alone, and learnt interactions are left to the deep part.

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every field table
    dense_in_features: number of dense features (13 for Criteo: I1..I13)

    dense_features [B, 13], sparse_features KJT -> FirstOrderArch (tables wide_C*)   -> [B]
    dense_features [B, 13], sparse_features KJT -> StackedInputArch (tables C*)      -> x_0 [B, 13 + F D]
    x_0 -> DeepLogitArch (`model.deep_mlp` + [1])                                     -> [B]
    logits = wide + deep                                                              -> [B]
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import DeepLogitArch, FirstOrderArch, StackedInputArch
from dlrm_dist.models.tables import EmbeddingTables


class WideDeep(nn.Module):
    """A first-order (wide) logit plus an MLP (deep) logit over the stacked dense features and embeddings.

    Args:
        field_collection: tables C1..C26, `D` wide.
        first_order_collection: tables wide_C1..wide_C26 (a first-order weight per id).
        dense_in_features: number of dense features.
        deep_layer_sizes: hidden sizes of the deep MLP; a final Linear to one logit follows.
        dense_device: where the dense layers are created.

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("cpu"))
        model = WideDeep(tables.field_collection(8), tables.first_order_collection(),
                         dense_in_features=13, deep_layer_sizes=[16, 16])
        logits = model(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=[f"C{i}" for i in range(1, 27)], values=torch.arange(52) % 100,
            lengths=torch.ones(52, dtype=torch.int64)))
        # logits.shape == (2,)
    """

    def __init__(
        self,
        field_collection: EmbeddingBagCollection,
        first_order_collection: EmbeddingBagCollection,
        dense_in_features: int,
        deep_layer_sizes: list[int],
        dense_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.stacked_input_arch = StackedInputArch(field_collection, dense_in_features)
        self.wide_arch = FirstOrderArch(first_order_collection, dense_in_features, dense_device)
        self.deep_arch = DeepLogitArch(self.stacked_input_arch.out_features, deep_layer_sizes, dense_device)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per sparse column (C1..C26), B bags per key.

        Returns:
            logits [B].
        """
        stacked_input = self.stacked_input_arch(dense_features, sparse_features)
        deep_logits = self.deep_arch(stacked_input)
        return self.wide_arch(dense_features, sparse_features) + deep_logits


def build_wide_deep(
    model_cfg: ModelConfig,
    tables: EmbeddingTables,
    dense_in_features: int,
    dense_device: torch.device,
) -> nn.Module:
    """Builds Wide & Deep on the shared sparse backbone plus the first-order tables.

    Args:
        model_cfg: `embedding_dim` and `deep_mlp`.
        tables: the 26 Criteo tables' sizes and device (usually meta until sharded).
        dense_in_features: number of dense features (13 for Criteo).
        dense_device: where the dense layers are created.

    Returns:
        A `WideDeep` module: `(dense_features [B, 13], sparse_features KJT) -> logits [B]`.
    """
    return WideDeep(
        field_collection=tables.field_collection(model_cfg.embedding_dim),
        first_order_collection=tables.first_order_collection(),
        dense_in_features=dense_in_features,
        deep_layer_sizes=list(model_cfg.deep_mlp),
        dense_device=dense_device,
    )
