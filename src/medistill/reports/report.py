"""Write ``report.html`` and ``report.md`` (plus PNG figures) for a medistill run.

The report is built once as a list of blocks (headings, paragraphs, tables, figures, code) and
rendered twice, so both formats always carry the same content. The HTML is self-contained (the
figures are embedded as base64 data URIs); the Markdown links ``figures/*.png``.

Writing is atomic: every figure is rendered in memory first, then each file is written to a
hidden temporary name in its final directory and moved into place with :func:`os.replace`.
``report.html`` and ``report.md`` are written last, so a report that exists is complete.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import secrets
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medistill import __version__
from medistill.reports import plots
from medistill.reports.plots import Group, as_map, finite, group_runs, mag_label, run_metric

DASH = "–"
MODEL_HEADERS = (
    "Name|Role|Factor|Mag.|Input|Seed|Split|Accuracy (95% CI)|Macro F1 (95% CI)|"
    "OvR accuracy (95% CI)|GFLOPs|Params|Latency ms, median (IQR)"
).split("|")
AGGREGATE_HEADERS = (
    "Role|Factor|Mag.|Split|Seeds|Accuracy (mean ± std)|Macro F1 (mean ± std)".split("|")
)
#: the page template (Jinja2) and its style sheet, shipped in the package
TEMPLATES = Path(__file__).with_name("templates")
_CSS = "\n" + (TEMPLATES / "report.css").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------- formatting
def fmt_sig(x: Any, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits, no exponent: 12.345 -> 12.3, 1234 -> 1230."""
    v = finite(x)
    if v is None:
        return DASH
    for _ in range(2):  # twice: rounding may add a digit (9.996 -> 10.0)
        if v == 0:
            return "0"
        decimals = digits - 1 - math.floor(math.log10(abs(v)))
        v = round(v, decimals)
    return f"{v:.{max(decimals, 0)}f}"


def fmt_params(x: Any) -> str:
    """Parameter count: 1_234_567 -> ``1.23 M``, 45_300 -> ``45.30 K``."""
    v = finite(x)
    if v is None:
        return DASH
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:.0f}"


def fmt_ci(parts: tuple[float | None, ...], decimals: int = 3) -> str:
    """``(value, low, high)`` as ``0.812 (0.774-0.851)``; no CI when missing, ``–`` if no value."""
    value, low, high = parts
    if value is None:
        return DASH
    text = f"{value:.{decimals}f}"
    if low is not None and high is not None:
        text += f" ({low:.{decimals}f}-{high:.{decimals}f})"
    return text


def fmt_latency(efficiency: Any) -> str:
    """Per-image latency as ``median (q25-q75)`` ms from an efficiency record (see
    :func:`medistill.metrics.profile_model`); just the median for records without quartiles."""
    eff = as_map(efficiency)
    median = finite(eff.get("latency_ms"))
    if median is None:
        return DASH
    decimals = 2 if median >= 0.1 else 3
    return fmt_ci((median, finite(eff.get("latency_q25_ms")), finite(eff.get("latency_q75_ms"))),
                  decimals)


def role_aggregate_blocks(runs: Sequence[Mapping[str, Any]],
                          columns: Sequence[tuple[str, str]], count: str = "Seeds") -> list:
    """"Aggregate over seeds": one row per role, mean ± sd of each ``(metric key, header)``."""
    by_role: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        by_role.setdefault(str(r.get("role")), []).append(r)
    rows = []
    for role, rs in by_role.items():
        values = [[finite(as_map(as_map(r.get("metrics")).get(k)).get("value")) for r in rs]
                  for k, _ in columns]
        rows.append([role, str(len(rs))] + [fmt_mean_std(v) for v in values])
    headers = ["Role", count] + [h for _, h in columns]
    return [Heading("Aggregate over seeds"),
            Table(headers, rows, frozenset(range(1, len(headers)))),
            Para("Mean ± sample standard deviation (n-1) over seeds.", css="caption")]


def fmt_mean_std(values: Sequence[float | None], decimals: int = 3) -> str:
    """Mean ± sample standard deviation (n-1) of the finite values; just the mean when n = 1."""
    vals = [v for v in values if v is not None]
    if not vals:
        return DASH
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {statistics.stdev(vals):.{decimals}f}"


def _fmt_g(x: Any) -> str:
    v = finite(x)
    return DASH if v is None else f"{v:g}"


def _fmt_size(size: Any) -> str:
    if isinstance(size, Sequence) and not isinstance(size, str) and size:
        dims = [finite(d) for d in size]
        if all(d is not None for d in dims):
            return "×".join(f"{d:g}" for d in dims)
    return DASH


def _fmt_fixed(x: Any, decimals: int = 2) -> str:
    v = finite(x)
    return DASH if v is None else f"{v:.{decimals}f}"


def _text(x: Any) -> str:
    return DASH if x is None or x == "" else str(x)


# ------------------------------------------------------------------------------------ blocks
@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    css: str = ""


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: frozenset[int] = frozenset()

    def without_empty(self, first: int = 0) -> Table:
        """The table less the columns from ``first`` on that no run fills (all "–"): a
        metric the task does not produce gets no column of dashes."""
        keep = [i for i in range(len(self.headers))
                if i < first or not self.rows or any(row[i] != DASH for row in self.rows)]
        return Table([self.headers[i] for i in keep], [[row[i] for i in keep] for row in self.rows],
                     frozenset(n for n, i in enumerate(keep) if i in self.numeric))


@dataclass
class FigureBlock:
    key: str
    rel_path: str
    png: bytes
    caption: str


@dataclass
class Code:
    text: str
    lang: str


Block = Heading | Para | Bullets | Table | FigureBlock | Code


# ------------------------------------------------------------------------------------ content
def _model_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    headers = MODEL_HEADERS
    rows = []
    for run in runs:
        eff = as_map(run.get("efficiency"))
        rows.append(
            [
                _text(run.get("name")),
                _text(run.get("role")),
                _fmt_g(run.get("factor")),
                mag_label(run.get("factor")),
                _fmt_size(run.get("input_size")),
                _fmt_g(run.get("seed")),
                _text(run.get("split")),
                fmt_ci(run_metric(run, "accuracy")),
                fmt_ci(run_metric(run, "macro_f1")),
                fmt_ci(run_metric(run, "ovr_accuracy")),
                fmt_sig(eff.get("gflops")),
                fmt_params(eff.get("params")),
                fmt_latency(eff),
            ]
        )
    return Table(headers, rows, frozenset({2, 5, 7, 8, 9, 10, 11, 12}))


def _aggregate_table(groups: list[Group]) -> Table:
    headers = AGGREGATE_HEADERS
    rows = []
    for role, factor, split, runs in groups:
        accs = [run_metric(r, "accuracy")[0] for r in runs]
        f1s = [run_metric(r, "macro_f1")[0] for r in runs]
        rows.append(
            [
                _text(role),
                _fmt_g(factor),
                mag_label(factor),
                _text(split),
                str(len(runs)),
                fmt_mean_std(accs),
                fmt_mean_std(f1s),
            ]
        )
    return Table(headers, rows, frozenset({1, 4, 5, 6}))


def _config_text(config: Any) -> tuple[str, str]:
    try:
        import yaml

        return yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(), "yaml"
    except Exception:  # yaml missing or a value YAML cannot represent: fall back to JSON
        return json.dumps(config, indent=2, default=str, ensure_ascii=False), "json"


def _section_blocks(sections: Any, out_dir: Path) -> list[Block]:
    """Method-specific sections: ``{"title", "text", "table": {"headers", "rows"},
    "figures": [{"file": path relative to out_dir, "caption"}]}`` (every key optional)."""
    blocks: list[Block] = []
    if not isinstance(sections, Sequence) or isinstance(sections, str):
        return blocks
    for sec in sections:
        if not isinstance(sec, Mapping):
            continue
        if sec.get("title"):
            blocks.append(Heading(str(sec["title"])))
        if sec.get("text"):
            blocks.append(Para(str(sec["text"])))
        table = sec.get("table")
        if isinstance(table, Mapping) and table.get("headers"):
            rows = [[_text(c) for c in row] for row in table.get("rows") or []]
            numeric = frozenset(range(1, len(table["headers"])))
            blocks.append(Table([str(h) for h in table["headers"]], rows, numeric))
        for fig in sec.get("figures") or []:
            path = out_dir / str(fig["file"])
            if not path.is_file():
                raise FileNotFoundError(f"report section figure not found: {path}")
            blocks.append(FigureBlock(path.stem, str(fig["file"]), path.read_bytes(),
                                      str(fig.get("caption", ""))))
    return blocks


def _build_document(
    results: Mapping[str, Any], runs: list, figures: list[FigureBlock], groups: list[Group],
    extra: list[Block] | None = None,
) -> tuple[str, list[Block]]:
    title = str(results.get("title") or "medistill report")
    blocks: list[Block] = []
    if results.get("summary"):
        blocks.append(Para(str(results["summary"])))
    notes = results.get("notes")
    if isinstance(notes, Sequence) and not isinstance(notes, str) and notes:
        blocks += [Heading("Notes"), Bullets([str(n) for n in notes])]
    if results.get("task") == "segmentation":
        from medistill.reports.segmentation import seg_blocks

        blocks += seg_blocks(runs, as_map(results.get("paired")))
    elif results.get("task") == "instance":
        from medistill.reports.instance import instance_blocks

        blocks += instance_blocks(runs)
    else:
        blocks += _classification_blocks(runs, groups)
    blocks += extra or []
    sections = {
        "accuracy_vs_gflops": "Accuracy vs GFLOPs",
        "confusion_matrices_1": "Confusion matrices",
        "training_curves": "Training curves",
        "overlays": "Predictions",
        "instance_overlays": "Predicted instances",
    }
    for fig in figures:
        if fig.key in sections:
            blocks.append(Heading(sections[fig.key]))
        blocks.append(fig)
    if results.get("config") is not None:
        text, lang = _config_text(results["config"])
        blocks += [Heading("Configuration"), Code(text, lang)]
    return title, blocks


def _classification_blocks(runs: list, groups: list[Group]) -> list[Block]:
    blocks: list[Block] = [Heading("Models")]
    if not runs:
        blocks.append(Para("No runs were evaluated."))
    else:
        blocks.append(_model_table(runs))
        blocks.append(
            Para(
                "Metrics with 95% bootstrap confidence intervals. Factor: "
                "downsampling relative to the original image (Mag. 1/8x = factor 8). "
                f"{DASH} = not available.",
                css="caption",
            )
        )
    if any(len(g[3]) > 1 for g in groups):
        blocks += [
            Heading("Aggregate over seeds"),
            _aggregate_table(groups),
            Para(
                "Mean ± sample standard deviation (n-1) over the runs of each "
                "(role, factor, split).",
                css="caption",
            ),
        ]
    return blocks


# ---------------------------------------------------------------------------------- rendering
def _md_escape(text: str) -> str:
    """One line of Markdown-safe text (``_`` inside words and ``#`` after the start are kept)."""
    text = " ".join(str(text).split())
    text = re.sub(r"[\\`*\[\]<>|]|&(?=#?\w+;)|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", _md_sub, text)
    return "\\" + text if text.startswith("#") else text


def _md_sub(match: re.Match[str]) -> str:
    return "\\" + match.group(0)


def _render_md(title: str, blocks: list[Block], footer: str) -> str:
    out = [f"# {_md_escape(title)}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + _md_escape(b.text), ""]
        elif isinstance(b, Para):
            for para in re.split(r"\n\s*\n", b.text.strip()):
                out += [f"*{_md_escape(para)}*" if b.css else _md_escape(para), ""]
        elif isinstance(b, Bullets):
            out += [f"- {_md_escape(i)}" for i in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_escape(h) for h in b.headers) + " |")
            out.append(
                "|"
                + "|".join("---:" if i in b.numeric else "---" for i in range(len(b.headers)))
                + "|"
            )
            out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, FigureBlock):
            out += [f"![{_md_escape(b.key)}]({b.rel_path})", "", f"*{_md_escape(b.caption)}*", ""]
        elif isinstance(b, Code):
            longest = max((len(m) for m in re.findall(r"`+", b.text)), default=0)
            fence = "`" * max(3, longest + 1)
            out += [fence + b.lang, b.text, fence, ""]
    out += ["---", "", f"*{_md_escape(footer)}*", ""]
    return "\n".join(out)


_VALUE_CI = re.compile(r"(\S+) (\([^()]*\))")

def _html_cell(text: str) -> str:
    """A table cell's HTML: ``value (low-high)`` as two unbreakable parts, so that a narrow
    column wraps between the value and its interval, never inside a number. Together with
    the CSS (cells wrap; only the first column, the run names, may break inside a word) the
    widest table fits a 1400 px window without hiding columns behind a scrollbar."""
    match = _VALUE_CI.fullmatch(text)
    if not match:
        return html.escape(text)
    value, ci = (html.escape(g) for g in match.groups())
    return f'<span class="v">{value}</span> <span class="ci">{ci}</span>'


def _html_blocks(blocks: list[Block]) -> list[dict[str, Any]]:
    """The blocks as plain dicts (``kind`` plus what the template shows) for ``report.html``:
    paragraphs split at blank lines, table cells as HTML (:func:`_html_cell`), figures as
    base64 PNGs."""
    from markupsafe import Markup

    out: list[dict[str, Any]] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append({"kind": "heading", "text": b.text, "level": b.level})
        elif isinstance(b, Para):
            out.append({"kind": "para", "css": b.css,
                        "paragraphs": [p.strip() for p in re.split(r"\n\s*\n", b.text.strip())]})
        elif isinstance(b, Bullets):
            out.append({"kind": "bullets", "items": b.items})
        elif isinstance(b, Table):
            out.append({"kind": "table", "headers": b.headers, "rows": [
                [(i in b.numeric, Markup(_html_cell(c))) for i, c in enumerate(row)]
                for row in b.rows]})
        elif isinstance(b, FigureBlock):
            out.append({"kind": "figure", "key": b.key, "caption": b.caption,
                        "data": base64.b64encode(b.png).decode("ascii")})
        elif isinstance(b, Code):
            out.append({"kind": "code", "text": b.text, "lang": b.lang})
    return out


def _render_html(title: str, blocks: list[Block], footer: str) -> str:
    """``report.html`` from the packaged Jinja2 template ``templates/report.html.j2`` (page
    skeleton, one macro-free branch per block kind; autoescaped) and ``report.css``."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(
        title=title, blocks=_html_blocks(blocks), footer=footer)


# ------------------------------------------------------------------------------------ writing
def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file next to ``path``, then rename it into place.

    The temporary file is created with mode 0o666 minus the umask (like a plain ``open``), not
    the 0o600 of :func:`tempfile.mkstemp`, so the report keeps ordinary permissions.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(out_dir: str | Path, results: dict) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` into ``out_dir``.

    ``results`` (JSON-serialisable; every key optional, missing or NaN values print as ``–``)::

        {"title": str, "summary": str, "classes": [str, ...], "notes": [str, ...],
         "config": {...},                       # dumped as YAML (JSON fallback) at the end
         "task": "classification" | "segmentation" | "instance",  # see reports.<task>
         "figures": [{"key", "path", "caption"}],    # extra PNGs under out_dir, embedded
         "runs": [{"name": str, "role": str,    # teacher | baseline | kd | kd_aux | ...
                   "factor": float,             # downsampling vs the original image (1 = full)
                   "input_size": [H, W], "seed": int, "split": str,
                   "metrics": {"accuracy" | "macro_f1" | "macro_precision" | "macro_recall"
                               | "ovr_accuracy": {"value": float, "low": float, "high": float}},
                   "confusion_matrix": [[int, ...], ...],   # rows = true, columns = predicted
                   "efficiency": {"gflops": float, "params": int, "latency_ms": float,
                                  "latency_q25_ms": float, "latency_q75_ms": float},
                   "history": [{"epoch": int, "train_loss": float, "val_...": float}, ...]}],
         "sections": [{"title": str, "text": str,          # method-specific, after the models
                       "table": {"headers": [str, ...], "rows": [[...], ...]},
                       "figures": [{"file": "figures/x.png", "caption": str}]}]}

    Every run folder under ``out_dir`` with a ``steps.csv`` of two or more loss terms adds the
    "Loss terms" block (:mod:`medistill.reports.loss_terms`).

    Returns the paths written: ``"html"``, ``"md"`` and one entry per figure, keyed by its file
    stem (``"accuracy_vs_gflops"``, ``"confusion_matrices_1"``, ..., ``"training_curves"``,
    ``"loss_terms_1"``, ...).
    All figures are rendered before anything is written and the two reports are written last,
    so an error leaves no new ``report.html``/``report.md`` behind (an older one is kept).
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    runs_in = results.get("runs") or []
    if not isinstance(runs_in, Sequence) or isinstance(runs_in, str):
        raise TypeError(f"results['runs'] must be a list, got {type(runs_in).__name__}")
    runs = [r for r in runs_in if isinstance(r, Mapping)]
    classes = [str(c) for c in results.get("classes") or []]
    groups = group_runs(runs)

    figures = [
        FigureBlock(key, f"figures/{key}.png", png, caption)
        for key, png, caption in plots.render_figures(runs, classes, groups)
    ]
    for extra in results.get("figures") or []:  # PNGs already written by the pipeline
        png = (Path(out_dir) / extra["path"]).read_bytes()
        figures.append(FigureBlock(extra["key"], extra["path"], png, extra.get("caption", "")))
    from medistill.reports.loss_terms import loss_term_blocks

    extra = _section_blocks(results.get("sections"), Path(out_dir))
    terms = loss_term_blocks(Path(out_dir))  # every run's steps.csv
    extra += terms
    figures_out = figures + [b for b in terms if isinstance(b, FigureBlock)]
    title, blocks = _build_document(results, runs, figures, groups, extra)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    footer = f"Generated by medistill {__version__} on {stamp}."
    md_text = _render_md(title, blocks, footer)
    html_text = _render_html(title, blocks, footer)

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fig in figures_out:
        path = out / fig.rel_path
        _atomic_write(path, fig.png)
        written[fig.key] = path
    _atomic_write(out / "report.html", html_text.encode("utf-8"))
    _atomic_write(out / "report.md", md_text.encode("utf-8"))
    return {"html": out / "report.html", "md": out / "report.md", **written}
