"""Results tables the commands print: one column list per task (a ``rich`` table on a
terminal, plain fixed-width text elsewhere), and the paired verdicts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer


def _fmt_ci(m: dict[str, float]) -> str:
    return f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})"


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

CLASSIFICATION_COLUMNS: list[Column] = [
    ("run", -28, lambda r: r["name"]),
    ("mag", 7, lambda r: r.get("magnification", "")),
    ("input", 9, lambda r: "x".join(str(s) for s in r.get("input_size", []))),
    ("accuracy (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["accuracy"])),
    ("macro F1 (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["macro_f1"])),
    ("GFLOPs", 8, lambda r: f"{_eff(r, 'gflops'):.4f}"),
    ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.2f}M"),
]
SEGMENTATION_COLUMNS: list[Column] = [
    _NAME,
    ("cases", 5, lambda r: str(r.get("n", 0))),
    ("DSC (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["dice"])),
    ("RVD (95% CI)", 24, lambda r: _fmt_ci(r["metrics"]["rvd"])),
    ("VOE", 6, lambda r: f"{r['metrics']['voe']['value']:.3f}"),
    ("HD95", 7, lambda r: f"{r['metrics'].get('hd95', {}).get('value', float('nan')):.2f}"),
    _GFLOPS,
    ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.2f}M"),
    _MS,
]
WEAK_COLUMNS: list[Column] = [
    _NAME,
    ("images", 6, lambda r: str(r.get("n", 0))),
    ("pixel F1 (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["pixel_f1"])),
    ("F1 positives (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["pixel_f1_pos"])),
    ("tumour F1, all", 14, lambda r: f"{r['metrics']['pixel_f1_positive']['value']:.3f}"),
    ("image AUC", 9, lambda r: f"{r['metrics']['image_auc']['value']:.3f}"),
]
INSTANCE_COLUMNS: list[Column] = [
    _NAME,
    ("images", 6, lambda r: str(r.get("n", 0))),
    ("AJI (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["aji"])),
    ("PQ (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["pq"])),
    ("VOI s/m", 11, lambda r: f"{r['metrics']['voi_split']['value']:>5.2f}/"
                              f"{r['metrics']['voi_merge']['value']:<5.2f}"),
    _GFLOPS,
    ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.3f}M"),
    _MS,
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

