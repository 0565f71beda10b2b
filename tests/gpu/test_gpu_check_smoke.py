"""`benchmarks/gpu_check.py --smoke`: the GPU check's whole code path on cpu, in tiny shapes, run as the GPU
machines run it (a plain `python`, the project found through PYTHONPATH only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_smoke_run_writes_the_checks_and_every_measurement(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [t["name"] for t in report["tests"] if t["passed"]] == [
        "test_sharded_step_matches_cpu",
        "test_pipeline_matches_plain_loop",
        "test_checkpoint_resumes_identically",
        "test_bf16_steps_are_finite",
    ]
    cases = {(r["family"], r["precision"]) for r in report["results"]}
    assert cases == {(f, p) for f in ("criteo_kaggle", "dlrm_dcnv2") for p in ("fp32", "bf16")}
    for measured in report["results"]:
        assert measured["samples_per_s_plain"] > 0 and measured["samples_per_s_pipeline"] > 0, measured
        assert set(measured["phase_ms"]) == {"h2d", "forward", "backward", "optimizer"}
        assert math.isfinite(measured["loss"])
    # The DCNv2 tables are capped to the budget; the Kaggle ones too at smoke size.
    assert (
        max(report["families"]["dlrm_dcnv2"]["num_embeddings"])
        == report["families"]["dlrm_dcnv2"]["table_cap"]
    )
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "4.02M" in markdown and "1.90M" in markdown
    assert "test_pipeline_matches_plain_loop | passed" in markdown
