"""The GPU path on a CUDA device: sharded step vs cpu, train pipeline vs plain loop, checkpoint resume, bf16.

Skipped without CUDA. The bodies live in `tests.gpu.checks` so that `benchmarks/gpu_check.py` can run them
where pytest is not installed, and its `--smoke` run exercises them on cpu in the CPU suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gpu import checks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def test_sharded_step_matches_cpu(tmp_path: Path) -> None:
    checks.check_sharded_step_matches_cpu(CUDA, tmp_path)


def test_pipeline_matches_plain_loop(tmp_path: Path) -> None:
    checks.check_pipeline_matches_plain_loop(CUDA, tmp_path)


def test_checkpoint_resumes_identically(tmp_path: Path) -> None:
    checks.check_checkpoint_resumes_identically(CUDA, tmp_path)


def test_bf16_steps_are_finite(tmp_path: Path) -> None:
    checks.check_bf16_steps_are_finite(CUDA, tmp_path)
