"""The supported stack: which Python, torch, fbgemm-gpu and torchrec releases go together, and the check of
an installed set against that table.

fbgemm-gpu is a C++/CUDA extension compiled against one torch minor release: next to another one it fails
to load ("undefined symbol") or loads without some operators, the install failure most reported in
TorchRec's issue tracker. torchrec is pure Python and is released in step with both. The rows below are
fbgemm_gpu's own `_fbgemm_torch_compat_table` (1.6 -> 2.11, 1.7 -> 2.12, 1.8 -> 2.13, in
`fbgemm_gpu/__init__.py` of the 1.8.0 wheel) and torchrec's release notes (v1.6.0 cut in sync with
FBGEMM 1.6.0 and PyTorch 2.11; 1.7.0 with PyTorch 2.12 and FBGEMM 1.7.0). The pins are the newest
release of each line on PyPI: torchrec 1.6.0 was never published there, 1.6.1 is the 2.11 release.

Off the table's rows only what is tested here is accepted: torchrec 1.6 on torch 2.13 with fbgemm 1.8
(`make test-compat` runs the unit and distributed tests that way).

Everything here is a pure function of version strings, so that tests can feed it made-up sets;
`dlrm_dist.doctor` reads the installed ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    """One row of the compatibility table: releases built and tested together upstream.

    Args:
        torch: the torch minor release, "2.11".
        fbgemm: the fbgemm-gpu / fbgemm-gpu-cpu minor release built for it, "1.6".
        torchrec: the torchrec minor release of the same cycle, "1.6".
        torch_pin: the exact torch version to install, "2.11.0".
        fbgemm_pin: the exact fbgemm-gpu / fbgemm-gpu-cpu version, "1.6.0".
        torchrec_pin: the exact torchrec version, "1.6.1".
    """

    torch: str
    fbgemm: str
    torchrec: str
    torch_pin: str
    fbgemm_pin: str
    torchrec_pin: str


RELEASES: tuple[Release, ...] = (
    Release("2.11", "1.6", "1.6", torch_pin="2.11.0", fbgemm_pin="1.6.0", torchrec_pin="1.6.1"),
    Release("2.12", "1.7", "1.7", torch_pin="2.12.1", fbgemm_pin="1.7.0", torchrec_pin="1.7.0"),
    Release("2.13", "1.8", "1.8", torch_pin="2.13.0", fbgemm_pin="1.8.0", torchrec_pin="1.8.0"),
)
# The pinned set of requirements.txt, which `make test` runs.
DEFAULT_RELEASE = RELEASES[-1]
PYTHON_VERSIONS: tuple[str, ...] = ("3.11", "3.12", "3.13")
# (torchrec minor, torch minor) pairs off the table's rows that the test suite passes with (make test-compat).
TESTED_OFF_TABLE: frozenset[tuple[str, str]] = frozenset({("1.6", "2.13")})


@dataclass(frozen=True)
class Stack:
    """The versions that decide whether TorchRec loads and runs; None where a package is not installed.

    Args:
        python: "3.12.3".
        torch: torch's version, "2.11.0+cu130".
        torch_cuda: the CUDA version torch was built with, "13.0" (None: a CPU build).
        fbgemm_gpu: version of the `fbgemm-gpu` distribution (the CUDA build).
        fbgemm_gpu_cpu: version of the `fbgemm-gpu-cpu` distribution (the CPU build).
        torchrec: torchrec's version.
    """

    python: str
    torch: str | None
    torch_cuda: str | None
    fbgemm_gpu: str | None
    fbgemm_gpu_cpu: str | None
    torchrec: str | None


@dataclass(frozen=True)
class StackCheck:
    """The verdict on a `Stack`.

    Args:
        problems: one line each, most fundamental first, each naming the fix; empty when the set fits.
        notes: lines worth showing that do not stop anything (a tested combination off the table's rows).
        release: the table row of the installed torch (None when torch is missing or outside the range).
    """

    problems: tuple[str, ...]
    notes: tuple[str, ...]
    release: Release | None

    @property
    def ok(self) -> bool:
        return not self.problems


def minor(version: str) -> str | None:
    """ "2.11.0+cu130" -> "2.11"; None when the string does not start with two numbers."""
    match = re.match(r"^(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _as_tuple(minor_version: str) -> tuple[int, int]:
    major, minor_part = minor_version.split(".")
    return int(major), int(minor_part)


def release_for_torch(torch_version: str) -> Release | None:
    """The table row of a torch version, or None when it is outside the supported range."""
    return next((row for row in RELEASES if row.torch == minor(torch_version)), None)


def _span(values: list[str]) -> str:
    return f"{values[0]}-{values[-1]}"


def _install_set(row: Release, fbgemm_name: str) -> str:
    return (
        f"pip install torch=={row.torch_pin} {fbgemm_name}=={row.fbgemm_pin} && "
        f"pip install torchrec=={row.torchrec_pin} --no-deps"
    )


def _check_fbgemm(stack: Stack, row: Release) -> str | None:
    """The one fbgemm problem of the stack, or None. fbgemm must be exactly the row's minor release."""
    wanted = "fbgemm-gpu" if stack.torch_cuda else "fbgemm-gpu-cpu"
    build = f"a CUDA {stack.torch_cuda} build" if stack.torch_cuda else "a CPU build"
    if stack.fbgemm_gpu and stack.fbgemm_gpu_cpu:
        # Both ship the same `fbgemm_gpu` package, so whichever was installed last wins, file by file.
        return (
            f"fbgemm-gpu {stack.fbgemm_gpu} and fbgemm-gpu-cpu {stack.fbgemm_gpu_cpu} are both installed "
            f"(they overwrite each other's files): pip uninstall -y fbgemm-gpu fbgemm-gpu-cpu && "
            f"pip install {wanted}=={row.fbgemm_pin}"
        )
    name, version = (
        ("fbgemm-gpu", stack.fbgemm_gpu) if stack.fbgemm_gpu else ("fbgemm-gpu-cpu", stack.fbgemm_gpu_cpu)
    )
    if version is None:
        return f"neither fbgemm-gpu nor fbgemm-gpu-cpu is installed: pip install {wanted}=={row.fbgemm_pin}"
    if name != wanted:
        what = "has no CUDA kernels" if stack.torch_cuda else "needs a CUDA build of torch"
        return (
            f"torch {stack.torch} is {build} but {name} {version} {what}: "
            f"pip uninstall -y {name} && pip install {wanted}=={row.fbgemm_pin}"
        )
    fbgemm_row = next((r for r in RELEASES if r.fbgemm == minor(version)), None)
    if fbgemm_row is None:
        supported = _span([r.fbgemm for r in RELEASES])
        return (
            f"{name} {version} is outside the supported {supported} (torch {stack.torch} needs "
            f"{row.fbgemm}.x): pip install {name}=={row.fbgemm_pin}"
        )
    if fbgemm_row is not row:
        return f"{name} {version} needs torch {fbgemm_row.torch}.x, found {stack.torch}: pip install {name}=={row.fbgemm_pin}"
    return None


def _check_torchrec(stack: Stack, row: Release) -> tuple[str | None, str | None]:
    """(problem, note) about torchrec: the row's release, or an older one the suite was run with."""
    fix = f"pip install torchrec=={row.torchrec_pin} --no-deps"
    if stack.torchrec is None:
        return f"torchrec is not installed: {fix}", None
    found = minor(stack.torchrec)
    if found == row.torchrec:
        return None, None
    torchrec_row = next((r for r in RELEASES if r.torchrec == found), None)
    if torchrec_row is None:
        supported = _span([r.torchrec for r in RELEASES])
        return f"torchrec {stack.torchrec} is outside the supported {supported}: {fix}", None
    if (found, row.torch) in TESTED_OFF_TABLE:
        return None, (
            f"torchrec {stack.torchrec} is the release for torch {torchrec_row.torch}; with torch {row.torch} "
            "it is tested here (make test-compat)"
        )
    if _as_tuple(torchrec_row.torch) > _as_tuple(row.torch):
        return (
            f"torchrec {stack.torchrec} needs torch {torchrec_row.torch}.x, found {stack.torch}: {fix}",
            None,
        )
    return (
        f"torchrec {stack.torchrec} is the release for torch {torchrec_row.torch}.x and is not tested with "
        f"{stack.torch}: {fix}"
    ), None


def check_stack(stack: Stack) -> StackCheck:
    """Checks an installed set against the compatibility table.

    Args:
        stack: the versions found (see `dlrm_dist.doctor.installed_stack`).

    Returns:
        The verdict. Each problem is one line: what does not fit and the command that fixes it, e.g.
        "torchrec 1.8.0 needs torch 2.13.x, found 2.11.0: pip install torchrec==1.6.1 --no-deps".
        The fix keeps torch (the package a GPU machine comes with) and changes the packages around it.
    """
    problems: list[str] = []
    notes: list[str] = []
    python_minor = minor(stack.python)
    if python_minor not in PYTHON_VERSIONS:
        problems.append(
            f"Python {stack.python} is outside the supported {_span(list(PYTHON_VERSIONS))}: "
            f"use Python {', '.join(PYTHON_VERSIONS)}"
        )
    fbgemm_default = "fbgemm-gpu" if stack.torch_cuda else "fbgemm-gpu-cpu"
    if stack.torch is None:
        problems.append(f"torch is not installed: {_install_set(DEFAULT_RELEASE, fbgemm_default)}")
        return StackCheck(tuple(problems), tuple(notes), None)
    row = release_for_torch(stack.torch)
    if row is None:
        supported = _span([r.torch for r in RELEASES])
        problems.append(
            f"torch {stack.torch} is outside the supported {supported}: {_install_set(DEFAULT_RELEASE, fbgemm_default)}"
        )
        return StackCheck(tuple(problems), tuple(notes), None)
    fbgemm_problem = _check_fbgemm(stack, row)
    if fbgemm_problem:
        problems.append(fbgemm_problem)
    torchrec_problem, torchrec_note = _check_torchrec(stack, row)
    if torchrec_problem:
        problems.append(torchrec_problem)
    if torchrec_note:
        notes.append(torchrec_note)
    return StackCheck(tuple(problems), tuple(notes), row)


def table_markdown() -> str:
    """The compatibility table as a Markdown table (the README's copy is this function's output)."""
    lines = [
        "| torch | fbgemm-gpu / fbgemm-gpu-cpu | torchrec | pins | Python |",
        "|---|---|---|---|---|",
    ]
    for row in RELEASES:
        pins = f"torch=={row.torch_pin} fbgemm-gpu(-cpu)=={row.fbgemm_pin} torchrec=={row.torchrec_pin}"
        lines.append(
            f"| {row.torch}.x | {row.fbgemm}.x | {row.torchrec}.x | `{pins}` | {_span(list(PYTHON_VERSIONS))} |"
        )
    return "\n".join(lines)
