"""`manifest.json`: the written contract between `dlrm-prep` and the trainer.

The trainer reads the table sizes (`num_embeddings`), the split files and the schema from here and
nothing else, so a change in what this file says is a `SCHEMA_VERSION` bump.

Version 2 added multi-hot data: `"multi_hot": true`, `list<int32>` categorical columns, and
`"bag_lengths": {"mean": [...], "max": [...]}` (per column C1..C26, measured on the train split: the
planner's pooling factors). Only multi-hot manifests say version 2; one-hot ones still say 1 and read
the same as before (`"multi_hot": false`), so a reader that predates multi-hot refuses list columns
instead of misreading them, and still reads new one-hot data.

Version 3 is any other feature schema (`dlrm-prep table`, `dlrm-prep movielens`): the manifest's
`"features"` (see `data_prep.features`) names the label, dense and categorical columns, each table's
size and kind. Criteo outputs keep versions 1 and 2 and carry `"features"` too; every reader goes by
`FeatureSchema.from_manifest`, which also reads manifests written before `"features"` existed.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from data_prep.features import FeatureSchema, criteo_schema
from data_prep.inputs import InputFile
from data_prep.schema import SPLITS

SCHEMA_VERSION = 3
MULTI_HOT_SCHEMA_VERSION = 2
ONE_HOT_SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (ONE_HOT_SCHEMA_VERSION, MULTI_HOT_SCHEMA_VERSION, SCHEMA_VERSION)
TOOL_NAME = "dlrm-prep"


def tool_version() -> str:
    try:
        return metadata.version("dlrm-dist")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_manifest(
    *,
    options: dict[str, Any],
    arguments: dict[str, Any],
    fingerprint: dict[str, Any],
    encoding: dict[str, Any],
    vocab_files: list[str] | None,
    num_embeddings: list[int],
    bag_lengths: dict[str, list[float]] | None,
    splits: dict[str, dict[str, Any]],
    input_files: list[InputFile],
    file_lines: list[int],
    bad_counts: dict[str, int],
    bad_examples: list[dict[str, Any]],
    seconds: float,
    features: FeatureSchema | None = None,
) -> dict[str, Any]:
    """Assembles the manifest; `rows_read == rows_written + bad_rows.total` holds by construction.

    `bag_lengths` (multi-hot data only, else None) holds the per-column "mean" and "max" bag length of
    the train split; the other arguments are what `data_prep.criteo.run` measured and decided.
    `features` is the data set's schema (`data_prep.features`); None means Criteo's layout. A schema
    other than Criteo's writes `SCHEMA_VERSION` 3: readers before it know only Criteo's columns.
    """
    rows_read = sum(file_lines)
    rows_written = sum(split["rows"] for split in splits.values())
    bad_total = sum(bad_counts.values())
    if rows_read != rows_written + bad_total:
        raise RuntimeError(
            f"row accounting broken: read {rows_read} != written {rows_written} + bad {bad_total}; please report"
        )
    multi_hot = bag_lengths is not None
    if features is None:
        features = criteo_schema(num_embeddings, multi_hot, bag_lengths)
        version = MULTI_HOT_SCHEMA_VERSION if multi_hot else ONE_HOT_SCHEMA_VERSION
    else:
        version = SCHEMA_VERSION
    return {
        "schema_version": version,
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 3),
        "arguments": arguments,
        "options": {key: value for key, value in options.items() if key != "inputs"},
        "fingerprint": fingerprint,
        "layout": options["layout"],
        "encoding": {**encoding, **({"vocab_files": vocab_files} if vocab_files else {})},
        "dense_transform": options["dense_transform"],
        "columns": {
            "label": features.label,
            "dense": list(features.dense),
            "sparse": list(features.categorical_names),
        },
        "num_embeddings": list(features.num_embeddings),
        "multi_hot": features.any_multi_hot,
        "features": features.to_json(),
        **({"bag_lengths": bag_lengths} if multi_hot else {}),
        "rows_per_shard": options["rows_per_shard"],
        "row_group_rows": options["row_group_rows"],
        "splits": splits,
        "input_files": [
            {"path": f.path, "bytes": f.bytes, "lines": lines}
            for f, lines in zip(input_files, file_lines, strict=True)
        ],
        "rows_read": rows_read,
        "rows_written": rows_written,
        "bad_rows": {"total": bad_total, "counts": bad_counts, "examples": bad_examples},
    }


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    """Reads and checks `<data_dir>/manifest.json`; errors name what is missing or unsupported."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {data_dir} a directory written by `dlrm-prep criteo`?")
    manifest = json.loads(path.read_text())
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(
            f"{path}: schema_version {version!r} is not supported "
            f"(expected one of {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))})"
        )
    for key in ("num_embeddings", "splits", "columns"):
        if key not in manifest:
            raise ValueError(f"{path}: missing field {key!r}")
    for split in SPLITS:
        if split not in manifest["splits"]:
            raise ValueError(f"{path}: missing split {split!r}")
    return manifest


def format_summary(manifest: dict[str, Any]) -> str:
    """A plain-text table of what a run kept and rejected, for the end of a run and `make demo`."""
    lines = [
        f"layout {manifest['layout']}, encoding {manifest['encoding']['mode']}, "
        f"dense transform {manifest['dense_transform']}",
        f"{'split':<8}{'rows':>14}{'files':>8}",
    ]
    for split in SPLITS:
        info = manifest["splits"][split]
        lines.append(f"{split:<8}{info['rows']:>14,}{len(info['files']):>8}")
    bad = manifest["bad_rows"]
    lines.append(f"{'read':<8}{manifest['rows_read']:>14,}")
    lines.append(f"{'written':<8}{manifest['rows_written']:>14,}")
    lines.append(
        f"{'rejected':<8}{bad['total']:>14,}  " + ", ".join(f"{k}={v}" for k, v in bad["counts"].items())
    )
    for example in bad["examples"]:
        lines.append(f"  {example['where']}: {example['reason']}: {example['detail']}")
    sizes = manifest["num_embeddings"]
    lines.append(f"tables: {len(sizes)}, rows min {min(sizes):,} max {max(sizes):,} total {sum(sizes):,}")
    bags = [f for f in FeatureSchema.from_manifest(manifest).categorical if f.mean_bag_length is not None]
    if bags:
        lines.append(
            f"multi-hot bags (train): mean length {min(f.mean_bag_length for f in bags):g}.."
            f"{max(f.mean_bag_length for f in bags):g}, longest {max(f.max_bag_length or 0 for f in bags)}"
        )
    if "seconds" in manifest and manifest["seconds"] > 0:
        rate = manifest["rows_read"] / manifest["seconds"]
        lines.append(f"time: {manifest['seconds']:.1f} s ({rate:,.0f} rows/s)")
    return "\n".join(lines)
