"""The two classic floors of the DLRM paper's comparison: logistic regression ("lr") and the
factorization machine ("fm", section 2.1 of arXiv:1906.00091), on the same sharded tables.

    lr:  logit = w_0 + dense_features . w_dense + sum_f sum_{v in bag f} w_f(v)
    fm:  logit = (the lr logit) + sum_{f<g} <e_f, e_g>

The first-order weights w_f(v) are the first-order tables (`wide_<f>`, see `dlrm_dist.models.tables`),
so logistic regression over one-hot categoricals is exactly a first-order table per feature. The FM's
fields are the F categorical embeddings e_1..e_F plus e_0, the dense features projected to width D
(as in DeepFM, `dlrm_dist.models.deepfm`), so dense features take part in the pairwise term too.

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of categorical features
    D: embedding dimension (`model.embedding_dim`; fm only)

    dense_features [B, dense_in_features], sparse_features KJT -> FirstOrderArch (tables wide_*) -> [B]
    fm only: FieldArch (tables <f>) -> fields [B, F + 1, D] -> FMArch -> [B], added to the first order
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import FieldArch, FirstOrderArch
from dlrm_dist.models.deepfm import FMArch
from dlrm_dist.models.tables import EmbeddingTables


class LogisticRegression(nn.Module):
    """A bias, a linear term on the dense features and one weight per categorical id; no interactions.

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("cpu"))
        model = LogisticRegression(tables.first_order_collection(), dense_in_features=13)
        logits = model(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=[f"C{i}" for i in range(1, 27)], values=torch.zeros(52, dtype=torch.long),
            lengths=torch.ones(52, dtype=torch.long)))
        # logits.shape == (2,)
    """

    def __init__(
        self,
        first_order_collection: EmbeddingBagCollection,
        dense_in_features: int,
        dense_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.first_order_arch = FirstOrderArch(first_order_collection, dense_in_features, dense_device)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per categorical feature, B bags per key.

        Returns:
            logits [B].
        """
        return self.first_order_arch(dense_features, sparse_features)


class FactorizationMachine(nn.Module):
    """The first-order logit plus the FM's pairwise term over the F + 1 fields.

    Example::

        tables = EmbeddingTables(num_embeddings=(100,) * 26, device=torch.device("cpu"))
        model = FactorizationMachine(tables.field_collection(8), tables.first_order_collection(),
                                     dense_in_features=13)
        logits = model(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=[f"C{i}" for i in range(1, 27)], values=torch.zeros(52, dtype=torch.long),
            lengths=torch.ones(52, dtype=torch.long)))
        # logits.shape == (2,)
    """

    def __init__(
        self,
        field_collection: EmbeddingBagCollection,
        first_order_collection: EmbeddingBagCollection,
        dense_in_features: int,
        dense_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.field_arch = FieldArch(field_collection, dense_in_features, dense_device)
        self.first_order_arch = FirstOrderArch(first_order_collection, dense_in_features, dense_device)
        self.fm_arch = FMArch()

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per categorical feature, B bags per key.

        Returns:
            logits [B].
        """
        fields = self.field_arch(dense_features, sparse_features)
        return self.first_order_arch(dense_features, sparse_features) + self.fm_arch(fields)


def build_lr(
    model_cfg: ModelConfig, tables: EmbeddingTables, dense_in_features: int, dense_device: torch.device
) -> nn.Module:
    """Builds logistic regression on the first-order tables (no field tables; `model_cfg` sizes nothing)."""
    return LogisticRegression(tables.first_order_collection(), dense_in_features, dense_device)


def build_fm(
    model_cfg: ModelConfig, tables: EmbeddingTables, dense_in_features: int, dense_device: torch.device
) -> nn.Module:
    """Builds the factorization machine: first-order tables plus field tables `model.embedding_dim` wide."""
    return FactorizationMachine(
        tables.field_collection(model_cfg.embedding_dim),
        tables.first_order_collection(),
        dense_in_features,
        dense_device,
    )
