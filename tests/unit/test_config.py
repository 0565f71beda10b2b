"""Config: defaults < TOML recipe < command-line overrides, and errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrm_dist.config import JobConfig, load_config, parse_job_args

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_precedence_defaults_then_file_then_overrides(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[optim]\nlr = 0.5\nembedding_lr = 0.25\n[training]\nbatch_size = 64\n")
    config = load_config(recipe, ["--optim.lr=0.125", "--training.epochs", "3"])
    assert config.optim.lr == 0.125  # override beats the file
    assert config.optim.embedding_lr == 0.25  # file beats the default
    assert config.training.batch_size == 64
    assert config.training.epochs == 3
    assert config.optim.dense_optimizer == JobConfig().optim.dense_optimizer  # default kept


def test_the_documented_override_names_exist():
    names = ["training.epochs=2", "training.max_steps=7", "training.batch_size=256", "training.seed=5",
             "optim.lr=0.3", "optim.embedding_lr=0.4", "model.name=dlrm", "model.embedding_dim=8",
             "eval.every_steps=9", "checkpoint.every_steps=11", "checkpoint.resume=auto"]  # fmt: skip
    config = load_config(None, [f"--{name}" for name in names])
    assert (config.training.epochs, config.training.max_steps, config.training.batch_size) == (2, 7, 256)
    assert (config.training.seed, config.optim.lr, config.optim.embedding_lr) == (5, 0.3, 0.4)
    assert (config.model.embedding_dim, config.eval.every_steps, config.checkpoint.every_steps) == (8, 9, 11)
    assert config.checkpoint.resume == "auto"


def test_lists_and_bools_parse_from_the_command_line():
    config = load_config(
        None, ["--model.bottom_mlp=64,32,16", "--model.embedding_dim=16", "--metrics.tensorboard=false"]
    )
    assert config.model.bottom_mlp == [64, 32, 16]
    assert config.metrics.tensorboard is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--optim.lr=-1"], "optim.lr: must be > 0"),
        (["--optim.lr=fast"], "optim.lr: expected float, got 'fast'"),
        (["--training.batch_size=2.5"], "training.batch_size: expected int"),
        (["--optim.embedding_optimizer=lamb"], "optim.embedding_optimizer: 'lamb' is not one of"),
        (["--model.top_mlp=16,8"], "model.top_mlp: needs positive layer sizes ending in 1"),
        (["--sharding.types=diagonal"], "sharding.types: 'diagonal' is not one of"),
        (["--training.bogus=1"], "training.bogus: unknown field"),
        (["--metrics.tensorboard=maybe"], "metrics.tensorboard: expected true or false"),
        (["stray"], "unrecognised argument 'stray'"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_config(None, overrides)


def test_toml_errors_name_the_field_and_file(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[eval]\nevery_steps = -5\n")
    with pytest.raises(ValueError, match=r"eval\.every_steps: must be >= 0"):
        load_config(recipe)
    with pytest.raises(ValueError, match="--config: no such file"):
        load_config(tmp_path / "missing.toml")


def test_data_path_is_required_and_resolved_config_round_trips(tmp_path):
    with pytest.raises(ValueError, match=r"data\.path"):
        parse_job_args(["--config", str(REPO_ROOT / "configs/tiny.toml")], "test")
    config = parse_job_args(
        ["--config", str(REPO_ROOT / "configs/tiny.toml"), "--data", "/d", "--run-dir", "/r"], "test"
    )
    assert (config.data.path, config.run_dir) == ("/d", "/r")
    assert json.loads(config.to_json())["model"]["embedding_dim"] == config.model.embedding_dim


@pytest.mark.parametrize("recipe", sorted((REPO_ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_recipe_parses(recipe):
    load_config(recipe)
