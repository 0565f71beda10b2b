"""The "dlrm_dcnv2" family: the MLPerf DLRMv2 model, DLRM with a low-rank DCN-v2 cross network as interaction.

DCN-v2 (Wang et al. 2020, arXiv:2008.13535) replaces DLRM's pairwise dot products. MLPerf's DLRMv2
benchmark uses its low-rank form on the concatenated dense vector and embeddings, x_0 [B, N] with
N = (F + 1) D; each of L layers maps

    x_{l+1} = x_0 * (U_l (V_l^T x_l) + b_l) + x_l        U_l, V_l: [N, r], b_l: [N], * elementwise

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every table
    N: (F + 1) D, the width of the cross network
    r: `model.low_rank_dim`; L: `model.cross_layers`

    dense_features [B, 13] -> DenseArch (bottom MLP, last size D)                       -> [B, D]
    sparse_features KJT    -> ViewSparseArch (EmbeddingBagCollection)                   -> [B, F, D]
    InteractionDCNArch: x_0 = concat([B, D], [B, F D]) -> LowRankCrossNet (L layers)     -> [B, N]
    OverArch (top MLP, last layer 1)                                                     -> [B, 1] -> [B]

TorchRec's `DLRM_DCN` (with `LowRankCrossNet`) is exactly this model and is used as is; like
`DLRMLogits`, the subclass only squeezes the logit column.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DLRM_DCN
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import ViewSparseArch
from dlrm_dist.models.dlrm import check_dlrm_mlps
from dlrm_dist.models.tables import EmbeddingTables


class DLRMDCNLogits(DLRM_DCN):
    """TorchRec's `DLRM_DCN` whose output is the logit vector [B] instead of a [B, 1] column.

    Example::

        ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="C1", embedding_dim=8, num_embeddings=100, feature_names=["C1"])])
        model = DLRMDCNLogits(ebc, dense_in_features=13, dense_arch_layer_sizes=[16, 8],
                              over_arch_layer_sizes=[8, 1], dcn_num_layers=2, dcn_low_rank_dim=4)
        logits = model(torch.rand(4, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=["C1"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([1, 1, 1, 1])))
        # logits.shape == (4,)
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection, **kwargs) -> None:
        super().__init__(embedding_bag_collection, **kwargs)
        # The same numbers as TorchRec's sparse arch, without its copy; the same collection, so the same
        # state_dict keys.
        self.sparse_arch = ViewSparseArch(embedding_bag_collection)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per table (C1..C26), B bags per key.

        Returns:
            logits [B].
        """
        return super().forward(dense_features, sparse_features).squeeze(-1)


def build_dlrm_dcnv2(
    model_cfg: ModelConfig,
    tables: EmbeddingTables,
    dense_in_features: int,
    dense_device: torch.device,
) -> nn.Module:
    """Builds the MLPerf DLRMv2 model on top of the shared sparse backbone.

    Args:
        model_cfg: `embedding_dim`, `bottom_mlp` (last size must be `embedding_dim`), `top_mlp` (at least
            two layers, ending in 1), `cross_layers` and `low_rank_dim`.
        tables: the 26 Criteo tables' sizes and device (usually meta until sharded).
        dense_in_features: number of dense features (13 for Criteo).
        dense_device: where the MLPs and the cross network are created.

    Returns:
        A `DLRMDCNLogits` module: `(dense_features [B, 13], sparse_features KJT) -> logits [B]`.

    Raises:
        ValueError: naming `model.bottom_mlp` or `model.top_mlp` when the sizes cannot form the model.
    """
    check_dlrm_mlps(model_cfg)
    model = DLRMDCNLogits(
        embedding_bag_collection=tables.field_collection(model_cfg.embedding_dim),
        dense_in_features=dense_in_features,
        dense_arch_layer_sizes=list(model_cfg.bottom_mlp),
        over_arch_layer_sizes=list(model_cfg.top_mlp),
        dcn_num_layers=model_cfg.cross_layers,
        dcn_low_rank_dim=model_cfg.low_rank_dim,
        dense_device=dense_device,
    )
    # DLRM_DCN creates its LowRankCrossNet on the default device: it takes no device argument.
    model.inter_arch.to(dense_device)
    return model
