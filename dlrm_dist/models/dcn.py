"""The "dcn" family: the original Deep & Cross Network (Wang et al. 2017, arXiv:1708.05123).

A cross network and a deep network side by side over the stacked input, joined in one output layer:

    x_0     = concat(dense_features, e_1, .., e_F)                          [B, N]
    x_{l+1} = x_0 (x_l . w_l) + b_l + x_l,   l = 0 .. L - 1                 w_l, b_l: [N]
    h       = ReLU MLP(x_0)                                                 [B, H]
    logit   = w_out . concat(x_L, h) + b_out

The cross weight w_l is a vector, so each layer costs O(N) and adds one degree of feature crossing; this
is DCN-v1, not DCN-v2's matrix (see `dcnv2` for that). TorchRec's `VectorCrossNet` computes exactly
x_0 (w_l . x_l) + b_l + x_l and is used as is.

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every field table
    N: dense_in_features + F D, the width of x_0 (13 + 26 D for Criteo)
    H: `model.deep_mlp[-1]`; L: `model.cross_layers`

    dense_features [B, 13], sparse_features KJT -> StackedInputArch (tables C*)   -> x_0 [B, N]
    x_0 -> VectorCrossNet (L layers)                                            -> [B, N]
    x_0 -> MLP (`model.deep_mlp`, ReLU)                                         -> [B, H]
    concat -> Linear                                                            -> [B, 1] -> [B]
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.crossnet import VectorCrossNet
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import StackedInputArch
from dlrm_dist.models.tables import EmbeddingTables


class DCN(nn.Module):
    """Deep & Cross Network: vector cross layers beside a deep MLP, both over x_0, one output layer.

    Args:
        field_collection: tables C1..C26, `D` wide.
        dense_in_features: number of dense features.
        cross_layers: L, the number of cross layers.
        deep_layer_sizes: hidden sizes of the deep MLP; its last layer feeds the output layer.
        dense_device: where the dense layers are created.

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("cpu"))
        model = DCN(tables.field_collection(8), dense_in_features=13, cross_layers=2,
                    deep_layer_sizes=[16, 16])
        logits = model(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=[f"C{i}" for i in range(1, 27)], values=torch.arange(52) % 100,
            lengths=torch.ones(52, dtype=torch.int64)))
        # logits.shape == (2,)
    """

    def __init__(
        self,
        field_collection: EmbeddingBagCollection,
        dense_in_features: int,
        cross_layers: int,
        deep_layer_sizes: list[int],
        dense_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.stacked_input_arch = StackedInputArch(field_collection, dense_in_features)
        stacked_width = self.stacked_input_arch.out_features
        # VectorCrossNet takes no device argument.
        self.cross_net = VectorCrossNet(in_features=stacked_width, num_layers=cross_layers).to(dense_device)
        self.deep_net = MLP(
            stacked_width, list(deep_layer_sizes), bias=True, activation="relu", device=dense_device
        )
        self.output_layer = nn.Linear(stacked_width + deep_layer_sizes[-1], 1, device=dense_device)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per sparse column (C1..C26), B bags per key.

        Returns:
            logits [B].
        """
        stacked_input = self.stacked_input_arch(dense_features, sparse_features)
        combined = torch.cat([self.cross_net(stacked_input), self.deep_net(stacked_input)], dim=1)
        return self.output_layer(combined).squeeze(-1)


def build_dcn(
    model_cfg: ModelConfig,
    tables: EmbeddingTables,
    dense_in_features: int,
    dense_device: torch.device,
) -> nn.Module:
    """Builds the original DCN on the shared sparse backbone.

    Args:
        model_cfg: `embedding_dim`, `cross_layers` and `deep_mlp`.
        tables: the 26 Criteo tables' sizes and device (usually meta until sharded).
        dense_in_features: number of dense features (13 for Criteo).
        dense_device: where the dense layers are created.

    Returns:
        A `DCN` module: `(dense_features [B, 13], sparse_features KJT) -> logits [B]`.
    """
    return DCN(
        field_collection=tables.field_collection(model_cfg.embedding_dim),
        dense_in_features=dense_in_features,
        cross_layers=model_cfg.cross_layers,
        deep_layer_sizes=list(model_cfg.deep_mlp),
        dense_device=dense_device,
    )
