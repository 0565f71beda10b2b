"""Mixed precision and compilation of the dense part (`training.precision`, `training.compile`).

bf16: the model's forward runs under `torch.autocast` in bfloat16 on CPU or CUDA. Autocast changes only
the ops it has a rule for (matrix products, convolutions, ...): the MLPs and interactions compute in
bf16 while fbgemm's embedding lookups, which have none, stay fp32, so tables and their fused optimizer
state are fp32 as before. The logits are cast back to fp32 before the loss, and evaluation's AUC and
logloss are computed from fp32 logits. bf16 has fp32's exponent range, so no loss scaling is needed.

fp16 is refused. Its narrow range needs loss scaling, and here the embedding tables are updated by
TorchRec's fused optimizer inside backward, from whatever gradient reaches them: a scaled loss would
scale every table update, and a step skipped for an overflow would already have updated the tables.
Making that sound (unscaling the embedding gradients inside backward, skipping the fused update on
overflow) has not been done, and fp16 would only run on CUDA, which has not been tested here.

compile: every direct sub-module of the model that holds no embedding table (DLRM's bottom MLP,
interaction and top MLP; the deep, cross and CIN parts of the others) is compiled in place with
`nn.Module.compile`, which keeps parameter names, so checkpoints and sharding are unchanged. The tables
stay outside: fbgemm's kernels and the sharded lookup are not for dynamo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of `training.precision` (None for fp32).

    Raises:
        ValueError: naming `training.precision` for fp16 (see the module docstring) or an unknown value.
    """
    if precision == "fp16":
        raise ValueError(
            f"training.precision: fp16 is not supported ({device_type}): the fused embedding optimizer "
            "updates the tables inside backward, so fp16's loss scaling would scale the table updates; "
            "use bf16 (fp32's range, no scaling needed)"
        )
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"training.precision: {precision!r} is not one of fp32, bf16, fp16")
    return AUTOCAST_DTYPES[precision]


@contextlib.contextmanager
def autocast(dtype: torch.dtype | None, device_type: str) -> Iterator[None]:
    """`torch.autocast` in `dtype` on `device_type`, or nothing for None (fp32)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device_type, dtype=dtype):
        yield


def compile_dense_parts(model: nn.Module) -> list[str]:
    """Compiles, in place, each direct sub-module of `model` that holds no embedding table.

    Returns:
        The names of the compiled sub-modules.
    """
    # Dynamo's own fallback: a graph it cannot compile runs eagerly (with a logged warning) instead of
    # failing the run; the flag to turn compilation off is `training.compile`.
    torch._dynamo.config.suppress_errors = True
    compiled = []
    for name, child in model.named_children():
        if any(isinstance(module, EmbeddingBagCollection) for module in child.modules()):
            continue
        child.compile()
        compiled.append(name)
    return compiled
