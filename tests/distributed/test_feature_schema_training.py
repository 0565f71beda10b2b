"""The sharded trainer on data sets that are not Criteo: 2 gloo ranks, schemas of odd shapes.

Every shape of `tests/schema_data.py` trains a few steps of DLRM with its tables sharded over two
ranks; the single-categorical data set trains a full epoch and must find its planted signal; the two
floors, `lr` and `fm`, train sharded too.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.distributed.harness import run_ranks
from tests.schema_data import ODD_SHAPES, odd_schema, write_prepared

REPO_ROOT = Path(__file__).resolve().parents[2]
# (shape, model, extra overrides): a few steps each, one full epoch where the AUC is checked.
RUNS = [(shape, "dlrm", ["--training.max_steps=4"]) for shape in ODD_SHAPES] + [
    ("one_categorical", "dlrm", []),
    ("one_categorical", "lr", ["--training.max_steps=4"]),
    ("mixed_bags", "fm", ["--training.max_steps=4"]),
]


def _train_all(rank: int, world_size: int, root: str) -> None:
    from dlrm_dist.config import load_config
    from dlrm_dist.distributed import destroy_distributed, init_distributed
    from dlrm_dist.trainer import Trainer

    ctx = init_distributed("cpu")
    try:
        for index, (shape, model, extra) in enumerate(RUNS):
            overrides = [
                f"--model.name={model}", "--training.batch_size=256", "--eval.batch_size=512",
                "--metrics.progress_bar=false", "--training.device=cpu", "--eval.every_steps=0",
                "--checkpoint.every_steps=0", "--metrics.tensorboard=false", *extra,
            ]  # fmt: skip
            base = {"data": {"path": f"{root}/{shape}"}, "run_dir": f"{root}/runs/{index}-{shape}-{model}"}
            Trainer(load_config(REPO_ROOT / "configs/tiny.toml", overrides, base), ctx).run()
    finally:
        destroy_distributed()


def test_sharded_training_on_every_schema_shape(tmp_path):
    for shape in ODD_SHAPES:
        write_prepared(tmp_path / shape, odd_schema(shape), seed=2)
    run_ranks(_train_all, world_size=2, timeout_s=300.0, root=str(tmp_path))
    for index, (shape, model, extra) in enumerate(RUNS):
        metrics = json.loads((tmp_path / "runs" / f"{index}-{shape}-{model}" / "metrics.json").read_text())
        assert metrics["test"]["rows"] == 1024, (shape, model)
        assert 0.0 <= metrics["test"]["auc"] <= 1.0
        if not extra:
            # One epoch (16 steps of 256) on a single 200-row table with strong per-value effects.
            assert metrics["test"]["auc"] > 0.65, (shape, model, metrics["test"])
