"""DLRM trains sharded on 2 gloo ranks from multi-hot Parquet data with mean pooling.

The data is synthetic with MLPerf DLRMv2's bag sizes (up to 100 ids per bag, empty bags for missing
fields), through `dlrm-prep criteo --multi-hot` and the loader. Mean pooling takes two routes, both
checked: a table-wise table is pooled whole by fbgemm's fused CPU kernel in its MEAN mode, while a
row-wise one holds only part of a bag's rows on each rank, so TorchRec sums in the kernel and divides
by the bag lengths after the reduce-scatter. (One collection must not mix the two: TorchRec 1.8 then
divides the table-wise means a second time, which `JobConfig` refuses.) For each, the sharded model
computes the logits of an unsharded copy of its weights (TorchRec's own EmbeddingBagCollection, whose
sum and mean pooling the unit tests check against numpy), and a few steps lower the global loss on
held-out batches, every step's loss finite. Sum pooling takes the kernel path of one-hot data.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributed as dist

from data_prep.cli import main
from data_prep.synth import MLPERF_MULTI_HOT_SIZES, generate
from tests.conftest import features_of
from tests.distributed.harness import run_ranks

pytestmark = pytest.mark.distributed

BATCH_SIZE_PER_RANK = 64
TRAIN_STEPS = 12
HASH_BUCKETS = 500
SHARDING_TYPES = ("table_wise", "row_wise")


@pytest.fixture(scope="module")
def multi_hot_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_hot_training")
    generate(root / "days", days=2, rows_per_day=2000, seed=2, cardinalities=[HASH_BUCKETS] * 26,
             multi_hot_sizes=MLPERF_MULTI_HOT_SIZES, progress=False)  # fmt: skip
    out = root / "prepared"
    args = ["criteo", "--input", str(root / "days"), "--out", str(out), "--layout", "terabyte", "--multi-hot",
            "--hash-buckets", str(HASH_BUCKETS), "--row-group-rows", "256", "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return out


def global_mean_loss(model, batches) -> float:
    with torch.no_grad():
        local_sum = torch.stack([model(batch)[0] for batch in batches]).sum()
    dist.all_reduce(local_sum)
    return local_sum.item() / (len(batches) * dist.get_world_size())


def train_multi_hot(rank: int, world_size: int, data_dir: str) -> None:
    from data_prep.manifest import load_manifest
    from dlrm_dist.config import ModelConfig, OptimConfig, ShardingConfig
    from dlrm_dist.data import iter_eval_batches, iter_train_batches, list_row_groups
    from dlrm_dist.distributed import destroy_distributed, init_distributed
    from dlrm_dist.models import build_model
    from dlrm_dist.models.train_module import CTRTrainModule
    from dlrm_dist.optim import build_optimizer
    from dlrm_dist.sharding import plan_to_text, shard_model
    from tests.distributed.test_sharding_equivalence import gather_full_state

    ctx = init_distributed("cpu")
    try:
        manifest = load_manifest(data_dir)
        assert manifest["multi_hot"]
        sizes = manifest["num_embeddings"]
        train_groups = list_row_groups(data_dir, manifest, "train")
        val_groups = list_row_groups(data_dir, manifest, "val")
        held_out = [
            b
            for b, _ in iter_eval_batches(
                val_groups,
                rank,
                world_size,
                256,
                max_rows=1024,
                features=features_of(data_dir),
            )
        ]
        assert max(held_out[0].sparse_features.lengths().tolist()) == 100
        optim_cfg = OptimConfig(lr=0.05, embedding_lr=0.1)
        for sharding_type in SHARDING_TYPES:
            case = f"[mean pooling, {sharding_type}]"
            model_cfg = ModelConfig(embedding_dim=8, bottom_mlp=[16, 8], top_mlp=[16, 1], pooling="mean")
            torch.manual_seed(0)
            model, plan = shard_model(
                CTRTrainModule(build_model(model_cfg, sizes)),
                ShardingConfig(types=[sharding_type]),
                optim_cfg,
                ctx,
                BATCH_SIZE_PER_RANK,
            )
            planned = {s.sharding_type for tables in plan.plan.values() for s in tables.values()}
            assert planned == {sharding_type}, f"{case}\n{plan_to_text(plan)}"
            reference = CTRTrainModule(build_model(model_cfg, sizes, sparse_device=torch.device("cpu")))
            reference.load_state_dict(gather_full_state(model, rank))
            with torch.no_grad():
                torch.testing.assert_close(
                    model(held_out[0])[1][1],
                    reference(held_out[0])[1][1],
                    msg=lambda detail, case=case: f"{case} sharded and unsharded logits differ: {detail}",
                )

            optimizer = build_optimizer(model, optim_cfg)
            loss_before = global_mean_loss(model, held_out)
            batches = iter_train_batches(
                train_groups,
                rank,
                world_size,
                BATCH_SIZE_PER_RANK,
                seed=0,
                epoch=0,
                shuffle_buffer=512,
                features=features_of(data_dir),
            )
            for step, batch in enumerate(itertools.islice(batches, TRAIN_STEPS)):
                loss, _ = model(batch)
                assert torch.isfinite(loss), f"{case} loss {loss.item()} at step {step + 1}"
                loss.backward()  # the fused optimizer updates the tables inside backward
                optimizer.step()
                optimizer.zero_grad()
            loss_after = global_mean_loss(model, held_out)
            assert loss_after < loss_before, f"{case} loss went from {loss_before:.4f} to {loss_after:.4f}"
    finally:
        destroy_distributed()


def test_dlrm_trains_sharded_on_multi_hot_data_with_mean_pooling(multi_hot_data):
    run_ranks(train_multi_hot, world_size=2, timeout_s=240.0, data_dir=str(multi_hot_data))
