"""Tests of medistill.reports.write_report (HTML + Markdown run report)."""

from __future__ import annotations

import base64
import copy
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medistill.reports import plots, write_report
from medistill.reports.report import fmt_ci, fmt_mean_std, fmt_params, fmt_sig, mag_label

CLASSES = ["ADI", "LYM", "TUM"]
# (role, factor, seed) -> accuracy; hand-picked so the aggregate is easy to check by hand
ACCURACY = {
    ("teacher", 1, 0): 0.912,
    ("baseline", 4, 0): 0.801,
    ("baseline", 4, 1): 0.795,
    ("baseline", 8, 0): 0.690,
    ("baseline", 8, 1): 0.710,
    ("kd", 4, 0): 0.845,
    ("kd", 4, 1): 0.851,
    ("kd", 8, 0): 0.700,
    ("kd", 8, 1): 0.740,
}


def _ci(value: float, half: float = 0.03) -> dict[str, float]:
    return {"value": value, "low": round(value - half, 4), "high": round(value + half * 0.9, 4)}


def _run(role: str, factor: int, seed: int) -> dict[str, Any]:
    acc = ACCURACY[(role, factor, seed)]
    size = 224 // factor
    return {
        "name": f"{'teacher' if role == 'teacher' else f'student_x{factor}_{role}'}_seed{seed}",
        "role": role,
        "factor": float(factor),
        "input_size": [size, size],
        "seed": seed,
        "split": "test",
        "metrics": {
            "accuracy": _ci(acc),
            "macro_f1": _ci(acc - 0.02, 0.035),
            "macro_precision": _ci(acc - 0.01),
            "macro_recall": _ci(acc - 0.015),
            "ovr_accuracy": _ci(min(acc + 0.05, 0.99), 0.02),
        },
        "confusion_matrix": [[40 + seed, 5, 3], [4, 45, 2], [6, 3, 38 - factor]],
        "efficiency": {
            "gflops": 4.1 / factor**2,
            "params": 25_557_032 if role == "teacher" else 1_234_567,
            "latency_ms": 12.5 / factor,
        },
        "history": [
            {"epoch": e, "train_loss": 1.2 / e, "val_accuracy": acc - 0.1 / e, "val_loss": 1.0 / e}
            for e in range(1, 5)
        ],
    }


def make_results() -> dict[str, Any]:
    return {
        "title": "Resolution-based distillation",
        "summary": "Teacher at full resolution, students at 1/4x and 1/8x.\n\nSecond paragraph.",
        "classes": CLASSES,
        "runs": [_run(*key) for key in ACCURACY],
        "notes": ["Tried temperature 2 and 4; 4 was better.", "Latency measured on CPU."],
        "config": {"method": "kd", "kd": {"temperature": 4.0, "alpha": 0.5}, "factors": [4, 8]},
    }


# a valid 1x1 PNG: stands in for the matplotlib figures where their content does not matter
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@pytest.fixture
def fast_plots(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Replace the three figure functions with instant stubs; records (figure, item count)."""
    calls: list[tuple[str, int]] = []
    for name in ("accuracy_vs_gflops", "confusion_matrices", "training_curves"):

        def stub(items: Any, *args: Any, _name: str = name) -> bytes:
            calls.append((_name, len(items)))
            return TINY_PNG

        monkeypatch.setattr(plots, name, stub)
    return calls


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report")
    results = make_results()
    paths = write_report(out, copy.deepcopy(results))
    return {
        "out": out,
        "results": results,
        "paths": paths,
        "html": paths["html"].read_text(encoding="utf-8"),
        "md": paths["md"].read_text(encoding="utf-8"),
    }


def _leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def _html_rows(text: str) -> list[str]:
    """Table rows, without the markup that only steers line breaks (the value/CI spans)."""
    rows = re.findall(r"<tr>(.*?)</tr>", text, flags=re.S)
    return [re.sub(r'<span class="(?:v|ci)">|</span>', "", r) for r in rows]


# ------------------------------------------------------------------------------- formatting
def test_formatters() -> None:
    assert mag_label(1) == "1x"
    assert mag_label(8) == "1/8x"
    assert mag_label(2.5) == "1/2.5x"
    assert mag_label(0.5) == "2x"
    assert mag_label(None) == mag_label(float("nan")) == "–"
    assert fmt_sig(12.345) == "12.3"
    assert fmt_sig(0.0412345) == "0.0412"
    assert fmt_sig(1234) == "1230"
    assert fmt_sig(9.996) == "10.0"
    assert fmt_sig(float("nan")) == "–"
    assert fmt_params(1_234_567) == "1.23 M"
    assert fmt_params(25_557_032) == "25.56 M"
    assert fmt_params(None) == "–"
    assert fmt_ci((0.8123, 0.7741, 0.8509)) == "0.812 (0.774-0.851)"
    assert fmt_ci((0.8, None, None)) == "0.800"
    assert fmt_ci((None, 0.1, 0.2)) == "–"
    assert fmt_mean_std([0.70, 0.74]) == "0.720 ± 0.028"
    assert fmt_mean_std([0.5, None]) == "0.500"


# ---------------------------------------------------------------------------- full report
def test_files_written(report: dict[str, Any]) -> None:
    paths, out = report["paths"], report["out"]
    assert paths["html"] == out / "report.html" and paths["html"].is_file()
    assert paths["md"] == out / "report.md" and paths["md"].is_file()
    figures = {k: v for k, v in paths.items() if k not in ("html", "md")}
    assert set(figures) == {"accuracy_vs_gflops", "confusion_matrices_1", "training_curves"}
    for path in figures.values():
        assert path.parent == out / "figures"
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert _leftovers(out) == []


def test_html_model_rows_have_ci_strings(report: dict[str, Any]) -> None:
    rows = _html_rows(report["html"])
    for run in report["results"]["runs"]:
        row = next(r for r in rows if f"<td>{run['name']}</td>" in r)
        for key in ("accuracy", "macro_f1", "ovr_accuracy"):
            m = run["metrics"][key]
            assert f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})" in row
        assert mag_label(run["factor"]) in row
        assert fmt_params(run["efficiency"]["params"]) in row
    teacher = next(r for r in rows if "<td>teacher_seed0</td>" in r)
    assert "<td>1x</td>" in teacher and "224×224" in teacher and "4.10" in teacher


def test_html_is_self_contained(report: dict[str, Any]) -> None:
    text = report["html"]
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 3
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert 'src="figures/' not in text
    assert "<style>" in text and "Resolution-based distillation" in text


def test_md_references_existing_figures(report: dict[str, Any]) -> None:
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report["md"])
    assert len(refs) == 3
    assert {report["out"] / ref for ref in refs} == {
        v for k, v in report["paths"].items() if k not in ("html", "md")
    }
    assert all(not Path(ref).is_absolute() for ref in refs)


def test_aggregate_table(report: dict[str, Any]) -> None:
    # kd at factor 8: accuracies 0.700 and 0.740 -> mean 0.720, sample std 0.0283
    kd8 = '<td>kd</td><td class="num">8</td>'
    row = next(r for r in _html_rows(report["html"]) if r.startswith(kd8))
    assert "0.720 ± 0.028" in row
    assert '<td class="num">2</td>' in row
    assert "| kd | 8 | 1/8x | test | 2 | 0.720 ± 0.028 |" in report["md"]
    # the single-seed teacher has its mean only
    teacher = next(r for r in _html_rows(report["html"]) if r.startswith("<td>teacher</td>"))
    assert re.findall(r"<td[^>]*>(.*?)</td>", teacher)[4:6] == ["1", "0.912"]


def test_same_content_in_both_formats(report: dict[str, Any]) -> None:
    for text in (report["html"], report["md"]):
        assert "Second paragraph." in text
        assert "Tried temperature 2 and 4; 4 was better." in text
        assert "temperature: 4.0" in text  # config dumped as YAML
        assert "Aggregate over seeds" in text
        assert "error bar spans from the lowest CI lower bound" in text
    assert "```yaml" in report["md"]
    assert "| student_x8_kd_seed1 | kd | 8 | 1/8x | 28×28 | 1 | test |" in report["md"]


# ---------------------------------------------------------------------------- edge cases
def test_html_escaping(tmp_path: Path, fast_plots: list) -> None:
    results = make_results()
    results["title"] = "KD <script>alert(1)</script>"
    results["runs"][1]["name"] = "<b>bold</b> & co"
    results["notes"] = ["a < b"]
    paths = write_report(tmp_path, results)
    text = paths["html"].read_text(encoding="utf-8")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in text
    assert "<b>bold</b>" not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<li>a &lt; b</li>" in text
    md = paths["md"].read_text(encoding="utf-8")
    assert "<b>" not in md and r"\<b\>bold\</b\> & co" in md


def test_empty_runs(tmp_path: Path) -> None:
    paths = write_report(tmp_path / "new" / "dir", {"title": "Nothing", "runs": []})
    assert set(paths) == {"html", "md"}
    for key in ("html", "md"):
        assert "No runs were evaluated." in paths[key].read_text(encoding="utf-8")
    assert _leftovers(tmp_path) == []


def test_nan_and_missing_values(tmp_path: Path) -> None:
    nan = float("nan")
    results = make_results()
    run = results["runs"][1]
    run["metrics"]["accuracy"] = {"value": nan, "low": nan, "high": nan}
    run["metrics"]["macro_f1"] = {"value": 0.5, "low": nan, "high": 0.6}
    del run["metrics"]["ovr_accuracy"]
    run["efficiency"] = {"gflops": nan}
    run["history"] = []
    run["confusion_matrix"] = [[nan, 1, 0], [0, 0, 0], [1, 2, 3]]
    results["runs"][2]["efficiency"] = {}
    results["runs"][3]["history"] = [{"epoch": 1, "train_loss": nan}, {"epoch": 2}]
    paths = write_report(tmp_path, results)
    text = paths["html"].read_text(encoding="utf-8")
    row = next(r for r in _html_rows(text) if f"<td>{run['name']}</td>" in r)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[7] == "–" and cells[8] == "0.500" and cells[9] == "–"
    assert cells[10:13] == ["–", "–", "–"]
    without_images = re.sub(r"base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"\bnan\b", without_images, flags=re.I)
    assert "2 run(s) without GFLOPs or accuracy are not plotted." in text


def test_many_runs_split_confusion_figures(tmp_path: Path, fast_plots: list) -> None:
    runs = []
    for i in range(13):
        run = _run("kd", 4, 0)
        run["name"] = f"run{i}"
        run["seed"] = i
        runs.append(run)
    paths = write_report(tmp_path, {"title": "many", "classes": CLASSES, "runs": runs})
    assert "confusion_matrices_1" in paths and "confusion_matrices_2" in paths
    assert "confusion_matrices_3" not in paths
    assert "(part 2 of 2)" in paths["md"].read_text(encoding="utf-8")
    assert [n for f, n in fast_plots if f == "confusion_matrices"] == [12, 1]


def test_rewrite_in_same_dir(tmp_path: Path, fast_plots: list) -> None:
    write_report(tmp_path, make_results())
    results = make_results()
    results["title"] = "Second version"
    paths = write_report(tmp_path, results)
    assert "Second version" in paths["html"].read_text(encoding="utf-8")
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ atomicity
@pytest.mark.parametrize("stage", ["confusion_matrices", "training_curves"])
def test_failure_leaves_no_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_plots: list, stage: str
) -> None:
    def boom(*args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("figure failed")

    monkeypatch.setattr(plots, stage, boom)
    with pytest.raises(RuntimeError, match="figure failed"):
        write_report(tmp_path, make_results())
    assert not (tmp_path / "report.html").exists()
    assert not (tmp_path / "report.md").exists()
    assert _leftovers(tmp_path) == []


def test_failure_while_writing_md(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_plots: list
) -> None:
    import medistill.reports.report as report_mod

    real_replace = report_mod.os.replace

    def flaky_replace(src: str, dst: Any) -> None:
        if str(dst).endswith("report.md"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(report_mod.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(tmp_path, make_results())
    assert not (tmp_path / "report.md").exists()
    assert _leftovers(tmp_path) == []


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, medistill.reports; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_point_aggregation() -> None:
    results = make_results()
    points, skipped = plots.curve_points(plots.group_runs(results["runs"]))
    assert skipped == 0 and len(points) == 5
    kd8 = next(p for p in points if p["series"] == "kd" and p["factor"] == 8)
    assert math.isclose(kd8["y"], 0.72)
    assert math.isclose(kd8["low"], 0.67) and math.isclose(kd8["high"], 0.767)
    assert kd8["label"] == "1/8x" and kd8["n"] == 2


def test_sections_add_tables_and_figures(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16
    (tmp_path / "figures" / "cka.png").write_bytes(png)
    results = {"title": "t", "runs": [], "sections": [{
        "title": "Table 1", "text": "Linear-probe accuracy.",
        "table": {"headers": ["k", "asymmetric"], "rows": [[7, "0.701 (0.650-0.750)"]]},
        "figures": [{"file": "figures/cka.png", "caption": "CKA heatmap"}],
    }]}
    paths = write_report(tmp_path, results)
    html_text = re.sub(r'<span class="(?:v|ci)">|</span>', "", paths["html"].read_text())
    md = paths["md"].read_text()
    for text in ("Table 1", "Linear-probe accuracy.", "0.701 (0.650-0.750)", "CKA heatmap"):
        assert text in html_text and text in md
    assert base64.b64encode(png).decode() in html_text
    assert "figures/cka.png" in md


def test_missing_section_figure_is_an_error(tmp_path: Path) -> None:
    results = {"runs": [], "sections": [{"figures": [{"file": "figures/none.png"}]}]}
    with pytest.raises(FileNotFoundError, match="none.png"):
        write_report(tmp_path, results)
    assert not (tmp_path / "report.html").exists()


def test_role_aggregate_blocks_average_each_role():
    from medistill.reports.report import Table, role_aggregate_blocks

    runs = [{"role": "kd", "metrics": {"dice": {"value": v}}} for v in (0.5, 0.7)]
    runs.append({"role": "teacher", "metrics": {"dice": {"value": 0.9}}})
    table = next(b for b in role_aggregate_blocks(runs, [("dice", "DSC")]) if isinstance(b, Table))
    assert table.headers == ["Role", "Seeds", "DSC"]
    assert table.rows == [["kd", "2", "0.600 ± 0.141"], ["teacher", "1", "0.900"]]


def test_segmentation_table_drops_metrics_no_run_has(tmp_path: Path) -> None:
    """A weakly supervised (mil_fusion) run has DSC but no RVD/VOE/HD95: no dash columns."""
    ci = {"value": 0.7, "low": 0.6, "high": 0.8}
    runs = [{"name": f"seed{s}/{role}", "role": role, "seed": s, "split": "test", "n": 5,
             "metrics": {"dice": ci, "pixel_f1": ci}} for s in (0, 1) for role in ("mil", "ikd")]
    text = write_report(tmp_path, {"task": "segmentation", "title": "w", "classes": ["a", "b"],
                                   "runs": runs})["md"].read_text(encoding="utf-8")
    assert "DSC (95% CI)" in text and "DSC (mean ± sd)" in text
    for header in ("RVD (95% CI)", "VOE (95% CI)", "HD95 px", "GFLOPs", "RVD (mean", "HD95 (mean"):
        assert header not in text
    full = dict(runs[0], metrics={"dice": ci, "rvd": ci, "voe": ci, "hd95": ci})
    text = write_report(tmp_path / "full", {"task": "segmentation", "title": "s", "classes":
                                            ["a", "b"], "runs": [full]})["md"].read_text("utf-8")
    assert all(h in text for h in ("RVD (95% CI)", "VOE (95% CI)", "HD95 px (95% CI)"))
