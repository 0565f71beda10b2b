"""Synthetic Criteo-format click logs with a planted click model whose true probabilities are known.

Tests, the demo and the benchmarks need Criteo-shaped data without the 1 TB download, and they need to know
how well a model *could* do on it. `generate` writes `day_0 .. day_{N-1}` (or `day_i.gz`) in the exact
Criteo TSV layout of `data_prep.schema`, next to each a `day_i.prob.npy` with the true click probability of
every line, and a `synth.json` with the parameters plus each day's positive rate and oracle AUC (the AUC of
the true probabilities: the ceiling a trained model approaches). `data_prep.oracle.oracle_auc` recomputes it for any
line range, e.g. the val/test split, so it can be printed next to the model's.

How a row is drawn:
- Every field of every row consumes exactly one uniform from a Philox stream keyed by (seed, day) whose
  counter is derived from the row index, so the bytes depend neither on the run nor on `chunk_rows`.
- Integer features are floored Lomax (Pareto II) draws: heavy-tailed counts with Criteo's per-column
  missing rates; I2 is shifted down so it has Criteo's small negative values.
- Categorical features draw a rank from a bounded Zipf law and map it to the column's vocabulary, a fixed
  set of distinct random 32-bit values written as 8 lowercase hex digits.
- The label is Bernoulli(sigmoid(logit)), the logit summing a bias calibrated to a 25% positive rate,
  per-value effects of some categorical columns, joint effects of a few column pairs (no marginal part, so
  only a model that crosses the two columns can learn it) and linear effects of log1p of a few integers.
- `data_prep.synth_signal.SignalKnobs` sets the Zipf exponent, the scale of each of the three parts and
  whether pair effects are hashed or latent (low rank); the defaults reproduce the bytes above exactly.

Multi-hot (`multi_hot_sizes`, e.g. MLPerf DLRMv2's `MLPERF_MULTI_HOT_SIZES`): a present field of column f
holds exactly size_f values joined by commas (the TSV convention of `data_prep.parse`); a missing field
stays empty, an empty bag. The first value is the one-hot draw above; the other size_f - 1 come from the
same Zipf law, drawn from a stream of their own per column (keyed by seed, day and column, counter from
the row index as above), so the one-hot values, and with all sizes 1 every byte, are unchanged. Values
may repeat within a bag. In the planted model a bag's effect is the mean of its values' effects, and a
pair's joint effect the mean over every (value a, value b) pair of the two bags: a mean-pooled embedding
can represent exactly that, a sum-pooled one up to the bag size, which is fixed per column.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from gzip import GzipFile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from tqdm import tqdm

from data_prep import synth_signal
from data_prep.oracle import METADATA_FILE, auc_from_counts
from data_prep.schema import (
    DENSE_COLUMNS,
    KAGGLE_CARDINALITIES,
    LABEL,
    NUM_FIELDS,
    NUM_SPARSE,
    RAW_COLUMNS,
    SPARSE_COLUMNS,
)
from data_prep.synth_signal import DEFAULT_SIGNAL, SignalKnobs

DEFAULT_CARDINALITY_CAP = 100_000
# Kaggle's shape with the seven multi-million columns capped, so a laptop can hold and train every table.
DEFAULT_CARDINALITIES: tuple[int, ...] = tuple(min(c, DEFAULT_CARDINALITY_CAP) for c in KAGGLE_CARDINALITIES)
MAX_CARDINALITY = 2**32  # vocabularies are distinct 32-bit values
TARGET_POSITIVE_RATE = 0.25
ZIPF_EXPONENT = synth_signal.DEFAULT_ZIPF_EXPONENT
ONE_HOT_SIZES: tuple[int, ...] = (1,) * NUM_SPARSE
# Values per present field of C1..C26 in MLPerf DLRMv2's multi-hot Criteo (materialize_synthetic_multihot).
MLPERF_MULTI_HOT_SIZES: tuple[int, ...] = (
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
)  # fmt: skip
MAX_MULTI_HOT_SIZE = 1024


@dataclass(frozen=True)
class _DenseSpec:
    missing_rate: float
    median: float
    """Median of the continuous Lomax draw, before flooring and offset."""
    tail_index: float
    """Lomax shape alpha: the smaller, the heavier the tail (below 1 the mean is infinite)."""
    offset: int = 0


# Missing rates are Criteo Kaggle's; medians and tails roughly follow its per-column quantiles.
_DENSE_SPECS: tuple[_DenseSpec, ...] = (
    _DenseSpec(0.45, 1.0, 1.5),  # I1
    _DenseSpec(0.0, 5.0, 0.9, offset=-2),  # I2: Criteo has -1, -2 (and a few -3)
    _DenseSpec(0.21, 7.0, 1.2),  # I3
    _DenseSpec(0.22, 4.0, 2.5),  # I4
    _DenseSpec(0.03, 2900.0, 1.3),  # I5
    _DenseSpec(0.22, 33.0, 1.0),  # I6
    _DenseSpec(0.04, 3.0, 1.2),  # I7
    _DenseSpec(0.0005, 8.0, 2.0),  # I8
    _DenseSpec(0.04, 40.0, 1.3),  # I9
    _DenseSpec(0.45, 0.7, 4.0),  # I10
    _DenseSpec(0.04, 1.0, 1.5),  # I11
    _DenseSpec(0.77, 0.5, 1.2),  # I12
    _DenseSpec(0.22, 5.0, 1.5),  # I13
)
_DENSE_MAX = 2**31 - 1  # keeps the heaviest tails inside int32 for downstream readers

# Criteo Kaggle's missing rates of the categorical columns that have any; the others are never missing.
_SPARSE_MISSING_RATES: tuple[tuple[str, float], ...] = (
    ("C3", 0.034),
    ("C4", 0.034),
    ("C6", 0.12),
    ("C12", 0.034),
    ("C16", 0.034),
    ("C19", 0.44),
    ("C20", 0.44),
    ("C21", 0.034),
    ("C22", 0.82),
    ("C24", 0.034),
    ("C25", 0.44),
    ("C26", 0.44),
)

# The planted model. Value and pair effects: standard deviation of the normal draw added to the logit.
_VALUE_EFFECT_SCALES: tuple[tuple[str, float], ...] = (
    ("C1", 0.4),
    ("C2", 0.3),
    ("C3", 0.5),
    ("C6", 0.3),
    ("C9", 0.3),
    ("C13", 0.4),
    ("C14", 0.4),
    ("C17", 0.5),
    ("C23", 0.3),
    ("C24", 0.3),
)
_PAIR_EFFECT_SCALES: tuple[tuple[str, str, float], ...] = (
    ("C6", "C14", 0.6),
    ("C9", "C17", 0.5),
    ("C2", "C5", 0.5),
)
# Dense effects: weight on log1p(max(value, 0)); a missing value adds nothing.
_DENSE_EFFECT_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("I1", 0.3),
    ("I6", -0.2),
    ("I11", 0.3),
    ("I13", -0.2),
)

# Tags that separate the independent random streams derived from one seed.
_VOCAB_STREAM, _EFFECT_STREAM, _PAIR_STREAM, _ROW_STREAM, _CALIBRATION_STREAM, _BAG_STREAM, _LATENT_STREAM = (
    range(7)
)
_CALIBRATION_ROWS = 1 << 16
_AUC_BINS = 1 << 20  # probability buckets of the streaming per-day AUC: ties below 1e-6 apart


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: one entry per day in each tuple."""

    out_dir: Path
    day_files: tuple[Path, ...]
    probability_files: tuple[Path, ...]
    rows_per_day: int
    positive_rates: tuple[float, ...]
    oracle_aucs: tuple[float, ...]
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return len(self.day_files) * self.rows_per_day / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class _ClickModel:
    """The fixed, seed-determined parts of every row: vocabularies and the planted logit."""

    cardinalities: tuple[int, ...]
    vocabularies: tuple[pa.StringArray, ...]
    value_effects: tuple[tuple[int, np.ndarray], ...]
    """(sparse column index, effect of each vocabulary rank)."""
    pair_effects: tuple[tuple[int, int, float, int], ...]
    """(sparse column a, sparse column b, scale, hash key)."""
    dense_effects: tuple[tuple[int, float], ...]
    """(dense column index, weight on log1p of the value)."""
    multi_hot_sizes: tuple[int, ...] = ONE_HOT_SIZES
    """Values per present field of C1..C26 (all 1: one-hot)."""
    zipf_exponent: float = ZIPF_EXPONENT
    pair_factors: tuple[tuple[np.ndarray, np.ndarray], ...] = ()
    """Per pair, the (rows of a, K) and (rows of b, K) latent factors; empty: hashed joint effects."""
    bias: float = 0.0

    @property
    def logit_columns(self) -> frozenset[int]:
        """The sparse columns the planted logit depends on."""
        pairs = {column for column_a, column_b, _, _ in self.pair_effects for column in (column_a, column_b)}
        return frozenset({column for column, _ in self.value_effects} | pairs)


def _check_at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")


def _check_cardinalities(name: str, cardinalities: Sequence[int]) -> tuple[int, ...]:
    if len(cardinalities) != NUM_SPARSE:
        raise ValueError(f"{name}: needs {NUM_SPARSE} values (C1..C26), got {len(cardinalities)}")
    for column, cardinality in zip(SPARSE_COLUMNS, cardinalities, strict=True):
        if not 1 <= cardinality <= MAX_CARDINALITY:
            raise ValueError(f"{name}: {column} must be in [1, 2**32], got {cardinality}")
    return tuple(int(c) for c in cardinalities)


def _check_multi_hot_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    if len(sizes) != NUM_SPARSE:
        raise ValueError(f"{name}: needs {NUM_SPARSE} values (C1..C26), got {len(sizes)}")
    for column, size in zip(SPARSE_COLUMNS, sizes, strict=True):
        if not 1 <= size <= MAX_MULTI_HOT_SIZE:
            raise ValueError(f"{name}: {column} must be in [1, {MAX_MULTI_HOT_SIZE}], got {size}")
    return tuple(int(size) for size in sizes)


def _hex_vocabulary(values: np.ndarray) -> pa.StringArray:
    """Formats uint32 values as 8 lowercase hex digits, vectorised (no Python string per value)."""
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    nibbles = (values[:, None] >> np.arange(28, -1, -4, dtype=np.uint32)) & 0xF
    chars = np.ascontiguousarray(hex_digits[nibbles])
    offsets = np.arange(0, 8 * len(values) + 1, 8, dtype=np.int32)
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(chars))


def _build_click_model(
    seed: int,
    cardinalities: tuple[int, ...],
    multi_hot_sizes: tuple[int, ...] = ONE_HOT_SIZES,
    signal: SignalKnobs = DEFAULT_SIGNAL,
) -> _ClickModel:
    """Draws vocabularies and effects; each column has its own stream so resizing one changes no other.
    A knob at its default multiplies by exactly 1.0, so the default model is the one drawn before knobs."""
    vocabularies = tuple(
        _hex_vocabulary(
            np.random.default_rng([seed, _VOCAB_STREAM, column])
            .choice(MAX_CARDINALITY, size=cardinality, replace=False)
            .astype(np.uint32)
        )
        for column, cardinality in enumerate(cardinalities)
    )
    value_effects = []
    for name, scale in _VALUE_EFFECT_SCALES:
        column = SPARSE_COLUMNS.index(name)
        rng = np.random.default_rng([seed, _EFFECT_STREAM, column])
        value_effects.append(
            (column, scale * signal.value_scale() * rng.standard_normal(cardinalities[column]))
        )
    pair_effects = tuple(
        (
            SPARSE_COLUMNS.index(name_a),
            SPARSE_COLUMNS.index(name_b),
            scale * signal.pair_scale(),
            int(np.random.default_rng([seed, _PAIR_STREAM, pair]).integers(2**63)),
        )
        for pair, (name_a, name_b, scale) in enumerate(_PAIR_EFFECT_SCALES)
    )
    pair_factors = ()
    if signal.pair_rank:
        pair_factors = tuple(
            _latent_factors(seed, pair, cardinalities[column_a], cardinalities[column_b], signal.pair_rank)
            for pair, (column_a, column_b, _, _) in enumerate(pair_effects)
        )
    dense_effects = tuple(
        (DENSE_COLUMNS.index(name), weight * signal.dense_scale()) for name, weight in _DENSE_EFFECT_WEIGHTS
    )
    model = _ClickModel(
        cardinalities,
        vocabularies,
        tuple(value_effects),
        pair_effects,
        dense_effects,
        multi_hot_sizes,
        zipf_exponent=signal.zipf_exponent,
        pair_factors=pair_factors,
    )
    return dataclasses.replace(model, bias=_calibrate_bias(model, seed))


def _latent_factors(
    seed: int, pair: int, cardinality_a: int, cardinality_b: int, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Standard normal (rows, rank) factors of both columns of one pair, scaled by rank**-0.25 each so
    that u_a . v_b has unit variance whatever the rank. float32: a 1M-row column at rank 8 is 32 MB."""
    rng = np.random.default_rng([seed, _LATENT_STREAM, pair])
    scale = np.float32(rank**-0.25)
    return tuple(
        rng.standard_normal((cardinality, rank), dtype=np.float32) * scale
        for cardinality in (cardinality_a, cardinality_b)
    )


def _row_uniforms(
    seed: int, stream: tuple[int, ...], first_row: int, num_rows: int, width: int = NUM_FIELDS
) -> np.ndarray:
    """Returns (width, num_rows) uniforms in [0, 1): `width` per row (by default one per field), the same
    whatever the chunking."""
    key = np.random.SeedSequence([seed, *stream]).generate_state(2, np.uint64)
    # Philox yields 4 words per counter step; a row takes `width` words rounded up to a whole step (40,
    # 10 steps, for the fields), so row r starts at counter r * steps: a chunk starting anywhere
    # reproduces exactly the rows of one long stream.
    words_per_counter = 4
    words_per_row = -(-width // words_per_counter) * words_per_counter
    bit_generator = np.random.Philox(key=key, counter=first_row * words_per_row // words_per_counter)
    uniforms = np.random.Generator(bit_generator).random((num_rows, words_per_row))
    return np.ascontiguousarray(uniforms[:, :width].T)


# (sparse column, number of extra values) -> (extra values, rows) uniforms for that column's bags.
BagUniforms = Callable[[int, int], np.ndarray]


def _bag_uniforms(seed: int, stream: tuple[int, ...], first_row: int, num_rows: int) -> BagUniforms:
    """The uniforms of the extra bag values of rows drawn from `stream`: one stream per column."""

    def column_uniforms(column: int, width: int) -> np.ndarray:
        return _row_uniforms(seed, (*stream, _BAG_STREAM, column), first_row, num_rows, width)

    return column_uniforms


def _split_missing(uniform: np.ndarray, missing_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Splits one uniform into a missing flag and a fresh uniform in [0, 1) for the value."""
    missing = uniform < missing_rate
    value_uniform = (uniform - missing_rate) / (1.0 - missing_rate)
    return missing, np.clip(value_uniform, 0.0, np.nextafter(1.0, 0.0))


def _zipf_ranks(uniform: np.ndarray, cardinality: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    """Inverse CDF of a power law on [1, N + 1), floored: a bounded Zipf law in closed form, so a column
    of millions of values costs what a column of ten does (no probability table, no search). Exponent 0
    is uniform over the N values; at exactly 1 the closed form is the log-uniform one."""
    if exponent == 1.0:
        ranks = np.floor((cardinality + 1.0) ** uniform) - 1.0
        return np.clip(ranks, 0, cardinality - 1).astype(np.int64)
    one_minus_s = 1.0 - exponent
    top = (cardinality + 1.0) ** one_minus_s
    ranks = np.floor((1.0 + uniform * (top - 1.0)) ** (1.0 / one_minus_s)) - 1.0
    return np.clip(ranks, 0, cardinality - 1).astype(np.int64)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixing 64-bit hash; numpy's uint64 arithmetic wraps, as the algorithm needs."""
    mixed = values + np.uint64(0x9E3779B97F4A7C15)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return mixed ^ (mixed >> np.uint64(31))


def _pair_normal(ranks_a: np.ndarray, ranks_b: np.ndarray, cardinality_b: int, key: int) -> np.ndarray:
    """A standard normal draw fixed by the (value a, value b) pair: hash, then Box-Muller on its halves.
    Hashing instead of a table keeps memory flat when both columns have millions of values."""
    joint = ranks_a.astype(np.uint64) * np.uint64(cardinality_b) + ranks_b.astype(np.uint64)
    bits = _splitmix64(joint ^ np.uint64(key))
    radius_uniform = ((bits >> np.uint64(32)).astype(np.float64) + 0.5) / 2**32
    angle_uniform = (bits & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2**32
    return np.sqrt(-2.0 * np.log(radius_uniform)) * np.cos(2.0 * np.pi * angle_uniform)


def _draw_features(
    model: _ClickModel, uniforms: np.ndarray, bag_uniforms: BagUniforms, as_text: bool = True
) -> tuple[list[pa.Array], np.ndarray]:
    """Turns rows of uniforms into the 39 feature columns and each row's logit without the bias.

    Args:
        model: vocabularies and planted effects.
        uniforms: (NUM_FIELDS, rows) from `_row_uniforms`; row 0 (the label's) is not used here.
        bag_uniforms: the uniforms of the values after the first of multi-hot bags (unused for one-hot).
        as_text: build the C1..C26 strings; without, only the logits are computed and only the columns
            they depend on are drawn (for the calibration: formatting or drawing a multi-hot sample's
            other bags would cost more than the rest).

    Returns:
        The I1..I13 (int64) and C1..C26 (string; multi-hot: comma-joined) arrays with nulls for
        missing, and the logits.
    """
    logits = np.zeros(uniforms.shape[1])
    dense_arrays = []
    dense_log1p = []
    for field, spec in enumerate(_DENSE_SPECS):
        missing, value_uniform = _split_missing(uniforms[1 + field], spec.missing_rate)
        scale = spec.median / (2.0 ** (1.0 / spec.tail_index) - 1.0)
        lomax = scale * ((1.0 - value_uniform) ** (-1.0 / spec.tail_index) - 1.0)
        values = np.minimum(np.floor(lomax), _DENSE_MAX).astype(np.int64) + spec.offset
        dense_arrays.append(pa.array(values, mask=missing))
        dense_log1p.append(np.where(missing, 0.0, np.log1p(np.maximum(values, 0))))
    missing_rates = dict(_SPARSE_MISSING_RATES)
    sparse_arrays = []
    sparse_ranks = []  # per column, [bag size, rows]
    sparse_missing = []
    logit_columns = model.logit_columns
    for column, cardinality in enumerate(model.cardinalities):
        if not as_text and column not in logit_columns:
            sparse_ranks.append(None)
            sparse_missing.append(None)
            continue
        uniform = uniforms[1 + len(_DENSE_SPECS) + column]
        missing, value_uniform = _split_missing(uniform, missing_rates.get(SPARSE_COLUMNS[column], 0.0))
        ranks = _zipf_ranks(value_uniform, cardinality, model.zipf_exponent)[None]
        size = model.multi_hot_sizes[column]
        if size > 1:
            extra_ranks = _zipf_ranks(bag_uniforms(column, size - 1), cardinality, model.zipf_exponent)
            ranks = np.concatenate([ranks, extra_ranks])
        if as_text:
            values = [
                model.vocabularies[column].take(pa.array(value_ranks, mask=missing)) for value_ranks in ranks
            ]
            sparse_arrays.append(values[0] if size == 1 else pc.binary_join_element_wise(*values, ","))
        sparse_ranks.append(ranks)
        sparse_missing.append(missing)

    # A bag's effect is the mean over its values (exactly the value's effect for one-hot).
    for column, effect_per_rank in model.value_effects:
        logits += np.where(sparse_missing[column], 0.0, effect_per_rank[sparse_ranks[column]].mean(axis=0))
    for pair, (column_a, column_b, scale, key) in enumerate(model.pair_effects):
        ranks_a, ranks_b = sparse_ranks[column_a], sparse_ranks[column_b]
        if model.pair_factors:
            factors_a, factors_b = model.pair_factors[pair]
            pair_sum = sum(
                np.einsum("rk,rk->r", factors_a[rank_a], factors_b[rank_b], dtype=np.float64)
                for rank_a in ranks_a
                for rank_b in ranks_b
            )
        else:
            pair_sum = sum(
                _pair_normal(rank_a, rank_b, model.cardinalities[column_b], key)
                for rank_a in ranks_a
                for rank_b in ranks_b
            )
        joint_effect = scale * (pair_sum / (len(ranks_a) * len(ranks_b)))
        either_missing = sparse_missing[column_a] | sparse_missing[column_b]
        logits += np.where(either_missing, 0.0, joint_effect)
    for field, weight in model.dense_effects:
        logits += weight * dense_log1p[field]
    return dense_arrays + sparse_arrays, logits


def _calibrate_bias(model: _ClickModel, seed: int) -> float:
    """Bisects for the bias that makes the mean click probability TARGET_POSITIVE_RATE on a sample."""
    uniforms = _row_uniforms(seed, (_CALIBRATION_STREAM,), 0, _CALIBRATION_ROWS)
    bag_uniforms = _bag_uniforms(seed, (_CALIBRATION_STREAM,), 0, _CALIBRATION_ROWS)
    _, logits = _draw_features(model, uniforms, bag_uniforms, as_text=False)
    low, high = -30.0, 30.0
    for _ in range(60):
        bias = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(bias + logits)))) < TARGET_POSITIVE_RATE:
            low = bias
        else:
            high = bias
    return (low + high) / 2


def _draw_rows(
    model: _ClickModel, seed: int, day: int, first_row: int, num_rows: int
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Returns (table in RAW_COLUMNS order, float32 click probabilities, int8 labels) for rows
    [first_row, first_row + num_rows) of one day."""
    uniforms = _row_uniforms(seed, (_ROW_STREAM, day), first_row, num_rows)
    bag_uniforms = _bag_uniforms(seed, (_ROW_STREAM, day), first_row, num_rows)
    features, logits = _draw_features(model, uniforms, bag_uniforms)
    probabilities = (1.0 / (1.0 + np.exp(-(model.bias + logits)))).astype(np.float32)
    # Drawn against the stored float32 value, so the sidecar is exactly the label's probability.
    labels = (uniforms[0] < probabilities).astype(np.int8)
    table = pa.Table.from_arrays([pa.array(labels), *features], names=list(RAW_COLUMNS))
    return table, probabilities, labels


def _write_day(
    model: _ClickModel,
    seed: int,
    day: int,
    rows_per_day: int,
    chunk_rows: int,
    *,
    day_path: Path,
    probability_path: Path,
    progress_bar: tqdm,
) -> tuple[float, float]:
    """Streams one day file and its probability sidecar to disk, chunk by chunk.

    Returns:
        The day's positive rate and oracle AUC (NaN when all its labels are equal). The AUC comes from
        label counts in `_AUC_BINS` probability buckets, so memory does not grow with `rows_per_day`; it
        agrees with the exact `oracle_auc` to about 1e-6.
    """
    schema = pa.schema(
        [pa.field(LABEL, pa.int8())]
        + [pa.field(name, pa.int64()) for name in DENSE_COLUMNS]
        + [pa.field(name, pa.string()) for name in SPARSE_COLUMNS]
    )
    write_options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    # mtime=0 keeps the gzip header free of a timestamp, so the same arguments give the same bytes;
    # level 1 compresses ~4x faster than the default 9 for a 13% larger file: this is test data.
    is_gzip = day_path.suffix == ".gz"
    sink = GzipFile(day_path, "wb", compresslevel=1, mtime=0) if is_gzip else pa.OSFile(str(day_path), "wb")
    probabilities = np.lib.format.open_memmap(
        probability_path, mode="w+", dtype=np.float32, shape=(rows_per_day,)
    )
    rows_per_bin = np.zeros(_AUC_BINS, dtype=np.int64)
    positives_per_bin = np.zeros(_AUC_BINS, dtype=np.int64)
    with sink, pa_csv.CSVWriter(sink, schema, write_options=write_options) as writer:
        for first_row in range(0, rows_per_day, chunk_rows):
            num_rows = min(chunk_rows, rows_per_day - first_row)
            table, chunk_probabilities, labels = _draw_rows(model, seed, day, first_row, num_rows)
            writer.write_table(table)
            probabilities[first_row : first_row + num_rows] = chunk_probabilities
            prob_bin = np.minimum((chunk_probabilities * _AUC_BINS).astype(np.int64), _AUC_BINS - 1)
            rows_per_bin += np.bincount(prob_bin, minlength=_AUC_BINS)
            positives_per_bin += np.bincount(prob_bin[labels == 1], minlength=_AUC_BINS)
            progress_bar.update(num_rows)
    probabilities.flush()
    num_positive = int(positives_per_bin.sum())
    if not 0 < num_positive < rows_per_day:
        return num_positive / rows_per_day, float("nan")
    return num_positive / rows_per_day, auc_from_counts(positives_per_bin, rows_per_bin - positives_per_bin)


def generate(
    out_dir: str | Path,
    *,
    days: int,
    rows_per_day: int,
    seed: int = 0,
    gzip: bool = False,
    cardinalities: Sequence[int] | None = None,
    multi_hot_sizes: Sequence[int] | None = None,
    signal: SignalKnobs | None = None,
    chunk_rows: int = 65536,
    progress: bool = True,
) -> SynthSummary:
    """Writes `days` synthetic Criteo day files, their probability sidecars and `synth.json`.

    Memory stays bounded by `chunk_rows` and the vocabularies, whatever `rows_per_day` is.

    Args:
        out_dir: directory to write into (created if missing; existing files of the same name are replaced).
        days: number of day files, `day_0 .. day_{days-1}`.
        rows_per_day: lines per day file.
        seed: fixes every byte written; the output does not depend on `chunk_rows`.
        gzip: write `day_i.gz` instead of plain `day_i`.
        cardinalities: vocabulary size of C1..C26 (default: `DEFAULT_CARDINALITIES`).
        multi_hot_sizes: values per present field of C1..C26, each in [1, MAX_MULTI_HOT_SIZE]
            (default: all 1, one-hot; `MLPERF_MULTI_HOT_SIZES` is MLPerf DLRMv2's).
        signal: popularity and the scale of each part of the planted logit (default: `SignalKnobs()`).
        chunk_rows: rows drawn and written at a time.
        progress: show a tqdm bar counting rows.

    Returns:
        The files written and each day's positive rate and oracle AUC (also in `synth.json`).
    """
    _check_at_least("days", days, 1)
    _check_at_least("rows_per_day", rows_per_day, 1)
    _check_at_least("seed", seed, 0)
    _check_at_least("chunk_rows", chunk_rows, 1)
    cardinalities = _check_cardinalities(
        "cardinalities", DEFAULT_CARDINALITIES if cardinalities is None else cardinalities
    )
    multi_hot_sizes = _check_multi_hot_sizes(
        "multi_hot_sizes", ONE_HOT_SIZES if multi_hot_sizes is None else multi_hot_sizes
    )
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    signal = DEFAULT_SIGNAL if signal is None else signal
    model = _build_click_model(seed, cardinalities, multi_hot_sizes, signal)
    day_names = [f"day_{day}.gz" if gzip else f"day_{day}" for day in range(days)]
    probability_names = [f"day_{day}.prob.npy" for day in range(days)]
    positive_rates, oracle_aucs = [], []
    with tqdm(total=days * rows_per_day, unit="rows", unit_scale=True, disable=not progress) as bar:
        for day in range(days):
            positive_rate, day_auc = _write_day(
                model,
                seed,
                day,
                rows_per_day,
                chunk_rows,
                day_path=out_dir / day_names[day],
                probability_path=out_dir / probability_names[day],
                progress_bar=bar,
            )
            positive_rates.append(positive_rate)
            oracle_aucs.append(day_auc)

    metadata = {
        "seed": seed,
        "days": days,
        "rows_per_day": rows_per_day,
        "gzip": gzip,
        "cardinalities": list(cardinalities),
        # Only multi-hot data names its sizes, so that one-hot output stays byte for byte what it was.
        **({"multi_hot_sizes": list(multi_hot_sizes)} if multi_hot_sizes != ONE_HOT_SIZES else {}),
        # Likewise the knobs: no "signal" key means `SignalKnobs()`, Zipf 1.1 and every factor 1.
        **({"signal": signal.to_json()} if not signal.is_default else {}),
        "files": day_names,
        "probability_files": probability_names,
        "target_positive_rate": TARGET_POSITIVE_RATE,
        "positive_rate": positive_rates,
        "oracle_auc": [None if np.isnan(day_auc) else day_auc for day_auc in oracle_aucs],
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return SynthSummary(
        out_dir=out_dir,
        day_files=tuple(out_dir / name for name in day_names),
        probability_files=tuple(out_dir / name for name in probability_names),
        rows_per_day=rows_per_day,
        positive_rates=tuple(positive_rates),
        oracle_aucs=tuple(oracle_aucs),
        seconds=time.perf_counter() - started,
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of `dlrm-prep synth`; `run_cli` checks their ranges and runs it."""
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="directory for day_0 .. day_{N-1}, their day_i.prob.npy true click probabilities and synth.json",
    )  # fmt: skip
    parser.add_argument(
        "--days", type=int, default=3, metavar="N", help="day files to write, >= 1 (default: 3)"
    )
    parser.add_argument(
        "--rows-per-day", type=int, default=100_000, metavar="R", help="lines per day, >= 1 (default: 100000)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="fixes every byte written, >= 0 (default: 0)"
    )
    parser.add_argument("--gzip", action="store_true", help="write day_i.gz instead of plain day_i")
    parser.add_argument(
        "--cardinalities", default=None, metavar="LIST|CAP",
        help=f"vocabulary sizes of C1..C26: {NUM_SPARSE} comma-separated ints in [1, 2**32], or one int that "
        f"caps Criteo Kaggle's sizes (default: {DEFAULT_CARDINALITY_CAP}, laptop-sized)",
    )  # fmt: skip
    parser.add_argument(
        "--multi-hot-sizes", default=None, metavar="LIST",
        help=f"values per present categorical field of C1..C26: {NUM_SPARSE} comma-separated ints in "
        f"[1, {MAX_MULTI_HOT_SIZE}], written comma-joined in the field, or `mlperf` for MLPerf DLRMv2's "
        "sizes (default: all 1, one-hot Criteo)",
    )  # fmt: skip
    parser.add_argument(
        "--chunk-rows", type=int, default=65536, metavar="ROWS",
        help="rows drawn and written at a time, >= 1: bounds memory, never changes the output (default: 65536)",
    )  # fmt: skip
    synth_signal.add_cli_arguments(parser)


def _parse_cardinalities(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--cardinalities: expected {NUM_SPARSE} comma-separated ints or one int, got {text!r}"
        ) from None
    if len(values) == 1:
        _check_at_least("--cardinalities", values[0], 1)
        return tuple(min(c, values[0]) for c in KAGGLE_CARDINALITIES)
    return _check_cardinalities("--cardinalities", values)


def _parse_multi_hot_sizes(text: str) -> tuple[int, ...]:
    if text == "mlperf":
        return MLPERF_MULTI_HOT_SIZES
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--multi-hot-sizes: expected {NUM_SPARSE} comma-separated ints or `mlperf`, got {text!r}"
        ) from None
    return _check_multi_hot_sizes("--multi-hot-sizes", sizes)


def run_cli(args: argparse.Namespace) -> int:
    """Checks the flags of `add_cli_arguments`, generates the data and prints what was written.

    Args:
        args: parsed flags (not modified).

    Returns:
        The process exit code, 0.
    """
    _check_at_least("--days", args.days, 1)
    _check_at_least("--rows-per-day", args.rows_per_day, 1)
    _check_at_least("--seed", args.seed, 0)
    _check_at_least("--chunk-rows", args.chunk_rows, 1)
    signal = synth_signal.from_cli_arguments(args)
    cardinalities = None if args.cardinalities is None else _parse_cardinalities(args.cardinalities)
    sizes = None if args.multi_hot_sizes is None else _parse_multi_hot_sizes(args.multi_hot_sizes)
    summary = generate(
        args.out,
        days=args.days,
        rows_per_day=args.rows_per_day,
        seed=args.seed,
        gzip=args.gzip,
        cardinalities=cardinalities,
        multi_hot_sizes=sizes,
        signal=signal,
        chunk_rows=args.chunk_rows,
    )
    print(
        f"wrote {summary.day_files[0].name} .. {summary.day_files[-1].name} ({summary.rows_per_day:,} rows each), "
        f"their .prob.npy sidecars and {METADATA_FILE} to {summary.out_dir} "
        f"in {summary.seconds:.1f} s ({summary.rows_per_second:,.0f} rows/s)"
    )
    for day_file, positive_rate, day_auc in zip(
        summary.day_files, summary.positive_rates, summary.oracle_aucs, strict=True
    ):
        print(f"  {day_file.name}: positive rate {positive_rate:.3f}, oracle AUC {day_auc:.4f}")
    return 0
