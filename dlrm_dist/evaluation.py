"""Exact evaluation over all ranks: every row of a split once, AUC and logloss of the whole split.

Each rank scores its share of the split (see `dlrm_dist.data.iter_eval_batches`); the scores, labels
and a validity mask are all-gathered (every rank holds the same number of equally sized batches, so
plain `all_gather` fits) and the metrics are computed on the concatenation, the same way on every
rank. AUC is exact (torchmetrics' thresholds=None path), not a bucketed approximation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc

from data_prep.features import FeatureSchema
from dlrm_dist.data import Prefetcher, RowGroup, iter_eval_batches
from dlrm_dist.distributed import DistContext


def gather_predictions(
    logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gathers equally sized per-rank tensors and keeps the valid rows, in rank order."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts = []
        for tensor in (logits, labels, valid):
            gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, tensor)
            parts.append(torch.cat(gathered))
        logits, labels, valid = parts
    return logits[valid], labels[valid]


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """AUC and mean logloss of logits against 0/1 labels."""
    logits, labels = logits.double(), labels.double()
    if labels.numel() == 0:
        return {"auc": float("nan"), "logloss": float("nan"), "rows": 0}
    return {
        "auc": float(binary_auroc(torch.sigmoid(logits), labels.long(), thresholds=None)),
        "logloss": float(F.binary_cross_entropy_with_logits(logits, labels)),
        "rows": int(labels.numel()),
    }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    groups: list[RowGroup],
    ctx: DistContext,
    batch_size: int,
    max_rows: int = 0,
    prefetch: int = 4,
    *,
    features: FeatureSchema,
) -> dict[str, float]:
    """Scores a split with the sharded model and returns its exact AUC, logloss and row count.

    Args:
        model: the sharded train module; `model(batch)` returns (loss, (loss, logits, labels)).
        groups: the split's row groups.
        ctx: this rank's distributed context.
        batch_size: rows per batch on each rank.
        max_rows: only the split's first rows (0: all).
        prefetch: batches read ahead in the background.
        features: the data set's schema (`FeatureSchema.from_manifest`).
    """
    was_training = model.training
    model.eval()
    logits_parts, label_parts, valid_parts = [], [], []
    batches = Prefetcher(
        iter_eval_batches(groups, ctx.rank, ctx.world_size, batch_size, max_rows, features=features), prefetch
    )
    try:
        for batch, valid_rows in batches:
            _, (_, logits, labels) = model(batch.to(ctx.device, non_blocking=True))
            mask = torch.zeros(batch_size, dtype=torch.bool, device=ctx.device)
            mask[:valid_rows] = True
            logits_parts.append(logits.float().reshape(-1))
            label_parts.append(labels.float().reshape(-1))
            valid_parts.append(mask)
    finally:
        batches.close()
        model.train(was_training)
    empty = torch.zeros(0, device=ctx.device)
    logits, labels = gather_predictions(
        torch.cat(logits_parts) if logits_parts else empty,
        torch.cat(label_parts) if label_parts else empty,
        torch.cat(valid_parts) if valid_parts else empty.bool(),
    )
    return binary_metrics(logits.cpu(), labels.cpu())
