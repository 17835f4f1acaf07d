"""Paired bootstrap of a metric difference, against cases whose answer is known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.errors import DataError
from medistill.metrics import classification_report
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


# -- paired_bootstrap_per_image --------------------------------------------------------------


def test_per_image_identical_values_give_zero() -> None:
    v = np.array([0.2, 0.9, 0.5, 0.0])
    res = paired_bootstrap_per_image(v, v.copy(), n_resamples=500, seed=2)
    assert (res["value"], res["low"], res["high"], res["p_not_better"], res["n"]) == (
        0.0, 0.0, 0.0, 1.0, 4)


def test_per_image_constant_gain_gives_a_point_interval() -> None:
    """Every image gains exactly 0.25: every resample's mean difference is 0.25."""
    ref = np.array([0.1, 0.3, 0.5, 0.7, 0.2])
    res = paired_bootstrap_per_image(ref + 0.25, ref, n_resamples=1000)
    assert res["value"] == pytest.approx(0.25)
    assert res["low"] == pytest.approx(0.25) and res["high"] == pytest.approx(0.25)
    assert res["p_not_better"] == 0.0
    assert verdict(res, metric="pixel F1").startswith("KD beats the baseline: +25.0 points")


def test_per_image_one_gain_matches_the_binomial_answer() -> None:
    """One of n = 4 images gains 1, the others tie: a resample's mean difference is k/4 with
    k ~ Binomial(4, 1/4), so P(<= 0) = (3/4)^4 and the 95% interval is [0, 3/4] (as in the
    accuracy case above); the observed difference is 1/4. Swapping the models negates it."""
    a, b = np.array([1.0, 0.5, 0.2, 0.0]), np.array([0.0, 0.5, 0.2, 0.0])
    res = paired_bootstrap_per_image(a, b, n_resamples=20_000, seed=1)
    assert res["value"] == pytest.approx(0.25)
    assert (res["low"], res["high"]) == (0.0, 0.75)
    assert res["p_not_better"] == pytest.approx(0.75 ** 4, abs=0.01)
    neg = paired_bootstrap_per_image(b, a, n_resamples=20_000, seed=1)
    assert (neg["value"], neg["low"], neg["high"]) == pytest.approx((-0.25, -0.75, 0.0))


def test_per_image_uses_the_resamples_of_paired_bootstrap() -> None:
    """Accuracy is the mean of per-image correctness (1 / 0), so with the same seed the
    per-image bootstrap of the correctness values gives paired_bootstrap's accuracy CI."""
    pred = np.array([0, 1, 1, 1, 2, 0, 0, 2, 2, 0])
    ref = np.array([1, 0, 1, 2, 2, 1, 0, 1, 0, 0])
    acc = paired_bootstrap(Y, pred, ref, 3, metrics=["accuracy"], n_resamples=3000,
                           seed=7)["metrics"]["accuracy"]
    res = paired_bootstrap_per_image((pred == Y).astype(float), (ref == Y).astype(float),
                                     n_resamples=3000, seed=7)
    for k in ("value", "low", "high", "p_not_better"):
        assert res[k] == pytest.approx(acc[k])
    summary = over_seeds([{"pixel_f1": res}, {"pixel_f1": {**res, "value": -0.1}}], "pixel_f1")
    assert summary["n_seeds"] == 2 and summary["n_positive"] == 1


@pytest.mark.parametrize(("a", "b", "kwargs", "match"), [
    ([0.1, 0.2], [0.1], {}, "same length"),
    ([], [], {}, "non-empty"),
    ([0.1, float("nan")], [0.1, 0.2], {}, "finite"),
    ([0.1], [0.2], {"n_resamples": -1}, "n_resamples"),
    ([0.1], [0.2], {"confidence": 1.0}, "confidence"),
])
def test_per_image_bad_input_is_a_data_error(a, b, kwargs, match) -> None:
    with pytest.raises(DataError, match=match):
        paired_bootstrap_per_image(a, b, **kwargs)
