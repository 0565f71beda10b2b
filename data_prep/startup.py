"""What each `dlrm-prep` process sets up before it loads numpy and pyarrow: the main process in
`data_prep.__main__` and every worker of a process pool in `init_worker`."""

from __future__ import annotations

import sys

from data_prep.allocator import keep_freed_memory


def prepare_process() -> None:
    """Keeps freed memory (`data_prep.allocator`) and keeps pandas out (`keep_pandas_out`)."""
    keep_freed_memory()
    keep_pandas_out()


def keep_pandas_out() -> None:
    """Makes `import pandas` fail in this process, unless pandas is loaded already.

    dlrm-prep never uses pandas, but pyarrow imports it when it is installed: on the first numpy array
    passed to `pa.array` (to ask whether it is a pandas one) and on `to_numpy` (for its own pandas
    conversions). That import is 0.18 s, 7% of a one-worker run on the 1M-row benchmark table
    (`benchmarks/prep_throughput.py`), and each worker pays it again. Both callers take a failed import
    as "no pandas". pyarrow has no option for this, hence an import finder.
    """
    if "pandas" in sys.modules or any(isinstance(finder, _NoPandas) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _NoPandas())


class _NoPandas:
    """An import finder that fails `import pandas` and its submodules."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] == "pandas":
            raise ImportError("dlrm-prep does not load pandas (data_prep.startup.keep_pandas_out)")


def init_worker(parent_pid: int) -> None:
    """A pool worker's initializer: `prepare_process`, then `data_prep.tasks.init_worker`. It lives here so
    that unpickling it in a new worker imports nothing heavy before `prepare_process` has run."""
    prepare_process()
    from data_prep import tasks

    tasks.init_worker(parent_pid)
