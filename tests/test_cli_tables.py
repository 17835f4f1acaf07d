"""The printed results tables: rich on a terminal, plain fixed-width text elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from medistill.cli.tables import CLASSIFICATION_COLUMNS, print_table

RUNS = [
    {"name": "seed0/x4/kd-a-rather-long-run-name-that-needs-room", "magnification": "5x",
     "input_size": [28, 28],
     "metrics": {"accuracy": {"value": 0.7512, "low": 0.7, "high": 0.8},
                 "macro_f1": {"value": 0.7, "low": 0.65, "high": 0.75}},
     "efficiency": {"gflops": 0.0123, "params": 1_232_230}},
    {"name": "seed0/x4/baseline", "magnification": "5x", "input_size": [28, 28],
     "metrics": {"accuracy": {"value": 0.6, "low": 0.55, "high": 0.65},
                 "macro_f1": {"value": 0.58, "low": 0.5, "high": 0.66}},
     "efficiency": {"gflops": 0.0123, "params": 1_232_230}},
]


def test_plain_text_when_not_a_terminal(capsys):
    print_table(RUNS, console=Console(file=io.StringIO(), force_terminal=False))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["run", "mag"] and set(lines[1]) == {"-"}
    assert lines[3].split() == ["seed0/x4/baseline", "5x", "28x28", "0.600", "(0.550-0.650)",
                                "0.580", "(0.500-0.660)", "0.0123", "1.23M"]
    assert "\x1b[" not in "".join(lines)  # no escape codes in a pipe


def _rich(width: int) -> str:
    out = io.StringIO()
    print_table(RUNS, console=Console(file=out, force_terminal=True, width=width,
                                      color_system=None))
    return out.getvalue()


def test_a_rich_table_on_a_terminal_shows_every_column_and_the_whole_name():
    text = _rich(140)
    for header, _, _ in CLASSIFICATION_COLUMNS:
        assert header in text
    assert "0.751 (0.700-0.800)" in text and "1.23M" in text
    assert "seed0/x4/kd-a-rather-long-run-name-that-needs-room" in text  # on one line
    assert "─" in text  # rich's header rule, not the plain dashes


def test_a_narrow_terminal_folds_the_name_but_keeps_every_column():
    text = _rich(90)
    assert max(len(line) for line in text.splitlines()) <= 90
    for header, _, _ in CLASSIFICATION_COLUMNS[3:]:
        assert header in text
    assert "0.751 (0.700-0.800)" in text and "seed0/x4/kd-" in text  # folded


def test_the_metric_columns_are_the_tasks_own(monkeypatch, capsys):
    """The table's metric columns come from the task (``Task.columns``), not a CLI list."""
    from dataclasses import replace

    from medistill.cli import tables
    from medistill.tasks import CLASSIFICATION, TASKS, MetricColumn

    headers = [h for h, _, _ in tables.CLASSIFICATION_COLUMNS]
    assert headers[3:5] == [c.title for c in CLASSIFICATION.columns]
    recall = replace(CLASSIFICATION, columns=(MetricColumn("macro_recall", "recall"),))
    monkeypatch.setitem(TASKS._factories, "classification", recall)
    cols = tables.metric_columns("classification")
    run = {"metrics": {"macro_recall": {"value": 0.5, "low": 0.25, "high": 0.75}}}
    assert [(h, cell(run)) for h, _, cell in cols] == [("recall (95% CI)",
                                                         "0.500 (0.250-0.750)")]
