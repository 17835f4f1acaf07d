"""Per-step loss terms and their share of the gradient: ``steps.csv`` next to ``log.csv``.

A method's loss is a sum of weighted terms (``term/<name>`` in its training step's output, see
:func:`medistill.engine.method.weighted_loss`). :class:`StepMonitor` writes one row per training
step (one forward/backward; an optimiser step when ``grad_accum`` is 1)::

    epoch, step, loss, term_<name>...                       (every step)
    grad_norm, norm_<name>..., share_<name>..., cos_<name>...  (every ``diag_every`` steps and
                                                               at the first step; else empty)

``step`` counts from 1 over the whole run. On the diagnostic steps, each term's gradient with
respect to the trainable parameters (frozen teachers excluded) is taken from the SAME forward
pass with ``torch.autograd.grad(..., retain_graph=True)``: ``norm_<t> = ||g_t||``, ``share_<t> =
||g_t|| / sum_j ||g_j||`` (the shares sum to 1), ``cos_<t> = cos(g_t, g)`` with ``g`` the
gradient of the loss, and ``grad_norm = ||g||``. Nothing else is touched: the parameters'
``.grad``, the random number streams and so the trained weights are exactly those of a run
without diagnostics. A term whose share stays near 0 moves the model by almost nothing: an
ablation of it tests nothing (:func:`summarise_steps` flags a mean share under 1%).

Under DDP only rank 0 logs (its own micro-batches) and gradients are not measured
(``torch.autograd.grad`` does not go through DDP's gradient reduction).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medistill.engine.checkpoint import atomic_write_text
from medistill.engine.method import Method, loss_terms
from medistill.metrics.steps import (  # noqa: F401  (the old import paths keep working)
    COS,
    NORM,
    SHARE,
    STEPS_FILE,
    UNTESTED_SHARE,
    VALUE,
    TermSummary,
    read_steps,
    summarise_steps,
)


def trainable_parameters(method: Method) -> list[torch.nn.Parameter]:
    """Parameters the optimiser updates: ``requires_grad`` and outside ``frozen_prefixes``."""
    return [p for name, p in method.named_parameters()
            if p.requires_grad and name.split(".", 1)[0] not in method.frozen_prefixes]


def _grad(value: Any, params: Sequence[torch.Tensor], scale: float) -> list[torch.Tensor | None]:
    if not (torch.is_tensor(value) and value.requires_grad):  # a constant term: no gradient
        return [None] * len(params)
    return list(torch.autograd.grad(value * scale if scale != 1.0 else value, params,
                                    retain_graph=True, allow_unused=True))


def _dot(a: Sequence[torch.Tensor | None], b: Sequence[torch.Tensor | None]) -> float:
    parts = [(x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)
             if x is not None and y is not None]
    return float(torch.stack(parts).sum()) if parts else 0.0


def gradient_shares(terms: Mapping[str, torch.Tensor], loss: torch.Tensor,
                    params: Sequence[torch.Tensor], scale: float = 1.0) -> dict[str, float]:
    """``grad_norm`` and, per term, ``norm_``/``share_``/``cos_`` (see the module docstring).

    ``scale`` multiplies every term before differentiating (the fp16 loss scale, so small
    gradients do not underflow) and is divided out of the norms. Shares and cosines are NaN
    where they are undefined (every term, or the term, without gradient). ``.grad`` is left
    untouched and the graph is kept for the training step's own backward pass.
    """
    total = _grad(loss, params, scale)
    total_norm = math.sqrt(_dot(total, total))
    norms, cosines = {}, {}
    for name, value in terms.items():
        g = _grad(value, params, scale)
        norms[name] = math.sqrt(_dot(g, g))
        denom = norms[name] * total_norm
        cosines[name] = _dot(g, total) / denom if denom > 0 else math.nan
    norm_sum = sum(norms.values())
    stats: dict[str, float] = {"grad_norm": total_norm / scale}
    for name, norm in norms.items():
        stats[NORM + name] = norm / scale
        stats[SHARE + name] = norm / norm_sum if norm_sum > 0 else math.nan
        stats[COS + name] = cosines[name]
    return stats


class StepMonitor:
    """Collects the rows of ``steps.csv`` during training (rank 0); see the module docstring.

    ``keep_epochs``: on resume, the rows of the epochs already done are kept from the file
    (rows of a partly done epoch are dropped: that epoch is trained again).
    """

    def __init__(self, method: Method, out_dir: str | Path, diag_every: int,
                 keep_epochs: int = 0, gradients: bool = True) -> None:
        self.path = Path(out_dir) / STEPS_FILE
        self.every = int(diag_every)
        self.params = trainable_parameters(method) if gradients and self.every else []
        old = read_steps(self.path) if keep_epochs else []
        self.rows = [r for r in old if r.get("epoch", math.inf) <= keep_epochs]
        self._sent = self._written = len(self.rows)  # rows sent to TensorBoard, to the file

    def due(self, step: int) -> bool:
        return bool(self.params) and (step == 1 or step % self.every == 0)

    def step(self, epoch: int, step: int, out: Mapping[str, Any], scaler: Any = None) -> None:
        """Record training step ``step`` (1-based over the run) BEFORE its backward pass."""
        terms = loss_terms(out)
        row: dict[str, float] = {"epoch": epoch, "step": step, "loss": _float(out["loss"])}
        row.update({VALUE + k: _float(v) for k, v in terms.items()})
        if self.due(step):
            scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
            row.update(gradient_shares(terms, out["loss"], self.params, scale))
        self.rows.append(row)

    def write(self, logger: Any = None) -> None:
        """Rewrite ``steps.csv`` (atomically) and send the new rows to ``logger``'s
        TensorBoard (``logger.log_steps``). Nothing to do if no row is new."""
        if not self.rows or (self._written == len(self.rows) and self.path.is_file()):
            return
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: _fmt(v) for k, v in row.items()} for row in self.rows)
        atomic_write_text(self.path, text.getvalue())
        self._written = len(self.rows)
        if logger is not None:
            logger.log_steps(self.rows[self._sent:])
        self._sent = len(self.rows)


def _float(v: Any) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else repr(float(v))
