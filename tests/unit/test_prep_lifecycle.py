"""dlrm-prep's life around its inputs and workers: workers end with their parent; a changing input stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data_prep import tasks
from data_prep.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_end_when_only_the_main_process_is_killed(criteo_sample, tmp_path):
    # Big enough that the workers are still busy when the main process dies.
    big = tmp_path / "train.txt"
    big.write_bytes(criteo_sample.read_bytes() * 20)
    process = subprocess.Popen(
        [sys.executable, "-m", "data_prep", "criteo", "--input", str(big), "--out", str(tmp_path / "out"),
         "--layout", "kaggle", "--hash-buckets", "1000", "--workers", "2", "--chunk-mb", "0.25", "--no-progress"],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while len(workers) < 2:
        assert process.poll() is None and time.monotonic() < deadline, (
            "dlrm-prep ended before its workers started"
        )
        workers = {
            pid
            for pid in _children(process.pid)
            if "data_prep" not in Path(f"/proc/{pid}/cmdline").read_text()
        }
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their parent"


def test_an_input_that_grows_during_the_run_is_named(criteo_sample, tmp_path, capsys, monkeypatch):
    source = tmp_path / "train.txt"
    source.write_bytes(criteo_sample.read_bytes())
    parse = tasks.parse_plain_chunk

    def parse_then_append(**kwargs):
        if kwargs["chunk_index"] == 0:
            with source.open("ab") as handle:
                handle.write(criteo_sample.read_bytes().splitlines(keepends=True)[0])
        return parse(**kwargs)

    monkeypatch.setattr(tasks, "parse_plain_chunk", parse_then_append)
    args = ["criteo", "--input", str(source), "--out", str(tmp_path / "out"), "--layout", "kaggle", "--hash-buckets", "1000",
            "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    size = len(criteo_sample.read_bytes())
    assert capsys.readouterr().err.splitlines() == [
        f"dlrm-prep: error: {source}: changed during the run ({size} -> {source.stat().st_size} bytes, "
        "modified); prepare from a file nothing writes to"
    ]
    assert not (tmp_path / "out/manifest.json").exists()
