"""`dlrm-prep movielens`: MovieLens 100K (`ml-100k/`) to Parquet shards and a manifest, through `table`.

One row per rating of `u.data` (tab-separated user_id, item_id, rating, timestamp), joined with
`u.user` (user_id|age|gender|occupation|zip) and `u.item` (movie_id|title|release_date|...| then 19
genre flags, latin-1), the genre names taken from `u.genre`. Features:
  label          rating >= 4 (about 55% of ratings)
  dense          age; release_year (the year of release_date, missing when the date is)
  categorical    user_id, item_id, gender, occupation, zip
  multi-hot      genres: the names of the flags that are set
Rows are sorted by timestamp (ties by user_id, then item_id) and written, with the join, to a scratch
Parquet file next to `--out` (`.<out name>.movielens/`, rebuilt byte-identical on a re-run and removed
at the end); `dlrm-prep table` then prepares it with the ordered split 0.8/0.1/0.1 (the first 80% of
ratings in time train, the next 10% val, the last 10% test) and a train vocabulary with K = 1, so a
user or item first seen after the train period gets id 0. The log1p dense transform is applied (as for
Criteo). The join holds the data set in memory: MovieLens 100K is 2 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from data_prep import table
from data_prep.inputs import InputError
from data_prep.table_parse import TableSpec

RATING_FILE, USER_FILE, ITEM_FILE, GENRE_FILE = "u.data", "u.user", "u.item", "u.genre"
LABEL_MIN_RATING = 4
DENSE = ("age", "release_year")
CATEGORICAL = ("user_id", "item_id", "gender", "occupation", "zip", "genres")
GENRE_SEPARATOR = "|"
NUM_GENRES = 19


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, metavar="DIR", help="the ml-100k directory (u.data, u.user, ...)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory, as for `table`")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _read(path: Path, names: list[str], delimiter: str, encoding: str = "utf8") -> pa.Table:
    if not path.is_file():
        raise InputError(f"--input: {path} not found (is this an ml-100k directory?)")
    try:
        return pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=names, encoding=encoding),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
    except pa.ArrowInvalid as error:
        raise InputError(f"{path}: not in the MovieLens 100K layout: {error}") from None


def _genre_names(directory: Path) -> list[str]:
    genres = _read(directory / GENRE_FILE, ["name", "index"], "|")
    names = dict(zip(genres.column("index").to_pylist(), genres.column("name").to_pylist(), strict=True))
    return [names[str(index)] for index in range(NUM_GENRES)]


def join(directory: Path) -> pa.Table:
    """The ratings joined with users and items, sorted by (timestamp, user_id, item_id)."""
    ratings = _read(directory / RATING_FILE, ["user_id", "item_id", "rating", "timestamp"], "\t")
    users = _read(directory / USER_FILE, ["user_id", "age", "gender", "occupation", "zip"], "|")
    genre_names = _genre_names(directory)
    item_columns = ["item_id", "title", "release_date", "video_release_date", "url", *genre_names]
    items = _read(directory / ITEM_FILE, item_columns, "|", encoding="latin1")
    flags = np.stack(
        [pc.equal(items.column(name), "1").to_numpy(zero_copy_only=False) for name in genre_names], 1
    )
    genres = ["|".join(name for name, on in zip(genre_names, row, strict=True) if on) for row in flags]
    # "01-Jan-1995" -> "1995"; an empty date stays empty (missing).
    year = pc.utf8_slice_codeunits(items.column("release_date"), -4)
    items = pa.table({"item_id": items.column("item_id"), "release_year": year, "genres": pa.array(genres)})
    joined = ratings.join(users, "user_id", join_type="left outer").join(
        items, "item_id", join_type="left outer"
    )
    for name in ("timestamp", "user_id", "item_id"):
        joined = joined.append_column(f"_{name}", pc.cast(joined.column(name), pa.int64()))
    joined = joined.sort_by(
        [("_timestamp", "ascending"), ("_user_id", "ascending"), ("_item_id", "ascending")]
    )
    label = pc.cast(
        pc.greater_equal(pc.cast(joined.column("rating"), pa.int64()), LABEL_MIN_RATING), pa.int8()
    )
    columns = {"label": label, **{name: joined.column(name) for name in (*DENSE, *CATEGORICAL)}}
    return pa.table(
        {name: pc.fill_null(column, "") if name != "label" else column for name, column in columns.items()}
    )


def options(source: Path, out: str, workers: int, progress: bool) -> table.TableOptions:
    """The `table` options MovieLens is prepared with."""
    spec = TableSpec(
        format="parquet",
        columns=(),
        label="label",
        categorical=CATEGORICAL,
        dense=DENSE,
        multi_hot=(("genres", GENRE_SEPARATOR),),
    )
    return table.TableOptions(
        inputs=(str(source),),
        out=out,
        spec=spec,
        encoding="vocab",
        vocab_min_count=1,
        split="ordered",
        split_fractions=(0.8, 0.1, 0.1),
        workers=workers,
        progress=progress,
        layout="movielens",
    )


def run(
    directory: str, out: str, workers: int = 1, progress: bool = True, arguments: dict | None = None
) -> dict[str, Any]:
    """Joins, sorts and prepares MovieLens 100K; returns the manifest (see the module docstring)."""
    source_dir = Path(directory)
    out_path = Path(out)
    scratch = out_path.parent / f".{out_path.name}.movielens"
    scratch.mkdir(parents=True, exist_ok=True)
    source = scratch / "joined.parquet"
    temporary = scratch / "joined.parquet.tmp"
    # Deterministic bytes (no statistics timestamps), so that a re-run's fingerprint matches.
    pq.write_table(join(source_dir), temporary, row_group_size=25_000, compression="snappy")
    os.replace(temporary, source)
    manifest = table.run(options(source, out, workers, progress), arguments=arguments)
    shutil.rmtree(scratch, ignore_errors=True)
    return manifest


def run_cli(args: argparse.Namespace, arguments: dict) -> dict[str, Any]:
    if args.workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {args.workers}")
    return run(args.input, args.out, args.workers, not args.no_progress, arguments)
