"""The compatibility check on made-up version sets, and `dlrm-doctor` / `dlrm-train` on this environment."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from dlrm_dist import doctor, train
from dlrm_dist.compat import RELEASES, Stack, check_stack, minor, release_for_torch, table_markdown

# The GPU machines' set: Python 3.12, torch 2.11 (CUDA 13), fbgemm-gpu 1.6.0, torchrec 1.6.1.
GPU_MACHINE = Stack(
    python="3.12.3",
    torch="2.11.0+cu130",
    torch_cuda="13.0",
    fbgemm_gpu="1.6.0",
    fbgemm_gpu_cpu=None,
    torchrec="1.6.1",
)
# requirements.txt's set on a CPU machine.
PINNED_CPU = Stack(
    python="3.11.7",
    torch="2.13.0+cpu",
    torch_cuda=None,
    fbgemm_gpu=None,
    fbgemm_gpu_cpu="1.8.0",
    torchrec="1.8.0",
)


def with_(stack: Stack, **changes) -> Stack:
    return dataclasses.replace(stack, **changes)


@pytest.mark.parametrize(
    "stack",
    [
        GPU_MACHINE,
        PINNED_CPU,
        with_(PINNED_CPU, python="3.13.1"),
        with_(GPU_MACHINE, torch="2.12.1+cu130", fbgemm_gpu="1.7.0", torchrec="1.7.0"),
        with_(GPU_MACHINE, torch="2.13.0", torch_cuda="12.8", fbgemm_gpu="1.8.0", torchrec="1.8.0"),
    ],
    ids=["gpu-machine", "pinned-cpu", "python-3.13", "torch-2.12", "torch-2.13-cuda"],
)
def test_every_row_of_the_table_fits(stack: Stack) -> None:
    check = check_stack(stack)
    assert check.ok, check.problems
    assert check.notes == ()
    assert check.release is release_for_torch(stack.torch)


def test_torchrec_1_6_on_torch_2_13_is_accepted_with_a_note() -> None:
    check = check_stack(with_(PINNED_CPU, torchrec="1.6.1"))
    assert check.ok
    assert check.notes == (
        "torchrec 1.6.1 is the release for torch 2.11; with torch 2.13 it is tested here (make test-compat)",
    )


@pytest.mark.parametrize(
    ("stack", "problem"),
    [
        (
            with_(GPU_MACHINE, torchrec="1.8.0"),
            "torchrec 1.8.0 needs torch 2.13.x, found 2.11.0+cu130: pip install torchrec==1.6.1 --no-deps",
        ),
        (
            with_(GPU_MACHINE, fbgemm_gpu="1.8.0"),
            "fbgemm-gpu 1.8.0 needs torch 2.13.x, found 2.11.0+cu130: pip install fbgemm-gpu==1.6.0",
        ),
        (
            with_(PINNED_CPU, fbgemm_gpu_cpu="1.6.0"),
            "fbgemm-gpu-cpu 1.6.0 needs torch 2.11.x, found 2.13.0+cpu: pip install fbgemm-gpu-cpu==1.8.0",
        ),
        (
            with_(GPU_MACHINE, fbgemm_gpu=None, fbgemm_gpu_cpu="1.6.0"),
            "torch 2.11.0+cu130 is a CUDA 13.0 build but fbgemm-gpu-cpu 1.6.0 has no CUDA kernels: "
            "pip uninstall -y fbgemm-gpu-cpu && pip install fbgemm-gpu==1.6.0",
        ),
        (
            with_(PINNED_CPU, fbgemm_gpu="1.8.0", fbgemm_gpu_cpu=None),
            "torch 2.13.0+cpu is a CPU build but fbgemm-gpu 1.8.0 needs a CUDA build of torch: "
            "pip uninstall -y fbgemm-gpu && pip install fbgemm-gpu-cpu==1.8.0",
        ),
        (
            with_(GPU_MACHINE, fbgemm_gpu_cpu="1.8.0"),
            "fbgemm-gpu 1.6.0 and fbgemm-gpu-cpu 1.8.0 are both installed (they overwrite each other's "
            "files): pip uninstall -y fbgemm-gpu fbgemm-gpu-cpu && pip install fbgemm-gpu==1.6.0",
        ),
        (
            with_(GPU_MACHINE, fbgemm_gpu=None),
            "neither fbgemm-gpu nor fbgemm-gpu-cpu is installed: pip install fbgemm-gpu==1.6.0",
        ),
        (
            with_(GPU_MACHINE, fbgemm_gpu="1.9.0"),
            "fbgemm-gpu 1.9.0 is outside the supported 1.6-1.8 (torch 2.11.0+cu130 needs 1.6.x): "
            "pip install fbgemm-gpu==1.6.0",
        ),
        (
            with_(GPU_MACHINE, torchrec=None),
            "torchrec is not installed: pip install torchrec==1.6.1 --no-deps",
        ),
        (
            with_(GPU_MACHINE, torchrec="1.5.1"),
            "torchrec 1.5.1 is outside the supported 1.6-1.8: pip install torchrec==1.6.1 --no-deps",
        ),
        (
            with_(GPU_MACHINE, torch="2.12.0+cu130", fbgemm_gpu="1.7.0"),
            "torchrec 1.6.1 is the release for torch 2.11.x and is not tested with 2.12.0+cu130: "
            "pip install torchrec==1.7.0 --no-deps",
        ),
        (
            with_(GPU_MACHINE, torch="2.10.0+cu128"),
            "torch 2.10.0+cu128 is outside the supported 2.11-2.13: pip install torch==2.13.0 "
            "fbgemm-gpu==1.8.0 && pip install torchrec==1.8.0 --no-deps",
        ),
        (
            with_(PINNED_CPU, torch=None),
            "torch is not installed: pip install torch==2.13.0 fbgemm-gpu-cpu==1.8.0 && "
            "pip install torchrec==1.8.0 --no-deps",
        ),
    ],
    ids=[
        "torchrec-newer-than-torch",
        "fbgemm-newer-than-torch",
        "fbgemm-older-than-torch",
        "cpu-fbgemm-on-cuda-torch",
        "cuda-fbgemm-on-cpu-torch",
        "both-fbgemm-builds",
        "no-fbgemm",
        "fbgemm-beyond-the-table",
        "no-torchrec",
        "torchrec-below-the-range",
        "torchrec-older-untested",
        "torch-below-the-range",
        "no-torch",
    ],
)
def test_a_mismatch_is_one_line_naming_the_fix(stack: Stack, problem: str) -> None:
    check = check_stack(stack)
    assert check.problems == (problem,)
    assert "\n" not in problem


def test_python_outside_the_range_comes_first() -> None:
    check = check_stack(with_(GPU_MACHINE, python="3.10.12", torchrec="1.8.0"))
    assert (
        check.problems[0] == "Python 3.10.12 is outside the supported 3.11-3.13: use Python 3.11, 3.12, 3.13"
    )
    assert len(check.problems) == 2


def test_versions_are_compared_by_minor_release() -> None:
    assert minor("2.11.0+cu130") == "2.11"
    assert minor("1.10.2") == "1.10"
    assert minor("nightly") is None
    assert [row.torch for row in RELEASES] == ["2.11", "2.12", "2.13"]
    assert "| 2.11.x | 1.6.x | 1.6.x |" in table_markdown()


def test_a_failing_operator_stops_with_the_reinstall_line() -> None:
    check = check_stack(GPU_MACHINE)
    line = doctor.diagnose(GPU_MACHINE, check, "import fbgemm_gpu fails (OSError: undefined symbol: _ZN3c10)")
    assert line == (
        "import fbgemm_gpu fails (OSError: undefined symbol: _ZN3c10): pip install --force-reinstall "
        "--no-deps fbgemm-gpu==1.6.0 && pip install torchrec==1.6.1 --no-deps"
    )
    assert doctor.diagnose(GPU_MACHINE, check, None) is None


def test_dlrm_doctor_passes_in_this_environment() -> None:
    """The installed script (or the module, where the project is not installed) exits 0 with its report."""
    script = Path(sys.executable).parent / "dlrm-doctor"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dlrm_dist.doctor"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "versions        ok" in result.stdout
    assert "operators       ok" in result.stdout
    assert f"torch           {doctor.installed_stack().torch}" in result.stdout


def test_dlrm_train_stops_with_the_doctor_line(monkeypatch, capsys, tmp_path) -> None:
    line = "torchrec 1.8.0 needs torch 2.13.x, found 2.11.0: pip install torchrec==1.6.1 --no-deps"
    monkeypatch.setattr(doctor, "stack_problem", lambda: line)
    assert train.main(["--data", str(tmp_path), "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"dlrm-train: error: {line}\n"


def test_the_check_can_be_skipped(monkeypatch) -> None:
    monkeypatch.setenv(doctor.SKIP_VARIABLE, "off")
    monkeypatch.setattr(doctor, "installed_stack", lambda: with_(PINNED_CPU, torch="2.9.0"))
    assert doctor.stack_problem() is None
    monkeypatch.delenv(doctor.SKIP_VARIABLE)
    assert doctor.stack_problem().startswith("torch 2.9.0 is outside the supported 2.11-2.13")
