"""Paired bootstrap of a per-image metric difference (AJI, PQ): exact bootstrap cases and the
pairing gain (input checks, NaN pairs and over_seeds are in test_paired.py)."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.metrics.paired import paired_bootstrap_per_image, verdict
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
