"""`optim.warmup_fraction`: a warmup stated as a share of the run, so that it means the same on any data size."""

from __future__ import annotations

import pytest
import torch

from dlrm_dist.config import OptimConfig, load_config
from dlrm_dist.optim import build_lr_scheduler, warmup_steps_of


def _rates(cfg: OptimConfig, total_steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    scheduler = build_lr_scheduler(optimizer, cfg, total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("total_steps", [40, 400])
def test_fraction_warms_up_over_that_share_of_the_run(total_steps):
    cfg = OptimConfig(warmup_fraction=0.1)
    warmup = total_steps // 10
    assert warmup_steps_of(cfg, total_steps) == warmup
    rates = _rates(cfg, total_steps)
    assert rates[:warmup] == pytest.approx([0.5 * (step + 1) / warmup for step in range(warmup)])
    assert rates[warmup:] == pytest.approx([0.5] * (total_steps - warmup))


def test_fraction_equals_the_same_count_of_steps():
    total_steps = 60
    by_fraction = _rates(OptimConfig(warmup_fraction=0.25, decay="linear"), total_steps)
    by_steps = _rates(OptimConfig(warmup_steps=15, decay="linear"), total_steps)
    assert by_fraction == by_steps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--optim.warmup_fraction=1"], "optim.warmup_fraction: must be in [0, 1), got 1"),
        (["--optim.warmup_fraction=-0.1"], "optim.warmup_fraction: must be in [0, 1)"),
        (
            ["--optim.warmup_fraction=0.1", "--optim.warmup_steps=5"],
            "optim.warmup_fraction: give it or optim.warmup_steps, not both",
        ),
    ],
)
def test_bad_warmup_fields_fail_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides, {"data": {"path": "/nonexistent"}})


def test_dlrm_tune_states_a_recipes_warmup_as_a_share_of_the_epoch():
    from dlrm_dist.tune import recipe_warmup_fraction, search_space

    def recipe(*overrides: str):
        return load_config(
            None, ["--training.batch_size=512", *overrides], {"data": {"path": "/nonexistent"}}
        )

    # 10,240 rows on 2 ranks at batch 512: 20 steps an epoch, so 10 warmup steps are half of it.
    assert recipe_warmup_fraction(recipe("--optim.warmup_steps=10"), 10_240, 2) == 0.5
    assert recipe_warmup_fraction(recipe("--optim.warmup_steps=500"), 10_240, 2) == 0.99
    assert recipe_warmup_fraction(recipe("--optim.warmup_fraction=0.2"), 10_240, 2) == 0.2
    assert recipe_warmup_fraction(recipe(), 10_240, 2) == 0.0
    assert search_space(recipe(), "cpu", 0.5)["warmup_fraction"] == [0.0, 0.1, 0.3, 0.5, 0.6]
