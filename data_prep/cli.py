"""`dlrm-prep`: the preprocessing command line (also `python -m data_prep`).

  dlrm-prep synth   write synthetic Criteo-format days with a planted signal
  dlrm-prep criteo  turn raw Criteo TSV (plain or .gz) into Parquet shards and manifest.json
  dlrm-prep table   any CSV/TSV/Parquet table (label, dense, categorical, multi-hot columns) into the same
  dlrm-prep movielens  MovieLens 100K (ml-100k/) into the same, through `table`

This module only parses and validates arguments and prints; the work is in `data_prep.criteo`,
`data_prep.table`, `data_prep.movielens` and `data_prep.synth`. Errors print one line naming the bad option, file or line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from data_prep import movielens, synth, table, table_cli
from data_prep.cli_common import positive, run_options
from data_prep.criteo import PrepOptions, run
from data_prep.inputs import LAYOUTS, InputError
from data_prep.manifest import format_summary
from data_prep.parse import DENSE_TRANSFORMS, BadRowError
from data_prep.phases import PrepError
from data_prep.schema import NUM_SPARSE

MLPERF_HASH_BUCKETS = 40_000_000


def _add_criteo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="input files or directories: day_0..day_N[.gz] (terabyte) or train.txt[.gz] (kaggle)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory (created); a re-run with the same arguments resumes or returns at once",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        required=True,
        help="terabyte: train = all days but the last; last day's first half val, second half test. "
        "kaggle: one train.txt; first 6/7 of lines train, last 1/7 split into val then test halves",
    )
    encoding = parser.add_mutually_exclusive_group(required=True)
    encoding.add_argument(
        "--hash-buckets",
        metavar="N[,N...]",
        help=f"hash encoding: id = value mod N (one N, or {NUM_SPARSE} comma-separated); "
        f"MLPerf uses {MLPERF_HASH_BUCKETS:,}",
    )
    encoding.add_argument(
        "--vocab-min-count",
        type=int,
        metavar="K",
        help="vocabulary encoding: values seen >= K times in train get ids 1..n; others, and values "
        "unseen in train, get the reserved id 0",
    )
    parser.add_argument(
        "--dense-transform",
        choices=DENSE_TRANSFORMS,
        default="log1p",
        help="log1p (default): missing/negative -> 0, then log(1+x); none: missing -> 0, raw value",
    )
    parser.add_argument(
        "--multi-hot",
        action="store_true",
        help="categorical fields are bags of comma-separated hex values (e.g. 0a1b2c3d,00ff12aa; empty: "
        "an empty bag), written as list<int32> columns; without it a comma makes a bad row",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: all cores); the output does not depend on it",
    )
    parser.add_argument(
        "--on-bad-row",
        choices=("skip", "error"),
        default="skip",
        help="skip (default): drop and count bad lines by reason; error: stop at the first, naming file:line",
    )
    parser.add_argument(
        "--rows-per-shard", type=int, default=1 << 20, help="rows per Parquet file (default 1048576)"
    )
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=1 << 16,
        help="rows per Parquet row group, the unit the trainer streams (default 65536)",
    )
    parser.add_argument(
        "--chunk-mb",
        type=float,
        default=16.0,
        help="MB of text parsed at once per worker; memory per worker is about 6x this (default 16)",
    )
    parser.add_argument(
        "--compression",
        choices=("snappy", "zstd", "lz4", "none"),
        default="snappy",
        help="Parquet compression (default snappy)",
    )
    parser.add_argument(
        "--vocab-memory-mb",
        type=int,
        default=256,
        help="memory budget per worker for summing vocabulary counts (default 256)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parse_buckets(text: str) -> tuple[int, ...]:
    try:
        buckets = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--hash-buckets: {text!r} is not an integer or a comma list of integers") from None
    if len(buckets) == 1:
        buckets *= NUM_SPARSE
    if len(buckets) != NUM_SPARSE:
        raise ValueError(f"--hash-buckets: give 1 or {NUM_SPARSE} values, got {len(buckets)}")
    for bucket in buckets:
        if not 1 <= bucket <= 2**31 - 1:
            raise ValueError(f"--hash-buckets: {bucket} is outside 1..{2**31 - 1}")
    return tuple(buckets)


def options_from_args(args: argparse.Namespace) -> PrepOptions:
    """Validates the parsed `criteo` arguments; a bad value raises ValueError naming its flag."""
    if args.vocab_min_count is not None:
        positive(args.vocab_min_count, "--vocab-min-count")
    if args.chunk_mb <= 0:
        raise ValueError(f"--chunk-mb: must be > 0, got {args.chunk_mb}")
    return PrepOptions(
        inputs=tuple(args.input),
        out=args.out,
        layout=args.layout,
        encoding="hash" if args.hash_buckets else "vocab",
        hash_buckets=_parse_buckets(args.hash_buckets) if args.hash_buckets else (),
        vocab_min_count=args.vocab_min_count or 0,
        dense_transform=args.dense_transform,
        **run_options(args),
        multi_hot=args.multi_hot,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlrm-prep", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    synth_parser = commands.add_parser(
        "synth",
        help="write synthetic Criteo-format days with a planted signal",
        description="Write day_0..day_{N-1} in the exact Criteo TSV layout, labels drawn from a planted model, "
        "and each row's true click probability in day_i.prob.npy (for the oracle AUC).",
    )
    synth.add_cli_arguments(synth_parser)
    synth_parser.set_defaults(handler=synth.run_cli)
    criteo_parser = commands.add_parser(
        "criteo",
        help="raw Criteo TSV -> Parquet shards + manifest.json",
        description="Stream raw Criteo TSV (plain or .gz) into <out>/{train,val,test}/part-NNNNN.parquet and "
        "<out>/manifest.json, with bounded memory, in parallel, resumable after a crash.",
    )
    _add_criteo_arguments(criteo_parser)
    criteo_parser.set_defaults(handler=_run_criteo)
    table_parser = commands.add_parser(
        "table",
        help="any CSV/TSV/Parquet table -> Parquet shards + manifest.json",
        description=table_cli.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    table_cli.add_arguments(table_parser)
    table_parser.set_defaults(handler=_run_table)
    movielens_parser = commands.add_parser(
        "movielens",
        help="MovieLens 100K -> Parquet shards + manifest.json (through `table`)",
        description=movielens.__doc__.split("\n\n")[0],
    )
    movielens.add_cli_arguments(movielens_parser)
    movielens_parser.set_defaults(handler=_run_movielens)
    return parser


def _run_criteo(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    manifest = run(
        options, arguments={k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    )
    print(format_summary(manifest))
    print(f"manifest: {os.path.join(options.out, 'manifest.json')}")
    return 0


def _arguments(args: argparse.Namespace) -> dict:
    return {key: value for key, value in vars(args).items() if key not in ("command", "handler")}


def _run_table(args: argparse.Namespace) -> int:
    options = table_cli.options_from_args(args)
    manifest = table.run(options, arguments=_arguments(args))
    print(format_summary(manifest))
    print(f"manifest: {os.path.join(options.out, 'manifest.json')}")
    return 0


def _run_movielens(args: argparse.Namespace) -> int:
    manifest = movielens.run_cli(args, arguments=_arguments(args))
    print(format_summary(manifest))
    print(f"manifest: {os.path.join(args.out, 'manifest.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, PrepError, InputError, BadRowError, OSError) as error:
        print(f"dlrm-prep: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
