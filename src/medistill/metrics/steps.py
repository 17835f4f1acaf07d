"""Reading ``steps.csv`` (the per-step loss terms and gradient shares the trainer writes, see
:mod:`medistill.engine.diagnostics`) and summarising it per term.

Here, below the engine, so that the report (:mod:`medistill.reports.loss_terms`) renders the
file without importing the trainer.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STEPS_FILE = "steps.csv"
#: the per-step columns: ``<prefix><term name>``
VALUE, NORM, SHARE, COS = "term_", "norm_", "share_", "cos_"
#: a term with a smaller mean gradient share is "not being tested"
UNTESTED_SHARE = 0.01


def read_steps(path: str | Path) -> list[dict[str, Any]]:
    """``steps.csv`` as a list of rows (empty cells left out); ``[]`` if there is no file."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [{k: int(v) if k in ("epoch", "step") else float(v)
                 for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


@dataclass(frozen=True)
class TermSummary:
    """One loss term over a run: mean |value| over all steps, mean gradient share and cosine
    over the diagnostic steps (``None`` without any), and whether it is "not being tested"."""

    name: str
    mean_abs_value: float
    steps: int
    mean_share: float | None
    mean_cos: float | None
    diag_steps: int
    untested: bool


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def summarise_steps(rows: Sequence[Mapping[str, float]],
                    threshold: float = UNTESTED_SHARE) -> list[TermSummary]:
    """Per term (in order of first appearance): see :class:`TermSummary`. A term is flagged
    ``untested`` when its mean share is below ``threshold`` (1%)."""
    names: list[str] = []
    for row in rows:
        names += [k[len(VALUE):] for k in row if k.startswith(VALUE) and k[len(VALUE):]
                  not in names]
    out = []
    for name in names:
        values = [abs(r[VALUE + name]) for r in rows if VALUE + name in r]
        diag = [r for r in rows if "grad_norm" in r]
        shares = [r.get(SHARE + name, 0.0) for r in diag]  # absent on a diag step = no share
        share = _mean(shares)
        out.append(TermSummary(
            name=name, mean_abs_value=_mean(values) or 0.0, steps=len(values),
            mean_share=share, mean_cos=_mean([r[COS + name] for r in diag if COS + name in r]),
            diag_steps=len(diag), untested=share is not None and share < threshold))
    return out
