"""`training.precision` and `training.compile`: what runs in which dtype, and what compiling keeps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from dlrm_dist.config import load_config
from dlrm_dist.models import build_model
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.precision import autocast_dtype, compile_dense_parts
from tests.unit.test_model_zoo import SMALL_CFG
from tests.unit.test_models import TABLE_ROWS, make_batch


def _model(name: str = "dlrm") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        dataclasses.replace(SMALL_CFG, name=name), TABLE_ROWS, sparse_device=torch.device("cpu")
    )


def test_bf16_runs_the_dense_part_in_bf16_and_keeps_tables_loss_and_logits_fp32():
    net = _model()
    dtypes = {}

    def record(name):
        def hook(module, inputs, output) -> None:  # a hook returning a value would replace the output
            dtypes[name] = output.values().dtype if name == "tables" else output.dtype

        return hook

    for name in ("dense_arch", "inter_arch", "over_arch"):
        getattr(net, name).register_forward_hook(record(name))
    next(m for m in net.modules() if isinstance(m, EmbeddingBagCollection)).register_forward_hook(
        record("tables")
    )
    module = CTRTrainModule(net, autocast_dtype("bf16", "cpu"), "cpu")
    loss, (_, logits, _) = module(make_batch())
    # The interaction's dot products stay fp32 (FlatTriuInteractionArch); the top MLP takes them in bf16.
    assert dtypes == {
        "dense_arch": torch.bfloat16,
        "inter_arch": torch.float32,
        "over_arch": torch.bfloat16,
        "tables": torch.float32,
    }
    assert logits.dtype == loss.dtype == torch.float32
    loss.backward()
    assert all(p.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in module.parameters())


def test_bf16_logits_stay_close_to_fp32():
    batch = make_batch()
    fp32 = CTRTrainModule(_model())(batch)[1][1]
    bf16 = CTRTrainModule(_model(), torch.bfloat16, "cpu")(batch)[1][1]
    assert not torch.equal(fp32, bf16)
    torch.testing.assert_close(bf16, fp32, atol=0.05, rtol=0.05)


def test_fp16_and_unknown_precisions_stop_naming_the_field():
    with pytest.raises(ValueError, match=r"training\.precision: fp16 is not supported .*use bf16"):
        autocast_dtype("fp16", "cuda")
    with pytest.raises(ValueError, match=r"training\.precision: 'int8' is not one of"):
        load_config(None, ["--training.precision=int8"])
    assert autocast_dtype("fp32", "cpu") is None


@pytest.mark.parametrize("name", ["dlrm", "dcn", "deepfm"])
def test_compile_keeps_names_and_results_and_leaves_the_tables_out(name):
    eager = _model(name)
    compiled = _model(name)
    parts = compile_dense_parts(compiled)
    assert parts, "something to compile"
    for part in parts:
        assert not any(isinstance(m, EmbeddingBagCollection) for m in getattr(compiled, part).modules())
    assert list(compiled.state_dict()) == list(eager.state_dict())
    batch = make_batch()
    torch.testing.assert_close(
        compiled(batch.dense_features, batch.sparse_features),
        eager(batch.dense_features, batch.sparse_features),
    )
