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


def _perturbed(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A prediction from ``truth``: objects shifted, one dropped, one split, one spurious."""
    from scipy.ndimage import shift

    pred = np.zeros_like(truth)
    ids = [i for i in np.unique(truth) if i]
    for k, i in enumerate(ids[1:]):  # the first object is missed
        moved = shift((truth == i).astype(float), rng.integers(-2, 3, 2), order=0) > 0.5
        pred[moved & (pred == 0)] = 10 + k
    if ids:
        ys, xs = np.nonzero(pred == 10)
        pred[ys[: len(ys) // 2], xs[: len(xs) // 2]] = 99  # part of one object: a split
    pred[:3, :3] = 77  # a false positive in the corner
    return pred


@pytest.mark.parametrize("seed", range(6))
def test_panoptic_quality_agrees_with_monai(seed):
    """Cross-check against MONAI's PanopticQualityMetric (one class: every object): the same
    PQ, SQ and DQ (MONAI's "rq") to its smoothing constant, on perturbed predictions."""
    import torch
    from monai.metrics import PanopticQualityMetric

    from tests.instance_fixtures import nuclei_pair

    rng = np.random.default_rng(seed)
    truth = nuclei_pair(seed, size=48, n=3 + seed % 4)[1].astype(np.int64)
    pred = _perturbed(truth, rng)
    ours = panoptic_quality(pred, truth)
    assert ours["tp"] and ours["fp"] and ours["fn"]  # every term is exercised

    def b2hw(labels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([labels, labels > 0]).astype(np.int64))[None]

    metric = PanopticQualityMetric(num_classes=1, metric_name=("pq", "sq", "rq"),
                                   reduction="none", smooth_numerator=1e-9)
    metric(b2hw(pred), b2hw(truth))
    pq, sq, rq = (float(v.squeeze()) for v in metric.aggregate())
    assert (ours["pq"], ours["sq"], ours["dq"]) == pytest.approx((pq, sq, rq), abs=1e-6)


def test_panoptic_quality_of_two_empty_maps_is_one_where_monai_says_zero():
    """Deliberate difference: nothing to find and nothing found is a perfect image (1.0, as
    in HoVer-Net's evaluation); MONAI's smoothed ratio gives 0 / (0 + eps) = 0."""
    import torch
    from monai.metrics import compute_panoptic_quality

    empty = np.zeros((8, 8), np.int64)
    assert panoptic_quality(empty, empty)["pq"] == 1.0
    assert float(compute_panoptic_quality(torch.from_numpy(empty), torch.from_numpy(empty))) == 0
