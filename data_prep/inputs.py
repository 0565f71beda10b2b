"""Finding the input files of a layout, deciding which lines go to which split, and reading chunks.

Layouts:
  terabyte  files day_0 .. day_K (plain or .gz): train = every day but the last; the last day's first
            half (by line) is val, its second half test (the MLPerf and TorchRec convention).
  kaggle    one train.txt in time order: the first 6/7 of its lines are train, the last 1/7 is split
            into val then test halves.

Chunks are whole lines of roughly `chunk_bytes`. A plain file is cut at fixed byte offsets moved
forward to the next line start, so any worker can read any chunk on its own; a gzip stream cannot be
seeked, so one worker reads a .gz file front to back, cutting after the last newline of each block.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAYOUTS = ("terabyte", "kaggle")
_DAY_NAME = re.compile(r"^day_(\d+)(\.gz)?$")


class InputError(ValueError):
    """An input file that is missing, unreadable, truncated or does not fit the layout."""


@dataclass(frozen=True)
class InputFile:
    path: str
    bytes: int

    @property
    def is_gzip(self) -> bool:
        return self.path.endswith(".gz")

    @property
    def name(self) -> str:
        return Path(self.path).name


def _expand(paths: list[str], layout: str) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if layout == "terabyte":
                found = [p for p in path.iterdir() if _DAY_NAME.match(p.name)]
            else:
                found = [p for p in (path / "train.txt", path / "train.txt.gz") if p.exists()]
            if not found:
                wanted = "day_N or day_N.gz files" if layout == "terabyte" else "train.txt or train.txt.gz"
                raise InputError(f"--input {raw}: directory holds no {wanted}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"--input {raw}: no such file or directory")
    return files


def discover_inputs(paths: list[str], layout: str) -> list[InputFile]:
    """Resolves `--input` paths into the ordered input files of the layout.

    Args:
        paths: files and/or directories.
        layout: `terabyte` (day_N files, ordered by N) or `kaggle` (a single train.txt).

    Returns:
        The input files in time order; the last one holds the eval rows.
    """
    if layout not in LAYOUTS:
        raise InputError(f"--layout: {layout!r} is not one of {', '.join(LAYOUTS)}")
    files = _expand(paths, layout)
    if layout == "kaggle":
        if len(files) != 1:
            raise InputError(
                f"--layout kaggle takes exactly one train.txt (plain or .gz), got {len(files)} files"
            )
    else:
        days = {}
        for path in files:
            match = _DAY_NAME.match(path.name)
            if match is None:
                raise InputError(f"--layout terabyte: {path} is not named day_N or day_N.gz")
            day = int(match.group(1))
            if day in days:
                raise InputError(f"--layout terabyte: day {day} given twice ({days[day]} and {path})")
            days[day] = path
        if len(days) < 2:
            raise InputError("--layout terabyte needs at least 2 days (train days, then the eval day)")
        files = [days[day] for day in sorted(days)]
    return [InputFile(path=str(path.resolve()), bytes=path.stat().st_size) for path in files]


def stat_inputs(input_files: list[InputFile]) -> dict[str, tuple[int, int]]:
    """Each input's (size, mtime in ns) now: what `check_unchanged` compares against at the end."""
    return {f.path: (os.stat(f.path).st_size, os.stat(f.path).st_mtime_ns) for f in input_files}


def check_unchanged(input_files: list[InputFile], recorded: dict[str, tuple[int, int]]) -> None:
    """Stops when an input was written to since `recorded`: its rows would not match the manifest.

    A file appended to while it is read has lines past the size the manifest records (the last chunk
    reads to the end of the file), and one rewritten in place mixes two versions.

    Raises:
        InputError: naming the first file whose size or modification time differs.
    """
    current = stat_inputs(input_files)
    for input_file in input_files:
        (old_size, old_mtime_ns), (size, mtime_ns) = recorded[input_file.path], current[input_file.path]
        if (size, mtime_ns) != (old_size, old_mtime_ns):
            raise InputError(
                f"{input_file.path}: changed during the run ({old_size} -> {size} bytes"
                f"{', modified' if mtime_ns != old_mtime_ns else ''}); prepare from a file nothing writes to"
            )


def split_line_ranges(
    layout: str, file_index: int, num_files: int, num_lines: int
) -> dict[str, tuple[int, int]]:
    """The 1-based, half-open line ranges [first, stop) of each split within one input file."""
    everything = (1, num_lines + 1)
    if layout == "terabyte":
        if file_index < num_files - 1:
            return {"train": everything}
        half = num_lines // 2
        return {"val": (1, half + 1), "test": (half + 1, num_lines + 1)}
    train_lines = num_lines * 6 // 7
    eval_half = (num_lines - train_lines) // 2
    return {
        "train": (1, train_lines + 1),
        "val": (train_lines + 1, train_lines + eval_half + 1),
        "test": (train_lines + eval_half + 1, num_lines + 1),
    }


def count_plain_chunks(input_file: InputFile, chunk_bytes: int) -> int:
    return max(1, -(-input_file.bytes // chunk_bytes))


def _line_start_at_or_after(handle, offset: int) -> int:
    """The offset of the first line that starts at or after `offset` (0 stays 0)."""
    if offset == 0:
        return 0
    handle.seek(offset - 1)
    position = offset - 1
    while True:
        block = handle.read(1 << 16)
        if not block:
            return position
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)


def read_plain_chunk(input_file: InputFile, chunk_index: int, chunk_bytes: int) -> tuple[bytes, int]:
    """Chunk `chunk_index` of a plain file: the lines that start in [i * chunk_bytes, (i+1) * chunk_bytes).

    Returns:
        (data, start): the chunk's bytes and the file offset of its first line.
    """
    try:
        with open(input_file.path, "rb") as handle:
            start = _line_start_at_or_after(handle, chunk_index * chunk_bytes)
            stop = _line_start_at_or_after(handle, (chunk_index + 1) * chunk_bytes)
            handle.seek(start)
            return handle.read(max(0, stop - start)), start
    except OSError as error:
        raise InputError(f"{input_file.path}: cannot read: {error}") from error


def iter_gzip_chunks(input_file: InputFile, chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yields (chunk, compressed bytes consumed so far) of a gzip file, each chunk ending at a newline."""
    try:
        with open(input_file.path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
            carry = b""
            while True:
                block = stream.read(chunk_bytes)
                if not block:
                    break
                block = carry + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:
                    carry = block
                    continue
                carry = block[cut:]
                yield block[:cut], raw.tell()
            if carry:
                yield carry, raw.tell()
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(
            f"{input_file.path}: cannot read gzip data (truncated or corrupt?): {error}"
        ) from error
