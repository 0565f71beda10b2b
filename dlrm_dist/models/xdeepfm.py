"""The "xdeepfm" family: xDeepFM (Lian et al. 2018, arXiv:1803.05170) on the sharded Criteo tables.

A Compressed Interaction Network (CIN) learns explicit, vector-wise crosses of the fields. With
X^0 = fields [B, m, D] (m = F + 1: the projected dense vector, then the F embeddings), layer k maps
X^{k-1} [B, H_{k-1}, D] to

    X^k_{h,*} = sum_{i < H_{k-1}} sum_{j < m} W^{k,h}_{i,j} (X^{k-1}_{i,*} o X^0_{j,*})     h < H_k

(o: elementwise product over D), i.e. all field-wise outer products compressed by H_k 1x1 filters.
Each layer is sum-pooled over D, p^k_h = sum_d X^k_{h,d}, and the pooled maps feed one linear unit:

    logit = w_0 + dense_features . w_dense + sum_f w_f(v_f)          (linear part, sharded tables)
          + w_cin . concat(p^1, .., p^K)                             (CIN)
          + MLP_deep(flatten(X^0))                                   (deep, last layer 1)

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every field table
    m: F + 1 fields; H_k: `model.cin_layers[k - 1]`; K: number of CIN layers

    dense_features [B, 13], sparse_features KJT -> FirstOrderArch (tables wide_C*)  -> [B]
    dense_features [B, 13], sparse_features KJT -> FieldArch (tables C*)            -> X^0 [B, m, D]
    CIN layer k: X^{k-1} (x) X^0 -> [B, H_{k-1} m, D] -> 1x1 Conv1d                 -> X^k [B, H_k, D]
    sum over D, concat over k -> Linear                                             -> [B]
    X^0 -> flatten -> DeepLogitArch (`model.deep_mlp` + [1])                         -> [B]
    logits = linear + CIN + deep                                                    -> [B]
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import DeepLogitArch, FieldArch, FirstOrderArch
from dlrm_dist.models.tables import EmbeddingTables


class CIN(nn.Module):
    """The Compressed Interaction Network: K layers of outer products with X^0, each sum-pooled over D.

    Layer k's filters are a `Conv1d(H_{k-1} * m, H_k, kernel_size=1)` over the flattened outer product,
    so W^{k,h}_{i,j} is `filters[k - 1].weight[h, i * m + j, 0]`. No bias and no activation, as in the
    paper's formula.

    Args:
        num_fields: m, the number of fields of X^0.
        layer_sizes: H_1 .. H_K, the feature maps of each layer.
        device: where the filters are created.

    Example::

        cin = CIN(num_fields=27, layer_sizes=[4, 4])
        pooled = cin(torch.rand(2, 27, 8))
        # pooled.shape == (2, 8): p^1 and p^2, 4 maps each
    """

    def __init__(self, num_fields: int, layer_sizes: list[int], device: torch.device | None = None) -> None:
        super().__init__()
        input_maps = [num_fields, *layer_sizes[:-1]]
        self.filters = nn.ModuleList(
            nn.Conv1d(previous_maps * num_fields, maps, kernel_size=1, bias=False, device=device)
            for previous_maps, maps in zip(input_maps, layer_sizes, strict=True)
        )
        self.out_features: int = sum(layer_sizes)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """
        Args:
            fields: X^0 [B, m, D].

        Returns:
            concat(p^1, .., p^K) [B, H_1 + .. + H_K].
        """
        hidden = fields
        pooled_layers = []
        for layer_filters in self.filters:
            # [B, H_{k-1}, 1, D] * [B, 1, m, D] -> [B, H_{k-1} * m, D], index i * m + j.
            outer_products = (hidden.unsqueeze(2) * fields.unsqueeze(1)).flatten(1, 2)
            hidden = layer_filters(outer_products)
            pooled_layers.append(hidden.sum(dim=2))
        return torch.cat(pooled_layers, dim=1)


class XDeepFM(nn.Module):
    """Linear, CIN and deep logits over one set of fields, summed.

    Args:
        field_collection: tables C1..C26, `D` wide.
        first_order_collection: tables wide_C1..wide_C26 (a first-order weight per id).
        dense_in_features: number of dense features.
        cin_layer_sizes: H_1 .. H_K.
        deep_layer_sizes: hidden sizes of the deep MLP; a final Linear to one logit follows.
        dense_device: where the dense layers are created.

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("cpu"))
        model = XDeepFM(tables.field_collection(8), tables.first_order_collection(),
                        dense_in_features=13, cin_layer_sizes=[4, 4], deep_layer_sizes=[16, 16])
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
        cin_layer_sizes: list[int],
        deep_layer_sizes: list[int],
        dense_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.field_arch = FieldArch(field_collection, dense_in_features, dense_device)
        self.first_order_arch = FirstOrderArch(first_order_collection, dense_in_features, dense_device)
        self.cin = CIN(self.field_arch.num_fields, list(cin_layer_sizes), dense_device)
        # No bias: the first-order part already carries the global bias w_0.
        self.cin_output = nn.Linear(self.cin.out_features, 1, bias=False, device=dense_device)
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
        cin_logits = self.cin_output(self.cin(fields)).squeeze(-1)
        deep_logits = self.deep_arch(fields.flatten(1))
        return self.first_order_arch(dense_features, sparse_features) + cin_logits + deep_logits


def build_xdeepfm(
    model_cfg: ModelConfig,
    tables: EmbeddingTables,
    dense_in_features: int,
    dense_device: torch.device,
) -> nn.Module:
    """Builds xDeepFM on the shared sparse backbone plus the first-order tables.

    Args:
        model_cfg: `embedding_dim`, `cin_layers` and `deep_mlp`.
        tables: the 26 Criteo tables' sizes and device (usually meta until sharded).
        dense_in_features: number of dense features (13 for Criteo).
        dense_device: where the dense layers are created.

    Returns:
        An `XDeepFM` module: `(dense_features [B, 13], sparse_features KJT) -> logits [B]`.
    """
    return XDeepFM(
        field_collection=tables.field_collection(model_cfg.embedding_dim),
        first_order_collection=tables.first_order_collection(),
        dense_in_features=dense_in_features,
        cin_layer_sizes=list(model_cfg.cin_layers),
        deep_layer_sizes=list(model_cfg.deep_mlp),
        dense_device=dense_device,
    )
