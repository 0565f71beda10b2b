"""The arguments of `dlrm-prep table` and their validation into `TableOptions` (the work is in
`data_prep.table`). A bad value raises ValueError naming its flag; `data_prep.cli` prints it in one line."""

from __future__ import annotations

import argparse
import os

from data_prep.cli_common import positive, run_options
from data_prep.parse import DENSE_TRANSFORMS
from data_prep.table import SPLIT_MODES, TableOptions
from data_prep.table_parse import FORMATS, TableSpec

DESCRIPTION = """\
Stream a CSV, TSV or Parquet table into <out>/{train,val,test}/part-NNNNN.parquet and <out>/manifest.json
(with the feature schema), with bounded memory, in parallel, resumable after a crash.

Text input: lines end at \\n (CRLF fine); csv fields may be quoted ("a,b", "" for a quote), tsv fields
are split at every tab. A newline inside a quoted field is not supported: such a line (an odd number of
quotes) is a bad row of reason `line`. Values are bytes: UTF-8 or anything else passes through.
Bad rows (first reason that applies): line, field_count, label, dense; each is counted with file:line.
Categorical values are hashed (FNV-1a 64 + fmix64 of their bytes; Parquet integers as decimal text):
the same id on every machine and run. Missing values get id 0 in both encodings."""


def _names(text: str | None, flag: str) -> tuple[str, ...]:
    if not text:
        return ()
    names = tuple(name.strip() for name in text.split(","))
    if any(not name for name in names):
        raise ValueError(f"{flag}: {text!r} holds an empty column name")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="input files or directories (a directory: its files, sorted by name), in order; "
                             "csv/tsv files named *.gz are read through gzip")  # fmt: skip
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory; a re-run with the same arguments resumes or returns at once")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, required=True, help="input format")
    names = parser.add_mutually_exclusive_group()
    names.add_argument(
        "--header", action="store_true", help="csv/tsv: the first line of each file names the columns"
    )
    names.add_argument(
        "--columns", metavar="NAME,...", help="csv/tsv without a header: every column's name, in order"
    )
    parser.add_argument(
        "--delimiter", metavar="CHAR", help="field delimiter (default: , for csv, tab for tsv)"
    )
    parser.add_argument("--label", required=True, metavar="COL", help="the label column")
    parser.add_argument("--label-threshold", type=float, metavar="T",
                        help="label = value >= T (e.g. ratings); without it the value must be 0 or 1")  # fmt: skip
    parser.add_argument("--dense", metavar="COL,...", help="dense (numeric) columns; empty = missing = 0")
    parser.add_argument("--categorical", required=True, metavar="COL,...",
                        help="categorical columns: any string or integer values")  # fmt: skip
    parser.add_argument("--multi-hot", metavar="COL:SEP,...",
                        help="categorical columns that hold a bag of values split at SEP (e.g. genres:|); "
                        "empty items are dropped; a column not in --categorical is added after them")  # fmt: skip
    parser.add_argument("--split", default="ordered:0.8,0.1,0.1", metavar="MODE:TRAIN,VAL,TEST",
                        help="ordered: by position in the input (files in the given order); random: by a "
                        "seeded hash of (file, line). Default ordered:0.8,0.1,0.1")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    encoding = parser.add_mutually_exclusive_group(required=True)
    encoding.add_argument("--hash-buckets", metavar="N[,N...]",
                          help="hash encoding: id = hash %% N (one N, or one per categorical column)")  # fmt: skip
    encoding.add_argument("--vocab-min-count", type=int, metavar="K",
                          help="vocabulary: values seen >= K times in train get ids 1..n; others and missing get 0")  # fmt: skip
    parser.add_argument("--dense-transform", choices=DENSE_TRANSFORMS, default="log1p",
                        help="log1p (default): log(1 + max(x, 0)); none: the value (missing is 0 either way)")  # fmt: skip
    parser.add_argument("--on-bad-row", choices=("skip", "error"), default="skip",
                        help="skip (default): drop and count by reason; error: stop at the first, naming file:line")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all cores); the output does not depend on it")  # fmt: skip
    parser.add_argument(
        "--rows-per-shard", type=int, default=1 << 20, help="rows per Parquet file (default 1048576)"
    )
    parser.add_argument(
        "--row-group-rows", type=int, default=1 << 16, help="rows per row group (default 65536)"
    )
    parser.add_argument("--chunk-mb", type=float, default=16.0,
                        help="MB of text parsed at once per worker (Parquet: a row group at a time; default 16)")  # fmt: skip
    parser.add_argument("--compression", choices=("snappy", "zstd", "lz4", "none"), default="snappy")
    parser.add_argument(
        "--vocab-memory-mb", type=int, default=256, help="memory per worker for vocabulary counts"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_split(text: str) -> tuple[str, tuple[float, float, float]]:
    mode, _, fractions_text = text.partition(":")
    if mode not in SPLIT_MODES:
        raise ValueError(
            f"--split: {mode!r} is not one of {', '.join(SPLIT_MODES)} (e.g. ordered:0.8,0.1,0.1)"
        )
    try:
        fractions = tuple(float(part) for part in fractions_text.split(","))
    except ValueError:
        raise ValueError(f"--split: {fractions_text!r} is not three comma-separated fractions") from None
    if len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"--split: fractions must be three numbers in [0, 1] summing to 1, got {fractions_text!r}"
        )
    return mode, fractions


def _multi_hot(text: str | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _names(text, "--multi-hot"):
        name, colon, separator = item.partition(":")
        if not colon or not name or not separator:
            raise ValueError(f"--multi-hot: {item!r} is not COL:SEP (e.g. genres:|)")
        pairs.append((name, separator))
    return tuple(pairs)


def _buckets(text: str) -> tuple[int, ...]:
    try:
        buckets = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--hash-buckets: {text!r} is not an integer or a comma list of integers") from None
    for bucket in buckets:
        if not 1 <= bucket <= 2**31 - 1:
            raise ValueError(f"--hash-buckets: {bucket} is outside 1..{2**31 - 1}")
    return buckets


def options_from_args(args: argparse.Namespace) -> TableOptions:
    """Validates the parsed `table` arguments; a bad value raises ValueError naming its flag."""
    text_input = args.format != "parquet"
    if text_input and not (args.header or args.columns):
        raise ValueError(
            "--format csv/tsv: give --header (first line names the columns) or --columns NAME,..."
        )
    if not text_input and (args.header or args.columns or args.delimiter):
        raise ValueError("--format parquet: --header, --columns and --delimiter apply to csv/tsv only")
    delimiter = args.delimiter or ("," if args.format == "csv" else "\t")
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise ValueError(f"--delimiter: one character other than a quote or newline, got {delimiter!r}")
    multi_hot = _multi_hot(args.multi_hot)
    categorical = _names(args.categorical, "--categorical")
    categorical += tuple(name for name, _ in multi_hot if name not in categorical)
    dense = _names(args.dense, "--dense")
    roles = [args.label, *dense, *categorical]
    twice = sorted({name for name in roles if roles.count(name) > 1})
    if twice:
        raise ValueError(f"--label/--dense/--categorical: {', '.join(twice)} given more than one role")
    split, fractions = parse_split(args.split)
    buckets = _buckets(args.hash_buckets) if args.hash_buckets else ()
    if len(buckets) == 1:
        buckets *= len(categorical)
    if args.hash_buckets and len(buckets) != len(categorical):
        raise ValueError(f"--hash-buckets: give 1 or {len(categorical)} values, got {len(buckets)}")
    if args.vocab_min_count is not None:
        positive(args.vocab_min_count, "--vocab-min-count")
    if args.chunk_mb <= 0:
        raise ValueError(f"--chunk-mb: must be > 0, got {args.chunk_mb}")
    spec = TableSpec(
        format=args.format,
        columns=_names(args.columns, "--columns"),
        label=args.label,
        categorical=categorical,
        dense=dense,
        delimiter=delimiter,
        label_threshold=args.label_threshold,
        multi_hot=multi_hot,
        dense_transform=args.dense_transform,
    )
    return TableOptions(
        inputs=tuple(args.input),
        out=args.out,
        spec=spec,
        encoding="hash" if args.hash_buckets else "vocab",
        header=args.header,
        hash_buckets=buckets,
        vocab_min_count=args.vocab_min_count or 0,
        split=split,
        split_fractions=fractions,
        seed=args.seed,
        **run_options(args),
    )
