"""A plain PyTorch DLRM, written by hand in one process: the baseline the trainer is measured against.

This is what people write when they do not use TorchRec: one `nn.EmbeddingBag` per sparse feature, the
bottom MLP, DLRM's pairwise dot interaction, the top MLP, a BCE loss, the whole split loaded into memory
as tensors once (pyarrow -> numpy -> torch), and a loop with one ordinary torch optimizer that updates the
tables and the MLPs alike. `benchmarks/train_throughput.py` imports it (the first recipe sweep did too);
run alone it trains on a prepared directory and prints the same metrics as `dlrm-train`'s metrics.json:

    .venv/bin/python benchmarks/plain_dlrm.py --data DIR [--optimizer adagrad] [--lr 0.02] [--sparse]

Shapes used below:

    B: batch size
    F: number of sparse features (26: C1..C26)
    D: embedding dimension, also the bottom MLP's last width

    dense [B, 13] -> bottom MLP -> [B, D];  ids [B, F] -> F EmbeddingBags -> [B, F, D]
    interaction: dot products of the F + 1 vectors, upper triangle without the diagonal -> [B, F(F+1)/2]
    top MLP on [B, D + F(F+1)/2] -> logits [B]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from data_prep.oracle import auc
from data_prep.schema import DENSE_COLUMNS, LABEL, SPARSE_COLUMNS


@dataclass(frozen=True)
class InMemorySplit:
    """One split of a prepared directory, as tensors: dense [N, 13] float32, ids [N, 26] int64, labels [N]."""

    dense_features: torch.Tensor
    sparse_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.labels.numel())


def load_split(data_dir: str | Path, split: str, max_rows: int = 0) -> InMemorySplit:
    """Reads a split's Parquet shards (in manifest order) into memory once.

    Args:
        data_dir: a directory written by `dlrm-prep criteo`.
        split: train, val or test.
        max_rows: keep only the first rows (0: all).

    Returns:
        The split as tensors.
    """
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    tables = [pq.read_table(Path(data_dir) / entry["path"]) for entry in manifest["splits"][split]["files"]]
    dense_parts, sparse_parts, label_parts = [], [], []
    for table in tables:
        dense_parts.append(np.stack([table.column(name).to_numpy() for name in DENSE_COLUMNS], axis=1))
        sparse_parts.append(np.stack([table.column(name).to_numpy() for name in SPARSE_COLUMNS], axis=1))
        label_parts.append(table.column(LABEL).to_numpy())
    keep = slice(0, max_rows or None)
    return InMemorySplit(
        dense_features=torch.from_numpy(np.concatenate(dense_parts)[keep].astype(np.float32)),
        sparse_ids=torch.from_numpy(np.concatenate(sparse_parts)[keep].astype(np.int64)),
        labels=torch.from_numpy(np.concatenate(label_parts)[keep].astype(np.float32)),
    )


def table_sizes(data_dir: str | Path) -> list[int]:
    """The 26 table sizes the prepared data needs (manifest.json's `num_embeddings`)."""
    return [
        int(size) for size in json.loads((Path(data_dir) / "manifest.json").read_text())["num_embeddings"]
    ]


def mlp(in_features: int, sizes: Sequence[int], relu_last: bool) -> nn.Sequential:
    """Linear layers of `sizes` with ReLU between them (and after the last one if `relu_last`)."""
    layers: list[nn.Module] = []
    for index, size in enumerate(sizes):
        layers.append(nn.Linear(in_features, size))
        if relu_last or index < len(sizes) - 1:
            layers.append(nn.ReLU())
        in_features = size
    return nn.Sequential(*layers)


class PlainDLRM(nn.Module):
    """DLRM with `nn.EmbeddingBag` tables and a hand-written dot interaction.

    Args:
        num_embeddings: rows of each of the F tables.
        embedding_dim: D.
        bottom_mlp: bottom MLP sizes; the last must be D.
        top_mlp: top MLP sizes; the last must be 1.
        sparse: whether the tables produce sparse gradients (only Adagrad and SGD accept them).

    Example::

        model = PlainDLRM([100] * 26, 16, [64, 16], [64, 1])
        logits = model(torch.rand(4, 13), torch.randint(0, 100, (4, 26)))  # shape (4,)
    """

    def __init__(
        self,
        num_embeddings: Sequence[int],
        embedding_dim: int,
        bottom_mlp: Sequence[int],
        top_mlp: Sequence[int],
        sparse: bool = False,
    ) -> None:
        super().__init__()
        if bottom_mlp[-1] != embedding_dim or top_mlp[-1] != 1:
            raise ValueError(
                f"bottom_mlp must end in embedding_dim ({embedding_dim}) and top_mlp in 1, "
                f"got {list(bottom_mlp)} and {list(top_mlp)}"
            )
        self.embedding_bags = nn.ModuleList(
            nn.EmbeddingBag(rows, embedding_dim, mode="sum", sparse=sparse) for rows in num_embeddings
        )
        for bag in self.embedding_bags:
            # DLRM's and TorchRec's init, uniform(+-sqrt(1/rows)), rather than EmbeddingBag's N(0, 1),
            # which starts the dot products far too large.
            bound = math.sqrt(1.0 / bag.num_embeddings)
            nn.init.uniform_(bag.weight, -bound, bound)
        self.bottom_mlp = mlp(len(DENSE_COLUMNS), bottom_mlp, relu_last=True)
        num_vectors = len(num_embeddings) + 1
        self.top_mlp = mlp(embedding_dim + num_vectors * (num_vectors - 1) // 2, top_mlp, relu_last=False)
        rows, cols = torch.triu_indices(num_vectors, num_vectors, offset=1)
        self.register_buffer("triu_rows", rows, persistent=False)
        self.register_buffer("triu_cols", cols, persistent=False)

    def forward(self, dense_features: torch.Tensor, sparse_ids: torch.Tensor) -> torch.Tensor:
        """
        Args:
            dense_features: [B, 13] float32.
            sparse_ids: [B, F] int64, one id per feature (each row of a [B, 1] slice is a bag of one).

        Returns:
            logits [B].
        """
        dense_out = self.bottom_mlp(dense_features)
        pooled = [bag(sparse_ids[:, index : index + 1]) for index, bag in enumerate(self.embedding_bags)]
        vectors = torch.stack([dense_out, *pooled], dim=1)  # [B, F + 1, D]
        dots = torch.bmm(vectors, vectors.transpose(1, 2))
        interactions = dots[:, self.triu_rows, self.triu_cols]
        return self.top_mlp(torch.cat([dense_out, interactions], dim=1)).squeeze(-1)


# One optimizer for every parameter, tables included: "its own best simple settings" are swept over these.
OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float], torch.optim.Optimizer]] = {
    "adagrad": lambda params, lr: torch.optim.Adagrad(params, lr=lr, eps=1e-8),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}
SPARSE_GRADIENT_OPTIMIZERS = ("adagrad", "sgd")


@dataclass(frozen=True)
class PlainSettings:
    """Everything one baseline run depends on."""

    embedding_dim: int = 16
    bottom_mlp: list[int] = field(default_factory=lambda: [512, 256, 64, 16])
    top_mlp: list[int] = field(default_factory=lambda: [512, 256, 1])
    optimizer: str = "adagrad"
    lr: float = 0.02
    sparse: bool = False
    """Sparse embedding gradients: the same update for Adagrad and SGD (untouched rows get zero
    gradient either way), but only the touched rows are visited."""
    batch_size: int = 2048
    epochs: int = 1
    max_steps: int = 0
    """Stop after this many steps (0: `epochs` full passes)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.sparse and self.optimizer not in SPARSE_GRADIENT_OPTIMIZERS:
            raise ValueError(f"sparse: {self.optimizer} cannot take sparse gradients")
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 1 or self.max_steps < 0:
            raise ValueError("lr must be > 0, batch_size and epochs >= 1, max_steps >= 0")


def build(settings: PlainSettings, num_embeddings: Sequence[int]) -> tuple[PlainDLRM, torch.optim.Optimizer]:
    """The model (seeded) and its optimizer."""
    torch.manual_seed(settings.seed)
    model = PlainDLRM(
        num_embeddings, settings.embedding_dim, settings.bottom_mlp, settings.top_mlp, settings.sparse
    )
    return model, OPTIMIZERS[settings.optimizer](list(model.parameters()), settings.lr)


def train(
    model: PlainDLRM, optimizer: torch.optim.Optimizer, data: InMemorySplit, settings: PlainSettings
) -> dict[str, float]:
    """Trains on shuffled full batches (each epoch a fresh permutation of the rows).

    Args:
        model: from `build`.
        optimizer: from `build`.
        data: the train split in memory.
        settings: batch size, epochs, max_steps, seed.

    Returns:
        steps, samples, seconds and samples_per_sec of the loop (batch gathering included).
    """
    generator = torch.Generator().manual_seed(settings.seed)
    steps_per_epoch = data.rows // settings.batch_size
    total_steps = settings.epochs * steps_per_epoch
    if settings.max_steps:
        total_steps = min(total_steps, settings.max_steps)
    model.train()
    step, started = 0, time.perf_counter()
    while step < total_steps:
        order = torch.randperm(data.rows, generator=generator)
        for start in range(0, steps_per_epoch * settings.batch_size, settings.batch_size):
            if step == total_steps:
                break
            rows = order[start : start + settings.batch_size]
            logits = model(data.dense_features[rows], data.sparse_ids[rows])
            loss = F.binary_cross_entropy_with_logits(logits, data.labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    seconds = time.perf_counter() - started
    samples = step * settings.batch_size
    return {"steps": step, "samples": samples, "seconds": seconds, "samples_per_sec": samples / seconds}


@torch.no_grad()
def evaluate(model: PlainDLRM, data: InMemorySplit, batch_size: int = 16384) -> dict[str, float]:
    """Exact AUC (rank statistic, ties count one half) and mean logloss over every row of `data`."""
    model.eval()
    logits = torch.cat(
        [
            model(
                data.dense_features[start : start + batch_size], data.sparse_ids[start : start + batch_size]
            )
            for start in range(0, data.rows, batch_size)
        ]
    ).double()
    labels = data.labels.double()
    return {
        "auc": auc(logits.numpy(), labels.numpy()),
        "logloss": float(F.binary_cross_entropy_with_logits(logits, labels)),
        "rows": data.rows,
    }


def run(settings: PlainSettings, data_dir: str | Path) -> dict[str, dict]:
    """Loads the data, trains, and evaluates val and test.

    Returns:
        `{"val": {...}, "test": {...}, "train": {...}, "settings": {...}}` in the shape of metrics.json.
    """
    train_split = load_split(data_dir, "train")
    model, optimizer = build(settings, table_sizes(data_dir))
    train_stats = train(model, optimizer, train_split, settings)
    return {
        "val": evaluate(model, load_split(data_dir, "val")),
        "test": evaluate(model, load_split(data_dir, "test")),
        "train": train_stats,
        "settings": asdict(settings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory written by `dlrm-prep criteo`")
    parser.add_argument("--optimizer", default="adagrad", choices=sorted(OPTIMIZERS))
    parser.add_argument("--lr", type=float, default=PlainSettings.lr)
    parser.add_argument("--sparse", action="store_true", help="sparse embedding gradients (adagrad, sgd)")
    parser.add_argument("--batch-size", type=int, default=PlainSettings.batch_size)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = PlainSettings(
        optimizer=args.optimizer, lr=args.lr, sparse=args.sparse, batch_size=args.batch_size,
        epochs=args.epochs, max_steps=args.max_steps, seed=args.seed,
    )  # fmt: skip
    print(json.dumps(run(settings, args.data), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
