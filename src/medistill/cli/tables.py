"""Results tables the commands print: one column list per task (a ``rich`` table on a
terminal, plain fixed-width text elsewhere), and the paired verdicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from medistill.tasks import get_task


def _eff(r: dict[str, Any], key: str, default: float = float("nan")) -> float:
    return r.get("efficiency", {}).get(key, default)


#: a results-table column: (header, width (negative = left-aligned), cell of a run record)
Column = tuple[str, int, Callable[[dict[str, Any]], str]]

_NAME: Column = ("run", -22, lambda r: r["name"])
_GFLOPS: Column = ("GFLOPs", 8, lambda r: f"{_eff(r, 'gflops'):.3f}")
_MS: Column = ("ms, median (IQR)", 18, lambda r: _latency(r))


def _latency(r: dict[str, Any]) -> str:
    from medistill.reports.report import fmt_latency

    return fmt_latency(r.get("efficiency"))


def metric_columns(task: str) -> list[Column]:
    """The metric columns of a registered task (:attr:`medistill.tasks.Task.columns`)."""
    return [(c.title, c.width, lambda r, c=c: c.cell(r["metrics"]))
            for c in get_task(task).columns]


def _params(digits: int) -> Column:
    return ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.{digits}f}M")


# around each task's metric columns: what identifies a run and what it costs
CLASSIFICATION_COLUMNS: list[Column] = [
    ("run", -28, lambda r: r["name"]),
    ("mag", 7, lambda r: r.get("magnification", "")),
    ("input", 9, lambda r: "x".join(str(s) for s in r.get("input_size", []))),
    *metric_columns("classification"),
    ("GFLOPs", 8, lambda r: f"{_eff(r, 'gflops'):.4f}"),
    _params(2),
]
SEGMENTATION_COLUMNS: list[Column] = [
    _NAME, ("cases", 5, lambda r: str(r.get("n", 0))), *metric_columns("segmentation"),
    _GFLOPS, _params(2), _MS,
]
WEAK_COLUMNS: list[Column] = [
    _NAME, ("images", 6, lambda r: str(r.get("n", 0))), *metric_columns("weak_segmentation"),
]
INSTANCE_COLUMNS: list[Column] = [
    _NAME, ("images", 6, lambda r: str(r.get("n", 0))), *metric_columns("instance"),
    _GFLOPS, _params(3), _MS,
]


def print_table(runs: list[dict[str, Any]], columns: list[Column] = CLASSIFICATION_COLUMNS,
                console: Any = None) -> None:
    """A results table on stdout (classification columns by default).

    On a terminal it is a ``rich`` table (bold header, columns sized to the terminal, long run
    names folded rather than cut); anywhere else (a pipe, a file, a CI log) the same cells as
    plain fixed-width text, one run a line under a dashed header, for ``grep`` and scripts.
    ``console``: a ``rich.console.Console`` to print to (default: stdout's)."""
    from rich.console import Console

    console = console or Console()
    cells = [[cell(r) for _, _, cell in columns] for r in runs]
    if not console.is_terminal:
        def fit(text: str, width: int) -> str:
            return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

        header = " ".join(fit(h, w) for h, w, _ in columns)
        typer.echo(header)
        typer.echo("-" * len(header))
        for row in cells:
            typer.echo(" ".join(fit(c, w) for c, (_, w, _) in zip(row, columns, strict=True)))
        return
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for i, (h, w, _) in enumerate(columns):
        longest = max([len(h)] + [len(row[i]) for row in cells])
        table.add_column(h, justify="left" if w < 0 else "right",
                         min_width=min(12, longest) if i == 0 else longest,
                         overflow="fold" if i == 0 else "ellipsis", no_wrap=i > 0)
    for row in cells:
        table.add_row(*row)
    console.print(table)


def print_runs(runs: list[dict[str, Any]]) -> None:
    metrics = runs[0].get("metrics", {}) if runs else {}
    if "pixel_f1" in metrics:
        print_table(runs, WEAK_COLUMNS)
    elif "aji" in metrics:
        print_table(runs, INSTANCE_COLUMNS)
    elif "dice" in metrics:
        print_table(runs, SEGMENTATION_COLUMNS)
    else:
        print_table(runs)



def print_paired(comparisons: list[dict[str, Any]], summaries: list[dict[str, Any]] = ()
                 ) -> None:
    """The paired differences (model minus reference on the same images) and their verdicts."""
    from medistill.metrics.paired import verdict
    from medistill.pipelines.resolution import ROLE_NAMES

    if not comparisons:
        return
    n = comparisons[0]["n_resamples"]
    typer.echo(f"\npaired on the same {comparisons[0]['n']} images ({n} bootstrap resamples):")
    for c in comparisons:
        acc, f1 = c["metrics"]["accuracy"], c["metrics"]["macro_f1"]
        typer.echo(f"  {c['name']}: accuracy {100 * acc['model']:.1f}% vs "
                   f"{100 * acc['reference']:.1f}% ({c['reference']}); macro F1 "
                   f"{100 * f1['value']:+.1f} points [{100 * f1['low']:+.1f}, "
                   f"{100 * f1['high']:+.1f}]")
        model, ref = (ROLE_NAMES.get(c[k], c[k]) for k in ("model", "reference"))
        typer.echo(f"  -> {verdict(acc, model, ref)}")
    for s in summaries:
        o = s["accuracy"]
        if o["n_seeds"] > 1:
            typer.echo(f"  over {o['n_seeds']} seeds ({s['model']} - {s['reference']}, factor "
                       f"{s['factor']:g}): accuracy {100 * o['mean']:+.1f} ± "
                       f"{100 * o['sd']:.1f} points; > 0 in {o['n_positive']}, CI above 0 in "
                       f"{o['n_ci_above_zero']}")

