"""`optim.reference_batch_size`: the recipe's rates are stated for one batch size and follow another."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dlrm_dist.config import OptimConfig, load_config
from dlrm_dist.optim import scaled_learning_rates


def test_without_a_reference_the_rates_are_used_as_given():
    cfg = OptimConfig(lr=0.01, embedding_lr=0.05)
    assert scaled_learning_rates(cfg, 4096) is cfg


@pytest.mark.parametrize(
    ("dense", "embedding", "rule", "dense_factor", "embedding_factor"),
    [
        ("adagrad", "rowwise_adagrad", "auto", 2.0, 2.0),  # adaptive: sqrt(4)
        ("sgd", "sgd", "auto", 4.0, 4.0),  # SGD: linear
        ("adam", "sgd", "auto", 2.0, 4.0),  # each optimizer by its own kind
        ("sgd", "adagrad", "sqrt", 2.0, 2.0),
        ("adam", "adam", "linear", 4.0, 4.0),
        ("adam", "adam", "none", 1.0, 1.0),
    ],
)
def test_rates_scale_from_the_reference_batch(dense, embedding, rule, dense_factor, embedding_factor):
    cfg = OptimConfig(lr=0.01, embedding_lr=0.05, dense_optimizer=dense, embedding_optimizer=embedding,
                      reference_batch_size=1024, lr_scaling=rule)  # fmt: skip
    scaled = scaled_learning_rates(cfg, 4096)
    assert scaled.lr == pytest.approx(0.01 * dense_factor)
    assert scaled.embedding_lr == pytest.approx(0.05 * embedding_factor)
    # At the reference batch nothing changes; a smaller batch scales down by the same rule.
    assert scaled_learning_rates(cfg, 1024) == cfg
    assert scaled_learning_rates(cfg, 256).lr == pytest.approx(0.01 / dense_factor)


def test_recipes_state_their_reference_batch():
    for recipe in ("tiny", "criteo_kaggle", "criteo_1tb", "criteo_1tb_dcnv2"):
        cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{recipe}.toml")
        assert cfg.optim.reference_batch_size == cfg.training.batch_size, recipe
        assert scaled_learning_rates(cfg.optim, cfg.training.batch_size) == cfg.optim


def test_bad_scaling_fields_fail_naming_the_field():
    with pytest.raises(ValueError, match=r"optim\.lr_scaling: 'cubic' is not one of"):
        OptimConfig(lr_scaling="cubic")
    with pytest.raises(ValueError, match=r"optim\.reference_batch_size: must be >= 0"):
        OptimConfig(reference_batch_size=-1)
    assert math.isclose(scaled_learning_rates(OptimConfig(reference_batch_size=100), 400).lr, 0.02)
