"""`dlrm-export`: a run's sharded checkpoint -> a model directory that one process can load and score.

    dlrm-export --run-dir RUN --out DIR [--step N]

The model directory holds:
  weights.pt     the model's state dict as plain, whole tensors (every table gathered from its shards),
                 keyed as `build_model(...)` names them;
  config.json    the run's resolved config (`JobConfig.to_json`), so `cfg.model` rebuilds the family;
  features.json  the data's feature schema (the manifest's `"features"`), which sizes the tables;
  export.json    the step exported, where from, and whether a `torch.export` program came with it;
  program.pt2    (when it holds) `torch.export` of `forward(dense_features, sparse_features KJT)`.

`load_exported` rebuilds the model from the first three: `build_model(cfg.model, features,
sparse_device=cpu, dense_device=cpu)` and `load_state_dict(weights)`.

The gathering is DCP's own resharding: the checkpoint is loaded into the state dict of an unsharded
model, so DCP reads each table's saved row or column shards into the whole tensor. The keys match
because `DistributedModelParallel` drops its own wrapper prefixes from `state_dict()`: the sharded
train module's `model.sparse_arch.embedding_bag_collection.embedding_bags.C1.weight` is the plain
train module's too. Only the model is read, not the optimizer state.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from data_prep.features import FeatureSchema
from dlrm_dist.checkpoint import damaged_file
from dlrm_dist.config import JobConfig, load_config
from dlrm_dist.data import read_manifest
from dlrm_dist.distributed import DistContext
from dlrm_dist.models import build_model
from dlrm_dist.models.train_module import CTRTrainModule

CPU = torch.device("cpu")
# One process, no process group: what the checksum verification needs to know of "ranks".
SINGLE_PROCESS = DistContext(
    rank=0, world_size=1, local_rank=0, local_world_size=1, device=CPU, backend="gloo"
)


class ExportError(ValueError):
    """A run or model directory that cannot be exported or loaded (the message names the path)."""


def read_run_config(config_path: Path) -> JobConfig:
    """The `JobConfig` a run wrote to its config.json."""
    if not config_path.is_file():
        raise ExportError(f"{config_path}: not found (is this a run directory of dlrm-train?)")
    try:
        return load_config(None, [], json.loads(config_path.read_text()))
    except (OSError, ValueError) as error:
        raise ExportError(f"{config_path}: not a readable run config ({error})") from None


def checkpoint_dir(run_dir: Path, step: int | None) -> Path:
    """`run_dir/checkpoints/step-N` of the given step, or of the newest one; verified against its checksums."""
    root = run_dir / "checkpoints"
    steps = sorted(int(p.name[5:]) for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit())
    if not steps:
        raise ExportError(f"{root}: no checkpoint (train with checkpoint.enabled = true)")
    if step is not None and step not in steps:
        raise ExportError(f"{root}: no step-{step} (steps: {', '.join(map(str, steps))})")
    path = root / f"step-{steps[-1] if step is None else step}"
    problem = damaged_file(path, SINGLE_PROCESS)
    if problem is not None:
        raise ExportError(f"{path} is damaged: {problem}")
    return path


def _try_torch_export(net: nn.Module, features: FeatureSchema, model_dir: Path) -> str:
    """Writes program.pt2 when `torch.export` takes the model; returns what happened, for export.json."""
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    batch = 2
    names = list(features.categorical_names)
    example = (
        torch.zeros(batch, features.num_dense),
        KeyedJaggedTensor(
            keys=names,
            values=torch.zeros(batch * len(names), dtype=torch.int64),
            lengths=torch.ones(batch * len(names), dtype=torch.int32),
        ),
    )
    try:
        program = torch.export.export(net, example, strict=False)
        torch.export.save(program, model_dir / "program.pt2")
    except Exception as error:  # any failure of tracing only means there is no program; the weights stand
        return (
            f"not written: torch.export failed ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        )
    return f"program.pt2 (traced with batch size {batch}; the batch size is fixed in the program)"


def export_model(run_dir: str | Path, out: str | Path, step: int | None = None) -> dict[str, Any]:
    """Writes the model directory of one checkpoint of a run (see the module docstring).

    Args:
        run_dir: the run directory (config.json, checkpoints/).
        out: the model directory to write (created; files in it are replaced).
        step: the checkpoint's step (None: the newest).

    Returns:
        The contents of export.json.

    Raises:
        ExportError: naming the path: no run directory or config, no checkpoint, no such step, a
            damaged checkpoint, data whose manifest is gone.
    """
    run_dir, model_dir = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise ExportError(f"--run-dir {run_dir}: no such directory")
    cfg = read_run_config(run_dir / "config.json")
    source = checkpoint_dir(run_dir, step)
    features = FeatureSchema.from_manifest(read_manifest(cfg.data.path))
    net = build_model(cfg.model, features, sparse_device=CPU, dense_device=CPU)
    train_module = CTRTrainModule(net)
    state = {"model": train_module.state_dict()}
    try:
        dcp.load(state, checkpoint_id=str(source), no_dist=True)
    except (RuntimeError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ExportError(f"{source}: does not hold this run's model ({first_line})") from None
    train_module.load_state_dict(state["model"])
    net.eval()

    model_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), model_dir / "weights.pt")
    shutil.copyfile(run_dir / "config.json", model_dir / "config.json")
    (model_dir / "features.json").write_text(json.dumps(features.to_json(), indent=1) + "\n")
    (model_dir / "program.pt2").unlink(missing_ok=True)
    info = {
        "step": int(source.name.split("-")[1]),
        "checkpoint": str(source.resolve()),
        "model": cfg.model.name,
        "torch_export": _try_torch_export(net, features, model_dir),
    }
    (model_dir / "export.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def load_exported(
    model_dir: str | Path, device: torch.device = CPU
) -> tuple[JobConfig, FeatureSchema, nn.Module]:
    """Rebuilds an exported model in this process.

    Args:
        model_dir: a directory written by `export_model`.
        device: where to put the whole model (tables included).

    Returns:
        `(cfg, features, net)`: the run's config, the feature schema and the model in eval mode,
        `net(dense_features [B, num_dense], sparse_features KJT) -> logits [B]`.
    """
    model_dir = Path(model_dir)
    weights = model_dir / "weights.pt"
    if not weights.is_file():
        raise ExportError(f"--model {model_dir}: no weights.pt (write it with dlrm-export)")
    cfg = read_run_config(model_dir / "config.json")
    try:
        features = FeatureSchema.from_json(json.loads((model_dir / "features.json").read_text()))
    except (OSError, ValueError) as error:
        raise ExportError(f"{model_dir / 'features.json'}: not a readable feature schema ({error})") from None
    net = build_model(cfg.model, features, sparse_device=device, dense_device=device)
    net.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    return cfg, features, net.eval()


def load_program(model_dir: str | Path) -> nn.Module:
    """The `torch.export` program of an exported model, as a module: `(dense_features, sparse_features KJT)`.

    The program's example inputs hold a KeyedJaggedTensor, which `torch.load`'s weights-only unpickler
    refuses unless it is allowed by name.
    """
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    path = Path(model_dir) / "program.pt2"
    if not path.is_file():
        raise ExportError(f"{path}: not found (see torch_export in export.json)")
    with torch.serialization.safe_globals([KeyedJaggedTensor]):
        return torch.export.load(path).module()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dlrm-export", description="Write one checkpoint of a dlrm-train run as a model for one process."
    )
    parser.add_argument("--run-dir", required=True, help="the run directory of dlrm-train")
    parser.add_argument("--out", required=True, help="the model directory to write")
    parser.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the newest)")
    args = parser.parse_args(argv)
    try:
        info = export_model(args.run_dir, args.out, args.step)
    except ValueError as error:
        print(f"dlrm-export: error: {error}", file=sys.stderr)
        return 2
    print(
        f"dlrm-export: step {info['step']} of {args.run_dir} -> {args.out} (torch.export: {info['torch_export']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
