"""The model registry and the "dlrm" family: output shape, fx tracing, the train module, config errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchrec.fx
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec.datasets.utils import Batch
from torchrec.models.dlrm import InteractionArch, SparseArch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS
from dlrm_dist.config import ModelConfig
from dlrm_dist.models import MODEL_REGISTRY, build_model
from dlrm_dist.models.components import ViewSparseArch
from dlrm_dist.models.dlrm import DLRMLogits, DLRMWithoutDense, FlatTriuInteractionArch
from dlrm_dist.models.pair_dots import flat_triu_indices, pair_dots, symmetric_gather_indices
from dlrm_dist.models.train_module import CTRTrainModule

BATCH_SIZE = 5
TABLE_ROWS = [20 + index for index in range(len(SPARSE_COLUMNS))]
SMALL_DLRM = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16, 1])
CPU = torch.device("cpu")


def make_batch(seed: int = 0) -> Batch:
    """A batch with 0..2 ids per bag (empty bags included)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 3, (len(SPARSE_COLUMNS), BATCH_SIZE), generator=generator)
    values = torch.cat(
        [
            torch.randint(0, rows, (int(lengths[feature].sum()),), generator=generator)
            for feature, rows in enumerate(TABLE_ROWS)
        ]
    )
    return Batch(
        dense_features=torch.rand(BATCH_SIZE, NUM_DENSE, generator=generator),
        sparse_features=KeyedJaggedTensor.from_lengths_sync(
            keys=list(SPARSE_COLUMNS), values=values, lengths=lengths.reshape(-1)
        ),
        labels=torch.randint(0, 2, (BATCH_SIZE,), generator=generator).float(),
    )


def test_registry_lists_dlrm() -> None:
    assert "dlrm" in MODEL_REGISTRY


def test_dlrm_returns_one_logit_per_sample() -> None:
    model = build_model(SMALL_DLRM, TABLE_ROWS, sparse_device=CPU)
    batch = make_batch()
    logits = model(batch.dense_features, batch.sparse_features)
    assert logits.shape == (BATCH_SIZE,)
    assert logits.dtype == torch.float32


def test_tables_are_the_criteo_columns_sum_pooled_on_meta_by_default() -> None:
    model = build_model(SMALL_DLRM, TABLE_ROWS)
    (collection,) = [module for module in model.modules() if isinstance(module, EmbeddingBagCollection)]
    configs = collection.embedding_bag_configs()
    assert [config.name for config in configs] == list(SPARSE_COLUMNS)
    assert [config.feature_names for config in configs] == [[column] for column in SPARSE_COLUMNS]
    assert [config.num_embeddings for config in configs] == TABLE_ROWS
    assert {config.embedding_dim for config in configs} == {SMALL_DLRM.embedding_dim}
    assert {config.pooling for config in configs} == {PoolingType.SUM}
    assert all(param.is_meta for param in collection.parameters())
    assert not any(param.is_meta for name, param in model.named_parameters() if "sparse_arch" not in name)


def test_dlrm_traces_with_torchrec_fx_and_computes_the_same_logits() -> None:
    model = build_model(SMALL_DLRM, TABLE_ROWS, sparse_device=CPU)
    traced = torchrec.fx.symbolic_trace(model)
    batch = make_batch()
    torch.testing.assert_close(
        traced(batch.dense_features, batch.sparse_features),
        model(batch.dense_features, batch.sparse_features),
    )


def test_train_module_returns_mean_bce_and_detached_outputs() -> None:
    model = build_model(SMALL_DLRM, TABLE_ROWS, sparse_device=CPU)
    train_module = CTRTrainModule(model)
    batch = make_batch()
    loss, (loss_detached, logits, labels) = train_module(batch)
    expected_logits = model(batch.dense_features, batch.sparse_features)
    expected_loss = torch.nn.functional.binary_cross_entropy_with_logits(expected_logits, batch.labels)
    torch.testing.assert_close(loss, expected_loss)
    torch.testing.assert_close(logits, expected_logits.detach())
    assert loss.requires_grad
    assert not (loss_detached.requires_grad or logits.requires_grad)
    assert torch.equal(labels, batch.labels)


def test_train_module_traces_with_torchrec_fx() -> None:
    train_module = CTRTrainModule(build_model(SMALL_DLRM, TABLE_ROWS, sparse_device=CPU))
    traced = torchrec.fx.symbolic_trace(train_module)
    batch = make_batch()
    torch.testing.assert_close(traced(batch)[0], train_module(batch)[0])


def test_unknown_model_name_fails_naming_the_field_and_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"model\.name: 'dlrm_v9' .*known: .*dlrm"):
        build_model(dataclasses.replace(SMALL_DLRM, name="dlrm_v9"), TABLE_ROWS)


def test_dlrm_bottom_mlp_must_end_in_embedding_dim() -> None:
    with pytest.raises(ValueError, match=r"model\.bottom_mlp: .*embedding_dim \(8\).*\[16, 4\]"):
        build_model(dataclasses.replace(SMALL_DLRM, bottom_mlp=[16, 4]), TABLE_ROWS)


def test_dlrm_top_mlp_needs_a_hidden_layer() -> None:
    with pytest.raises(ValueError, match=r"model\.top_mlp: .*\[1\]"):
        build_model(dataclasses.replace(SMALL_DLRM, top_mlp=[1]), TABLE_ROWS)


def test_tables_need_at_least_one_row_and_one_feature() -> None:
    with pytest.raises(ValueError, match=r"num_embeddings: every table needs at least one row"):
        build_model(SMALL_DLRM, [10, 0, 10])
    with pytest.raises(ValueError, match=r"num_embeddings: a model needs at least one categorical feature"):
        build_model(SMALL_DLRM, [])


def _output_and_grads(module: torch.nn.Module, inputs: list[torch.Tensor], upstream: torch.Tensor):
    leaves = [tensor.clone().requires_grad_() for tensor in inputs]
    output = module(*leaves)
    output.backward(upstream)
    return output.detach(), [leaf.grad for leaf in leaves]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 9), num_sparse=st.integers(0, 30), dim=st.integers(1, 9), seed=st.integers(0, 2**16)
)
def test_flat_triu_interaction_equals_torchrecs(batch, num_sparse, dim, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, dim, generator=generator)
    sparse = torch.randn(batch, num_sparse, dim, generator=generator)
    # D + F + (F choose 2) outputs.
    upstream = torch.randn(batch, dim + num_sparse * (num_sparse + 1) // 2, generator=generator)
    reference = _output_and_grads(InteractionArch(num_sparse), [dense, sparse], upstream)
    ours = _output_and_grads(FlatTriuInteractionArch(num_sparse), [dense, sparse], upstream)
    assert torch.equal(ours[0], reference[0])  # the forward is TorchRec's computation, bit for bit
    for our_grad, reference_grad in zip(ours[1], reference[1], strict=True):
        if reference_grad is None:  # F = 0: the (empty) embeddings take no part
            assert our_grad is None
        else:
            # One product by (G + G^T) instead of two summed: equal up to float rounding.
            torch.testing.assert_close(our_grad, reference_grad, rtol=1e-5, atol=1e-5)


def test_dlrm_uses_the_flat_interaction_and_keeps_torchrecs_state_dict_keys() -> None:
    model = build_model(SMALL_DLRM, TABLE_ROWS, NUM_DENSE, CPU, CPU)
    assert isinstance(model, DLRMLogits)
    assert isinstance(model.inter_arch, FlatTriuInteractionArch)
    assert isinstance(model.sparse_arch, ViewSparseArch)
    assert not [key for key in model.state_dict() if "inter_arch" in key]


def test_dlrm_without_dense_feeds_the_embedding_sum_and_each_pair_dot_product_once() -> None:
    model = build_model(SMALL_DLRM, TABLE_ROWS[:4], 0, CPU, CPU)
    assert isinstance(model, DLRMWithoutDense)
    embeddings = torch.randn(3, 4, SMALL_DLRM.embedding_dim, generator=torch.Generator().manual_seed(3))
    seen = []
    model.over_arch.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model.sparse_arch.forward = lambda sparse_features: embeddings
    model(torch.zeros(3, 0), None)
    # Written from the definition, one pair at a time.
    pairs = [(embeddings[:, f] * embeddings[:, g]).sum(dim=1) for f in range(4) for g in range(f + 1, 4)]
    expected = torch.cat([embeddings.sum(dim=1), torch.stack(pairs, dim=1)], dim=1)
    torch.testing.assert_close(seen[0], expected)


def test_pair_dots_backward_passes_gradcheck_in_double() -> None:
    vectors = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    triu, symmetric = flat_triu_indices(5), symmetric_gather_indices(5)
    assert torch.autograd.gradcheck(lambda v: pair_dots(v, triu, symmetric), (vectors,))


class _ReversedKeys(EmbeddingBagCollection):
    """An EmbeddingBagCollection whose KeyedTensor lists its keys last to first (as a sharded
    collection may order them)."""

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = super().forward(features).to_dict()
        names = list(reversed(pooled))
        return KeyedTensor.from_tensor_list(names, [pooled[name] for name in names])


@pytest.mark.parametrize("collection_type", [EmbeddingBagCollection, _ReversedKeys])
def test_view_sparse_arch_equals_torchrecs_sparse_arch_in_values_and_gradients(collection_type) -> None:
    torch.manual_seed(0)
    tables = [
        EmbeddingBagConfig(name=f"t_{name}", embedding_dim=4, num_embeddings=rows, feature_names=[name])
        for name, rows in zip(SPARSE_COLUMNS, TABLE_ROWS, strict=True)
    ]
    collection = collection_type(tables=tables)
    ours, theirs = ViewSparseArch(collection), SparseArch(collection)
    batch = make_batch(3)
    results = []
    for arch in (ours, theirs):
        collection.zero_grad()
        pooled = arch(batch.sparse_features)
        (pooled * torch.arange(pooled.numel()).view_as(pooled)).sum().backward()
        results.append(
            (pooled.detach(), [table.weight.grad.clone() for table in collection.embedding_bags.values()])
        )
    assert torch.equal(results[0][0], results[1][0])
    for ours_grad, theirs_grad in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(ours_grad, theirs_grad)
    # Keys in the arch's order: a view of the collection's values; otherwise TorchRec's split of them by
    # key and concatenation in the arch's order.
    names = _autograd_names(ours(batch.sparse_features).grad_fn, depth=3)
    assert ("SplitWithSizesBackward0" in names) == (collection_type is _ReversedKeys)


def _autograd_names(node, depth: int) -> set[str]:
    if node is None or depth == 0:
        return set()
    names = {type(node).__name__}
    for parent, _ in node.next_functions:
        names |= _autograd_names(parent, depth - 1)
    return names


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_family_reads_its_embeddings_through_view_sparse_arch(name) -> None:
    cfg = dataclasses.replace(SMALL_DLRM, name=name)
    arches = [
        m for m in build_model(cfg, TABLE_ROWS, sparse_device=CPU).modules() if isinstance(m, SparseArch)
    ]
    assert all(isinstance(arch, ViewSparseArch) for arch in arches), name
