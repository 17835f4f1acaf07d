"""The paired summary of benchmarks/mil_fusion.py (issue #13), on hand-made eval records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from medistill.errors import DataError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mil_fusion.py"
_spec = importlib.util.spec_from_file_location("bench_mil_fusion", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _record(out: Path, seed: int, role: str, f1: list[float], model: str) -> None:
    cases = [{"name": f"img{i}", "label": i % 2, "pixel_f1": v} for i, v in enumerate(f1)]
    rec = {"role": role, "seed": seed, "model_path": str(out / model), "cases": cases,
           "metrics": {k: {"value": sum(f1) / len(f1)} for k in
                       ("pixel_f1", "pixel_f1_pos", "image_auc")}}
    (out / f"seed{seed}" / role).mkdir(parents=True)
    (out / f"seed{seed}" / role / "eval.json").write_text(json.dumps(rec))


def test_paired_report_rows_and_over_seeds(tmp_path: Path) -> None:
    """Seed 0: the full method gains 0.25 on each of 4 images (point CI +0.25, p 0); seed 1:
    it returned the MIL teacher itself (Δ 0). Over seeds: mean 0.125, sd 0.177."""
    teacher = [0.2, 0.4, 0.6, 0.0]
    _record(tmp_path, 0, "mil_teacher", teacher, "seed0/mil_teacher/best.pt")
    _record(tmp_path, 0, "ikd", [v + 0.25 for v in teacher], "seed0/kd_round1/best.pt")
    _record(tmp_path, 1, "mil_teacher", teacher, "seed1/mil_teacher/best.pt")
    _record(tmp_path, 1, "ikd", teacher, "seed1/mil_teacher/best.pt")
    text = bench.paired_report(tmp_path, n_resamples=200)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines()
            if line.startswith("| iterative")}
    full = "iterative fusion KD (full)"
    assert "+0.250 (+0.250 to +0.250) | 0.000 | KD beats the MIL teacher" in rows[(full, "0")]
    assert "+0.000 (+0.000 to +0.000) | 1.000 | returned the MIL teacher" in rows[(full, "1")]
    over = rows[(f"{full}: over seeds", "2")]
    assert "+0.125 ± 0.177 (mean ± sd)" in over
    assert "1 seeds Δ > 0, 1 with CI > 0, 0 with CI < 0" in over


def test_paired_delta_refuses_different_images() -> None:
    with pytest.raises(DataError, match="different images"):
        bench.paired_delta({"a": 1.0}, {"b": 1.0})
