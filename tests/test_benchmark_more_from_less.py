"""The paired summary of benchmarks/more_from_less.py and the record collection of
benchmarks/hlfd_ablation.py (issue #13), on hand-made eval records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mfl = _load("more_from_less")


def _rec(seed: int, pair: str, preds: list[int], labels: list[int], **extra) -> dict:
    return {"task": "main", "seed": seed, "level": "7px", "pair": pair, "loss": "vicreg",
            "role": pair, "labels": labels, "predictions": preds,
            "confusion_matrix": [[0, 0], [0, 0]], **extra}


def test_paired_summary_gap_first_and_asymmetric_minus_symmetric() -> None:
    """4 images, labels 0 1 0 1. Seed 0: dense all right, asymmetric 3/4, symmetric 2/4;
    seed 1: all three 2/4 on the same images. Dense - asymmetric: +0.25 then 0; asymmetric -
    symmetric: +0.25 then 0 (mean 0.125, sd 0.177)."""
    y = [0, 1, 0, 1]
    records = [
        _rec(0, "asymmetric", [0, 1, 0, 0], y), _rec(0, "symmetric", [0, 1, 1, 0], y),
        _rec(0, "asymmetric", y, y, view="dense"),
        _rec(1, "asymmetric", [0, 1, 1, 0], y), _rec(1, "symmetric", [0, 1, 1, 0], y),
        _rec(1, "asymmetric", [0, 1, 1, 0], y, view="dense"),
    ]
    text = mfl.paired_summary(records, n_resamples=200)
    lines = text.splitlines()
    per_seed = [ln for ln in lines if ln.startswith("| 7px | vicreg |") and ln.count("|") == 9]
    assert per_seed[0].split("|")[3].strip() == "dense view (teacher) - asymmetric"
    assert "| 0 | 1.000 | 0.750 | +0.250" in per_seed[0]
    over = next(ln for ln in lines if "| asymmetric - symmetric | 2 |" in ln)
    assert "+0.125 ± 0.177" in over
    assert "supervised" not in text  # no supervised run: no comparison printed against it


def test_paired_summary_refuses_different_images() -> None:
    records = [_rec(0, "asymmetric", [0, 1], [0, 1]), _rec(0, "symmetric", [0, 1], [1, 0])]
    with pytest.raises(SystemExit, match="not evaluated on the same images"):
        mfl.paired_summary(records, n_resamples=10)


def test_hlfd_ablation_roles_by_weight_and_one_teacher_per_seed(tmp_path: Path) -> None:
    abl = _load("hlfd_ablation")

    def write(folder: str, role: str, seed: int) -> None:
        d = tmp_path / folder / f"seed{seed}" / role
        d.mkdir(parents=True)
        (d / "eval.json").write_text(json.dumps({"role": role, "seed": seed}))

    write("teacher", "teacher", 0)
    write("teacher", "no_kd", 0)
    write("no_kd/s1", "teacher", 1)
    write("no_kd/s1", "no_kd", 1)
    write("fw0.1/s1", "hlfd", 1)
    got = sorted((r["role"], r["seed"]) for r in abl.collect(tmp_path))
    assert got == [("hlfd fw0.1", 1), ("no_kd", 0), ("no_kd", 1), ("teacher", 0),
                   ("teacher", 1)]
