"""Run monitoring: TensorBoard on one rank, a no-op everywhere else, chosen once at build time.

The training loop calls the same methods on every rank and never asks which rank it is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from torch.utils.tensorboard import SummaryWriter


class Monitor(Protocol):
    def scalar(self, tag: str, value: float, step: int) -> None: ...
    def text(self, tag: str, text: str, step: int = 0) -> None: ...
    def hparams(self, hparams: dict[str, float | int | str | bool], metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


class NullMonitor:
    """What every rank but one writes to: nothing."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def hparams(self, hparams: dict[str, float | int | str | bool], metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardMonitor:
    """Writes scalars, text and an hparams entry under `log_dir`, with TensorBoard's own writer."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        # TensorBoard renders text as markdown; indenting by 4 spaces keeps JSON and tables verbatim.
        self._writer.add_text(tag, "\n".join("    " + line for line in text.splitlines()), step)

    def hparams(self, hparams: dict[str, float | int | str | bool], metrics: dict[str, float]) -> None:
        self._writer.add_hparams(hparams, metrics, run_name="hparams")

    def close(self) -> None:
        self._writer.close()


def build_monitor(run_dir: str | Path, enabled: bool, is_writer_rank: bool) -> Monitor:
    if enabled and is_writer_rank:
        return TensorBoardMonitor(Path(run_dir) / "tb")
    return NullMonitor()
