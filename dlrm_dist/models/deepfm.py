"""The "deepfm" family: DeepFM (Guo et al. 2017, arXiv:1703.04247) on the sharded Criteo tables.

Three logits over the same fields, summed:

    logit = w_0 + dense_features . w_dense + sum_f w_f(v_f)                    (first order)
          + 1/2 sum_d [ (sum_f e_fd)^2 - sum_f e_fd^2 ] = sum_{f<g} <e_f, e_g>   (FM, second order)
          + MLP_deep(concat(e_0, e_1, .., e_F))                                 (deep, last layer 1)

where e_0 = dense_features W_proj is the dense features projected to one more field of width D, so the
FM and deep parts see F + 1 = 27 fields. The identity on the FM line is what makes the pairwise term
O((F + 1) D) instead of O((F + 1)^2 D).

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every field table
    dense_in_features: number of dense features (13 for Criteo: I1..I13)

    dense_features [B, 13], sparse_features KJT -> FirstOrderArch (tables wide_C*)   -> [B]
    dense_features [B, 13], sparse_features KJT -> FieldArch (tables C*)             -> fields [B, F + 1, D]
    fields -> FMArch                                                                 -> [B]
    fields -> flatten -> DeepLogitArch (`model.deep_mlp` + [1])                      -> [B]
    logits = first order + FM + deep                                                 -> [B]
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import DeepLogitArch, FieldArch, FirstOrderArch
from dlrm_dist.models.tables import EmbeddingTables


class FMArch(nn.Module):
    """The factorization machine's second-order term: the sum of <e_f, e_g> over all field pairs f < g.

    TorchRec's `FactorizationMachine` is not used: it squares the sum over all F * D entries at once,
    which adds the cross-dimension products e_fd * e_gd' (d != d') that the FM formula does not have.

    Example::

        fm_logits = FMArch()(torch.rand(2, 27, 8))
        # fm_logits.shape == (2,)
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """
        Args:
            fields: [B, F, D].

        Returns:
            The FM logit [B]: 1/2 sum_d [(sum_f e_fd)^2 - sum_f e_fd^2].
        """
        square_of_sum = fields.sum(dim=1).pow(2)
        sum_of_squares = fields.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


class DeepFM(nn.Module):
    """First-order, FM and deep logits over one set of fields, summed.

    Args:
        field_collection: tables C1..C26, `D` wide.
        first_order_collection: tables wide_C1..wide_C26 (a first-order weight per id).
        dense_in_features: number of dense features.
        deep_layer_sizes: hidden sizes of the deep MLP; a final Linear to one logit follows.
        dense_device: where the dense layers are created.

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("cpu"))
        model = DeepFM(tables.field_collection(8), tables.first_order_collection(),
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
        self.field_arch = FieldArch(field_collection, dense_in_features, dense_device)
        self.first_order_arch = FirstOrderArch(first_order_collection, dense_in_features, dense_device)
        self.fm_arch = FMArch()
        self.deep_arch = DeepLogitArch(self.field_arch.flattened_features, deep_layer_sizes, dense_device)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per sparse column (C1..C26), B bags per key.

        Returns:
            logits [B].
        """
        fields = self.field_arch(dense_features, sparse_features)
        deep_logits = self.deep_arch(fields.flatten(1))
        first_order_logits = self.first_order_arch(dense_features, sparse_features)
        return first_order_logits + self.fm_arch(fields) + deep_logits


def build_deepfm(
    model_cfg: ModelConfig,
    tables: EmbeddingTables,
    dense_in_features: int,
    dense_device: torch.device,
) -> nn.Module:
    """Builds DeepFM on the shared sparse backbone plus the first-order tables.

    Args:
        model_cfg: `embedding_dim` and `deep_mlp`.
        tables: the 26 Criteo tables' sizes and device (usually meta until sharded).
        dense_in_features: number of dense features (13 for Criteo).
        dense_device: where the dense layers are created.

    Returns:
        A `DeepFM` module: `(dense_features [B, 13], sparse_features KJT) -> logits [B]`.
    """
    return DeepFM(
        field_collection=tables.field_collection(model_cfg.embedding_dim),
        first_order_collection=tables.first_order_collection(),
        dense_in_features=dense_in_features,
        deep_layer_sizes=list(model_cfg.deep_mlp),
        dense_device=dense_device,
    )
