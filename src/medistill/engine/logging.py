"""Per-epoch logs: a CSV file and (when the tensorboard package is installed) TensorBoard."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from medistill.engine.checkpoint import atomic_write_text


class RunLogger:
    """Writes ``log.csv`` (one row per epoch) and TensorBoard scalars under ``tb/`` (also the
    per-step rows of :mod:`medistill.engine.diagnostics`)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "log.csv"
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.out_dir / "tb"))

    def write_history(self, history: list[dict[str, float]]) -> None:
        """Rewrite the CSV from the full history (keeps it exact after a resume)."""
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.csv_path, text.getvalue())

    def log_epoch(self, history: list[dict[str, float]]) -> None:
        self.write_history(history)
        if self._tb is not None:
            row = history[-1]
            for k, v in row.items():
                if k != "epoch":
                    self._tb.add_scalar(k, v, int(row["epoch"]))
            self._tb.flush()

    def log_steps(self, rows: list[dict[str, float]]) -> None:
        """Per-step rows of ``steps.csv`` as TensorBoard scalars ``step/<column>``."""
        if self._tb is not None and rows:
            for row in rows:
                for k, v in row.items():
                    if k not in ("epoch", "step"):
                        self._tb.add_scalar(f"step/{k}", v, int(row["step"]))
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
