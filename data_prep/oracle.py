"""Exact AUC and the oracle AUC of synthetic data: the ceiling a trained model can approach.

`data_prep.synth` writes each row's true click probability beside the day files; `oracle_auc` scores those
probabilities against the drawn labels of any line range (for example a val or test split), so a model's
AUC can be printed next to the best one possible. Pure numpy and pyarrow: no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from data_prep.schema import LABEL, RAW_COLUMNS

METADATA_FILE = "synth.json"


def auc_from_counts(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Mann-Whitney AUC from per-bucket label counts, buckets in ascending score order; a bucket's rows
    share the average of the ranks they span, which is how ties count one half."""
    num_positive, num_negative = positives.sum(), negatives.sum()
    if num_positive == 0 or num_negative == 0:
        raise ValueError("labels: AUC needs both positive and negative labels")
    counts = (positives + negatives).astype(np.float64)
    average_ranks = np.cumsum(counts) - (counts - 1.0) / 2.0
    positive_rank_sum = float(np.dot(positives.astype(np.float64), average_ranks))
    u_statistic = positive_rank_sum - num_positive * (num_positive + 1.0) / 2.0
    return float(u_statistic / (float(num_positive) * float(num_negative)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC: the rank-sum (Mann-Whitney) statistic, tied scores sharing their average rank.

    Args:
        scores: one score per example; higher means more likely positive.
        labels: 0/1 per example, same length as `scores`.

    Returns:
        The probability that a random positive outscores a random negative (ties count one half).
    """
    scores, labels = np.asarray(scores).ravel(), np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"labels: expected {scores.size} labels (one per score), got {labels.size}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels: must all be 0 or 1")
    _, score_bucket = np.unique(scores, return_inverse=True)
    positives = np.bincount(score_bucket, weights=labels).astype(np.int64)
    negatives = np.bincount(score_bucket).astype(np.int64) - positives
    return auc_from_counts(positives, negatives)


def _read_labels(day_path: Path, start: int, stop: int) -> np.ndarray:
    """Reads the label field of lines [start, stop) of a day file, streaming (gz aware)."""
    reader = pa_csv.open_csv(
        str(day_path),
        read_options=pa_csv.ReadOptions(column_names=list(RAW_COLUMNS)),
        parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pa_csv.ConvertOptions(include_columns=[LABEL], column_types={LABEL: pa.int8()}),
    )
    # Arrow can only skip lines that fit in its first block, so the lines before `start` are read too.
    label_parts, first_line = [], 0
    for batch in reader:
        batch_labels = batch.column(0).to_numpy()
        label_parts.append(batch_labels[max(start - first_line, 0) : max(stop - first_line, 0)])
        first_line += batch.num_rows
        if first_line >= stop:
            break
    labels = np.concatenate([np.zeros(0, dtype=np.int8), *label_parts])
    if labels.size != stop - start:
        raise ValueError(f"{day_path}: expected at least {stop} lines, found {first_line}")
    return labels


def oracle_auc(synth_dir: str | Path, day: int, start: int = 0, stop: int | None = None) -> float:
    """AUC of the true click probabilities against the drawn labels: the best a model can score there.

    Args:
        synth_dir: a directory written by `generate` (holds `synth.json`).
        day: which day file.
        start: first line (0-based) of the range.
        stop: one past the last line; None means the end of the day.

    Returns:
        The exact AUC over lines [start, stop) of `day`.
    """
    synth_dir = Path(synth_dir)
    metadata = json.loads((synth_dir / METADATA_FILE).read_text())
    rows_per_day = metadata["rows_per_day"]
    stop = rows_per_day if stop is None else stop
    if not 0 <= day < metadata["days"]:
        raise ValueError(f"day: must be in [0, {metadata['days']}), got {day}")
    if not 0 <= start < stop <= rows_per_day:
        raise ValueError(f"start, stop: need 0 <= start < stop <= {rows_per_day}, got {start}, {stop}")
    probabilities = np.load(synth_dir / metadata["probability_files"][day], mmap_mode="r")[start:stop]
    labels = _read_labels(synth_dir / metadata["files"][day], start, stop)
    return auc(probabilities, labels)


def oracle_split_aucs(synth_dir: str | Path) -> dict[str, float]:
    """Oracle AUC of the val and test splits that `dlrm-prep criteo --layout terabyte` makes of synthetic days.

    The last day is the eval day: its first half (by line) is val, its second half test.

    Args:
        synth_dir: a directory written by `generate`.

    Returns:
        `{"val": auc, "test": auc}`.
    """
    metadata = json.loads((Path(synth_dir) / METADATA_FILE).read_text())
    last_day, half = metadata["days"] - 1, metadata["rows_per_day"] // 2
    return {
        "val": oracle_auc(synth_dir, day=last_day, stop=half),
        "test": oracle_auc(synth_dir, day=last_day, start=half),
    }
