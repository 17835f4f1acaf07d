"""Paired bootstrap of a per-image metric difference (AJI, PQ), against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.errors import DataError
from medistill.metrics.paired import over_seeds, paired_bootstrap_per_image, verdict
from medistill.metrics.segmentation import bootstrap_mean


def test_point_value_is_the_mean_per_image_difference() -> None:
    """d = [0.2, 0, -0.1]: mean 0.1 / 3."""
    res = paired_bootstrap_per_image([0.5, 0.7, 0.4], [0.3, 0.7, 0.5], n_resamples=0)
    assert res["value"] == pytest.approx(0.1 / 3)
    assert res["low"] == res["high"] == res["value"]
    assert res["model"] == pytest.approx(1.6 / 3) and res["reference"] == pytest.approx(0.5)
    assert res["p_not_better"] == 0.0 and res["n"] == 3


def test_two_images_match_the_exact_bootstrap_distribution() -> None:
    """d = [0.2, -0.1]. A resample of 2 images is {0,0} (1/4: mean 0.2), mixed (1/2: 0.05)
    or {1,1} (1/4: -0.1); so the 2.5% / 97.5% percentiles are -0.1 / 0.2 and
    P(mean <= 0) = 1/4."""
    res = paired_bootstrap_per_image([0.6, 0.3], [0.4, 0.4], n_resamples=20_000, seed=1)
    assert res["value"] == pytest.approx(0.05)
    assert res["low"] == pytest.approx(-0.1) and res["high"] == pytest.approx(0.2)
    assert res["p_not_better"] == pytest.approx(0.25, abs=0.01)


def test_resamples_are_those_of_bootstrap_mean() -> None:
    v = np.random.default_rng(5).normal(size=14)
    res = paired_bootstrap_per_image(v, np.zeros(14), n_resamples=2000, seed=7)
    own = bootstrap_mean(v, n_resamples=2000, seed=7)
    assert (res["low"], res["high"]) == pytest.approx((own["low"], own["high"]))


def test_pairing_detects_a_small_consistent_gain_that_separate_cis_miss() -> None:
    """Images vary a lot (0.1-0.9) but the model is 0.03-0.05 better on every one: the two
    models' own CIs overlap, the paired CI lies above 0 and the verdict says "beats"."""
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.1, 0.9, size=14)
    model = ref + rng.uniform(0.03, 0.05, size=14)
    own_m, own_r = bootstrap_mean(model, seed=0), bootstrap_mean(ref, seed=0)
    assert own_m["low"] < own_r["high"]  # separate intervals overlap
    res = paired_bootstrap_per_image(model, ref, seed=0)
    assert 0.03 <= res["low"] < res["value"] < res["high"] <= 0.05
    assert res["p_not_better"] == 0.0
    assert verdict(res, metric="AJI").startswith("KD beats the baseline")


def test_undefined_images_are_left_out() -> None:
    res = paired_bootstrap_per_image([0.5, np.nan, 0.7], [0.4, 0.3, np.nan], n_resamples=100)
    assert res["value"] == pytest.approx(0.1) and res["n_undefined"] == 2
    assert res["low"] == pytest.approx(0.1) and res["high"] == pytest.approx(0.1)
    assert np.isnan(paired_bootstrap_per_image([np.nan], [0.1], n_resamples=10)["value"])


def test_over_seeds_accepts_per_image_results() -> None:
    """Differences 0.1, 0.04, -0.02 (every image shifted alike): mean 0.04, sd 0.06."""
    ref = np.linspace(0.2, 0.8, 6)
    per_seed = [paired_bootstrap_per_image(ref + s, ref, n_resamples=200) for s in
                (0.1, 0.04, -0.02)]
    s = over_seeds(per_seed, "aji")
    assert s["mean"] == pytest.approx(0.04) and s["sd"] == pytest.approx(0.06)
    assert (s["n_positive"], s["n_ci_above_zero"], s["n_ci_below_zero"]) == (2, 2, 1)


@pytest.mark.parametrize("args", [([0.1, 0.2], [0.1]), ([], []), ([[0.1]], [[0.1]])])
def test_bad_shapes_raise(args) -> None:
    with pytest.raises(DataError, match="1-D"):
        paired_bootstrap_per_image(*args)


def test_bad_options_raise() -> None:
    with pytest.raises(DataError, match="n_resamples"):
        paired_bootstrap_per_image([0.1], [0.2], n_resamples=-1)
    with pytest.raises(DataError, match="confidence"):
        paired_bootstrap_per_image([0.1], [0.2], confidence=1.0)
