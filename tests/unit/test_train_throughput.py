"""Tests of `benchmarks/train_throughput.py`'s data: one prepared directory per synthetic size."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def throughput():
    # The script imports its neighbour plain_dlrm as a top-level module, as it does when run from benchmarks/.
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("train_throughput", BENCHMARKS / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def train_rows(prepared: Path) -> int:
    manifest = json.loads((prepared / "manifest.json").read_text())
    return manifest["splits"]["train"]["rows"]


def test_a_second_size_in_one_workdir_prepares_its_own_rows(throughput, tmp_path):
    small = throughput.prepare(tmp_path, 300)
    large = throughput.prepare(tmp_path, 700)
    assert small != large
    # day_0 is the train split: its rows are the size asked for, not the first size's.
    assert (train_rows(small), train_rows(large)) == (300, 700)
    stamp = (small / "manifest.json").stat().st_mtime_ns
    assert throughput.prepare(tmp_path, 300) == small
    assert (small / "manifest.json").stat().st_mtime_ns == stamp  # kept for reruns, not made again
