"""The "dlrm" family: TorchRec's own `DLRM` (arXiv:1906.00091) returning one logit per sample.

Shapes used below:

    B: batch size (per rank once sharded)
    F: number of sparse features (26 for Criteo: C1..C26)
    D: embedding dimension, the same for every table
    dense_in_features: number of dense features (13 for Criteo: I1..I13)

    dense_features [B, dense_in_features] -> DenseArch (bottom MLP)            -> [B, D]
    sparse_features KJT (F keys)          -> ViewSparseArch (EmbeddingBagCollection) -> [B, F, D]
    InteractionArch: pairwise dot products of the F + 1 vectors               -> [B, D + F + F choose 2]
    OverArch (top MLP, last layer 1)                                           -> [B, 1] -> logits [B]

TorchRec's `DLRM` is used rather than rewritten, with three changes: `forward` squeezes the trailing
logit dimension, so that every model family of the registry returns logits of shape [B]; the
interaction is `FlatTriuInteractionArch`, TorchRec's `InteractionArch` computing the same numbers
with a cheaper gather of the upper triangle (see its docstring); and the sparse arch is
`ViewSparseArch`, TorchRec's `SparseArch` without a copy of the pooled embeddings when they already
come in its order (`dlrm_dist.models.components`).

A data set with no dense features has no bottom MLP input. TorchRec's `DLRM` would still build one and
feed its (constant) output into every dot product, so `DLRMWithoutDense` interacts the embeddings
alone, with `ViewSparseArch` and TorchRec's own `OverArch`:

    sparse_features KJT -> ViewSparseArch -> e [B, F, D]
    interaction: concat(sum_f e_f [B, D], <e_f, e_g> for f < g [B, F choose 2])   -> [B, D + F choose 2]
    OverArch (top MLP, last layer 1)                                              -> logits [B]

The sum of the embeddings takes the place of the dense vector that DLRM passes through beside the
dot products, so that a single categorical feature (no pairs) still reaches the top MLP.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DLRM, InteractionArch, OverArch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_dist.config import ModelConfig
from dlrm_dist.models.components import ViewSparseArch
from dlrm_dist.models.pair_dots import flat_triu_indices, pair_dots, symmetric_gather_indices
from dlrm_dist.models.tables import EmbeddingTables


class FlatTriuInteractionArch(InteractionArch):
    """TorchRec's `InteractionArch` with the upper triangle gathered by one `index_select`.

    The same outputs, bit for bit, and the same gradients up to float rounding: TorchRec indexes the
    [B, F + 1, F + 1] dot products with two index tensors, whose backward is an accumulating
    `index_put_` (it sorts the indices every step); here the matrix is flattened and read with
    `index_select`, and the backward is `pair_dots`'s one gather and one batched product. At the
    criteo_kaggle shapes (B 2048, F 26, D 16) on 2 CPU cores forward + backward of the interaction take
    2.6 ms instead of 5.6 (`tests/unit/test_models.py` checks the equality).

    Example::

        inter_arch = FlatTriuInteractionArch(num_sparse_features=2)
        out = inter_arch(torch.rand(10, 3), torch.rand(10, 2, 3))
        # out.shape == (10, 3 + 2 + 1): D + F + F choose 2
    """

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__(num_sparse_features)
        device = self.triu_indices.device
        self.register_buffer("flat_triu_indices", flat_triu_indices(self.F + 1, device), persistent=False)
        self.register_buffer(
            "symmetric_indices", symmetric_gather_indices(self.F + 1, device), persistent=False
        )

    def forward(self, dense_features: torch.Tensor, sparse_features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, D].
            sparse_features: [B, F, D].

        Returns:
            [B, D + F + F choose 2]: the dense vector, then its dot products with each embedding and
            those of each pair of embeddings, in TorchRec's order.
        """
        if self.F <= 0:
            return dense_features
        # Named devices, not dense_features.device: under fx tracing that is a proxy (and autocast off).
        autocast_device = next((d for d in ("cpu", "cuda") if torch.is_autocast_enabled(d)), None)
        if autocast_device is not None:
            # Under bf16 autocast the dot products stay fp32: more exact, and on CPU faster (bf16's
            # index_select and its index_add backward are slow paths there: the interaction took 4.4
            # ms instead of 3.1 at the criteo_kaggle shapes). The top MLP casts its input itself.
            with torch.autocast(autocast_device, enabled=False):
                return self.forward(dense_features.float(), sparse_features.float())
        combined = torch.cat((dense_features.unsqueeze(1), sparse_features), dim=1)
        dots = pair_dots(combined, self.flat_triu_indices, self.symmetric_indices)
        return torch.cat((dense_features, dots), dim=1)


class DLRMLogits(DLRM):
    """TorchRec's `DLRM` whose output is the logit vector [B] instead of a [B, 1] column, with
    `FlatTriuInteractionArch` as its interaction.

    Example::

        ebc = EmbeddingBagCollection(tables=[EmbeddingBagConfig(
            name="C1", embedding_dim=8, num_embeddings=100, feature_names=["C1"])])
        model = DLRMLogits(ebc, dense_in_features=13, dense_arch_layer_sizes=[16, 8],
                           over_arch_layer_sizes=[8, 1])
        logits = model(torch.rand(4, 13), KeyedJaggedTensor.from_lengths_sync(
            keys=["C1"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([1, 1, 1, 1])))
        # logits.shape == (4,)
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollection, **kwargs) -> None:
        super().__init__(embedding_bag_collection, **kwargs)
        # The same numbers as TorchRec's sparse arch and interaction; the sparse arch holds the same
        # collection and the interaction no parameters, so state_dicts are unchanged.
        self.sparse_arch = ViewSparseArch(embedding_bag_collection)
        self.inter_arch = FlatTriuInteractionArch(self.inter_arch.F)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, dense_in_features] float32.
            sparse_features: one key per table (C1..C26), B bags per key.

        Returns:
            logits [B].
        """
        return super().forward(dense_features, sparse_features).squeeze(-1)


class DLRMWithoutDense(nn.Module):
    """DLRM for data without dense features: pairwise dot products of the embeddings alone.

    Example::

        tables = EmbeddingTables(num_embeddings=(100, 50), device=torch.device("cpu"))
        model = DLRMWithoutDense(tables.field_collection(8), over_arch_layer_sizes=[8, 1])
        logits = model(torch.zeros(2, 0), KeyedJaggedTensor.from_lengths_sync(
            keys=["C1", "C2"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([1, 1, 1, 1])))
        # logits.shape == (2,)
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        over_arch_layer_sizes: list[int],
        dense_device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.sparse_arch = ViewSparseArch(embedding_bag_collection)
        num_features, dim = self.sparse_arch.F, self.sparse_arch.D
        # The (f, g) pairs with f < g of the [F, F] matrix of dot products (see `pair_dots`).
        self.register_buffer("pairs", flat_triu_indices(num_features, dense_device), persistent=False)
        self.register_buffer(
            "symmetric_pairs", symmetric_gather_indices(num_features, dense_device), persistent=False
        )
        in_features = dim + num_features * (num_features - 1) // 2
        self.over_arch = OverArch(in_features, over_arch_layer_sizes, device=dense_device)

    def forward(self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, 0] (unused: there are no dense features).
            sparse_features: one key per categorical feature, B bags per key.

        Returns:
            logits [B].
        """
        embeddings = self.sparse_arch(sparse_features)
        dots = pair_dots(embeddings, self.pairs, self.symmetric_pairs)
        return self.over_arch(torch.cat([embeddings.sum(dim=1), dots], dim=1)).squeeze(-1)


def check_dlrm_mlps(model_cfg: ModelConfig) -> None:
    """Checks the MLP sizes of the DLRM-shaped families (`dlrm`, `dlrm_dcnv2`).

    Raises:
        ValueError: naming `model.bottom_mlp` or `model.top_mlp` when the sizes cannot form the model.
    """
    if model_cfg.bottom_mlp[-1] != model_cfg.embedding_dim:
        raise ValueError(
            f"model.bottom_mlp: for {model_cfg.name} the last size must equal model.embedding_dim "
            f"({model_cfg.embedding_dim}) so the dense vector sits beside the embeddings, "
            f"got {model_cfg.bottom_mlp}"
        )
    # TorchRec's OverArch is an MLP followed by a final Linear, so it needs at least two sizes.
    if len(model_cfg.top_mlp) < 2:
        raise ValueError(
            f"model.top_mlp: {model_cfg.name} needs at least two layer sizes ending in 1 (e.g. [256, 1]), "
            f"got {model_cfg.top_mlp}"
        )


def build_dlrm(
    model_cfg: ModelConfig,
    tables: EmbeddingTables,
    dense_in_features: int,
    dense_device: torch.device,
) -> nn.Module:
    """Builds DLRM on top of the shared sparse backbone.

    Args:
        model_cfg: `embedding_dim`, `bottom_mlp` (last size must be `embedding_dim`) and `top_mlp` (at
            least two layers, ending in 1).
        tables: the tables' sizes, names and device (usually meta until sharded).
        dense_in_features: number of dense features (13 for Criteo; 0: `DLRMWithoutDense`).
        dense_device: where the MLPs are created.

    Returns:
        A `DLRMLogits` module (a `DLRMWithoutDense` one without dense features): `(dense_features [B, 13], sparse_features KJT) -> logits [B]`.

    Raises:
        ValueError: naming `model.bottom_mlp` or `model.top_mlp` when the sizes cannot form a DLRM.
    """
    check_dlrm_mlps(model_cfg)
    if dense_in_features == 0:
        return DLRMWithoutDense(
            tables.field_collection(model_cfg.embedding_dim), list(model_cfg.top_mlp), dense_device
        )
    return DLRMLogits(
        embedding_bag_collection=tables.field_collection(model_cfg.embedding_dim),
        dense_in_features=dense_in_features,
        dense_arch_layer_sizes=list(model_cfg.bottom_mlp),
        over_arch_layer_sizes=list(model_cfg.top_mlp),
        dense_device=dense_device,
    )
