"""dlrm-export and dlrm-score on a 2-rank run: whole tables equal to the shards, the run's test AUC again."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from data_prep.manifest import load_manifest
from data_prep.oracle import auc
from tests.distributed.test_checkpoint_integrity import _train

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def trained_run(prepared_sample, tmp_path_factory) -> Path:
    """2 ranks, row-wise tables (so every table really is split), checkpoints at steps 8 and 12."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    _train(prepared_sample, run_dir, "--training.max_steps=12", "--sharding.types=row_wise")
    return run_dir


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    from dlrm_dist.export import main

    model_dir = tmp_path_factory.mktemp("model")
    assert main(["--run-dir", str(trained_run), "--out", str(model_dir)]) == 0
    return model_dir


def test_exported_weights_are_the_checkpoints_whole_tensors(trained_run, exported, tmp_path):
    from dlrm_dist.export import load_exported

    info = json.loads((exported / "export.json").read_text())
    assert info["step"] == 12
    gathered = tmp_path / "gathered.pt"
    dcp_to_torch_save(trained_run / "checkpoints/step-12", gathered)
    checkpoint = torch.load(gathered, weights_only=False)["model"]
    weights = torch.load(exported / "weights.pt", weights_only=True)
    assert {f"model.{key}" for key in weights} == set(checkpoint)
    tables = [key for key in weights if "embedding_bags" in key]
    assert len(tables) == 26
    for key, tensor in weights.items():
        assert torch.equal(tensor, checkpoint[f"model.{key}"]), key
    _, features, net = load_exported(exported)
    assert [t.shape[0] for k, t in weights.items() if k in tables] == list(features.num_embeddings)
    assert not net.training


def test_scores_in_one_process_have_the_runs_test_auc(prepared_sample, trained_run, exported, tmp_path):
    from dlrm_dist.score import main

    out = tmp_path / "pred.parquet"
    assert main(["--model", str(exported), "--data", str(prepared_sample), "--split", "test", "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    predictions = pq.read_table(out)
    (test_file,) = load_manifest(prepared_sample)["splits"]["test"]["files"]
    labels = pq.read_table(prepared_sample / test_file["path"]).column("label").to_numpy()
    assert predictions.column_names == ["label", "prediction"]
    assert predictions.column("label").to_numpy().tolist() == labels.astype("float32").tolist()
    probabilities = predictions.column("prediction").to_numpy()
    assert ((probabilities > 0) & (probabilities < 1)).all()
    run_auc = json.loads((trained_run / "metrics.json").read_text())["test"]["auc"]
    assert auc(probabilities, labels.astype("float64")) == pytest.approx(run_auc, abs=1e-6)


def test_the_torch_export_program_computes_what_the_model_does(exported):
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from dlrm_dist.export import load_exported, load_program

    info = json.loads((exported / "export.json").read_text())
    if not (exported / "program.pt2").is_file():
        pytest.skip(f"no torch.export program: {info['torch_export']}")
    _, features, net = load_exported(exported)
    names = list(features.categorical_names)
    dense = torch.linspace(-1, 1, 2 * features.num_dense).reshape(2, -1)
    ids = torch.tensor(
        [[i % rows, (7 * i) % rows] for i, rows in enumerate(features.num_embeddings)]
    ).reshape(-1)
    sparse = KeyedJaggedTensor(keys=names, values=ids, lengths=torch.ones(2 * len(names), dtype=torch.int32))
    program = load_program(exported)
    assert torch.allclose(program(dense, sparse), net(dense, sparse), atol=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-dir", "{tmp}/nowhere"], "--run-dir {tmp}/nowhere: no such directory"),
        (["--run-dir", "{empty}"], "{empty}/config.json: not found"),
        (["--run-dir", "{nockpt}"], "{nockpt}/checkpoints: no checkpoint"),
        (["--run-dir", "{run}", "--step", "5"], "{run}/checkpoints: no step-5 (steps: 8, 12)"),
    ],
)
def test_export_errors_are_one_line_naming_the_path(trained_run, tmp_path, capsys, args, message):
    from dlrm_dist.export import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "nockpt").mkdir()
    (tmp_path / "nockpt/config.json").write_text((trained_run / "config.json").read_text())
    names = {"tmp": tmp_path, "empty": tmp_path / "empty", "nockpt": tmp_path / "nockpt", "run": trained_run}
    argv = [arg.format(**names) for arg in args] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"dlrm-export: error: {message.format(**names)}")
    assert not (tmp_path / "out").exists()


def test_score_without_a_model_is_one_line(prepared_sample, tmp_path, capsys):
    from dlrm_dist.score import main

    argv = [
        "--model",
        str(tmp_path / "none"),
        "--data",
        str(prepared_sample),
        "--out",
        str(tmp_path / "p.parquet"),
    ]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"dlrm-score: error: --model {tmp_path / 'none'}: no weights.pt (write it with dlrm-export)"
    ]
