"""Weakly supervised segmentation metrics: pixel F1 with empty truths, AUC, smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.metrics import binary_auc, weak_case_metrics, weak_segmentation_report


def test_pixel_f1_and_iou_of_one_image():
    truth = np.zeros((10, 10), np.uint8)
    truth[:, :5] = 1  # 50 px
    prob = np.zeros((10, 10), np.float32)
    prob[:, :4] = 0.9  # 40 px, all inside the truth
    m = weak_case_metrics(prob, truth)
    assert m["pixel_f1"] == pytest.approx(2 * 40 / (40 + 50))
    assert m["iou"] == pytest.approx(40 / 50)
    assert m["max_score"] == pytest.approx(0.9)


def test_empty_truth_scores_one_only_when_nothing_is_predicted():
    empty = np.zeros((8, 8), np.uint8)
    assert weak_case_metrics(np.full((8, 8), 0.2, np.float32), empty)["pixel_f1"] == 1.0
    one_pixel = np.full((8, 8), 0.2, np.float32)
    one_pixel[3, 3] = 0.8
    assert weak_case_metrics(one_pixel, empty)["pixel_f1"] == 0.0


def test_smoothing_removes_isolated_pixels_before_the_threshold():
    prob = np.zeros((32, 32), np.float32)
    prob[16, 16] = 0.9
    assert weak_case_metrics(prob, np.zeros((32, 32)), sigma=0)["pixel_f1"] == 0.0
    assert weak_case_metrics(prob, np.zeros((32, 32)), sigma=3)["pixel_f1"] == 1.0


def test_binary_auc():
    assert binary_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert binary_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert binary_auc([0.5, 0.5], [0, 1]) == 0.5  # ties count one half
    assert np.isnan(binary_auc([0.1, 0.2], [1, 1]))


def test_report_gives_all_positive_only_and_negative_only_means():
    cases = [{"pixel_f1": 0.6, "iou": 0.4, "max_score": 0.9},
             {"pixel_f1": 0.8, "iou": 0.6, "max_score": 0.7},
             {"pixel_f1": 0.0, "iou": 0.0, "max_score": 0.8},
             {"pixel_f1": 1.0, "iou": 1.0, "max_score": 0.1}]
    rep = weak_segmentation_report(cases, [1, 1, 0, 0], n_resamples=200)
    assert rep["pixel_f1"]["value"] == pytest.approx(0.6)
    assert rep["pixel_f1_pos"]["value"] == pytest.approx(0.7)
    assert rep["pixel_f1_neg"]["value"] == pytest.approx(0.5)
    assert rep["iou_pos"]["value"] == pytest.approx(0.5)
    assert rep["dice"]["value"] == rep["pixel_f1"]["value"]
    assert rep["image_auc"]["value"] == pytest.approx(0.75)
    assert rep["pixel_f1"]["low"] <= 0.6 <= rep["pixel_f1"]["high"]
