"""Weakly supervised segmentation metrics: the authors' per-image F1 (own class), our
tumour-class alternative, AUC, smoothing (issues #6, #12)."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.metrics import binary_auc, weak_case_metrics, weak_segmentation_report
from medistill.metrics.weak_segmentation import smooth_probability
from medistill.pipelines.evaluate_weak import sigma_axes


def _half_truth() -> np.ndarray:
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1  # 50 px
    return truth


def test_positive_image_scores_the_tumour_class():
    prob = np.zeros((10, 10), np.float32)
    prob[:, :4] = 0.9  # 40 px inside the truth: TP 40, FN 10
    prob[0, 5:10] = 0.7  # 5 px outside: FP 5
    m = weak_case_metrics(prob, _half_truth())
    assert m["pixel_f1"] == pytest.approx(2 * 40 / (2 * 40 + 5 + 10))  # 80 / 95
    assert m["iou"] == pytest.approx(40 / (40 + 5 + 10))
    # on a positive image both F1 definitions agree
    assert m["pixel_f1_positive"] == m["pixel_f1"] and m["iou_positive"] == m["iou"]
    assert m["max_score"] == pytest.approx(0.9)
    empty = weak_case_metrics(np.zeros((10, 10), np.float32), _half_truth())
    assert empty["pixel_f1"] == 0.0 and empty["iou"] == 0.0


def test_negative_image_with_a_small_false_positive_scores_the_background_f1():
    """The authors' f1_score(truth, pred, pos_label=0) on a normal image: TP_bg = 99 px
    predicted background, FN_bg = the 1 false-positive pixel, FP_bg = 0."""
    prob = np.full((10, 10), 0.2, np.float32)
    prob[3, 3] = 0.8
    m = weak_case_metrics(prob, np.zeros((10, 10), np.uint8))
    assert m["pixel_f1"] == pytest.approx(2 * 99 / (2 * 99 + 1))  # 0.99497
    assert m["iou"] == pytest.approx(99 / 100)
    # where we deliberately keep our own all-or-nothing tumour-class F1 as an alternative
    assert m["pixel_f1_positive"] == 0.0 and m["iou_positive"] == 0.0


def test_empty_prediction_on_a_negative_image_scores_one_under_both_definitions():
    m = weak_case_metrics(np.full((8, 8), 0.2, np.float32), np.zeros((8, 8), np.uint8))
    assert m["pixel_f1"] == m["pixel_f1_positive"] == m["iou"] == m["iou_positive"] == 1.0


def test_everything_predicted_on_a_negative_image_scores_zero():
    m = weak_case_metrics(np.full((8, 8), 0.9, np.float32), np.zeros((8, 8), np.uint8))
    assert m["pixel_f1"] == 0.0 and m["iou"] == 0.0


def test_smoothing_is_the_authors_gaussian_and_removes_isolated_pixels():
    prob = np.zeros((32, 32), np.float32)
    prob[16, 16] = 0.9
    empty = np.zeros((32, 32))
    assert weak_case_metrics(prob, empty, sigma=0)["pixel_f1_positive"] == 0.0
    assert weak_case_metrics(prob, empty, sigma=3)["pixel_f1_positive"] == 1.0
    # scipy's gaussian_filter with its default (reflect) border, as in the authors' valid()
    from scipy.ndimage import gaussian_filter

    edge = np.zeros((16, 16), np.float32)
    edge[0, :] = 1.0
    np.testing.assert_allclose(smooth_probability(edge, 3), gaussian_filter(edge, sigma=3))


def test_sigma_counts_in_model_input_pixels_by_default():
    """The authors smooth the map at the network input size (sigma 3 there): at the original
    size that is sigma * original / input pixels per axis."""
    assert sigma_axes(3.0, (128, 256), image_size=64) == (6.0, 12.0)
    assert sigma_axes(3.0, (128, 256), image_size=64, sigma_at="original") == (3.0, 3.0)
    assert sigma_axes(3.0, (128, 256), image_size=None) == (3.0, 3.0)
    with pytest.raises(ValueError, match="sigma_at"):
        sigma_axes(3.0, (8, 8), 8, "pixels")  # type: ignore[arg-type]


def test_binary_auc():
    assert binary_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert binary_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert binary_auc([0.5, 0.5], [0, 1]) == 0.5  # ties count one half
    assert np.isnan(binary_auc([0.1, 0.2], [1, 1]))


def test_report_means_of_the_authors_f1_and_of_ours():
    def case(f1, f1_pos, score):
        return {"pixel_f1": f1, "pixel_f1_positive": f1_pos, "iou": f1 / 2,
                "iou_positive": f1_pos / 2, "max_score": score}

    cases = [case(0.6, 0.6, 0.9), case(0.8, 0.8, 0.7),  # positives: both agree
             case(0.99, 0.0, 0.8), case(1.0, 1.0, 0.1)]  # negatives: FP / clean
    rep = weak_segmentation_report(cases, [1, 1, 0, 0], n_resamples=200)
    assert rep["pixel_f1"]["value"] == pytest.approx((0.6 + 0.8 + 0.99 + 1.0) / 4)
    assert rep["pixel_f1_pos"]["value"] == pytest.approx(0.7)
    assert rep["pixel_f1_neg"]["value"] == pytest.approx(0.995)
    assert rep["pixel_f1_positive"]["value"] == pytest.approx(0.6)
    assert rep["neg_clean"]["value"] == pytest.approx(0.5)
    assert rep["iou"]["value"] == pytest.approx(rep["pixel_f1"]["value"] / 2)
    assert rep["iou_pos"]["value"] == pytest.approx(0.35)
    assert rep["dice"]["value"] == rep["pixel_f1_positive"]["value"]  # the tumour Dice
    assert rep["image_auc"]["value"] == pytest.approx(0.75)
    assert rep["pixel_f1"]["low"] <= rep["pixel_f1"]["value"] <= rep["pixel_f1"]["high"]
