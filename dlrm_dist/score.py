"""`dlrm-score`: an exported model scores a split of prepared data in one process, rows in split order.

    dlrm-score --model DIR --data PREPARED --split test --out PRED.parquet [--device auto|cpu|cuda]

The output has `label` (the split's labels) and `prediction` (the click probability, float64) per row,
in the order of the split's shards and rows. It computes the model the way the trainer's evaluation
does (the run's precision, the same batches of `dlrm_dist.data.iter_eval_batches` with one rank), so
the AUC of these predictions is the run's test AUC in metrics.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchmetrics.functional.classification import binary_auroc

from data_prep.schema import SPLITS
from dlrm_dist.data import iter_eval_batches, list_row_groups, read_manifest
from dlrm_dist.export import load_exported
from dlrm_dist.models.train_module import CTRTrainModule
from dlrm_dist.precision import autocast_dtype

BATCH_SIZE = 4096


@torch.no_grad()
def score_split(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str,
    device: torch.device,
    batch_size: int = BATCH_SIZE,
) -> pa.Table:
    """Scores every row of one split with an exported model.

    Args:
        model_dir: a directory written by `dlrm-export`.
        data_dir: prepared data with the model's feature schema.
        split: train, val or test.
        device: where the model runs (the whole model, tables included).
        batch_size: rows per forward.

    Returns:
        A table of `label` (float32) and `prediction` (float64 probability), one row per split row.
    """
    cfg, features, net = load_exported(model_dir, device)
    manifest = read_manifest(data_dir)
    groups = list_row_groups(data_dir, manifest, split)
    model = CTRTrainModule(net, autocast_dtype(cfg.training.precision, device.type), device.type).eval()
    logit_parts, label_parts = [], []
    for batch, valid in iter_eval_batches(groups, 0, 1, batch_size, features=features):
        _, (_, logits, labels) = model(batch.to(device))
        logit_parts.append(logits[:valid].double().cpu())
        label_parts.append(labels[:valid].float().cpu())
    logits = torch.cat(logit_parts) if logit_parts else torch.zeros(0, dtype=torch.float64)
    labels = torch.cat(label_parts) if label_parts else torch.zeros(0)
    # The sigmoid in float64, as the trainer's AUC takes it: float32 would tie the most confident rows.
    return pa.table({"label": labels.numpy(), "prediction": torch.sigmoid(logits).numpy()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dlrm-score", description="Score a split of prepared data with a model from dlrm-export."
    )
    parser.add_argument("--model", required=True, help="model directory written by dlrm-export")
    parser.add_argument("--data", required=True, help="prepared data directory (dlrm-prep)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="which split to score")
    parser.add_argument("--out", required=True, help="Parquet file to write (label, prediction)")
    parser.add_argument("--device", default="auto", help="auto (one GPU when available), cpu or cuda")
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu", "cuda"):
        parser.error(f"--device: {args.device!r} is not one of auto, cpu, cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        table = score_split(args.model, args.data, args.split, device)
        pq.write_table(table, args.out)
    except ValueError as error:
        print(f"dlrm-score: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"dlrm-score: error: --out {args.out}: cannot write ({error})", file=sys.stderr)
        return 2
    predictions = torch.tensor(table.column("prediction").to_numpy())
    labels = torch.tensor(table.column("label").to_numpy()).long()
    auc = float(binary_auroc(predictions, labels, thresholds=None)) if len(labels) else float("nan")
    print(f"dlrm-score: {table.num_rows:,} rows of {args.split} on {device} -> {args.out}: AUC {auc:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
