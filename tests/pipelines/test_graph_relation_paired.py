"""Paired per-image differences between graph-relation runs (hand-made run records)."""

from __future__ import annotations

import pytest

from medistill.errors import DataError
from medistill.pipelines.graph_relation import paired_differences


def record(role: str, seed: int, ajis: list[float], names: str = "abc") -> dict:
    return {"name": f"seed{seed}/{role}", "role": role, "seed": seed,
            "cases": [{"name": n, "aji": v, "pq": v / 2} for n, v in zip(names, ajis, strict=True)]}


RUNS = [
    record("teacher", 0, [0.9, 0.8, 0.7]),
    record("no_kd", 0, [0.5, 0.4, 0.3]),
    record("no_kd", 1, [0.6, 0.6, 0.6]),
    record("full", 0, [0.6, 0.4, 0.2]),
    record("full", 1, [0.7, 0.7, 0.7]),
]


def test_kd_minus_no_kd_per_seed_by_hand() -> None:
    """Seed 0: d = [0.1, 0, -0.1], mean 0; seed 1: d = 0.1 on every image."""
    res = paired_differences(RUNS, "full", n_resamples=0)
    assert [r["train_seed"] for r in res] == [0, 1]
    assert res[0]["value"] == pytest.approx(0.0) and res[0]["n"] == 3
    assert res[1]["value"] == pytest.approx(0.1)
    with_ci = paired_differences(RUNS, "full", n_resamples=200)[1]
    assert with_ci["low"] == pytest.approx(0.1) and with_ci["high"] == pytest.approx(0.1)
    pq = paired_differences(RUNS, "full", metric="pq", n_resamples=0)
    assert pq[1]["value"] == pytest.approx(0.05)


def test_the_shared_teacher_is_paired_with_every_seed() -> None:
    """Teacher - no_kd: seed 0 d = 0.4 everywhere; seed 1 d = [0.3, 0.2, 0.1], mean 0.2."""
    res = paired_differences(RUNS, "teacher", n_resamples=0)
    assert [(r["train_seed"], round(r["value"], 6)) for r in res] == [(0, 0.4), (1, 0.2)]


def test_images_are_matched_by_name_and_must_agree() -> None:
    swapped = [record("no_kd", 0, [0.3, 0.4, 0.5], "cba"), record("full", 0, [0.6, 0.4, 0.2])]
    assert paired_differences(swapped, "full", n_resamples=0)[0]["value"] == pytest.approx(0.0)
    other = [record("no_kd", 0, [0.3, 0.4, 0.5], "xyz"), record("full", 0, [0.6, 0.4, 0.2])]
    with pytest.raises(DataError, match="different images"):
        paired_differences(other, "full")
    assert paired_differences(RUNS, "intra") == []
