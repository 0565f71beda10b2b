"""The DLRM paper's comparison models: shapes, fx tracing, their tables, and each interaction's formula.

Every interaction is checked against a slow, literal computation of its paper formula on a tiny input:
the FM term against the double sum over field pairs, the CIN against loops over h, i, j, d, the DCN and
DCN-v2 cross layers against their per-sample formulas, and the first-order term against a sum of table
rows picked by hand.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchrec.fx
from torchrec.modules.crossnet import LowRankCrossNet, VectorCrossNet
from torchrec.modules.deepfm import FactorizationMachine
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS
from dlrm_dist.config import ModelConfig, load_config
from dlrm_dist.models import MODEL_REGISTRY, EmbeddingTables, build_model
from dlrm_dist.models.components import FirstOrderArch
from dlrm_dist.models.deepfm import FMArch
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.models.xdeepfm import CIN
from tests.unit.test_models import BATCH_SIZE, TABLE_ROWS, make_batch

EMBEDDING_DIM = 8
SMALL_CFG = ModelConfig(
    embedding_dim=EMBEDDING_DIM,
    bottom_mlp=[16, EMBEDDING_DIM],
    top_mlp=[16, 1],
    cross_layers=2,
    low_rank_dim=4,
    cin_layers=[4, 3],
    deep_mlp=[16, 8],
)
CPU = torch.device("cpu")
FAMILIES = sorted(MODEL_REGISTRY)
FAMILIES_WITH_FIRST_ORDER_TABLES = ["deepfm", "fm", "lr", "wide_deep", "xdeepfm"]


def small_model(name: str, sparse_device: torch.device = CPU) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(SMALL_CFG, name=name), TABLE_ROWS, sparse_device=sparse_device)


def test_registry_lists_the_paper_families() -> None:
    assert set(MODEL_REGISTRY) == {"dlrm", "dlrm_dcnv2", "wide_deep", "deepfm", "dcn", "xdeepfm", "lr", "fm"}


@pytest.mark.parametrize("name", FAMILIES)
def test_returns_one_finite_logit_per_sample(name: str) -> None:
    batch = make_batch()
    logits = small_model(name)(batch.dense_features, batch.sparse_features)
    assert logits.shape == (BATCH_SIZE,)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_traces_with_torchrec_fx_and_computes_the_same_logits(name: str) -> None:
    model = small_model(name)
    traced = torchrec.fx.symbolic_trace(model)
    batch = make_batch()
    torch.testing.assert_close(
        traced(batch.dense_features, batch.sparse_features),
        model(batch.dense_features, batch.sparse_features),
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_every_parameter_gets_a_gradient_from_the_loss(name: str) -> None:
    train_module = CTRTrainModule(small_model(name))
    loss, _ = train_module(make_batch())
    loss.backward()
    missing = [name for name, param in train_module.named_parameters() if param.grad is None]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name", FAMILIES)
def test_tables_are_on_meta_with_unique_names_and_first_order_tables_where_needed(name: str) -> None:
    model = small_model(name, sparse_device=torch.device("meta"))
    collections = [module for module in model.modules() if isinstance(module, EmbeddingBagCollection)]
    tables = {config.name: config for ebc in collections for config in ebc.embedding_bag_configs()}
    assert len(tables) == sum(len(ebc.embedding_bag_configs()) for ebc in collections), "duplicate names"
    assert all(param.is_meta for ebc in collections for param in ebc.parameters())
    # Logistic regression has first-order weights only.
    expected = {} if name == "lr" else {column: EMBEDDING_DIM for column in SPARSE_COLUMNS}
    if name in FAMILIES_WITH_FIRST_ORDER_TABLES:
        # 4 wide: fbgemm's narrowest row; each row sums to one first-order weight.
        expected |= {f"wide_{column}": 4 for column in SPARSE_COLUMNS}
    assert {table: config.embedding_dim for table, config in tables.items()} == expected
    assert {table: config.num_embeddings for table, config in tables.items()} == {
        table: TABLE_ROWS[SPARSE_COLUMNS.index(table.removeprefix("wide_"))] for table in expected
    }


def test_fm_term_is_the_sum_of_dot_products_over_field_pairs() -> None:
    fields = torch.randn(3, 5, 4, dtype=torch.float64)
    expected = torch.zeros(3, dtype=torch.float64)
    for sample in range(3):
        for first in range(5):
            for second in range(first + 1, 5):
                expected[sample] += torch.dot(fields[sample, first], fields[sample, second])
    torch.testing.assert_close(FMArch()(fields), expected)


def test_torchrec_factorization_machine_is_not_the_fm_term() -> None:
    """Why FMArch exists: TorchRec's module also multiplies entries of different dimensions."""
    fields = torch.randn(3, 5, 4)
    assert not torch.allclose(FactorizationMachine()([fields]).squeeze(-1), FMArch()(fields))


def test_cin_matches_loops_over_maps_fields_and_dimensions() -> None:
    batch_size, num_fields, embedding_dim, layer_sizes = 2, 3, 2, [2, 3]
    cin = CIN(num_fields, layer_sizes).double()
    fields = torch.randn(batch_size, num_fields, embedding_dim, dtype=torch.float64)
    expected = torch.zeros(batch_size, sum(layer_sizes), dtype=torch.float64)
    for sample in range(batch_size):
        previous = fields[sample]
        pooled_offset = 0
        for layer, maps in enumerate(layer_sizes):
            # W^{k,h}_{i,j}, with the flattened outer product's index i * m + j.
            weights = cin.filters[layer].weight.detach().reshape(maps, previous.shape[0], num_fields)
            hidden = torch.zeros(maps, embedding_dim, dtype=torch.float64)
            for h in range(maps):
                for i in range(previous.shape[0]):
                    for j in range(num_fields):
                        for d in range(embedding_dim):
                            hidden[h, d] += weights[h, i, j] * previous[i, d] * fields[sample, j, d]
            expected[sample, pooled_offset : pooled_offset + maps] = hidden.sum(dim=1)
            pooled_offset += maps
            previous = hidden
    torch.testing.assert_close(cin(fields), expected)


def test_dcn_cross_layers_match_the_per_sample_formula() -> None:
    """x_{l+1} = x_0 (w_l . x_l) + b_l + x_l with a vector w_l (DCN-v1)."""
    model = small_model("dcn")
    cross_net = model.cross_net
    assert isinstance(cross_net, VectorCrossNet)
    width = model.stacked_input_arch.out_features
    assert width == NUM_DENSE + len(SPARSE_COLUMNS) * EMBEDDING_DIM
    with torch.no_grad():
        for bias in cross_net.bias:
            bias.normal_()  # zero at init, which would hide a misplaced bias
    stacked_input = torch.randn(3, width)
    expected = []
    for x_0 in stacked_input:
        x_l = x_0
        for weight, bias in zip(cross_net.kernels, cross_net.bias, strict=True):
            x_l = x_0 * torch.dot(weight.squeeze(1), x_l) + bias.squeeze(1) + x_l
        expected.append(x_l)
    torch.testing.assert_close(cross_net(stacked_input), torch.stack(expected), rtol=1e-5, atol=1e-5)


def test_dcnv2_low_rank_cross_layers_match_the_per_sample_formula() -> None:
    """x_{l+1} = x_0 * (U_l (V_l^T x_l) + b_l) + x_l over x_0 = concat(dense vector, embeddings)."""
    model = small_model("dlrm_dcnv2")
    cross_net = model.inter_arch.crossnet
    assert isinstance(cross_net, LowRankCrossNet)
    width = (len(SPARSE_COLUMNS) + 1) * EMBEDDING_DIM
    assert [tuple(u.shape) for u in cross_net.W_kernels] == [(width, SMALL_CFG.low_rank_dim)] * 2
    with torch.no_grad():
        for bias in cross_net.bias:
            bias.normal_()
    dense_vector = torch.randn(3, EMBEDDING_DIM)
    embeddings = torch.randn(3, len(SPARSE_COLUMNS), EMBEDDING_DIM)
    expected = []
    for sample in range(3):
        x_0 = torch.cat([dense_vector[sample], embeddings[sample].flatten()])
        x_l = x_0
        for u, v_transposed, bias in zip(
            cross_net.W_kernels, cross_net.V_kernels, cross_net.bias, strict=True
        ):
            x_l = x_0 * (u @ (v_transposed @ x_l) + bias) + x_l
        expected.append(x_l)
    torch.testing.assert_close(
        model.inter_arch(dense_vector, embeddings), torch.stack(expected), rtol=1e-5, atol=1e-5
    )


def test_first_order_term_sums_the_rows_of_the_ids_in_each_bag() -> None:
    torch.manual_seed(0)
    tables = EmbeddingTables(num_embeddings=tuple(TABLE_ROWS), device=CPU)
    first_order = FirstOrderArch(tables.first_order_collection(), NUM_DENSE)
    batch = make_batch(seed=3)
    bags = batch.sparse_features.to_dict()
    expected = first_order.dense_linear(batch.dense_features).squeeze(-1).detach().clone()
    for column in SPARSE_COLUMNS:
        table = first_order.embedding_bag_collection.embedding_bags[f"wide_{column}"].weight.detach()
        for sample, ids in enumerate(bags[column].to_dense()):
            for row in ids:
                expected[sample] += table[row].sum()
    torch.testing.assert_close(first_order(batch.dense_features, batch.sparse_features), expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cross_layers": 0}, r"model\.cross_layers: must be >= 1, got 0"),
        ({"low_rank_dim": 0}, r"model\.low_rank_dim: must be >= 1, got 0"),
        ({"cin_layers": []}, r"model\.cin_layers: .*got \[\]"),
        ({"cin_layers": [200, 0]}, r"model\.cin_layers: .*got \[200, 0\]"),
        ({"deep_mlp": []}, r"model\.deep_mlp: .*got \[\]"),
        ({"deep_mlp": [400, -1]}, r"model\.deep_mlp: .*got \[400, -1\]"),
    ],
)
def test_bad_hyperparameters_fail_naming_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**overrides)


def test_hyperparameters_parse_from_the_command_line() -> None:
    config = load_config(
        overrides=["--model.name=xdeepfm", "--model.cin_layers=100,50", "--model.deep_mlp=64"]
    )
    assert (config.model.cin_layers, config.model.deep_mlp) == ([100, 50], [64])
    assert (ModelConfig().cross_layers, ModelConfig().low_rank_dim) == (3, 512)


def test_dcnv2_bottom_mlp_must_end_in_embedding_dim() -> None:
    with pytest.raises(ValueError, match=r"model\.bottom_mlp: for dlrm_dcnv2 .*embedding_dim \(8\)"):
        build_model(dataclasses.replace(SMALL_CFG, name="dlrm_dcnv2", bottom_mlp=[16, 4]), TABLE_ROWS)
