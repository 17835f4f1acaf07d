"""Instance metrics (AJI, PQ, VOI, ARAND) on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.metrics import aji, instance_case_metrics, instance_report, panoptic_quality


def test_perfect_prediction_with_permuted_ids():
    truth = np.zeros((6, 6), int)
    truth[:2, :2], truth[3:, 3:] = 1, 2
    pred = np.where(truth == 1, 7, np.where(truth == 2, 3, 0))
    m = instance_case_metrics(pred, truth)
    assert m["aji"] == m["pq"] == m["dq"] == m["sq"] == m["f1"] == 1.0
    assert m["voi_split"] == pytest.approx(0, abs=1e-12)
    assert m["voi_merge"] == pytest.approx(0, abs=1e-12)
    assert m["arand"] == pytest.approx(0)


def test_aji_hand_computed():
    truth = np.zeros((1, 10), int)
    truth[0, :4] = 1  # 4 px
    truth[0, 6:] = 2  # 4 px
    pred = np.zeros((1, 10), int)
    pred[0, 1:4] = 1  # inside truth 1: I = 3, U = 4
    pred[0, 8] = 5  # false positive, also the best match of truth 2: I = 1, U = 4
    pred[0, 5] = 6  # unmatched prediction: 1 px added to U
    assert aji(pred, truth) == pytest.approx((3 + 1) / (4 + 4 + 1))


def test_panoptic_quality_hand_computed():
    truth = np.zeros((1, 12), int)
    truth[0, :4], truth[0, 4:8], truth[0, 8:] = 1, 2, 3
    pred = np.zeros((1, 12), int)
    pred[0, :4] = 1  # IoU 1
    pred[0, 4:7] = 2  # IoU 3/4
    pred[0, 8] = 3  # IoU 1/4 < 0.5: one FP and one FN
    pq = panoptic_quality(pred, truth)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (2, 1, 1)
    assert pq["dq"] == pytest.approx(2 / (2 + 0.5 + 0.5))
    assert pq["sq"] == pytest.approx((1 + 0.75) / 2)
    assert pq["pq"] == pytest.approx(pq["dq"] * pq["sq"])


def test_voi_split_and_merge_directions():
    truth = np.zeros((4, 4), int)
    truth[:, :2], truth[:, 2:] = 1, 2
    over = truth.copy()
    over[:2, :2] = 3  # splits truth 1
    m = instance_case_metrics(over, truth)
    assert m["voi_split"] > 0 and m["voi_merge"] == pytest.approx(0, abs=1e-12)
    under = np.ones_like(truth)  # merges both
    m = instance_case_metrics(under, truth)
    assert m["voi_merge"] > 0 and m["voi_split"] == pytest.approx(0, abs=1e-12)


def test_empty_images():
    empty = np.zeros((3, 3), int)
    assert aji(empty, empty) == 1.0 and panoptic_quality(empty, empty)["pq"] == 1.0
    one = empty.copy()
    one[1, 1] = 1
    assert aji(one, empty) == 0.0 and aji(empty, one) == 0.0
    assert panoptic_quality(empty, one)["pq"] == 0.0


def test_report_bootstraps_over_images():
    cases = [{"aji": v, "pq": v} for v in (0.2, 0.4, 0.6)]
    rep = instance_report(cases, n_resamples=200, seed=0)
    assert rep["n"] == 3
    assert rep["metrics"]["aji"]["value"] == pytest.approx(0.4)
    assert rep["metrics"]["aji"]["low"] <= 0.4 <= rep["metrics"]["aji"]["high"]


def test_voi_ignores_true_background_like_the_graph_relation_authors():
    """Issue #12 item 8: the authors call skimage's VOI with ignore_labels=0 (truth
    background left out); the background-included values stay as voi_*_bg."""
    truth = np.array([[1, 1, 0, 0]])
    m = instance_case_metrics(np.array([[1, 1, 1, 1]]), truth)  # false foreground only
    assert m["voi_split"] == pytest.approx(0, abs=1e-12)
    assert m["voi_merge"] == pytest.approx(0, abs=1e-12)
    assert m["voi_split_bg"] == pytest.approx(0, abs=1e-12)
    assert m["voi_merge_bg"] == pytest.approx(1.0)  # H(truth | pred) = 1 bit
    m = instance_case_metrics(np.array([[1, 0, 0, 0]]), truth)  # half the nucleus missed
    assert m["voi_split"] == pytest.approx(1.0)  # pred {1, 0} inside truth 1
    assert m["voi_merge"] == pytest.approx(0, abs=1e-12)
    h = -(1 / 3 * np.log2(1 / 3) + 2 / 3 * np.log2(2 / 3))
    assert m["voi_split_bg"] == pytest.approx(0.5)
    assert m["voi_merge_bg"] == pytest.approx(0.75 * h)
    empty = instance_case_metrics(np.array([[1, 0]]), np.array([[0, 0]]))
    assert np.isnan(empty["voi_split"]) and np.isnan(empty["arand"])


def test_sq_is_zero_without_matches_like_hovernet():
    """Issue #12 item 9: HoVer-Net's SQ = sum(IoU) / (TP + 1e-6) is 0 for an image with no
    match, and that 0 enters the dataset mean (we used to leave the image out as NaN)."""
    truth = np.zeros((1, 8), int)
    truth[0, :4] = 1
    pred = np.zeros((1, 8), int)
    pred[0, 3:] = 2  # IoU 1/8: no match
    pq = panoptic_quality(pred, truth)
    assert pq["sq"] == 0.0 and pq["tp"] == 0
    perfect = instance_case_metrics(truth, truth)
    cases = [perfect, instance_case_metrics(pred, truth)]
    rep = instance_report(cases, n_resamples=50)
    assert rep["metrics"]["sq"]["value"] == pytest.approx(0.5)  # not 1.0
