"""Tests of `dlrm-prep synth`'s signal knobs: popularity, the parts of the planted logit and their scales."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from data_prep.oracle import oracle_auc
from data_prep.schema import NUM_DENSE, SPARSE_COLUMNS
from data_prep.synth import add_cli_arguments, generate, run_cli
from data_prep.synth_signal import SignalKnobs

ROWS = 6000
SMALL_TABLES = [20] * len(SPARSE_COLUMNS)
VALUE_EFFECT_COLUMNS = ("C1", "C2", "C3", "C6", "C9", "C13", "C14", "C17", "C23", "C24")


def _write(tmp_path, name, signal, rows=ROWS, cardinalities=SMALL_TABLES, **kwargs):
    out = tmp_path / name
    generate(out, days=1, rows_per_day=rows, seed=3, cardinalities=cardinalities, signal=signal, progress=False,
             **kwargs)  # fmt: skip
    return out


def _sparse_column(day_dir, name):
    field = 1 + NUM_DENSE + SPARSE_COLUMNS.index(name)
    return [line.split("\t")[field] for line in (day_dir / "day_0").read_text().splitlines()]


def _logits(day_dir):
    probabilities = np.load(day_dir / "day_0.prob.npy").astype(np.float64)
    return np.log(probabilities / (1.0 - probabilities))


def _additive_fit_residual(day_dir):
    """Root mean square residual of the logit after the best fit by a sum of one term per value of the
    per-value-effect columns (missing is a value of its own): 0 when the logit holds no crosses."""
    columns = [_sparse_column(day_dir, name) for name in VALUE_EFFECT_COLUMNS]
    indicators = [np.ones(ROWS)]
    for values in columns:
        for value in sorted(set(values)):
            indicators.append(np.array([v == value for v in values], dtype=np.float64))
    design = np.stack(indicators, axis=1)
    logits = _logits(day_dir)
    coefficients, *_ = np.linalg.lstsq(design, logits, rcond=None)
    return float(np.sqrt(np.mean((design @ coefficients - logits) ** 2)))


def test_uniform_popularity_gives_near_uniform_value_counts(tmp_path):
    uniform = Counter(_sparse_column(_write(tmp_path, "uniform", SignalKnobs(zipf_exponent=0.0)), "C1"))
    heavy = Counter(_sparse_column(_write(tmp_path, "heavy", SignalKnobs(zipf_exponent=2.0)), "C1"))
    assert len(uniform) == 20
    expected = ROWS / 20
    assert all(abs(count - expected) < 0.2 * expected for count in uniform.values()), uniform
    assert max(heavy.values()) > 0.5 * ROWS, "at exponent 2 the top value takes most rows"


def test_exponent_one_is_the_limit_of_its_neighbours(tmp_path):
    """Exactly 1 takes the log-uniform branch of the closed form; it must agree with 1 +- epsilon."""
    counts = [
        sorted(Counter(_sparse_column(_write(tmp_path, str(x), SignalKnobs(zipf_exponent=x)), "C1")).values())
        for x in (1.0 - 1e-6, 1.0, 1.0 + 1e-6)
    ]
    assert np.abs(np.subtract(counts[1], counts[0])).max() <= 2
    assert np.abs(np.subtract(counts[1], counts[2])).max() <= 2


def test_zero_pair_effects_leave_only_marginal_signal(tmp_path):
    marginal_only = _write(tmp_path, "marginal", SignalKnobs(pair_effects=0.0, dense_effects=0.0))
    with_pairs = _write(tmp_path, "pairs", SignalKnobs(dense_effects=0.0))
    # float32 probabilities bound the exact fit's residual; the crosses leave a residual 100x that.
    assert _additive_fit_residual(marginal_only) < 1e-4
    assert _additive_fit_residual(with_pairs) > 0.05


def test_oracle_auc_grows_with_signal_strength_at_a_quarter_positive(tmp_path):
    aucs = []
    for strength in (0.25, 1.0, 3.0):
        out = _write(tmp_path, f"s{strength}", SignalKnobs(signal_strength=strength))
        metadata = json.loads((out / "synth.json").read_text())
        assert metadata["positive_rate"][0] == pytest.approx(0.25, abs=0.03)
        aucs.append(oracle_auc(out, day=0))
    assert aucs[0] + 0.05 < aucs[1] < aucs[2] - 0.03, aucs


def test_no_signal_gives_constant_probabilities(tmp_path):
    out = _write(tmp_path, "flat", SignalKnobs(signal_strength=0.0))
    probabilities = np.load(out / "day_0.prob.npy")
    assert np.ptp(probabilities) == 0.0
    assert probabilities[0] == pytest.approx(0.25, abs=1e-6)


def test_latent_pairs_are_chunk_independent_learnable_and_recorded(tmp_path):
    knobs = SignalKnobs(pair_rank=4, value_effects=0.0, dense_effects=0.0, pair_effects=2.0)
    whole = _write(tmp_path, "whole", knobs, multi_hot_sizes=[2] * len(SPARSE_COLUMNS))
    chunked = _write(tmp_path, "chunked", knobs, multi_hot_sizes=[2] * len(SPARSE_COLUMNS), chunk_rows=777)
    for name in ("day_0", "day_0.prob.npy", "synth.json"):
        assert (whole / name).read_bytes() == (chunked / name).read_bytes(), name
    hashed = _write(tmp_path, "hashed", SignalKnobs(value_effects=0.0, dense_effects=0.0, pair_effects=2.0))
    assert not np.array_equal(np.load(whole / "day_0.prob.npy"), np.load(hashed / "day_0.prob.npy"))
    assert oracle_auc(whole, day=0) > 0.65
    assert json.loads((whole / "synth.json").read_text())["signal"] == knobs.to_json()


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--zipf-exponent", "-0.5"),
        ("--zipf-exponent", "5"),
        ("--value-effects", "-1"),
        ("--pair-effects", "1000"),
        ("--dense-effects", "-0.1"),
        ("--signal-strength", "-2"),
        ("--pair-rank", "65"),
    ],
)
def test_cli_rejects_bad_knobs_naming_the_flag(tmp_path, flag, value):
    with pytest.raises(ValueError, match=flag):
        run_cli(_parse(["--out", str(tmp_path / "out"), flag, value]))
    assert not (tmp_path / "out").exists()


def test_cli_knobs_reach_synth_json(tmp_path):
    argv = ["--out", str(tmp_path), "--days", "1", "--rows-per-day", "500", "--cardinalities", "30",
            "--zipf-exponent", "0", "--pair-effects", "3", "--signal-strength", "1.5", "--pair-rank", "2"]  # fmt: skip
    assert run_cli(_parse(argv)) == 0
    signal = json.loads((tmp_path / "synth.json").read_text())["signal"]
    assert signal == {"zipf_exponent": 0.0, "value_effects": 1.0, "pair_effects": 3.0, "dense_effects": 1.0,
                      "signal_strength": 1.5, "pair_rank": 2}  # fmt: skip
