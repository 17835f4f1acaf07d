"""The report's "Loss terms" block, read from the runs' steps.csv files."""

from __future__ import annotations

import csv
from pathlib import Path

from medistill.reports import write_report


def _write_steps(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _kd_rows() -> list[dict]:
    rows = []
    for step in range(1, 5):
        row = {"epoch": 1, "step": step, "loss": 3.0, "term_soft": 2.0, "term_pixel": 1.0}
        if step in (1, 3):  # diagnostic steps: pixel has 0.4% of the gradient
            row.update(grad_norm=1.0, norm_soft=0.996, norm_pixel=0.004, share_soft=0.996,
                       share_pixel=0.004, cos_soft=0.99, cos_pixel=0.25)
        rows.append(row)
    return rows


def test_block_lists_every_term_and_flags_the_untested(tmp_path: Path) -> None:
    _write_steps(tmp_path / "kd_s0" / "steps.csv", _kd_rows())
    # one term only (a supervised teacher): nothing to compare, left out
    _write_steps(tmp_path / "teacher_s0" / "steps.csv",
                 [{"epoch": 1, "step": 1, "loss": 1.0, "term_loss": 1.0}])
    paths = write_report(tmp_path, {"title": "t", "runs": []})
    md = paths["md"].read_text()
    assert "## Loss terms" in md
    assert "| kd_s0 | soft | 2.00 | 99.6% | 0.99 | 2 |  |" in md
    assert "| kd_s0 | pixel | 1.00 | 0.400% | 0.25 | 2 | not being tested |" in md
    assert "teacher_s0" not in md
    assert "1 term(s) are flagged" in md
    assert paths["loss_terms_1"].is_file() and "(figures/loss_terms_1.png)" in md
    assert "Loss terms" in paths["html"].read_text()


def test_no_block_without_step_logs(tmp_path: Path) -> None:
    paths = write_report(tmp_path, {"title": "t", "runs": []})
    assert "Loss terms" not in paths["md"].read_text()
    assert not any(k.startswith("loss_terms") for k in paths)
