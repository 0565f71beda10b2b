"""Training entry point: `dlrm-train`, `python dlrm_dist/train.py`, torchrun and torchx all land here.

    dlrm-train --config configs/tiny.toml --data DIR --run-dir DIR [--section.key=value ...]
    torchrun --nproc_per_node 2 dlrm_dist/train.py --config ... --data ... --run-dir ...
    torchx run -s local_cwd dist.ddp -j 1x2 --script dlrm_dist/train.py -- --config ... --data ...

It only wires: check the installed stack (`dlrm_dist.doctor`), parse the config (a bad value fails here,
before any process group exists), join the process group, build the trainer, run, and leave the
process group whatever happens.
"""

from __future__ import annotations

import sys

from dlrm_dist import doctor
from dlrm_dist.config import parse_job_args
from dlrm_dist.distributed import destroy_distributed, init_distributed

DESCRIPTION = (
    "Train a DLRM-family CTR model with TorchRec sharded embeddings on data from `dlrm-prep criteo`."
)


def main(argv: list[str] | None = None) -> int:
    # A torch / fbgemm / torchrec mismatch otherwise surfaces as an undefined symbol or a missing operator
    # deep inside the first step, once per rank: stop with the one line that names the fix instead.
    problem = doctor.stack_problem()
    if problem is not None:
        print(f"dlrm-train: error: {problem}", file=sys.stderr)
        return 2
    # Imported after the check: importing the trainer loads torchrec and fbgemm's libraries.
    from dlrm_dist.trainer import Trainer

    try:
        cfg = parse_job_args(argv, DESCRIPTION)
    except ValueError as error:
        print(f"dlrm-train: error: {error}", file=sys.stderr)
        return 2
    ctx = init_distributed(cfg.training.device)
    try:
        Trainer(cfg, ctx).run()
    except ValueError as error:
        # Config and data problems found after start-up (table sizes, batch size vs world size, a
        # checkpoint of another world size): one line naming the field, not a traceback per rank.
        print(f"dlrm-train: error (rank {ctx.rank}): {error}", file=sys.stderr)
        return 2
    finally:
        destroy_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
