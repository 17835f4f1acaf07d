"""The report's "Loss terms" block, rendered from the ``steps.csv`` of every training run.

Every run folder under the report's output folder that holds a ``steps.csv`` (written by the
trainer, see :mod:`medistill.engine.diagnostics`) and whose loss has two or more terms gets one
row per term: its mean |weighted value| over all steps, its mean share of the gradient and the
mean cosine of its gradient with the total gradient (over the diagnostic steps), and a
"not being tested" note when the mean share is under 1%. One figure per six runs shows each
term per step on its own axes and the terms' gradient shares. Nothing is computed from the
models: the block only reads the CSV files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medistill.metrics.steps import (
    SHARE,
    STEPS_FILE,
    UNTESTED_SHARE,
    VALUE,
    read_steps,
    summarise_steps,
)
from medistill.reports.plots import _figure_class, _png, mpl_text

RUNS_PER_FIGURE = 6
MAX_POINTS = 2000  # per line: longer runs are plotted at every k-th step
HEADERS = ["Run", "Term", "Mean |value|", "Gradient share", "Cosine with total",
           "Diag. steps", "Note"]


def step_logs(out_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(run folder relative to out_dir, rows)`` of every ``steps.csv`` under ``out_dir``
    whose loss has at least two terms, in path order."""
    logs = []
    for path in sorted(out_dir.rglob(STEPS_FILE)):
        rows = read_steps(path)
        if len({k for r in rows for k in r if k.startswith(VALUE)}) >= 2:
            logs.append((path.parent.relative_to(out_dir).as_posix() or ".", rows))
    return logs


def loss_term_blocks(out_dir: Path) -> list[Any]:
    """The block (heading, table, caption, figures); empty when no run has two terms."""
    from medistill.reports.report import FigureBlock, Heading, Para, Table, fmt_sig

    logs = step_logs(out_dir)
    if not logs:
        return []
    rows, flagged = [], 0
    for run, steps in logs:
        for s in summarise_steps(steps):
            flagged += s.untested
            rows.append([
                run, s.name, fmt_sig(s.mean_abs_value),
                "–" if s.mean_share is None else f"{fmt_sig(100 * s.mean_share)}%",
                "–" if s.mean_cos is None else f"{s.mean_cos:.2f}", str(s.diag_steps),
                "not being tested" if s.untested else "",
            ])
    text = (
        "Every weighted loss term of each training run (steps.csv). Mean |value|: over all "
        "steps. Gradient share: ||g_term|| / sum of ||g_t|| over the terms (gradients with "
        "respect to the trained parameters, frozen teachers excluded), averaged over the "
        "diagnostic steps (the first step and every diag_every-th); cosine: of the term's "
        "gradient with the gradient of the total loss. A term with a mean share under "
        f"{100 * UNTESTED_SHARE:g}% barely moves the model: an ablation of it tests nothing."
    )
    if flagged:
        text += f" {flagged} term(s) are flagged."
    blocks: list[Any] = [Heading("Loss terms"), Table(HEADERS, rows, frozenset({2, 3, 4, 5})),
                         Para(text, css="caption")]
    chunks = [logs[i:i + RUNS_PER_FIGURE] for i in range(0, len(logs), RUNS_PER_FIGURE)]
    for i, chunk in enumerate(chunks, start=1):
        part = f" (part {i} of {len(chunks)})" if len(chunks) > 1 else ""
        key = f"loss_terms_{i}"
        blocks.append(FigureBlock(key, f"figures/{key}.png", loss_term_figure(chunk),
                                  f"Loss terms per step{part}, one row per run: each term's "
                                  "|weighted value| on its own axes (log scale), then every "
                                  "term's share of the gradient (last panel, diagnostic steps "
                                  "only)."))
    return blocks


def loss_term_figure(logs: list[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """PNG of :func:`loss_term_fig`."""
    return _png(loss_term_fig(logs))


def loss_term_fig(logs: list[tuple[str, list[dict[str, Any]]]]) -> Any:
    """One row per run: each term's |value| per step on its OWN axes (a CE near 1 and a KD
    term near 0.01 are both readable; on one shared axis the smaller one was a flat line),
    then every term's gradient share on a common 0-1 axis."""
    import matplotlib

    names_per_run = [list(dict.fromkeys(k[len(VALUE):] for r in rows for k in r
                                        if k.startswith(VALUE))) for _, rows in logs]
    ncols = max(len(n) for n in names_per_run) + 1
    fig = _figure_class()(figsize=(3.3 * ncols, 2.8 * len(logs) + 0.4), layout="constrained")
    axes = fig.subplots(len(logs), ncols, squeeze=False)
    cmap = matplotlib.colormaps["tab10"]
    for (run, rows), names, row_axes in zip(logs, names_per_run, axes, strict=True):
        stride = max(1, math.ceil(len(rows) / MAX_POINTS))
        share_ax = row_axes[len(names)]
        for j, name in enumerate(names):
            color, ax = cmap(j % cmap.N), row_axes[j]
            pts = [(r["step"], abs(r[VALUE + name])) for r in rows[::stride]
                   if VALUE + name in r and math.isfinite(r[VALUE + name])]
            ax.plot([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], color=color,
                    linewidth=1.0)
            ax.set_yscale("log")
            ax.set_title(mpl_text(f"{run}: |{name}|", 40), fontsize=9, color=color)
            diag = [(r["step"], r.get(SHARE + name, 0.0)) for r in rows if "grad_norm" in r]
            share_ax.plot([p[0] for p in diag], [p[1] for p in diag], color=color,
                          marker="o" if len(diag) <= 40 else None, markersize=3, linewidth=1.0,
                          label=mpl_text(name, 30))
        share_ax.set_title(mpl_text(f"{run}: gradient share", 40), fontsize=9)
        share_ax.set_ylim(-0.02, 1.02)
        share_ax.legend(fontsize=7, ncol=2)
        for ax in row_axes[:len(names) + 1]:
            ax.set_xlabel("Step")
            ax.grid(True, alpha=0.3)
        for ax in row_axes[len(names) + 1:]:
            ax.set_axis_off()
    return fig
