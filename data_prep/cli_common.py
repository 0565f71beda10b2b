"""What the `criteo` and `table` command lines share: the options of the phase driver
(`data_prep.phases`), which both take and check the same way. A bad value raises ValueError naming its
flag; `data_prep.cli` prints it in one line."""

from __future__ import annotations

import argparse
from typing import Any


def positive(value: int, flag: str) -> int:
    if value < 1:
        raise ValueError(f"{flag}: must be >= 1, got {value}")
    return value


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The fields that `PrepOptions` and `TableOptions` both have, from the parsed arguments.

    `--chunk-mb` is checked (> 0) by the caller, before the format's own options.
    """
    return {
        "rows_per_shard": positive(args.rows_per_shard, "--rows-per-shard"),
        "row_group_rows": positive(args.row_group_rows, "--row-group-rows"),
        "chunk_bytes": max(1 << 10, int(args.chunk_mb * (1 << 20))),
        "compression": args.compression,
        "workers": positive(args.workers, "--workers"),
        "on_bad_row": args.on_bad_row,
        "vocab_memory_bytes": positive(args.vocab_memory_mb, "--vocab-memory-mb") << 20,
        "progress": not args.no_progress,
    }
