"""Run configuration: nested dataclasses, TOML recipes and `--section.key=value` overrides.

Precedence, lowest to highest: dataclass defaults < the TOML file (`--config`) < command-line overrides.
Every field is documented by the docstring on the line below it and validated in `__post_init__`, so a bad
value fails at parse time with a `ValueError` naming the field, before any process group or file is
touched. The parsed `JobConfig` is frozen: derived values are computed where needed, never stored back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARDING_TYPES = ("table_wise", "column_wise", "row_wise", "table_row_wise", "data_parallel")
COMPUTE_KERNELS = ("dense", "fused", "fused_uvm", "fused_uvm_caching", "key_value")
EMBEDDING_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd", "adam")
DENSE_OPTIMIZERS = ("adagrad", "adam", "sgd")
LR_DECAYS = ("none", "linear", "cosine")
LR_SCALINGS = ("auto", "sqrt", "linear", "none")
DEVICES = ("auto", "cpu", "cuda")
POOLINGS = ("sum", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
# Sharding types whose tables are split by rows, so TorchRec takes a bag's mean after the reduce-scatter.
ROW_SPLIT_SHARDING_TYPES = ("row_wise", "table_row_wise")


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{name}: {message}")


def _require_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, f"{value!r} is not one of {', '.join(choices)}")


def _require_per_table(values: list[int], name: str) -> None:
    """Accepts an empty list (the field is unset) or positive values, one per categorical feature.

    How many features the data has is the manifest's to say; the trainer and `dlrm-plan` check the
    count against it.
    """
    for index, value in enumerate(values):
        _require(value >= 1, name, f"value {index + 1} (table {index + 1}) must be >= 1, got {value}")


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    """Directory written by `dlrm-prep` (criteo, table, movielens or synth): manifest.json and the shards."""
    shuffle_buffer: int = 16384
    """Rows held in the per-rank shuffle buffer for training (0 turns row shuffling off)."""
    prefetch_batches: int = 8
    """Batches assembled ahead of the model by the background reader thread."""

    def __post_init__(self) -> None:
        _require(self.shuffle_buffer >= 0, "data.shuffle_buffer", f"must be >= 0, got {self.shuffle_buffer}")
        _require(
            self.prefetch_batches >= 1, "data.prefetch_batches", f"must be >= 1, got {self.prefetch_batches}"
        )


@dataclass(frozen=True)
class ModelConfig:
    name: str = "dlrm"
    """Model family, one of the registry's names (see `dlrm_dist.models.MODEL_REGISTRY`)."""
    embedding_dim: int = 16
    """Width D of every embedding table."""
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64, 16])
    """Hidden sizes of the dense (bottom) MLP; for `dlrm` the last one must equal embedding_dim."""
    top_mlp: list[int] = field(default_factory=lambda: [512, 256, 1])
    """Sizes of the over (top) MLP; the last one is the single logit, so it must be 1."""
    max_table_rows: int = 0
    """Cap on each table's rows (0: the manifest's sizes). Must not be below what the data needs."""
    num_embeddings: list[int] = field(default_factory=list)
    """Rows of each table, one per categorical feature in the data's order (C1..C26 for Criteo), as the
    recipe expects them (empty: take the manifest's sizes). When set, the trainer stops unless the
    manifest has exactly these sizes; `dlrm-plan` plans with them."""
    multi_hot_sizes: list[int] = field(default_factory=list)
    """Ids per bag of each table, one per categorical feature in the data's order (empty: the manifest's
    measured mean bag lengths, or one-hot). The planner's pooling factors, so that its plan and memory
    and cost estimates see multi-hot input."""
    cross_layers: int = 3
    """Cross layers of `dcn` (vector weights) and `dlrm_dcnv2` (low-rank matrices); 3 as in MLPerf DLRMv2."""
    low_rank_dim: int = 512
    """Rank r of each `dlrm_dcnv2` cross matrix W = U V^T (U, V: [(F + 1) D, r]); 512 as in MLPerf DLRMv2."""
    cin_layers: list[int] = field(default_factory=lambda: [200, 200, 200])
    """Feature maps H_k of each CIN layer of `xdeepfm`; 3 layers of 200 as in the xDeepFM paper on Criteo."""
    deep_mlp: list[int] = field(default_factory=lambda: [400, 400, 400])
    """Hidden sizes of the deep part of `wide_deep`, `deepfm`, `dcn` and `xdeepfm`; the last one feeds the
    output layer. 400-400-400 as in the DeepFM paper."""
    pooling: str = "sum"
    """How a multi-hot bag's rows become one field embedding: sum (as MLPerf DLRMv2) or mean. One-hot bags
    pool to their single row either way; first-order tables (wide_*) always sum."""

    def __post_init__(self) -> None:
        _require(self.embedding_dim >= 1, "model.embedding_dim", f"must be >= 1, got {self.embedding_dim}")
        _require(
            len(self.bottom_mlp) >= 1 and min(self.bottom_mlp) >= 1,
            "model.bottom_mlp",
            f"needs at least one positive layer size, got {self.bottom_mlp}",
        )
        _require(
            len(self.top_mlp) >= 1 and min(self.top_mlp) >= 1 and self.top_mlp[-1] == 1,
            "model.top_mlp",
            f"needs positive layer sizes ending in 1 (the logit), got {self.top_mlp}",
        )
        _require(self.max_table_rows >= 0, "model.max_table_rows", f"must be >= 0, got {self.max_table_rows}")
        _require_per_table(self.num_embeddings, "model.num_embeddings")
        _require_per_table(self.multi_hot_sizes, "model.multi_hot_sizes")
        for index, rows in enumerate(self.num_embeddings):
            _require(
                not self.max_table_rows or rows <= self.max_table_rows,
                "model.num_embeddings",
                f"table {index + 1} has {rows:,} rows, above model.max_table_rows = {self.max_table_rows:,}",
            )
        _require(self.cross_layers >= 1, "model.cross_layers", f"must be >= 1, got {self.cross_layers}")
        _require(self.low_rank_dim >= 1, "model.low_rank_dim", f"must be >= 1, got {self.low_rank_dim}")
        _require(
            len(self.cin_layers) >= 1 and min(self.cin_layers) >= 1,
            "model.cin_layers",
            f"needs at least one positive number of feature maps, got {self.cin_layers}",
        )
        _require(
            len(self.deep_mlp) >= 1 and min(self.deep_mlp) >= 1,
            "model.deep_mlp",
            f"needs at least one positive layer size, got {self.deep_mlp}",
        )
        _require_choice(self.pooling, "model.pooling", POOLINGS)


@dataclass(frozen=True)
class ShardingConfig:
    types: list[str] = field(default_factory=list)
    """Sharding types the planner may use for every table (empty: all that the device supports)."""
    compute_kernel: str = ""
    """Embedding compute kernel for every table (empty: the planner chooses; `fused` on CPU and GPU)."""
    tables: dict[str, str] = field(default_factory=dict)
    """Per-table sharding type, e.g. `{C3 = "row_wise"}`; overrides `types` for that table."""
    min_column_shard_dim: int = 0
    """Narrowest column_wise shard: shards are the smallest multiple of 4 >= this that divides D
    (0: TorchRec's 128, so column_wise leaves tables with D <= 128 whole, as table_wise would)."""

    def __post_init__(self) -> None:
        _require(
            self.min_column_shard_dim >= 0,
            "sharding.min_column_shard_dim",
            f"must be >= 0, got {self.min_column_shard_dim}",
        )
        for sharding_type in self.types:
            _require_choice(sharding_type, "sharding.types", SHARDING_TYPES)
        if self.compute_kernel:
            _require_choice(self.compute_kernel, "sharding.compute_kernel", COMPUTE_KERNELS)
        for table, sharding_type in self.tables.items():
            _require_choice(sharding_type, f"sharding.tables.{table}", SHARDING_TYPES)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.01
    """Peak learning rate of the dense (MLP) parameters."""
    embedding_lr: float = 0.05
    """Learning rate of the embedding tables (applied by TorchRec's fused optimizer in backward)."""
    dense_optimizer: str = "adagrad"
    """Optimizer of the dense parameters: adagrad, adam or sgd."""
    embedding_optimizer: str = "rowwise_adagrad"
    """Fused optimizer of the embeddings: rowwise_adagrad, adagrad (per element), sgd or adam."""
    eps: float = 1e-8
    """Epsilon of Adagrad and Adam, dense and embeddings alike."""
    weight_decay: float = 0.0
    """Weight decay of the dense parameters."""
    warmup_steps: int = 0
    """Steps of linear warmup from 0 to the peak learning rates."""
    warmup_fraction: float = 0.0
    """Linear warmup over this share of the run's planned optimizer steps (training.epochs of the train
    split; a training.max_steps cut does not shorten it), 0 to < 1, instead of a fixed count: a warmup
    that keeps its meaning whatever the data set's size (100 steps are most of an epoch on a small data
    set and nothing on Criteo). Give this or warmup_steps, not both."""
    decay: str = "none"
    """Learning-rate decay after warmup: none, linear (to 0 at the last step) or cosine."""
    grad_clip: float = 0.0
    """Clip the dense gradients' global norm to this value (0: no clipping)."""
    reference_batch_size: int = 0
    """The global batch size `lr` and `embedding_lr` are stated for; another `training.batch_size` scales
    them by `lr_scaling` (0: no reference, the rates are used as given)."""
    lr_scaling: str = "auto"
    """How the rates follow the batch size k = batch_size / reference_batch_size: sqrt (x sqrt(k)), linear
    (x k), none, or auto: linear for an sgd optimizer, sqrt for the adaptive ones (adagrad, adam), each
    of the two optimizers by its own kind."""

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        _require(self.embedding_lr > 0, "optim.embedding_lr", f"must be > 0, got {self.embedding_lr}")
        _require_choice(self.dense_optimizer, "optim.dense_optimizer", DENSE_OPTIMIZERS)
        _require_choice(self.embedding_optimizer, "optim.embedding_optimizer", EMBEDDING_OPTIMIZERS)
        _require(self.eps > 0, "optim.eps", f"must be > 0, got {self.eps}")
        _require(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(
            0 <= self.warmup_fraction < 1,
            "optim.warmup_fraction",
            f"must be in [0, 1), got {self.warmup_fraction}",
        )
        _require(
            not (self.warmup_steps and self.warmup_fraction),
            "optim.warmup_fraction",
            f"give it or optim.warmup_steps, not both (warmup_steps = {self.warmup_steps})",
        )
        _require_choice(self.decay, "optim.decay", LR_DECAYS)
        _require(self.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {self.grad_clip}")
        _require(
            self.reference_batch_size >= 0,
            "optim.reference_batch_size",
            f"must be >= 0, got {self.reference_batch_size}",
        )
        _require_choice(self.lr_scaling, "optim.lr_scaling", LR_SCALINGS)


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 1
    """Passes over the train split."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: no limit beyond `epochs`)."""
    batch_size: int = 2048
    """Global batch size, split evenly across ranks (must be divisible by the world size)."""
    seed: int = 0
    """Seed of parameter init, data order and everything random."""
    device: str = "auto"
    """cpu (gloo), cuda (nccl, one GPU per rank) or auto (cuda when available)."""
    log_every_steps: int = 50
    """Steps between loss logs; the only steps that synchronise host and device in the loop."""
    target_auc: float = 0.0
    """Stop early once validation AUC reaches this (0: never)."""
    precision: str = "fp32"
    """fp32, or bf16: the dense part (MLPs, interactions) under autocast in bfloat16, on CPU and CUDA;
    embeddings, optimizer state, loss and AUC stay fp32. fp16 is refused (see dlrm_dist.precision)."""
    compile: bool = False
    """Compile the dense sub-networks (every part of the model without embedding tables) with
    torch.compile; a part that cannot be compiled runs eagerly, with one warning line."""
    keep_freed_memory: bool = True
    """On cpu, keep freed host memory in the process for the next step instead of returning it to the
    kernel and faulting it in again (glibc's mmap and trim thresholds, see dlrm_dist.host_memory);
    about 10% of a CPU step. The process then keeps its peak heap size."""

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "training.epochs", f"must be >= 1, got {self.epochs}")
        _require(self.max_steps >= 0, "training.max_steps", f"must be >= 0, got {self.max_steps}")
        _require(self.batch_size >= 1, "training.batch_size", f"must be >= 1, got {self.batch_size}")
        _require_choice(self.device, "training.device", DEVICES)
        _require_choice(self.precision, "training.precision", PRECISIONS)
        _require(
            self.log_every_steps >= 1, "training.log_every_steps", f"must be >= 1, got {self.log_every_steps}"
        )
        _require(0 <= self.target_auc < 1, "training.target_auc", f"must be in [0, 1), got {self.target_auc}")


@dataclass(frozen=True)
class EvalConfig:
    every_steps: int = 0
    """Evaluate on val every this many steps (0: only at the end of training)."""
    per_epoch: int = 0
    """Evaluations on val per epoch, evenly spaced: every steps-per-epoch // per_epoch steps, as MLPerf
    does (0: only `every_steps` counts). Cannot be combined with `every_steps`."""
    batch_size: int = 16384
    """Global batch size of evaluation."""
    max_rows: int = 0
    """Evaluate periodic (not final) validations on the first rows only (0: the whole split)."""

    def __post_init__(self) -> None:
        _require(self.every_steps >= 0, "eval.every_steps", f"must be >= 0, got {self.every_steps}")
        _require(self.per_epoch >= 0, "eval.per_epoch", f"must be >= 0, got {self.per_epoch}")
        _require(
            not (self.every_steps and self.per_epoch),
            "eval.per_epoch",
            f"cannot be combined with eval.every_steps (got per_epoch = {self.per_epoch}, every_steps = "
            f"{self.every_steps}); set only one of them",
        )
        _require(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.max_rows >= 0, "eval.max_rows", f"must be >= 0, got {self.max_rows}")


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0
    """Save a checkpoint every this many steps (0: only at the end)."""
    keep: int = 2
    """Complete checkpoints kept; older ones are deleted."""
    resume: str = ""
    """Empty: start fresh; `auto`: continue from the newest complete checkpoint if any; or a step dir."""
    enabled: bool = True
    """Write checkpoints at all."""

    def __post_init__(self) -> None:
        _require(self.every_steps >= 0, "checkpoint.every_steps", f"must be >= 0, got {self.every_steps}")
        _require(self.keep >= 1, "checkpoint.keep", f"must be >= 1, got {self.keep}")


@dataclass(frozen=True)
class MetricsConfig:
    tensorboard: bool = True
    """Write TensorBoard events under `<run_dir>/tb`."""
    progress_bar: bool = True
    """Show a tqdm progress bar on rank 0."""


@dataclass(frozen=True)
class JobConfig:
    run_dir: str = "runs/default"
    """Where config.json, plan.txt, metrics.json, tb/ and checkpoints/ go."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def __post_init__(self) -> None:
        if self.model.pooling == "mean":
            # TorchRec 1.8 takes a row-split table's mean after the reduce-scatter, dividing the pooled
            # output of the whole collection by the bag lengths, and exempts only row-split sum tables:
            # a table-wise (column-wise, data-parallel) table's bags, already averaged by the kernel, are
            # divided a second time. So one collection must not mix the two kinds.
            chosen = [*self.sharding.types, *self.sharding.tables.values()]
            kinds = {sharding_type in ROW_SPLIT_SHARDING_TYPES for sharding_type in chosen}
            _require(
                bool(self.sharding.types) and len(kinds) == 1,
                "model.pooling",
                "mean pooling needs sharding.types (and any sharding.tables) to be all row-split "
                f"({', '.join(ROW_SPLIT_SHARDING_TYPES)}) or all other types, because TorchRec divides "
                "the other tables' means a second time when one collection mixes them; got sharding.types "
                f"{self.sharding.types} and sharding.tables {self.sharding.tables}",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, annotation: Any, name: str) -> Any:
    """Converts a TOML or command-line value to the field's annotated type, naming the field on error."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [part for part in (p.strip() for p in value.split(",")) if part]
        if not isinstance(value, list):
            raise ValueError(f"{name}: expected a list, got {value!r}")
        return [_convert(item, item_type, name) for item in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a table of key = value, got {value!r}")
        _, value_type = typing.get_args(annotation)
        return {str(k): _convert(v, value_type, f"{name}.{k}") for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{name}: expected a number, got {value!r}")
        try:
            converted = annotation(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != converted:
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        return converted
    if annotation is str:
        return str(value)
    if isinstance(annotation, types.UnionType):
        raise ValueError(f"{name}: unsupported union type")
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            raise ValueError(f"{name}: unknown field (known: {', '.join(sorted(known))})")
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ValueError(f"{name}: expected a [section] table, got {value!r}")
            kwargs[key] = _build(annotation, value, f"{name}.")
        else:
            kwargs[key] = _convert(value, annotation, name)
    return cls(**kwargs)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"--{dotted}: {part} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """Turns `--section.key=value` / `--section.key value` tokens into a nested dict of raw strings."""
    tree: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ValueError(f"unrecognised argument {token!r}: overrides look like --section.key=value")
        if "=" in token:
            dotted, value = token[2:].split("=", 1)
            index += 1
        else:
            if index + 1 >= len(tokens):
                raise ValueError(f"{token}: missing value")
            dotted, value = token[2:], tokens[index + 1]
            index += 2
        _set_path(tree, dotted, value)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> JobConfig:
    """Builds the job config from defaults, an optional TOML file, then overrides.

    Args:
        config_file: a TOML recipe whose tables are the config sections.
        overrides: `--section.key=value` tokens; they win over the file.
        base: values applied after the file and before the overrides (e.g. `--data`, `--run-dir`).

    Returns:
        The validated, frozen `JobConfig`.
    """
    tree: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ValueError(f"--config: no such file {str(path)!r}")
        try:
            tree = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"--config {path}: not valid TOML: {error}") from None
    if base:
        tree = _merge(tree, base)
    tree = _merge(tree, parse_overrides(overrides or []))
    return _build(JobConfig, tree, "")


def build_arg_parser(description: str) -> argparse.ArgumentParser:
    """The shared `--config/--data/--run-dir` parser; anything else must be a `--section.key` override."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Any field can be overridden as --section.key=value, e.g. --training.batch_size=4096 "
        "--optim.lr=0.02 --model.name=dlrm --checkpoint.resume=auto. See configs/*.toml for the sections.",
    )
    parser.add_argument("--config", help="TOML recipe (configs/tiny.toml, configs/criteo_kaggle.toml, ...)")
    parser.add_argument("--data", help="directory written by `dlrm-prep criteo` (overrides data.path)")
    parser.add_argument("--run-dir", help="output directory of this run (overrides run_dir)")
    return parser


def parse_job_args(argv: list[str] | None, description: str) -> JobConfig:
    """Parses a command line of the training entry points into a `JobConfig`."""
    parser = build_arg_parser(description)
    args, rest = parser.parse_known_args(argv)
    base: dict[str, Any] = {}
    if args.data:
        base["data"] = {"path": args.data}
    if args.run_dir:
        base["run_dir"] = args.run_dir
    config = load_config(args.config, rest, base)
    _require(bool(config.data.path), "data.path", "is empty: pass --data DIR")
    return config
