"""The Criteo row layout and the Parquet schema that data_prep writes and the trainer reads.

This is one half of the data contract between `data_prep` and `dlrm_dist.data`; the other half is
`manifest.json` (see `data_prep.manifest`). Raw Criteo TSV lines have 40 tab-separated fields:
`label`, 13 integer features `I1..I13`, 26 categorical features `C1..C26` (hex strings). An empty
field means missing.

Multi-hot data (`dlrm-prep criteo --multi-hot`) extends that layout: a categorical field may hold a
bag of hex values separated by commas (`0a1b2c3d,00ff12aa`), and its Parquet column is a
`list<int32>` of embedding ids instead of one `int32`. One-hot data keeps the compact int32 schema.
"""

from __future__ import annotations

import pyarrow as pa

LABEL = "label"
NUM_DENSE = 13
NUM_SPARSE = 26
DENSE_COLUMNS: tuple[str, ...] = tuple(f"I{i}" for i in range(1, NUM_DENSE + 1))
SPARSE_COLUMNS: tuple[str, ...] = tuple(f"C{i}" for i in range(1, NUM_SPARSE + 1))
RAW_COLUMNS: tuple[str, ...] = (LABEL, *DENSE_COLUMNS, *SPARSE_COLUMNS)
NUM_FIELDS = len(RAW_COLUMNS)

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Cardinalities of C1..C26 in Criteo Kaggle's train.txt (distinct values per column, as reported by
# facebookresearch/dlrm and TorchRec's dataset docs). Synthetic defaults are shaped like these.
KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460,
    583,
    10131227,
    2202608,
    305,
    24,
    12517,
    633,
    3,
    93145,
    5683,
    8351593,
    3194,
    27,
    14992,
    5461306,
    10,
    5652,
    2173,
    4,
    7046547,
    18,
    15,
    286181,
    105,
    142572,
)


def output_schema(multi_hot: bool = False) -> pa.Schema:
    """Schema of every Parquet shard: int8 label, float32 dense features, int32 embedding ids.

    Args:
        multi_hot: each categorical column is a bag of ids, `list<int32>`, instead of one `int32`.

    Returns:
        The schema `dlrm-prep criteo` writes and `dlrm_dist.data` reads.
    """
    sparse_type = pa.list_(pa.int32()) if multi_hot else pa.int32()
    return pa.schema(
        [pa.field(LABEL, pa.int8(), nullable=False)]
        + [pa.field(name, pa.float32(), nullable=False) for name in DENSE_COLUMNS]
        + [pa.field(name, sparse_type, nullable=False) for name in SPARSE_COLUMNS]
    )
