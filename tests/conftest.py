"""Shared fixtures: paths to the real Criteo sample and small hand-made TSV builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests: deterministic in CI (derandomized, no example database, so every run checks the same
# inputs); `make fuzz` (HYPOTHESIS_PROFILE=fuzz) draws fresh random inputs, many more of them.
_RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci", max_examples=120, derandomize=True, database=None, deadline=None, suppress_health_check=_RELAXED
)
settings.register_profile("fuzz", max_examples=20_000, deadline=None, suppress_health_check=_RELAXED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "criteo" / "kaggle_train_head8k.tsv"


@pytest.fixture
def criteo_sample() -> Path:
    if not SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {SAMPLE}")
    return SAMPLE


def tsv_line(label: str = "1", dense: list[str] | None = None, sparse: list[str] | None = None) -> str:
    """One Criteo TSV line (no newline) with defaults that are valid."""
    dense = dense if dense is not None else ["3"] * 13
    sparse = sparse if sparse is not None else ["0a0b0c0d"] * 26
    return "\t".join([label, *dense, *sparse])


@pytest.fixture(scope="session")
def prepared_sample(tmp_path_factory) -> Path:
    """The real sample through `dlrm-prep criteo` (kaggle layout, vocab K=2), with small shards and row groups."""
    if not SAMPLE.is_file():
        pytest.skip(f"real Criteo sample not found at {SAMPLE}")
    from data_prep.cli import main

    out = tmp_path_factory.mktemp("prepared") / "sample"
    args = ["criteo", "--input", str(SAMPLE), "--out", str(out), "--layout", "kaggle", "--vocab-min-count", "2",
            "--rows-per-shard", "1000", "--row-group-rows", "250", "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return out


def features_of(data_dir: Path | str):
    """The feature schema of a prepared data directory, as the trainer reads it."""
    from data_prep.features import FeatureSchema
    from data_prep.manifest import load_manifest

    return FeatureSchema.from_manifest(load_manifest(data_dir))
