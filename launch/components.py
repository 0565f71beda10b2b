"""torchx components of dlrm-dist: the same job on a laptop (`-s local_cwd -j 1x2`) and a cluster (`-j 2x8`).

    torchx run -s local_cwd launch/components.py:train -j 1x2 -- --config configs/tiny.toml --data DIR --run-dir DIR
    torchx run -s slurm launch/components.py:train -j 2x8 --gpu 8 -- --config configs/criteo_1tb.toml --data DIR ...
    torchx run -s local_cwd launch/components.py:prep -- criteo --input DIR --out DIR --layout terabyte ...

`train` wraps torchx's own `dist.ddp` (torchrun underneath) with this project's script and defaults
rather than rebuilding it; `torchx run -s local_cwd dist.ddp -j 1x2 --script dlrm_dist/train.py -- ...`
launches the very same thing. Each component's docstring is its `--help`.
"""

from typing import Dict, Optional

import torchx
import torchx.specs as specs
from torchx.components import dist, utils

TRAIN_SCRIPT = "dlrm_dist/train.py"


def train(
    *script_args: str,
    j: str = "1x2",
    gpu: int = 0,
    cpu: int = 2,
    memMB: int = 8192,
    image: str = torchx.IMAGE,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    max_retries: int = 0,
    rdzv_port: int = 29500,
    name: str = "dlrm-train",
) -> specs.AppDef:
    """Trains a DLRM-family model with TorchRec sharded embeddings (dlrm_dist/train.py under torchrun).

    Args:
        script_args: arguments of dlrm_dist/train.py: --config FILE --data DIR --run-dir DIR [--section.key=value ...]
        j: {nnodes}x{nproc_per_node}: 1x2 is two ranks on this machine, 2x8 is two nodes of 8 GPUs
        gpu: GPUs per node (0 trains on CPU with gloo; with GPUs each rank takes one, nccl)
        cpu: CPUs per node (a scheduler hint; the local schedulers ignore it)
        memMB: memory per node in MB (a scheduler hint)
        image: the image (a directory for local_cwd, a container for cluster schedulers)
        h: a named resource instead of cpu/gpu/memMB, e.g. aws_p4d.24xlarge
        env: environment variables for every rank
        max_retries: restarts after a rank dies: torchrun restarts the ranks of a node (--max-restarts, on every scheduler, local_cwd included) and cluster schedulers retry the job; each attempt resumes from the run's newest intact checkpoint (--checkpoint.resume=auto is added)
        rdzv_port: the rendezvous port on the first node
        name: the job name
    """
    if max_retries and not any(arg.startswith("--checkpoint.resume") for arg in script_args):
        # A scheduler retry is a fresh torchrun (restart count 0): it must be told to resume.
        script_args = (*script_args, "--checkpoint.resume=auto")
    app = dist.ddp(
        *script_args,
        script=TRAIN_SCRIPT,
        image=image,
        name=name,
        h=h,
        cpu=cpu,
        gpu=gpu,
        memMB=memMB,
        j=j,
        env=env,
        max_retries=max_retries,
        rdzv_port=rdzv_port,
    )
    if max_retries:
        # torchx's local schedulers ignore a role's max_retries (scheduler retries exist only on cluster
        # schedulers), so restarts also go to torchrun's own agent, which restarts a node's ranks on
        # every scheduler. By default the agent's rendezvous TCPStore server outlives a failed round and
        # the restarted workers' process group is set up in that same store with the same, unprefixed
        # keys (torch.distributed.rendezvous._create_c10d_store assumes a new store per attempt), so
        # the first attempt's keys are read back: a restart may hang or dial the dead rank's address.
        # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each attempt's workers a store of their own.
        role = app.roles[0]
        role.args = [
            role.args[0],
            role.args[1].replace("torchrun ", f"torchrun --max-restarts {max_retries} ", 1),
        ]
        role.env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    return app


def prep(
    *args: str, cpu: int = 16, memMB: int = 16384, image: str = torchx.IMAGE, h: Optional[str] = None
) -> specs.AppDef:
    """Runs dlrm-prep (synthetic data, or raw Criteo TSV to Parquet shards) as a single-node job.

    Args:
        args: dlrm-prep arguments, e.g. criteo --input /data/criteo --out /data/prepared --layout terabyte --hash-buckets 40000000
        cpu: CPUs (dlrm-prep uses them all through --workers)
        memMB: memory in MB
        image: the image
        h: a named resource instead of cpu/memMB
    """
    return utils.python(*args, m="data_prep", name="dlrm-prep", image=image, cpu=cpu, memMB=memMB, h=h)
