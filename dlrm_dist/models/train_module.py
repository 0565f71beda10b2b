"""`CTRTrainModule`: any registry model plus its loss, in the shape TorchRec's train pipelines expect.

`TrainPipelineSparseDist` calls `model(batch)` and wants `(loss, outputs)` back; this mirrors TorchRec's
`torchrec.models.dlrm.DLRMTrain` so that the pipeline, DistributedModelParallel and the metrics can treat
every model family alike.

Shapes: B is the per-rank batch size; logits and labels are [B].
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.datasets.utils import Batch

from dlrm_dist.precision import autocast


class CTRTrainModule(nn.Module):
    """Wraps a CTR model with a mean binary cross-entropy on logits.

    Args:
        model: `(dense_features [B, num_dense], sparse_features KJT) -> logits [B]`, e.g. from `build_model`.
        autocast_dtype: run the model's forward under autocast in this dtype (None: fp32); the logits
            are cast to fp32 before the loss either way (`dlrm_dist.precision`).
        device_type: where the model runs, "cpu" or "cuda" (autocast is per device type).

    Example::

        train_module = CTRTrainModule(build_model(ModelConfig(), num_embeddings))
        loss, (loss_detached, logits, labels) = train_module(batch)
    """

    def __init__(
        self, model: nn.Module, autocast_dtype: torch.dtype | None = None, device_type: str = "cpu"
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn: nn.Module = nn.BCEWithLogitsLoss()
        self.autocast_dtype = autocast_dtype
        self.device_type = device_type

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """
        Args:
            batch: dense_features [B, num_dense] float32, sparse_features KJT, labels [B] float32.

        Returns:
            `(loss, (loss.detach(), logits.detach(), labels.detach()))`; the loss is the mean over the
            rank's B samples (DDP then averages the dense gradients over ranks).
        """
        with autocast(self.autocast_dtype, self.device_type):
            logits = self.model(batch.dense_features, batch.sparse_features)
        logits = logits.float()
        loss = self.loss_fn(logits, batch.labels.float())
        return loss, (loss.detach(), logits.detach(), batch.labels.detach())
