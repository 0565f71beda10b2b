"""The planted click model of `data_prep.synth` and the drawing of its rows, chunk by chunk.

`data_prep.synth` writes files; this module decides what is in them. `_build_click_model` draws the
seed-determined parts once (vocabularies, per-value and pair effects, the bias calibrated to
`TARGET_POSITIVE_RATE`); `_draw_rows` turns any row range of a day into a table, its true click
probabilities and its labels, with the same bytes whatever the range's start and length.

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

Multi-hot (`multi_hot_sizes`): a present field of column f holds exactly size_f values joined by commas
(the TSV convention of `data_prep.parse`); a missing field stays empty, an empty bag. The first value is
the one-hot draw above; the other size_f - 1 come from the same Zipf law, drawn from a stream of their own
per column (keyed by seed, day and column, counter from the row index as above), so the one-hot values,
and with all sizes 1 every byte, are unchanged. Values may repeat within a bag. In the planted model a
bag's effect is the mean of its values' effects, and a pair's joint effect the mean over every (value a,
value b) pair of the two bags: a mean-pooled embedding can represent exactly that, a sum-pooled one up to
the bag size, which is fixed per column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep import synth_signal
from data_prep.schema import DENSE_COLUMNS, NUM_FIELDS, NUM_SPARSE, RAW_COLUMNS, SPARSE_COLUMNS
from data_prep.synth_signal import DEFAULT_SIGNAL, SignalKnobs

MAX_CARDINALITY = 2**32  # vocabularies are distinct 32-bit values
TARGET_POSITIVE_RATE = 0.25
ZIPF_EXPONENT = synth_signal.DEFAULT_ZIPF_EXPONENT
ONE_HOT_SIZES: tuple[int, ...] = (1,) * NUM_SPARSE


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
