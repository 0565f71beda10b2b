"""Optimizers and the learning-rate schedule.

Embeddings are updated by TorchRec's fused optimizer inside backward (set up before sharding, see
`dlrm_dist.sharding.apply_embedding_optimizer`); DistributedModelParallel exposes it as
`model.fused_optimizer`. The dense (MLP) parameters get a regular torch optimizer chosen from
`DENSE_OPTIMIZERS`, wrapped as a KeyedOptimizer so both combine into one `CombinedOptimizer` whose
state_dict is checkpointable. One `LambdaLR` scales every param group's peak rate (dense and
embedding alike), and the fused kernels read their group's rate at each `step()`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from dlrm_dist.config import OptimConfig

DENSE_OPTIMIZERS: dict[str, Callable[[list[torch.Tensor], OptimConfig], torch.optim.Optimizer]] = {
    "adagrad": lambda params, cfg: torch.optim.Adagrad(
        params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay
    ),
    "adam": lambda params, cfg: torch.optim.Adam(
        params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay
    ),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
}


def _scale(rule: str, optimizer: str, ratio: float) -> float:
    if rule == "auto":
        rule = "linear" if optimizer == "sgd" else "sqrt"
    return {"sqrt": math.sqrt(ratio), "linear": ratio, "none": 1.0}[rule]


def scaled_learning_rates(optim_cfg: OptimConfig, batch_size: int) -> OptimConfig:
    """The `optim` section with `lr` and `embedding_lr` scaled from `reference_batch_size` to `batch_size`.

    The rule, per optimizer (`optim.lr_scaling`): linear for SGD (Goyal et al. 2017: k times the batch
    averages k times the samples per step, so k times the step keeps the update per sample); the square
    root for Adagrad and Adam, whose steps are normalised by the gradients' magnitudes, so that a
    k-times larger batch cuts the gradient noise's standard deviation by sqrt(k) and the rate can grow
    by that much (Krizhevsky 2014; Malladi et al. 2022 derive sqrt for Adam). Warmup is in steps and
    is left as it is.

    Args:
        optim_cfg: the `optim` section as the recipe states it.
        batch_size: the global batch size of this run (`training.batch_size`).

    Returns:
        The section with the rates this run uses (unchanged without a `reference_batch_size`).
    """
    if not optim_cfg.reference_batch_size:
        return optim_cfg
    ratio = batch_size / optim_cfg.reference_batch_size
    return dataclasses.replace(
        optim_cfg,
        lr=optim_cfg.lr * _scale(optim_cfg.lr_scaling, optim_cfg.dense_optimizer, ratio),
        embedding_lr=optim_cfg.embedding_lr
        * _scale(optim_cfg.lr_scaling, optim_cfg.embedding_optimizer, ratio),
    )


def dense_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters not updated in backward by the fused embedding optimizer."""
    return dict(in_backward_optimizer_filter(model.named_parameters()))


def build_optimizer(model: nn.Module, optim_cfg: OptimConfig) -> CombinedOptimizer:
    """Combines the sharded model's fused embedding optimizer with the dense optimizer.

    Args:
        model: the DistributedModelParallel model (its `fused_optimizer` holds the embedding optimizer).
        optim_cfg: the `optim` section.

    Returns:
        One optimizer whose `step()` steps the dense parameters and sets the fused optimizers' rate.
    """
    factory = DENSE_OPTIMIZERS[optim_cfg.dense_optimizer]
    dense = KeyedOptimizerWrapper(dense_parameters(model), lambda params: factory(params, optim_cfg))
    if optim_cfg.grad_clip > 0:
        # Clipping lives in the optimizer's step() so that TorchRec's train pipeline, which owns
        # backward and step on GPU, clips too. The dense gradients are already all-reduced by DDP.
        dense = GradientClippingOptimizer(dense, GradientClipping.NORM, max_gradient=optim_cfg.grad_clip)
    return CombinedOptimizer([model.fused_optimizer, dense])


def lr_factor(step: int, warmup_steps: int, decay: str, total_steps: int) -> float:
    """Multiplier of the peak rate at `step`: linear warmup, then constant, linear or cosine decay to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "none" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_steps_of(optim_cfg: OptimConfig, planned_steps: int) -> int:
    """The warmup's length in steps: `warmup_steps`, or `warmup_fraction` of the `planned_steps`."""
    return optim_cfg.warmup_steps or round(optim_cfg.warmup_fraction * planned_steps)


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    optim_cfg: OptimConfig,
    total_steps: int,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Warmup, then the decay, over `total_steps`.

    Args:
        warmup_steps: the warmup's length; by default `warmup_steps_of(optim_cfg, total_steps)`. The
            trainer passes the share of its planned epochs, which a `training.max_steps` cut leaves alone.
    """
    warmup = warmup_steps_of(optim_cfg, total_steps) if warmup_steps is None else warmup_steps
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, optim_cfg.decay, total_steps))
