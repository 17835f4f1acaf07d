"""Segmentation metrics on hand-computed cases, empty-mask conventions and bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medistill.metrics import (
    bootstrap_mean,
    case_metrics,
    logits_to_labels,
    multiclass_case_metrics,
    segmentation_report,
)


def _box(r0: int, r1: int, c0: int, c1: int, size: int = 20) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_dice_voe_rvd_hd95_by_hand():
    truth = _box(6, 12, 5, 10)  # 6 x 5 = 30 px
    pred = _box(5, 10, 5, 10)  # 5 x 5 = 25 px, overlap rows 6-9: 4 x 5 = 20 px
    m = case_metrics(pred, truth)
    assert m["dice"] == pytest.approx(2 * 20 / (25 + 30))
    assert m["iou"] == pytest.approx(20 / 35)
    assert m["voe"] == pytest.approx(1 - 20 / 35)
    assert m["rvd"] == pytest.approx(25 / 30 - 1)  # signed: under-segmentation < 0
    # surfaces: top edges 1 px apart, bottom edges 2 px apart -> 95th percentile 2
    assert m["hd95"] == pytest.approx(2.0)
    assert case_metrics(truth, pred)["rvd"] == pytest.approx(30 / 25 - 1)


def test_empty_masks_follow_the_documented_convention():
    empty, some = np.zeros((8, 8)), _box(2, 4, 2, 4, 8)
    assert case_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "voe": 0.0, "rvd": 0.0,
                                          "hd95": 0.0}
    fp = case_metrics(some, empty)  # truth empty, prediction not
    assert fp["dice"] == 0 and fp["voe"] == 1 and math.isnan(fp["rvd"]) and math.isnan(fp["hd95"])
    fn = case_metrics(empty, some)  # prediction empty
    assert fn["dice"] == 0 and fn["rvd"] == -1 and math.isnan(fn["hd95"])
    assert "hd95" not in case_metrics(some, some, hd95=False)


def test_threshold_04_for_two_classes_argmax_otherwise():
    # foreground probability 0.45: below 0.5 (argmax says background) but above 0.4
    p = 0.45
    logits = torch.tensor([[0.0, math.log(p / (1 - p))]]).view(1, 2, 1, 1)
    assert logits_to_labels(logits).item() == 1
    assert logits_to_labels(logits, threshold=0.5).item() == 0
    three = torch.tensor([0.1, 0.2, 3.0]).view(1, 3, 1, 1)
    assert logits_to_labels(three).item() == 2
    assert logits_to_labels(torch.tensor([[[[0.0]]]])).item() == 1  # sigmoid 0.5 > 0.4


def test_multiclass_metrics_per_class_and_report():
    truth = np.zeros((10, 10), int)
    truth[1:5, 1:5] = 1
    truth[6:9, 6:9] = 2
    pred = truth.copy()
    pred[6:9, 6:9] = 0  # class 2 missed entirely
    per = multiclass_case_metrics(pred, truth, 3)
    assert per[1]["dice"] == 1.0 and per[2]["dice"] == 0.0 and per[2]["rvd"] == -1
    rep = segmentation_report([per, multiclass_case_metrics(truth, truth, 3)],
                              ["bg", "kidney", "tumour"], n_resamples=200)
    assert rep["n"] == 2
    # overall per case = mean over the foreground classes: (0.5, 1.0) -> 0.75
    assert rep["metrics"]["dice"]["value"] == pytest.approx(0.75)
    assert rep["per_class"]["tumour"]["dice"]["value"] == pytest.approx(0.5)
    assert rep["per_class"]["kidney"]["dice"]["value"] == pytest.approx(1.0)


def test_bootstrap_mean_ci_and_undefined_cases():
    rng = np.random.default_rng(0)
    vals = rng.uniform(0.5, 0.9, 40)
    ci = bootstrap_mean(vals, n_resamples=2000, seed=1)
    assert ci["low"] < ci["value"] < ci["high"] and ci["value"] == pytest.approx(vals.mean())
    assert ci == bootstrap_mean(vals, n_resamples=2000, seed=1)  # seeded
    with_nan = bootstrap_mean(np.r_[vals, np.nan], n_resamples=100)
    assert with_nan["n_undefined"] == 1 and with_nan["value"] == pytest.approx(vals.mean())
    none = bootstrap_mean([np.nan, np.nan])
    assert math.isnan(none["value"]) and none["n_undefined"] == 2
    fixed = bootstrap_mean([0.2, 0.4], n_resamples=0)
    assert fixed["low"] == fixed["value"] == fixed["high"] == pytest.approx(0.3)
