"""Sub-networks shared by the families compared in the DLRM paper (Wide&Deep, DeepFM, DCN, xDeepFM).

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every field table
    dense_in_features: number of dense features (13 for Criteo: I1..I13)

    FirstOrderArch:    w_0 + <w_dense, dense_features> + sum_f w_f(v_f)             -> [B]
    FieldArch:         [dense_features W_proj ; e_1 .. e_F]                          -> [B, F + 1, D]
    StackedInputArch:  x_0 = concat(dense_features, e_1, .., e_F)                    -> [B, dense_in_features + F D]
    DeepLogitArch:     MLP_deep(x), a ReLU MLP whose last layer has one unit          -> [B]

where e_f is the pooled embedding (sum or mean, `model.pooling`) of sparse feature f (TorchRec's `SparseArch`: [B, F, D]) and
w_f(v) the first-order weight of id v of feature f (a row sum of table `wide_C<f>`, see `tables`).
A bag of several ids gets the sum of their embeddings / weights, as sum pooling gives.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import OverArch, SparseArch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class ViewSparseArch(SparseArch):
    """TorchRec's `SparseArch` ([B, F, D] pooled embeddings) without its copy where none is needed.

    The collection returns one KeyedTensor [B, F * D]. TorchRec splits it into its F keys and
    concatenates them again in the arch's feature order: a copy forward and a split plus concatenation
    backward, on every step. When the keys already come in that order (an unsharded collection, and
    every sharding that keeps the tables' order, such as table_wise on one rank) [B, F, D] is a view of
    the same values instead, with the same numbers and gradients; otherwise TorchRec's reordering runs.

    Example::

        arch = ViewSparseArch(EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="C1", embedding_dim=8, num_embeddings=100, feature_names=["C1"])]))
        pooled = arch(KeyedJaggedTensor.from_lengths_sync(
            keys=["C1"], values=torch.tensor([3, 7]), lengths=torch.tensor([1, 1])))
        # pooled.shape == (2, 1, 8)
    """

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            features: KJT with one key per feature of the collection.

        Returns:
            [B, F, D].
        """
        pooled = self.embedding_bag_collection(features)
        values = pooled.values()
        # Under fx symbolic tracing the values are a Proxy, whose shape cannot steer Python: the traced
        # graph keeps TorchRec's ops, which compute the same numbers.
        in_order = isinstance(values, torch.Tensor) and pooled.keys() == self._sparse_feature_names
        if in_order and values.shape[-1] == self.F * self.D:
            return values.view(-1, self.F, self.D)
        by_key = pooled.to_dict()
        return torch.cat([by_key[name] for name in self._sparse_feature_names], dim=1).reshape(
            -1, self.F, self.D
        )


class FirstOrderArch(nn.Module):
    """The linear ("wide") part: a bias, a linear term on the dense features and one weight per sparse id.

    logit_first_order = w_0 + dense_features . w_dense + sum_f sum_{v in bag f} w_f(v)

    Args:
        first_order_collection: tables wide_C1..wide_C26 (`EmbeddingTables.first_order_collection`);
            the weight of an id is the sum of its row.
        dense_in_features: number of dense features.
        device: where the dense linear term is created.

    Example::

        first_order = FirstOrderArch(EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="wide_C1", embedding_dim=4, num_embeddings=100, feature_names=["C1"])]), 13)
        logits = first_order(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=["C1"], values=torch.tensor([3, 7]), lengths=torch.tensor([1, 1])))
        # logits.shape == (2,)
    """

    def __init__(
        self,
        first_order_collection: EmbeddingBagCollection,
        dense_in_features: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.embedding_bag_collection = first_order_collection
        # Its bias is the model's global bias w_0.
        self.dense_linear = nn.Linear(dense_in_features, 1, device=device)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features].
            sparse_features: the same KJT the field tables read (keys C1..C26).

        Returns:
            The first-order logit [B].
        """
        # [B, F * 4]: summing every column of every feature is sum_f w_f(v_f), with w_f a row sum.
        pooled_rows = self.embedding_bag_collection(sparse_features).values()
        return self.dense_linear(dense_features).squeeze(-1) + pooled_rows.sum(dim=1)


class FieldArch(nn.Module):
    """The F + 1 fields of the FM-style models: a linear projection of the dense features, then e_1..e_F.

    Args:
        field_collection: tables C1..C26, all `D` wide (`EmbeddingTables.field_collection`).
        dense_in_features: number of dense features.
        device: where the dense projection is created.

    Example::

        field_arch = FieldArch(EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="C1", embedding_dim=8, num_embeddings=100, feature_names=["C1"])]), 13)
        fields = field_arch(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=["C1"], values=torch.tensor([3, 7]), lengths=torch.tensor([1, 1])))
        # fields.shape == (2, 2, 8): the dense field, then C1
    """

    def __init__(
        self,
        field_collection: EmbeddingBagCollection,
        dense_in_features: int,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.sparse_arch = ViewSparseArch(field_collection)
        # A linear map, not DLRM's bottom MLP: the dense features enter as one more embedded field.
        self.dense_projection = nn.Linear(dense_in_features, self.sparse_arch.D, device=device)

    @property
    def num_fields(self) -> int:
        """F + 1."""
        return self.sparse_arch.F + 1

    @property
    def embedding_dim(self) -> int:
        """D."""
        return self.sparse_arch.D

    @property
    def flattened_features(self) -> int:
        """(F + 1) D, the width of the fields flattened to one vector per sample."""
        return self.num_fields * self.embedding_dim

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features].
            sparse_features: KJT with keys C1..C26.

        Returns:
            fields [B, F + 1, D], the projected dense vector first.
        """
        dense_field = self.dense_projection(dense_features).unsqueeze(1)
        return torch.cat([dense_field, self.sparse_arch(sparse_features)], dim=1)


class StackedInputArch(nn.Module):
    """The "embedding and stacking layer" of Wide&Deep and DCN: x_0 = concat(dense_features, e_1, .., e_F).

    Args:
        field_collection: tables C1..C26, all `D` wide (`EmbeddingTables.field_collection`).
        dense_in_features: number of dense features.

    Example::

        stacked = StackedInputArch(EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="C1", embedding_dim=8, num_embeddings=100, feature_names=["C1"])]), 13)
        x0 = stacked(torch.rand(2, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=["C1"], values=torch.tensor([3, 7]), lengths=torch.tensor([1, 1])))
        # x0.shape == (2, 13 + 8)
    """

    def __init__(self, field_collection: EmbeddingBagCollection, dense_in_features: int) -> None:
        super().__init__()
        self.sparse_arch = ViewSparseArch(field_collection)
        self.out_features: int = dense_in_features + self.sparse_arch.F * self.sparse_arch.D

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features].
            sparse_features: KJT with keys C1..C26.

        Returns:
            x_0 [B, dense_in_features + F * D].
        """
        return torch.cat([dense_features, self.sparse_arch(sparse_features).flatten(1)], dim=1)


class DeepLogitArch(OverArch):
    """The deep part of Wide&Deep, DeepFM and xDeepFM: TorchRec's `OverArch` (a ReLU MLP, then a Linear)
    ending in one unit, returning the logit vector [B] rather than a [B, 1] column.

    Its parameters are `OverArch`'s (`model.0.*` for the MLP, `model.1.*` for the last Linear), created
    in the same order, so checkpoints and seeded initialisation are those of a plain `OverArch`.

    Args:
        in_features: width of the input.
        hidden_layer_sizes: sizes of the MLP's layers (at least one); the Linear to one logit follows.
        device: where the layers are created.

    Example::

        deep_arch = DeepLogitArch(21, [16, 16])
        logits = deep_arch(torch.rand(2, 21))
        # logits.shape == (2,)
    """

    def __init__(
        self, in_features: int, hidden_layer_sizes: list[int], device: torch.device | None = None
    ) -> None:
        super().__init__(in_features, [*hidden_layer_sizes, 1], device=device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: [B, in_features].

        Returns:
            logits [B].
        """
        return super().forward(features).squeeze(-1)
