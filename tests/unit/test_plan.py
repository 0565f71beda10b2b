"""dlrm-plan on the MLPerf recipes (no GPU, no process group), and the config fields the recipes need."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import torch

from data_prep.features import criteo_schema
from dlrm_dist.config import EvalConfig, ModelConfig, load_config
from dlrm_dist.models import build_model
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.plan import main, plan_cluster
from dlrm_dist.planning import ClusterShape, plan_attempts
from dlrm_dist.sharding import prepare_planning, table_sizes
from dlrm_dist.trainer import data_features, eval_interval, planner_ids_per_bag

REPO_ROOT = Path(__file__).resolve().parents[2]
DCNV2_RECIPE = REPO_ROOT / "configs/criteo_1tb_dcnv2.toml"
TWO_NODES_OF_8_H100 = ["--world-size", "16", "--local-world-size", "8", "--device", "cuda", "--hbm-gb", "80"]
GIB = 2**30


def _run_plan(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def dcnv2_plan_output() -> str:
    code, stdout, stderr = _run_plan(["--config", str(DCNV2_RECIPE), *TWO_NODES_OF_8_H100])
    assert code == 0, stderr
    return stdout


def _plan_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """table -> (sharding type, shards text) from the printed plan."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("model."):
            _, table, sharding_type, _, _, shards = line.split(maxsplit=5)
            rows[table] = (sharding_type, shards)
    return rows


def _rank_rows(stdout: str) -> list[list[float]]:
    """[weights, opt+buffers, HBM, DDR] in GiB for each rank line of the memory table."""
    rows = []
    for line in stdout.splitlines():
        cells = line.split()
        if len(cells) == 6 and cells[0].isdigit():
            rows.append([float(cell) for cell in cells[1:5]])
    return rows


def test_mlperf_dcnv2_plan_places_all_26_tables_on_the_16_ranks(dcnv2_plan_output):
    rows = _plan_rows(dcnv2_plan_output)
    assert sorted(rows) == sorted(f"C{column}" for column in range(1, 27))
    num_embeddings = load_config(DCNV2_RECIPE).model.num_embeddings
    for table, (sharding_type, shards) in rows.items():
        if sharding_type == "data_parallel":
            continue
        # Shards print as r<rank>:<rows>x<cols>@<row>,<col>; together they hold every weight exactly once.
        ranks = [int(shard.split(":")[0][1:]) for shard in shards.split()]
        shapes = [shard.split(":")[1].split("@")[0].split("x") for shard in shards.split()]
        assert sum(int(rows) * int(cols) for rows, cols in shapes) == num_embeddings[int(table[1:]) - 1] * 128
        assert all(0 <= rank < 16 for rank in ranks)


def test_mlperf_dcnv2_memory_per_rank_adds_up(dcnv2_plan_output):
    recipe = load_config(DCNV2_RECIPE)
    rows = _plan_rows(dcnv2_plan_output)
    ranks = _rank_rows(dcnv2_plan_output)
    assert len(ranks) == 16
    bytes_per_table = {f"C{i + 1}": n * 128 * 4 for i, n in enumerate(recipe.model.num_embeddings)}
    # Sharded tables are held once in all; data_parallel tables once per rank.
    expected_weights = sum(
        size * (16 if rows[table][0] == "data_parallel" else 1) for table, size in bytes_per_table.items()
    )
    assert sum(rank[0] for rank in ranks) == pytest.approx(expected_weights / GIB, abs=16 * 0.005)
    for weights, rest, hbm, ddr in ranks:
        assert weights + rest == pytest.approx(hbm + ddr, abs=0.011)
        # Per-element Adagrad keeps one accumulator per weight: the planner counts it on the same GPU.
        assert hbm >= 2 * weights > 0
        assert hbm < 80 and ddr == 0
    total = next(line for line in dcnv2_plan_output.splitlines() if line.lstrip().startswith("total"))
    assert float(total.split()[1]) == pytest.approx(sum(rank[0] for rank in ranks), abs=16 * 0.005)


def test_tables_that_cannot_fit_stop_with_one_line_and_exit_2():
    code, stdout, stderr = _run_plan(
        ["--config", str(DCNV2_RECIPE), *TWO_NODES_OF_8_H100, "--hbm-gb", "1", "--ddr-gb", "1"]
    )
    assert code == 2 and stdout == ""
    message = stderr.strip()
    assert "\n" not in message
    assert message.startswith("dlrm-plan: error: the tables need")
    needed, available = (float(part.split(" GiB")[0].split()[-1]) for part in message.split(" but "))
    assert needed > 150 > 32 > available  # ~2 x 97 GiB of tables and Adagrad state; 16 x (1 + 1) GiB
    assert "--world-size" in message and "--sharding.compute_kernel=fused_uvm_caching" in message


def _tiny_cfg(*overrides: str):
    return load_config(
        None,
        ["--model.embedding_dim=16", "--model.bottom_mlp=32,16", "--model.top_mlp=16,1",
         "--optim.embedding_optimizer=adagrad", "--training.batch_size=256", *overrides],
    )  # fmt: skip


def test_memory_per_rank_is_the_planners_storage_of_the_shards_placed_there():
    cfg = _tiny_cfg()
    sizes = [1000 * (index + 1) for index in range(26)]
    cluster = ClusterShape(world_size=4, local_world_size=2, device_type="cuda", hbm_bytes=GIB, ddr_bytes=GIB)
    report = plan_cluster(cfg, sizes, cluster, batch_size_per_rank=64)
    assert len(report.options) == 26 and len(report.ranks) == 4
    replicas = {"data_parallel": 4}
    expected = sum(
        option.tensor.numel() * 4 * replicas.get(option.sharding_type, 1) for option in report.options
    )
    assert sum(rank.weight_bytes for rank in report.ranks) == expected
    assert sum(rank.hbm_bytes for rank in report.ranks) == sum(
        shard.storage.hbm for option in report.options for shard in option.shards
    )


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_one_rank_plans_tables_whole_unless_the_recipe_says_otherwise(device_type):
    sizes = [100_000] * 26
    one_rank = ClusterShape(
        world_size=1, local_world_size=1, device_type=device_type, hbm_bytes=8 * GIB, ddr_bytes=8 * GIB
    )
    report = plan_cluster(_tiny_cfg(), sizes, one_rank, batch_size_per_rank=2048)
    assert {option.sharding_type for option in report.options} <= {"table_wise", "data_parallel"}
    # A type the recipe names is still honoured on one rank.
    named = plan_cluster(_tiny_cfg("--sharding.types=row_wise"), sizes, one_rank, batch_size_per_rank=2048)
    assert {option.sharding_type for option in named.options} == {"row_wise"}
    # Left open on two ranks, the planner still has every type to choose from.
    module = CTRTrainModule(build_model(_tiny_cfg().model, sizes, dense_device=torch.device("meta")))
    _, constraints = prepare_planning(module, _tiny_cfg().sharding, _tiny_cfg().optim, device_type, None, 2)
    assert "table_row_wise" in constraints["C1"].sharding_types


def test_several_cpu_ranks_keep_open_tables_whole_and_split_only_what_cannot_fit():
    def types(report) -> dict[str, str]:
        return {option.name: option.sharding_type for option in report.options}

    two_cpu_ranks = ClusterShape(
        world_size=2, local_world_size=2, device_type="cpu", hbm_bytes=0, ddr_bytes=GIB
    )
    whole = types(plan_cluster(_tiny_cfg(), [100_000] * 26, two_cpu_ranks, batch_size_per_rank=256))
    assert set(whole.values()) <= {"table_wise", "data_parallel"} and len(whole) == 26
    # 10M rows x 16 floats, and as much Adagrad state, is 1.2 GiB: too much for one rank's 1 GiB, so C1
    # alone is split over both ranks.
    sizes = [10_000_000] + [100_000] * 25
    fallback = types(plan_cluster(_tiny_cfg(), sizes, two_cpu_ranks, batch_size_per_rank=256))
    assert fallback["C1"] in ("row_wise", "table_row_wise", "column_wise")
    assert {fallback[name] for name in fallback if name != "C1"} <= {"table_wise", "data_parallel"}
    # A recipe's own types are honoured as given, and GPUs keep the planner's full choice.
    named = types(plan_cluster(_tiny_cfg("--sharding.types=row_wise"), [100_000] * 26, two_cpu_ranks, 256))
    assert set(named.values()) == {"row_wise"}
    module = CTRTrainModule(build_model(_tiny_cfg().model, [100_000] * 26, dense_device=torch.device("meta")))
    cfg = _tiny_cfg()
    _, constraints = prepare_planning(module, cfg.sharding, cfg.optim, "cuda", None, 2)
    sizes = table_sizes(module)
    assert plan_attempts(constraints, cfg.sharding, "cuda", 2, sizes) == [constraints]
    # All whole, then the largest 1, 2, 4, 8 and 16 of the 26 open, then all open.
    assert len(plan_attempts(constraints, cfg.sharding, "cpu", 2, sizes)) == 7


def test_multi_hot_sizes_become_the_planners_pooling_factors():
    sizes = [1000] * 26
    multi_hot = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
    multi_hot_override = f"--model.multi_hot_sizes={','.join(map(str, multi_hot))}"
    cfg = _tiny_cfg("--model.name=deepfm", multi_hot_override)
    module = CTRTrainModule(build_model(cfg.model, sizes, dense_device=torch.device("meta")))
    ids_per_bag = planner_ids_per_bag(cfg.model, None)
    _, constraints = prepare_planning(module, cfg.sharding, cfg.optim, "cuda", ids_per_bag, 2)
    # The first-order table of a column reads the same bags as its field table.
    assert constraints["C21"].pooling_factors == constraints["wide_C21"].pooling_factors == [100.0]
    assert constraints["C1"].pooling_factors == [3.0]

    # Same tables, same sharding type: only the input grows, and the planner's estimates with it.
    cluster = ClusterShape(world_size=2, local_world_size=2, device_type="cuda", hbm_bytes=GIB, ddr_bytes=GIB)
    one_hot = plan_cluster(_tiny_cfg("--sharding.types=table_wise"), sizes, cluster, batch_size_per_rank=512)
    multi = plan_cluster(
        _tiny_cfg("--sharding.types=table_wise", multi_hot_override), sizes, cluster, batch_size_per_rank=512
    )
    input_lengths = {option.name: option.input_lengths for option in multi.options}
    assert input_lengths["C21"] == [100.0] and input_lengths["C1"] == [3.0]
    assert {option.name: option.input_lengths for option in one_hot.options}["C21"] == [1.0]
    assert sum(rank.hbm_bytes for rank in multi.ranks) > sum(rank.hbm_bytes for rank in one_hot.ranks)


def _manifest(sizes: list[int]) -> dict:
    return {"num_embeddings": sizes, "columns": {"dense": [f"I{i}" for i in range(1, 14)]}}


def test_trainer_stops_when_the_manifest_disagrees_with_model_num_embeddings():
    recipe = load_config(DCNV2_RECIPE).model
    sizes = data_features(_manifest(list(recipe.num_embeddings)), recipe, "/data").num_embeddings
    assert list(sizes) == recipe.num_embeddings
    other = list(recipe.num_embeddings)
    other[1], other[5] = 36746, 4  # C2 and C6 differ; the error names the first
    with pytest.raises(
        ValueError, match=r"model\.num_embeddings: C2 has 39,060 rows in the config but 36,746"
    ):
        data_features(_manifest(other), recipe, "/data")
    with pytest.raises(
        ValueError, match=r"model\.num_embeddings: the config gives 26 table sizes but .* has 3"
    ):
        data_features(_manifest([5, 6, 7]), recipe, "/data")
    # Unset, the manifest's sizes are taken as they are.
    assert list(data_features(_manifest(other), ModelConfig(), "/data").num_embeddings) == other


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([f"--model.num_embeddings={','.join(['5'] * 25)},0"], r"model\.num_embeddings: value 26 \(table 26\) must be >= 1"),
        (["--model.max_table_rows=100", f"--model.num_embeddings={','.join(['101'] * 26)}"],
         r"model\.num_embeddings: table 1 has 101 rows, above model\.max_table_rows = 100"),
        (["--model.multi_hot_sizes=1,0,3"], r"model\.multi_hot_sizes: value 2 \(table 2\) must be >= 1"),
        (["--eval.per_epoch=-1"], r"eval\.per_epoch: must be >= 0"),
        (["--eval.per_epoch=20", "--eval.every_steps=100"], r"eval\.per_epoch: cannot be combined with eval\.every_steps"),
    ],
)  # fmt: skip
def test_new_fields_fail_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_per_epoch_evaluations_derive_the_interval_from_steps_per_epoch():
    # The DCNv2 recipe: 64,013 steps of 65,536 per epoch, 20 validations -> every 3,200 steps, as MLPerf's
    # validation_freq_within_epoch = samples / (batch * 20).
    assert eval_interval(EvalConfig(per_epoch=20), 64_013) == 4_195_197_692 // (65_536 * 20)
    assert eval_interval(EvalConfig(every_steps=7), 64_013) == 7
    assert eval_interval(EvalConfig(per_epoch=50), 10) == 1
    assert eval_interval(EvalConfig(), 10) == 0


def test_plan_needs_table_sizes_from_the_recipe_or_the_data():
    code, _, stderr = _run_plan(["--world-size", "2", "--device", "cpu"])
    assert code == 2 and "model.num_embeddings: is empty and no --data DIR" in stderr


def test_planner_ids_per_bag_prefers_the_recipe_then_the_manifest():
    multi_hot = criteo_schema([10] * 26, multi_hot=True, bag_lengths={"mean": [2.5] * 26, "max": [4] * 26})
    names = [f"C{index}" for index in range(1, 27)]
    assert planner_ids_per_bag(ModelConfig(), multi_hot) == dict.fromkeys(names, 2.5)
    assert planner_ids_per_bag(ModelConfig(multi_hot_sizes=[3] * 26), multi_hot) == dict.fromkeys(names, 3.0)
    assert planner_ids_per_bag(ModelConfig(), criteo_schema([10] * 26)) == {}
    assert planner_ids_per_bag(ModelConfig(), None) == {}
    with pytest.raises(ValueError, match=r"model\.multi_hot_sizes: gives 2 sizes but the data has 26"):
        planner_ids_per_bag(ModelConfig(multi_hot_sizes=[3, 4]), multi_hot)
