"""Shared fixtures: paths to the real Criteo sample and small hand-made TSV builders."""

from __future__ import annotations

from pathlib import Path

import pytest

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
