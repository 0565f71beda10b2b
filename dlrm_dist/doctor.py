"""`dlrm-doctor`: what this environment has (Python, torch and its CUDA, fbgemm, torchrec, torchx, pyarrow,
the GPUs, NCCL) and whether it fits the compatibility table of `dlrm_dist.compat`.

    dlrm-doctor          # or: python -m dlrm_dist.doctor

Besides the versions it runs fbgemm's operators on a tiny input on every device type present (a
cumsum and one table-batched embedding step, forward and backward) and imports torchrec's train
pipeline, because a mismatched set often imports fine and fails at the first kernel. It exits 1 with
one line naming the fix when something does not fit. `dlrm-train` runs the same check at start
(`stack_problem`); DLRM_DOCTOR=off skips it there, for a stack newer than the table.

Versions are read from the installed distributions' metadata (importlib.metadata), which also finds
packages installed with `pip install --target DIR` and put on PYTHONPATH, as on the GPU machines.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import dataclass

import torch

from dlrm_dist.compat import Stack, StackCheck, check_stack

SKIP_VARIABLE = "DLRM_DOCTOR"


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device: index, name, memory in bytes and compute capability ("9.0")."""

    index: int
    name: str
    total_memory: int
    capability: str


@dataclass(frozen=True)
class Environment:
    """Everything `dlrm-doctor` reports.

    Args:
        stack: the versions the compatibility check looks at.
        torchx: torchx's version (None: not installed; only the torchx launchers need it).
        pyarrow: pyarrow's version (None: not installed).
        gpus: the visible CUDA devices (empty without CUDA).
        nccl: NCCL's version as torch reports it, "2.27.7" (None without CUDA).
    """

    stack: Stack
    torchx: str | None
    pyarrow: str | None
    gpus: tuple[GpuInfo, ...]
    nccl: str | None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_stack() -> Stack:
    """The versions of this interpreter's torch, fbgemm and torchrec (None where one is missing)."""
    return Stack(
        python=platform.python_version(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        fbgemm_gpu=_version("fbgemm-gpu"),
        fbgemm_gpu_cpu=_version("fbgemm-gpu-cpu"),
        torchrec=_version("torchrec"),
    )


def _nccl_version() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError):
        return None
    return ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)


def collect_environment() -> Environment:
    """Reads the versions, the GPUs and NCCL of this process's environment."""
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(GpuInfo(index, props.name, props.total_memory, f"{props.major}.{props.minor}"))
    return Environment(
        installed_stack(), _version("torchx"), _version("pyarrow"), tuple(gpus), _nccl_version()
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _tiny_embedding_step(device: torch.device) -> None:
    """One table-batched embedding forward + backward (with its fused SGD update) on `device`."""
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    on_cuda = device.type == "cuda"
    location = EmbeddingLocation.DEVICE if on_cuda else EmbeddingLocation.HOST
    compute = ComputeDevice.CUDA if on_cuda else ComputeDevice.CPU
    tables = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(8, 4, location, compute)],
        optimizer=EmbOptimType.EXACT_SGD,
        learning_rate=0.1,
        device=device,
    )
    indices = torch.tensor([0, 3, 5], dtype=torch.int64, device=device)
    offsets = torch.tensor([0, 1, 3], dtype=torch.int64, device=device)
    pooled = tables(indices, offsets)
    if tuple(pooled.shape) != (2, 4):
        raise RuntimeError(f"pooled output has shape {tuple(pooled.shape)}, expected (2, 4)")
    pooled.sum().backward()


def operator_problem(devices: list[torch.device]) -> str | None:
    """Loads fbgemm's and torchrec's operators and runs them on each of `devices`.

    Returns:
        None when they load and run; else one line saying what failed (an import error such as an
        undefined symbol, a missing operator, a kernel that fails on the device).
    """
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm.*)
    except Exception as error:  # an undefined symbol is an OSError, a missing module an ImportError
        return f"import fbgemm_gpu fails ({_first_line(error)})"
    for device in devices:
        try:
            offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(
                torch.tensor([1, 2, 3], dtype=torch.int64, device=device)
            )
            if offsets.tolist() != [0, 1, 3, 6]:
                return (
                    f"torch.ops.fbgemm.asynchronous_complete_cumsum on {device} returned {offsets.tolist()}"
                )
            _tiny_embedding_step(device)
        except (
            Exception
        ) as error:  # missing operators raise AttributeError / RuntimeError / NotImplementedError
            return f"fbgemm's operators fail on {device} ({_first_line(error)})"
    try:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist  # noqa: F401
    except Exception as error:
        return f"import torchrec fails ({_first_line(error)})"
    return None


def _devices() -> list[torch.device]:
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda", torch.cuda.current_device()))
    return devices


def _reinstall_hint(check: StackCheck, stack: Stack) -> str:
    row = check.release
    name = "fbgemm-gpu" if stack.torch_cuda else "fbgemm-gpu-cpu"
    if row is None:
        return "reinstall fbgemm and torchrec"
    return (
        f"pip install --force-reinstall --no-deps {name}=={row.fbgemm_pin} && "
        f"pip install torchrec=={row.torchrec_pin} --no-deps"
    )


def diagnose(stack: Stack, check: StackCheck, ops_problem: str | None) -> str | None:
    """The one line to stop with (the first problem), or None when the environment fits."""
    if check.problems:
        return check.problems[0]
    if ops_problem:
        return f"{ops_problem}: {_reinstall_hint(check, stack)}"
    return None


def stack_problem() -> str | None:
    """The check `dlrm-train` runs at start: None when the installed set fits and its operators run.

    DLRM_DOCTOR=off in the environment skips it (returns None).
    """
    if os.environ.get(SKIP_VARIABLE, "").lower() == "off":
        return None
    stack = installed_stack()
    check = check_stack(stack)
    return diagnose(stack, check, None if check.problems else operator_problem(_devices()))


def report(env: Environment, check: StackCheck, ops_problem: str | None) -> str:
    """The human-readable report `dlrm-doctor` prints."""
    stack = env.stack
    missing = "not installed"
    build = f"CUDA {stack.torch_cuda}" if stack.torch_cuda else "CPU build"
    rows = [
        ("python", f"{stack.python} ({sys.executable})"),
        ("torch", f"{stack.torch} ({build})"),
    ]
    if stack.fbgemm_gpu or not stack.fbgemm_gpu_cpu:
        rows.append(("fbgemm-gpu", stack.fbgemm_gpu or missing))
    if stack.fbgemm_gpu_cpu:
        rows.append(("fbgemm-gpu-cpu", stack.fbgemm_gpu_cpu))
    rows += [
        ("torchrec", stack.torchrec or missing),
        ("torchx", env.torchx or f"{missing} (only the torchx launchers need it)"),
        ("pyarrow", env.pyarrow or missing),
    ]
    if env.gpus:
        for gpu in env.gpus:
            memory = f"{gpu.total_memory / 2**30:.1f} GiB"
            rows.append((f"gpu {gpu.index}", f"{gpu.name}, {memory}, compute capability {gpu.capability}"))
        rows.append(("nccl", env.nccl or "unknown"))
    else:
        rows.append(("gpus", "none (torch.cuda.is_available() is False)"))
    if check.release is not None:
        row = check.release
        rows.append(("table row", f"torch {row.torch} / fbgemm {row.fbgemm} / torchrec {row.torchrec}"))
    rows.append(("versions", "ok" if check.ok else f"{len(check.problems)} problem(s)"))
    if not check.problems:
        devices = ", ".join(str(device) for device in _devices())
        rows.append(
            ("operators", ops_problem or f"ok (fbgemm cumsum + embedding step on {devices}; torchrec)")
        )
    width = max(len(name) for name, _ in rows)
    lines = ["dlrm-doctor:"] + [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += [f"  note: {note}" for note in check.notes]
    lines += [f"  problem: {problem}" for problem in check.problems]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints the report; returns 0 when the environment fits, 1 (with one line on stderr) otherwise."""
    if argv:
        print(f"dlrm-doctor: takes no arguments, got {' '.join(argv)}", file=sys.stderr)
        return 2
    env = collect_environment()
    check = check_stack(env.stack)
    ops_problem = None if check.problems else operator_problem(_devices())
    print(report(env, check, ops_problem))
    problem = diagnose(env.stack, check, ops_problem)
    if problem is not None:
        print(f"dlrm-doctor: error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
