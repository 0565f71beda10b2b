"""Criteo-format benchmark data whose statistics follow a real Criteo sample, measured at run time.

The project's synthetic generator (`data_prep.synth`) plants a click model; its feature statistics are
only roughly Criteo's, and a benchmark on it alone hid where prep time goes on real data. This module
measures, from a sample of real Criteo lines (`/work/shared/data/criteo/kaggle_train_head8k.tsv`, the
first 8,000 lines of Kaggle's train.txt), what shapes the parser's and encoder's work, and draws any
number of rows that follow it:

  label        Bernoulli with the sample's positive rate.
  I1..I13      missing with the column's missing rate in the sample; a present value is resampled from
               the column's present values in the sample (its empirical distribution: magnitudes, the
               share of zeros, I2's negatives, the long tail up to 1.6M in I5).
  C1..C26      missing with the column's missing rate; a present value is drawn from a bounded Zipf law
               over N distinct values. N is the Chao1 estimate of the column's richness from the sample
               (observed distinct + f1^2 / 2 f2, with f1/f2 the values seen once/twice), at least the
               observed count and capped at `MAX_CARDINALITY` (40k): columns with few values stay small
               (C6: 7), the high-cardinality ones get the heavy tail of real Criteo, where most values
               are rare. The exponent s is solved so that the most popular value's share, 1 / H(N, s),
               equals the sample's top share (e.g. C3: 385 of 7,736 present values, s ~ 0.9; C9: 7,095
               of 8,000, s large). Values are distinct random 32-bit numbers written as 8 lower-case hex
               digits, as in the real data.

Columns are drawn independently (the real data's correlations do not change the cost of parsing).
`measure` returns the statistics; `generate` writes `day_0 .. day_{N-1}` like `data_prep.synth`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from data_prep.schema import DENSE_COLUMNS, LABEL, NUM_FIELDS, RAW_COLUMNS, SPARSE_COLUMNS

SAMPLE_PATH = Path("/work/shared/data/criteo/kaggle_train_head8k.tsv")
MAX_CARDINALITY = 40_000
_CHUNK_ROWS = 1 << 18


@dataclass(frozen=True)
class SampleStats:
    """What `generate` follows, per column of the sample."""

    positive_rate: float
    dense_missing: list[float]
    dense_values: list[np.ndarray]
    """The present values of each integer column, resampled as they are."""
    sparse_missing: list[float]
    cardinalities: list[int]
    zipf_exponents: list[float]


def _chao1(counts: np.ndarray) -> int:
    singletons, doubletons = int((counts == 1).sum()), int((counts == 2).sum())
    return len(counts) + singletons * singletons // (2 * max(doubletons, 1))


def _zipf_exponent(cardinality: int, top_share: float) -> float:
    """The s of a Zipf law over `cardinality` ranks whose first rank has probability `top_share`."""
    ranks = np.arange(1, cardinality + 1, dtype=np.float64)
    low, high = 0.0, 20.0
    # 1 / H(N, s) grows with s, from 1/N at s = 0 towards 1: bisect.
    for _ in range(60):
        middle = (low + high) / 2
        if 1.0 / np.sum(ranks**-middle) < top_share:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def measure(path: Path = SAMPLE_PATH) -> SampleStats:
    """Reads the sample (every line must have 40 fields) and measures its per-column statistics."""
    text = path.read_bytes().rstrip(b"\n").split(b"\n")
    fields = [line.rstrip(b"\r").split(b"\t") for line in text]
    if any(len(row) != NUM_FIELDS for row in fields):
        raise ValueError(f"{path}: every line must have {NUM_FIELDS} fields")
    columns = list(zip(*fields, strict=True))
    labels = np.array([int(value) for value in columns[0]])
    dense_missing, dense_values = [], []
    for column in columns[1 : 1 + len(DENSE_COLUMNS)]:
        present = [int(value) for value in column if value]
        dense_missing.append(1 - len(present) / len(column))
        dense_values.append(np.array(present, np.int64))
    sparse_missing, cardinalities, exponents = [], [], []
    for column in columns[1 + len(DENSE_COLUMNS) :]:
        present = [value for value in column if value]
        sparse_missing.append(1 - len(present) / len(column))
        _, counts = np.unique(np.array(present), return_counts=True)
        cardinality = min(MAX_CARDINALITY, max(len(counts), _chao1(counts)))
        cardinalities.append(cardinality)
        exponents.append(_zipf_exponent(cardinality, counts.max() / len(present)))
    return SampleStats(
        float(labels.mean()), dense_missing, dense_values, sparse_missing, cardinalities, exponents
    )


def _zipf_cdf(cardinality: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, cardinality + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _with_missing(values: pa.Array, missing: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(missing), pa.scalar(None, values.type), values)


def _draw_chunk(
    stats: SampleStats, vocabularies: list[pa.Array], cdfs: list[np.ndarray], rows: int, rng
) -> pa.Table:
    labels = (rng.random(rows) < stats.positive_rate).astype(np.int8)
    arrays: list[pa.Array] = [pa.array(labels)]
    for missing_rate, values in zip(stats.dense_missing, stats.dense_values, strict=True):
        drawn = pa.array(values[rng.integers(0, len(values), rows)]) if len(values) else pa.nulls(rows)
        arrays.append(_with_missing(drawn.cast(pa.int64()), rng.random(rows) < missing_rate))
    for missing_rate, vocabulary, cdf in zip(stats.sparse_missing, vocabularies, cdfs, strict=True):
        ranks = np.minimum(np.searchsorted(cdf, rng.random(rows)), len(cdf) - 1)
        arrays.append(_with_missing(vocabulary.take(pa.array(ranks)), rng.random(rows) < missing_rate))
    return pa.Table.from_arrays(arrays, names=list(RAW_COLUMNS))


def generate(out_dir: Path, *, days: int, rows_per_day: int, seed: int, stats: SampleStats) -> list[Path]:
    """Writes `days` plain TSV files of `rows_per_day` rows each that follow `stats`.

    Returns:
        The day files, in order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocabularies = []
    for cardinality in stats.cardinalities:
        # Distinct values: draw a few extra, drop repeats, keep the first `cardinality` in drawn order.
        drawn = rng.integers(0, 1 << 32, cardinality + cardinality // 8 + 16, dtype=np.uint64)
        _, first = np.unique(drawn, return_index=True)
        distinct = drawn[np.sort(first)][:cardinality]
        vocabularies.append(pa.array([f"{value:08x}" for value in distinct.tolist()], pa.string()))
    cdfs = [_zipf_cdf(n, s) for n, s in zip(stats.cardinalities, stats.zipf_exponents, strict=True)]
    schema = pa.schema(
        [pa.field(LABEL, pa.int8())]
        + [pa.field(name, pa.int64()) for name in DENSE_COLUMNS]
        + [pa.field(name, pa.string()) for name in SPARSE_COLUMNS]
    )
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    paths = []
    for day in range(days):
        path = out_dir / f"day_{day}"
        with pa_csv.CSVWriter(str(path), schema, write_options=options) as writer:
            for first_row in range(0, rows_per_day, _CHUNK_ROWS):
                rows = min(_CHUNK_ROWS, rows_per_day - first_row)
                writer.write_table(_draw_chunk(stats, vocabularies, cdfs, rows, rng))
        paths.append(path)
    return paths


def describe(stats: SampleStats) -> str:
    """One line: the shape of the data, for the benchmark's header."""
    return (
        f"dense missing {np.mean(stats.dense_missing):.0%} on average, categorical missing "
        f"{np.mean(stats.sparse_missing):.0%}, cardinalities {min(stats.cardinalities)}.."
        f"{max(stats.cardinalities):,}, Zipf exponents {min(stats.zipf_exponents):.2f}.."
        f"{max(stats.zipf_exponents):.2f}"
    )
