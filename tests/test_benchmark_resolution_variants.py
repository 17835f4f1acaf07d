"""The accuracy-vs-GFLOPs summary of benchmarks/resolution_kd_variants.py (issue #13), on
hand-made eval records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from medistill.errors import DataError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "resolution_kd_variants.py"
_spec = importlib.util.spec_from_file_location("bench_resolution_variants", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

LABELS = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]


def _rec(role: str, seed: int, preds: list[int], px: int, gflops: float,
         factor: float = 8.0) -> dict:
    acc = sum(p == t for p, t in zip(preds, LABELS, strict=True)) / len(LABELS)
    return {"role": role, "seed": seed, "factor": factor, "name": f"seed{seed}/{role}",
            "labels": LABELS, "predictions": preds, "input_size": [px, px],
            "confusion_matrix": [[0, 0], [0, 0]], "efficiency": {"gflops": gflops},
            "metrics": {"accuracy": {"value": acc}, "macro_f1": {"value": acc}}}


def test_rows_pair_kd_with_its_own_seeds_baseline(tmp_path: Path) -> None:
    """Seed 0: KD gets 2 more images right than the baseline (+20 points); seed 1: KD equals
    the baseline (+0). Over seeds: +10 ± 14.1, 1 of 2 > 0. The 2x2 map and the 0.22x cost
    follow from the variant (28 px, stem stride 2 without max-pool) and the records' GFLOPs."""
    base = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # 5/10 right
    better = [0, 1, 0, 1, 0, 0, 0, 0, 0, 0]  # 7/10 right
    runs = [_rec("teacher", 0, LABELS, 112, 0.1327, factor=2.0),
            _rec("baseline", 0, base, 28, 0.0294), _rec("kd", 0, better, 28, 0.0294),
            _rec("teacher", 1, LABELS, 112, 0.1327, factor=2.0),
            _rec("baseline", 1, base, 28, 0.0294), _rec("kd", 1, base, 28, 0.0294)]
    (row,) = bench.variant_rows({"s2nopool28": runs}, n_resamples=200)
    assert row["map"] == 2 and row["input_px"] == 28
    kd = row["paired"]["kd"]["accuracy"]
    assert kd["mean"] == pytest.approx(0.10)
    assert kd["sd"] == pytest.approx(0.1414, abs=1e-4)
    assert (kd["n_positive"], kd["n_seeds"]) == (1, 2)
    line = bench.markdown([row]).splitlines()[-1]
    assert "| 2x2 | 0.0294 (0.22x) | 2 | 50.0 ± 0.0 | 60.0 ± 14.1 | +10.0 ± 14.1 | 1/2 /" in line
    bench.plot([row], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_rows_refuse_runs_on_different_images() -> None:
    runs = [_rec("baseline", 0, [0] * 10, 28, 0.03), _rec("kd", 0, [0] * 10, 28, 0.03)]
    runs[1]["labels"] = [1] * 10
    with pytest.raises(DataError, match="same images"):
        bench.variant_rows({"aware28": runs}, n_resamples=50)


def test_stems_and_collect(tmp_path: Path) -> None:
    """The stems the variants name; ``collect`` keeps that seed's teacher and the runs at the
    asked factor only."""
    assert bench.stem_of(bench.VARIANTS["aware28"][1]) == (1, False)
    assert bench.stem_of(bench.VARIANTS["s2nopool28"][1]) == (2, False)
    assert bench.stem_of(bench.VARIANTS["std56"][1]) == (2, True)
    for run, factor in (("teacher", 2.0), ("x4/baseline", 8.0), ("x8/baseline", 16.0)):
        d = tmp_path / "seed0" / run
        d.mkdir(parents=True)
        role = run.split("/")[-1]
        (d / "eval.json").write_text(json.dumps({"role": role, "factor": factor}))
    got = bench.collect(tmp_path, 0, 8.0)
    assert sorted((r["role"], r["factor"]) for r in got) == [("baseline", 8.0), ("teacher", 2.0)]
