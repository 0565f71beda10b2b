"""A `dlrm-prep criteo` run killed with SIGKILL mid-run and started again ends with identical output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def make_days(sample: Path, directory: Path, days: int, copies: int) -> None:
    lines = sample.read_bytes().splitlines(keepends=True)
    directory.mkdir()
    for day in range(days):
        # Rotate so that the days differ; repeat so the run lasts long enough to be killed mid-way.
        rotated = lines[day * 100 :] + lines[: day * 100]
        (directory / f"day_{day}").write_bytes(b"".join(rotated) * copies)


def command(days: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "data_prep",
        "criteo",
        "--input",
        str(days),
        "--out",
        str(out),
        "--layout",
        "terabyte",
        "--vocab-min-count",
        "2",
        "--workers",
        "2",
        "--chunk-mb",
        "0.25",
        "--rows-per-shard",
        "20000",
        "--row-group-rows",
        "4096",
        "--no-progress",
    ]


def kill_when(process: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run finished before the crash could be injected"
        assert time.monotonic() < deadline, "timed out waiting for the crash point"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def output_files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in out.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }


def comparable_manifest(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("created_at", "seconds", "arguments", "options"):
        manifest.pop(key)
    return manifest


@pytest.mark.parametrize("crash_point", ["parse", "write"])
def test_kill_and_resume_gives_identical_output(criteo_sample, tmp_path, crash_point):
    days = tmp_path / "days"
    make_days(criteo_sample, days, days=3, copies=6)
    reference = tmp_path / "reference"
    subprocess.run(command(days, reference), check=True, capture_output=True)

    out = tmp_path / "out"
    process = subprocess.Popen(
        command(days, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    chunks = out / ".work" / "chunks"
    if crash_point == "parse":
        kill_when(process, lambda: len(list(chunks.glob("*.json"))) >= 4)
    else:
        kill_when(
            process,
            lambda: any((out / "train").glob("part-*.parquet")) if (out / "train").exists() else False,
        )
    assert not (out / "manifest.json").exists()
    assert (out / ".work").exists()

    resumed = subprocess.run(command(days, out), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not (out / ".work").exists()
    expected, got = output_files(reference), output_files(out)
    assert sorted(got) == sorted(expected)
    for name, content in expected.items():
        assert got[name] == content, name
    assert comparable_manifest(out) == comparable_manifest(reference)
    assert comparable_manifest(out)["rows_read"] == 3 * 6 * 8000
