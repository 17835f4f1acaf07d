"""Paired bootstrap of a metric difference, against cases whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.errors import DataError
from medistill.metrics import bootstrap as bootstrap_mod
from medistill.metrics import bootstrap_mean, classification_report
from medistill.metrics.paired import (
    over_seeds,
    paired_bootstrap,
    paired_bootstrap_per_image,
    verdict,
)

Y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])


def test_identical_predictions_give_a_zero_difference_and_interval() -> None:
    pred = np.array([0, 1, 1, 1, 2, 0, 0, 2, 2, 0])
    res = paired_bootstrap(Y, pred, pred.copy(), 3, n_resamples=2000, seed=3)
    for name in ("accuracy", "macro_f1"):
        m = res["metrics"][name]
        assert (m["value"], m["low"], m["high"]) == (0.0, 0.0, 0.0)
        assert m["p_not_better"] == 1.0
    assert verdict(res["metrics"]["accuracy"]).startswith("no significant difference")


def test_better_on_every_image_it_differs_gives_a_positive_interval() -> None:
    """The model is right on all 10 images, the reference on 6 of them (wrong on 4): on any
    resample the accuracy difference is the share of drawn images among those 4, which is >= 0,
    and its mean is 4/10."""
    ref = Y.copy()
    ref[[1, 3, 5, 7]] = (ref[[1, 3, 5, 7]] + 1) % 3
    res = paired_bootstrap(Y, Y, ref, 3, n_resamples=5000, seed=0)
    acc = res["metrics"]["accuracy"]
    assert acc["value"] == pytest.approx(0.4)
    assert acc["model"] == 1.0 and acc["reference"] == pytest.approx(0.6)
    assert 0.0 < acc["low"] < 0.4 < acc["high"] <= 1.0
    assert acc["p_not_better"] < 0.02  # only resamples that miss all 4 images tie: 0.6^10
    assert res["metrics"]["macro_f1"]["low"] > 0
    assert verdict(acc).startswith("KD beats the baseline: +40.0 points [")
    # swapped roles: the same interval, negated
    neg = paired_bootstrap(Y, ref, Y, 3, n_resamples=5000, seed=0)["metrics"]["accuracy"]
    assert (neg["value"], neg["low"], neg["high"]) == pytest.approx(
        (-acc["value"], -acc["high"], -acc["low"]))
    assert verdict(neg).startswith("KD is worse than the baseline: -40.0 points")


def test_one_differing_image_matches_the_binomial_answer() -> None:
    """Model right, reference wrong on one of n = 4 images, equal elsewhere: the accuracy
    difference of a resample is k/4 with k ~ Binomial(4, 1/4), so
    P(diff <= 0) = P(k = 0) = (3/4)^4 = 0.316 (> 0.025, so the 2.5th percentile is 0) and, as
    P(k <= 2) = 0.949 < 0.975 <= P(k <= 3) = 0.996, the 97.5th percentile is 3/4."""
    y = np.array([0, 1, 0, 1])
    res = paired_bootstrap(y, y, np.array([0, 1, 0, 0]), 2, n_resamples=20_000, seed=1)
    acc = res["metrics"]["accuracy"]
    assert acc["p_not_better"] == pytest.approx(0.75 ** 4, abs=0.01)
    assert (acc["low"], acc["high"]) == (0.0, 0.75)
    assert verdict(acc).startswith("no significant difference")


def test_resamples_are_those_of_the_classification_report() -> None:
    """Same seed -> the same image resamples: with a constant reference (all wrong), the paired
    accuracy interval equals the model's own bootstrap interval."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    pred = np.where(rng.random(40) < 0.7, y, (y + 1) % 3)
    wrong = (y + 2) % 3
    paired = paired_bootstrap(y, pred, wrong, 3, n_resamples=3000, seed=7)["metrics"]
    own = classification_report(y, pred, 3, n_resamples=3000, seed=7)["metrics"]
    for k in ("value", "low", "high"):
        assert paired["accuracy"][k] == pytest.approx(own["accuracy"][k])


def test_vectorised_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 30)
    a = np.where(rng.random(30) < 0.6, y, rng.integers(0, 4, 30))
    b = np.where(rng.random(30) < 0.5, y, rng.integers(0, 4, 30))
    res = paired_bootstrap(y, a, b, 4, n_resamples=500, seed=2)["metrics"]["macro_f1"]
    idx = np.random.default_rng(2).integers(0, 30, size=(500, 30))
    diffs = [classification_report(y[i], a[i], 4, n_resamples=0)["metrics"]["macro_f1"]["value"]
             - classification_report(y[i], b[i], 4, n_resamples=0)["metrics"]["macro_f1"]["value"]
             for i in idx]
    low, high = np.percentile(diffs, [2.5, 97.5])
    assert (res["low"], res["high"]) == pytest.approx((low, high))


def test_over_seeds_by_hand() -> None:
    per_seed = [{"metrics": {"accuracy": {"value": v, "low": lo, "high": hi}}}
                for v, lo, hi in [(0.10, 0.02, 0.18), (0.04, -0.02, 0.10), (-0.02, -0.08, 0.04)]]
    s = over_seeds(per_seed)
    assert s["n_seeds"] == 3 and s["mean"] == pytest.approx(0.04)
    # sample sd: deviations 0.06, 0, -0.06 -> sqrt(0.0072 / 2) = 0.06
    assert s["sd"] == pytest.approx(0.06)
    assert (s["n_positive"], s["n_ci_above_zero"], s["n_ci_below_zero"]) == (2, 1, 0)
    assert over_seeds(per_seed[:1])["sd"] is None


def test_bad_input_raises_data_error() -> None:
    with pytest.raises(DataError, match="differ in length"):
        paired_bootstrap(Y, Y, Y[:-1], 3)
    with pytest.raises(DataError, match="unknown metric 'auc'"):
        paired_bootstrap(Y, Y, Y, 3, metrics=["auc"])
    with pytest.raises(DataError, match="n_resamples"):
        paired_bootstrap(Y, Y, Y, 3, n_resamples=-1)
    with pytest.raises(DataError, match="at least one"):
        over_seeds([])


# -- per-image metrics (Dice, F1, AJI, ...) ---------------------------------------------------
def test_per_image_observed_difference_by_hand() -> None:
    """d = [0.1, 0, 0.2, 0]: mean 0.075 = 0.75 - 0.675; no resamples -> a point interval."""
    res = paired_bootstrap_per_image([0.8, 0.6, 0.7, 0.9], [0.7, 0.6, 0.5, 0.9], n_resamples=0)
    assert res["value"] == pytest.approx(0.075)
    assert (res["model"], res["reference"]) == pytest.approx((0.75, 0.675))
    assert res["low"] == res["high"] == res["value"]
    assert res["p_not_better"] == 0.0 and (res["n"], res["n_undefined"]) == (4, 0)


def test_per_image_constant_shift_has_a_point_interval() -> None:
    """Every image 0.05 better: every resample's mean difference is 0.05."""
    ref = np.array([0.2, 0.5, 0.9, 0.4, 0.7])
    res = paired_bootstrap_per_image(ref + 0.05, ref, n_resamples=1000, seed=4)
    assert (res["value"], res["low"], res["high"]) == pytest.approx((0.05, 0.05, 0.05))
    assert res["p_not_better"] == 0.0
    assert verdict(res, metric="dice").startswith("KD beats the baseline: +5.0 points [+5.0, +5.0]")


def test_per_image_one_differing_image_matches_the_binomial_answer() -> None:
    """d = [0.4, 0, 0, 0]: a resample's mean is 0.1 k with k ~ Binomial(4, 1/4), so
    P(diff <= 0) = (3/4)^4 = 0.316, the 2.5th percentile is 0 and, as P(k <= 2) = 0.949 <
    0.975 <= P(k <= 3) = 0.996, the 97.5th is 0.3."""
    res = paired_bootstrap_per_image([0.9, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5],
                                     n_resamples=20_000, seed=1)
    assert res["value"] == pytest.approx(0.1)
    assert res["p_not_better"] == pytest.approx(0.75 ** 4, abs=0.01)
    assert (res["low"], res["high"]) == pytest.approx((0.0, 0.3))
    assert verdict(res).startswith("no significant difference")
    neg = paired_bootstrap_per_image([0.5] * 4, [0.9, 0.5, 0.5, 0.5], n_resamples=20_000, seed=1)
    assert (neg["value"], neg["low"], neg["high"]) == pytest.approx((-0.1, -0.3, 0.0))
    assert neg["p_not_better"] == 1.0


def test_per_image_resamples_are_those_of_bootstrap_mean() -> None:
    """Same seed -> the same image resamples: against a reference of zeros the paired interval
    is the model's own bootstrap_mean interval, also when drawn in small chunks."""
    v = np.random.default_rng(0).random(37)
    own = bootstrap_mean(v, n_resamples=3000, seed=9)
    res = paired_bootstrap_per_image(v, np.zeros(37), n_resamples=3000, seed=9)
    assert (res["value"], res["low"], res["high"]) == pytest.approx(
        (own["value"], own["low"], own["high"]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bootstrap_mod, "MAX_CHUNK_ELEMENTS", 37 * 7)  # 7 resamples per chunk
        chunked = paired_bootstrap_per_image(v, np.zeros(37), n_resamples=3000, seed=9)
    assert (chunked["low"], chunked["high"]) == (res["low"], res["high"])


def test_per_image_undefined_images_are_left_out() -> None:
    """Only image 0 has both values: the difference is 0.1 on every resample that draws it."""
    res = paired_bootstrap_per_image([0.5, np.nan, 0.7], [0.4, 0.3, np.nan], n_resamples=500)
    assert (res["n"], res["n_undefined"]) == (3, 2)
    assert (res["value"], res["low"], res["high"]) == pytest.approx((0.1, 0.1, 0.1))
    assert (res["model"], res["reference"]) == pytest.approx((0.5, 0.4))
    none = paired_bootstrap_per_image([np.nan], [0.2], n_resamples=10)
    assert np.isnan(none["value"]) and "not available" in verdict(none)


def test_per_image_over_seeds_takes_the_flat_results() -> None:
    ref = np.array([0.5, 0.6, 0.7])
    per_seed = [paired_bootstrap_per_image(ref + s, ref, n_resamples=100)
                for s in (0.1, 0.04, -0.02)]
    s = over_seeds(per_seed, metric="dice")
    assert s["mean"] == pytest.approx(0.04) and s["sd"] == pytest.approx(0.06)
    assert (s["n_positive"], s["n_ci_above_zero"], s["n_ci_below_zero"]) == (2, 2, 1)


def test_per_image_bad_input_raises_data_error() -> None:
    with pytest.raises(DataError, match="differ in length"):
        paired_bootstrap_per_image([0.1, 0.2], [0.1])
    with pytest.raises(DataError, match="1-D"):
        paired_bootstrap_per_image([[0.1]], [[0.1]])
    with pytest.raises(DataError, match="at least one image"):
        paired_bootstrap_per_image([], [])
    with pytest.raises(DataError, match="n_resamples"):
        paired_bootstrap_per_image([0.1], [0.1], n_resamples=-1)
    with pytest.raises(DataError, match="confidence"):
        paired_bootstrap_per_image([0.1], [0.1], confidence=1.0)


def test_resample_chunks_equal_one_draw() -> None:
    """Blocks of rows are the rows of one ``integers(0, n, (n_resamples, n))`` draw."""
    from medistill.metrics.bootstrap import resample_chunks

    one = np.random.default_rng(4).integers(0, 13, size=(50, 13))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bootstrap_mod, "MAX_CHUNK_ELEMENTS", 13 * 7)  # 7 rows per block
        blocks = list(resample_chunks(13, 50, seed=4))
    assert [len(b) for b in blocks] == [7] * 7 + [1]
    assert (np.concatenate(blocks) == one).all()


def test_compare_runs_names_each_comparison_by_its_runs_seed() -> None:
    """Per-seed comparisons carry the seed of their runs (they carried the bootstrap's seed,
    0, for every run seed), each paired with the baseline of its own seed."""
    from medistill.metrics.paired import compare_runs

    labels = [0, 1, 0, 1, 1, 0]
    runs = [{"role": role, "seed": s, "factor": 4, "labels": labels,
             "predictions": labels if role == "kd" or s == 0 else [1 - y for y in labels]}
            for s in (0, 1) for role in ("baseline", "kd")]
    per_seed, _ = compare_runs(runs, 2, n_resamples=50)
    assert [c["seed"] for c in per_seed] == [0, 1]
    assert [c["ci_seed"] for c in per_seed] == [0, 0]
    # seed 0: the same predictions; seed 1: KD right where its baseline is wrong everywhere
    assert [c["metrics"]["accuracy"]["value"] for c in per_seed] == [0.0, 1.0]
