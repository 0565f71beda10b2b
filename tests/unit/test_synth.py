"""Tests of `data_prep.synth`: the Criteo TSV layout, determinism, the planted signal and the CLI checks."""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import re

import numpy as np
import pytest

from data_prep.oracle import auc, oracle_auc
from data_prep.schema import KAGGLE_CARDINALITIES, NUM_DENSE, NUM_FIELDS
from data_prep.synth import add_cli_arguments, generate, run_cli

ROWS_PER_DAY = 20_000
HEX8 = re.compile(r"[0-9a-f]{8}")
INTEGER = re.compile(r"-?[0-9]+")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    """Two plain-text days written with the default cardinalities, shared by the read-only tests."""
    out_dir = tmp_path_factory.mktemp("synth")
    generate(out_dir, days=2, rows_per_day=ROWS_PER_DAY, seed=7, progress=False)
    return out_dir


def _labels(day_path):
    with open(day_path, "rb") as day_file:
        return np.array([int(line.split(b"\t", 1)[0]) for line in day_file], dtype=np.int8)


def test_every_line_has_the_criteo_layout(synth_dir):
    text = (synth_dir / "day_0").read_bytes().decode("ascii")
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    assert len(lines) == ROWS_PER_DAY
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == NUM_FIELDS
        assert fields[0] in ("0", "1")
        assert all(value == "" or INTEGER.fullmatch(value) for value in fields[1 : 1 + NUM_DENSE])
        assert all(value == "" or HEX8.fullmatch(value) for value in fields[1 + NUM_DENSE :])


def test_columns_are_missing_and_negative_like_criteo(synth_dir):
    rows = [line.split("\t") for line in (synth_dir / "day_0").read_text().splitlines()]
    missing_rate = {
        name: np.mean([row[i] == "" for row in rows]) for name, i in (("I1", 1), ("I12", 12), ("C22", 35))
    }
    assert missing_rate["I1"] == pytest.approx(0.45, abs=0.02)
    assert missing_rate["I12"] == pytest.approx(0.77, abs=0.02)
    assert missing_rate["C22"] == pytest.approx(0.82, abs=0.02)
    assert min(int(row[2]) for row in rows) < 0  # I2 has Criteo's -1/-2 values


def test_same_seed_gives_same_bytes_whatever_the_chunking(synth_dir, tmp_path):
    generate(tmp_path / "again", days=2, rows_per_day=ROWS_PER_DAY, seed=7, chunk_rows=999, progress=False)
    for name in ("day_0", "day_1", "day_0.prob.npy", "day_1.prob.npy", "synth.json"):
        assert (tmp_path / "again" / name).read_bytes() == (synth_dir / name).read_bytes(), name


def test_different_seed_gives_different_data(synth_dir, tmp_path):
    generate(tmp_path, days=1, rows_per_day=ROWS_PER_DAY, seed=8, progress=False)
    assert (tmp_path / "day_0").read_bytes() != (synth_dir / "day_0").read_bytes()


def test_gzip_output_decompresses_to_the_plain_output(synth_dir, tmp_path):
    summary = generate(tmp_path, days=2, rows_per_day=ROWS_PER_DAY, seed=7, gzip=True, progress=False)
    assert [path.name for path in summary.day_files] == ["day_0.gz", "day_1.gz"]
    with gzip.open(tmp_path / "day_1.gz", "rb") as day_file:
        assert day_file.read() == (synth_dir / "day_1").read_bytes()
    assert oracle_auc(tmp_path, day=1) == oracle_auc(synth_dir, day=1)


def test_positive_rate_is_near_a_quarter_and_matches_the_file(synth_dir):
    metadata = json.loads((synth_dir / "synth.json").read_text())
    for day in range(2):
        labels = _labels(synth_dir / f"day_{day}")
        assert labels.mean() == pytest.approx(0.25, abs=0.02)
        assert metadata["positive_rate"][day] == pytest.approx(labels.mean())


def test_probability_sidecar_has_one_entry_per_line(synth_dir):
    probabilities = np.load(synth_dir / "day_0.prob.npy")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (ROWS_PER_DAY,)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_oracle_auc_shows_a_learnable_signal(synth_dir):
    metadata = json.loads((synth_dir / "synth.json").read_text())
    day_auc = oracle_auc(synth_dir, day=0)
    assert 0.75 < day_auc < 0.9
    assert metadata["oracle_auc"][0] == pytest.approx(day_auc, abs=1e-4)  # streamed, binned by probability


def test_oracle_auc_of_a_line_range_uses_those_lines(synth_dir):
    probabilities = np.load(synth_dir / "day_1.prob.npy")
    labels = _labels(synth_dir / "day_1")
    expected = auc(probabilities[5_000:12_000], labels[5_000:12_000])
    assert oracle_auc(synth_dir, day=1, start=5_000, stop=12_000) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="stop"):
        oracle_auc(synth_dir, day=1, start=0, stop=ROWS_PER_DAY + 1)


def test_auc_matches_brute_force_pairs_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=60).astype(np.float64)  # few distinct scores: many ties
    labels = rng.integers(0, 2, size=60)
    positive_scores, negative_scores = scores[labels == 1], scores[labels == 0]
    wins = sum(
        1.0 if pos > neg else 0.5 if pos == neg else 0.0
        for pos, neg in itertools.product(positive_scores, negative_scores)
    )
    assert auc(scores, labels) == pytest.approx(
        wins / (len(positive_scores) * len(negative_scores)), abs=1e-12
    )


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--days", "0"),
        ("--rows-per-day", "0"),
        ("--seed", "-1"),
        ("--chunk-rows", "0"),
        ("--cardinalities", "10,20"),
        ("--cardinalities", "0"),
        ("--cardinalities", "many"),
    ],
)
def test_cli_rejects_bad_values_naming_the_flag(tmp_path, flag, value):
    args = _parse(["--out", str(tmp_path / "out"), flag, value])
    with pytest.raises(ValueError, match=flag):
        run_cli(args)
    assert not (tmp_path / "out").exists()  # rejected before any file is written


def test_cli_caps_cardinalities_and_prints_the_oracle_auc(tmp_path, capsys):
    args = _parse(["--out", str(tmp_path), "--days", "1", "--rows-per-day", "2000", "--cardinalities", "50"])
    assert run_cli(args) == 0
    metadata = json.loads((tmp_path / "synth.json").read_text())
    assert metadata["cardinalities"] == [min(size, 50) for size in KAGGLE_CARDINALITIES]
    assert "oracle AUC" in capsys.readouterr().out
