"""Tests for medistill.metrics.classification against hand-computed examples."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from medistill.errors import DataError, MedistillError
from medistill.metrics import (
    METRIC_NAMES,
    classification_report,
    confusion_matrix,
    metrics_from_confusion,
)

# Hand-worked 3-class example (rows = true, cols = predicted), N = 15:
#   [[4, 1, 0],
#    [2, 3, 1],
#    [0, 2, 2]]
# accuracy  = 9/15 = 3/5
# precision = 4/6, 3/6, 2/3 -> macro 11/18
# recall    = 4/5, 3/6, 2/4 -> macro 3/5
# F1 = 2tp/(2tp+fp+fn) = 8/11, 6/12, 4/7 -> macro 277/462
# ovr: tn = N-tp-fp-fn = 8, 6, 10 -> (12 + 9 + 12) / 15 / 3 = 11/15
CM = np.array([[4, 1, 0], [2, 3, 1], [0, 2, 2]])
EXPECTED = {
    "accuracy": Fraction(3, 5),
    "macro_precision": Fraction(11, 18),
    "macro_recall": Fraction(3, 5),
    "macro_f1": Fraction(277, 462),
    "ovr_accuracy": Fraction(11, 15),
}


def labels_from_cm(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label vectors whose confusion matrix is ``cm``."""
    t, p = [], []
    for i, row in enumerate(cm):
        for j, count in enumerate(row):
            t += [i] * int(count)
            p += [j] * int(count)
    return np.array(t), np.array(p)


def naive_metrics(y_true: list[int], y_pred: list[int], c: int) -> dict[str, float]:
    """Straightforward per-class Python loop, independent of the vectorised code."""
    n = len(y_true)
    prec, rec, f1, ovr = [], [], [], []
    for k in range(c):
        tp = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a == k and b == k)
        fp = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a != k and b == k)
        fn = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a == k and b != k)
        tn = sum(1 for a, b in zip(y_true, y_pred, strict=True) if a != k and b != k)
        if tp + fp + fn:  # in play (present or predicted); 0/0 counts as 0
            prec.append(tp / (tp + fp) if tp + fp else 0.0)
            rec.append(tp / (tp + fn) if tp + fn else 0.0)
            f1.append(2 * tp / (2 * tp + fp + fn))
        ovr.append((tp + tn) / n)
    return {
        "accuracy": sum(a == b for a, b in zip(y_true, y_pred, strict=True)) / n,
        "macro_precision": sum(prec) / len(prec) if prec else 0.0,
        "macro_recall": sum(rec) / len(rec) if rec else 0.0,
        "macro_f1": sum(f1) / len(f1) if f1 else 0.0,
        "ovr_accuracy": sum(ovr) / c,
    }


def test_confusion_matrix_hand_example() -> None:
    t, p = labels_from_cm(CM)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(t))
    cm = confusion_matrix(t[order], p[order], 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)
    # Rows are true labels, columns predicted.
    np.testing.assert_array_equal(confusion_matrix([0], [1], 2), [[0, 1], [0, 0]])


def test_metrics_hand_example_exact() -> None:
    m = metrics_from_confusion(CM)
    assert set(m) == set(METRIC_NAMES)
    for k, frac in EXPECTED.items():
        assert isinstance(m[k], float)
        assert m[k] == pytest.approx(float(frac), abs=1e-15), k


def test_ovr_accuracy_uses_true_negatives_not_n_minus_tp() -> None:
    # The original code used tn = N - tp, which makes (tp + tn) / N == 1 for every class.
    n = CM.sum()
    tp = np.diag(CM)
    buggy = float(np.mean((tp + (n - tp)) / n))
    assert buggy == 1.0
    m = metrics_from_confusion(CM)
    assert m["ovr_accuracy"] == pytest.approx(11 / 15)
    assert m["ovr_accuracy"] != pytest.approx(buggy)
    # Identity for the correct definition: ovr = 1 - 2 (1 - acc) / C.
    assert m["ovr_accuracy"] == pytest.approx(1 - 2 * (1 - m["accuracy"]) / 3)


def test_class_absent_from_both_is_excluded() -> None:
    cm = np.array([[2, 1, 0], [1, 1, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm)
    # Class 2 is undefined for P, R and F1: mean over classes 0 and 1 only (not divided by 3).
    assert m["macro_precision"] == pytest.approx(7 / 12)
    assert m["macro_recall"] == pytest.approx(7 / 12)
    assert m["macro_f1"] == pytest.approx(7 / 12)
    assert m["accuracy"] == pytest.approx(3 / 5)
    # ovr still averages over all C classes: class 2 has tn = N, so (tp+tn)/N = 1.
    assert m["ovr_accuracy"] == pytest.approx((3 / 5 + 3 / 5 + 1) / 3)


def test_class_never_predicted_counts_as_zero_precision() -> None:
    cm = np.array([[2, 0, 0], [0, 1, 0], [1, 0, 0]])
    m = metrics_from_confusion(cm)
    assert m["macro_precision"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # class 2: 0/0 -> 0
    assert m["macro_recall"] == pytest.approx((1 + 1 + 0) / 3)  # class 2 recall 0/1 = 0
    assert m["macro_f1"] == pytest.approx((4 / 5 + 1 + 0) / 3)  # class 2 F1 0/1 = 0


def test_two_never_predicted_classes_halve_macro_precision() -> None:
    """Issue #12's toy case, by hand (scikit-learn's zero_division=0 gives the same).

    rows = true, cols = predicted; classes 2 and 3 are present but never predicted.
    precision: 4/5, 1/3, 0/0 -> 0, 0/0 -> 0 -> (4/5 + 1/3) / 4 = 17/60 = 0.283
    (the old NaN-mean over the predicted classes gave (4/5 + 1/3) / 2 = 0.567).
    recall: 4/4, 1/1, 0/1, 0/2 -> 2/4; F1: 8/9, 2/4, 0, 0 -> (8/9 + 1/2) / 4 = 25/72.
    """
    cm = np.array([[4, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]])
    m = metrics_from_confusion(cm)
    assert m["macro_precision"] == pytest.approx(17 / 60)
    assert m["macro_precision"] != pytest.approx(17 / 30)
    assert m["macro_recall"] == pytest.approx(1 / 2)
    assert m["macro_f1"] == pytest.approx(25 / 72)
    t, p = labels_from_cm(cm)
    rep = classification_report(t, p, 4, n_resamples=0)["metrics"]
    assert rep["macro_precision"]["value"] == pytest.approx(17 / 60)


def test_class_predicted_but_absent_counts_as_zero_recall() -> None:
    # class 1 never occurs but is predicted once: recall 0/0 -> 0 (the NaN-mean gave 1/2)
    m = metrics_from_confusion(np.array([[1, 1], [0, 0]]))
    assert m["macro_recall"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["macro_precision"] == pytest.approx((1 + 0) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_no_defined_class_gives_zero() -> None:
    m = metrics_from_confusion(np.zeros((3, 3), dtype=int))
    assert all(v == 0.0 for v in m.values())


def test_stack_matches_single() -> None:
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 5, size=(7, 4, 4))
    stack[3, 2, :] = 0
    stack[3, :, 2] = 0  # a class absent from both in one matrix
    out = metrics_from_confusion(stack)
    for k in METRIC_NAMES:
        assert out[k].shape == (7,)
    for b in range(7):
        single = metrics_from_confusion(stack[b])
        t, p = labels_from_cm(stack[b])
        naive = naive_metrics(t.tolist(), p.tolist(), 4)
        for k in METRIC_NAMES:
            assert out[k][b] == pytest.approx(single[k])
            assert single[k] == pytest.approx(naive[k])


def test_binary_and_many_classes() -> None:
    m = metrics_from_confusion(np.array([[5, 1], [2, 2]]))
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["macro_precision"] == pytest.approx((5 / 7 + 2 / 3) / 2)
    assert m["macro_recall"] == pytest.approx((5 / 6 + 2 / 4) / 2)
    rng = np.random.default_rng(3)
    t, p = rng.integers(0, 12, 300), rng.integers(0, 12, 300)
    m = metrics_from_confusion(confusion_matrix(t, p, 12))
    naive = naive_metrics(t.tolist(), p.tolist(), 12)
    for k in METRIC_NAMES:
        assert m[k] == pytest.approx(naive[k])


@pytest.mark.parametrize(
    ("y_true", "y_pred", "num_classes", "match"),
    [
        ([0, 1], [0], 2, "differ in length"),
        ([], [], 2, "empty"),
        ([0, 3], [0, 1], 3, "label 3"),
        ([0, 1], [-1, 1], 3, "label -1"),
        ([0.5, 1], [0, 1], 2, "integer"),
        ([[0, 1]], [[0, 1]], 2, "1-D"),
        ([0, 1], [0, 1], 1, "num_classes"),
    ],
)
def test_bad_input_raises_data_error(y_true, y_pred, num_classes, match) -> None:
    with pytest.raises(DataError, match=match):
        confusion_matrix(y_true, y_pred, num_classes)
    with pytest.raises(DataError, match=match):
        classification_report(y_true, y_pred, num_classes, n_resamples=10)
    assert issubclass(DataError, MedistillError)


def test_bad_confusion_matrix_and_report_args() -> None:
    with pytest.raises(DataError):
        metrics_from_confusion(np.zeros((2, 3)))
    with pytest.raises(DataError):
        metrics_from_confusion(np.array([[1, -1], [0, 1]]))
    with pytest.raises(DataError, match="confidence"):
        classification_report([0, 1], [0, 1], 2, confidence=1.5)
    with pytest.raises(DataError, match="n_resamples"):
        classification_report([0, 1], [0, 1], 2, n_resamples=-1)


def test_report_structure_and_no_ci() -> None:
    t, p = labels_from_cm(CM)
    rep = classification_report(t, p, 3, n_resamples=0, seed=7)
    assert rep["n"] == 15 and rep["n_resamples"] == 0 and rep["seed"] == 7
    assert rep["confusion_matrix"] == CM.tolist()
    assert set(rep["metrics"]) == set(METRIC_NAMES)
    for k, frac in EXPECTED.items():
        entry = rep["metrics"][k]
        assert entry["value"] == pytest.approx(float(frac))
        assert entry["low"] == entry["high"] == entry["value"]


def test_bootstrap_matches_naive_loop() -> None:
    rng = np.random.default_rng(42)
    n, c, b, seed = 37, 3, 200, 5
    t = rng.integers(0, c, n)
    p = np.where(rng.random(n) < 0.7, t, rng.integers(0, c, n))
    rep = classification_report(t, p, c, n_resamples=b, seed=seed, confidence=0.9)

    boot = np.random.default_rng(seed)
    values: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for _ in range(b):
        idx = boot.integers(0, n, size=n)
        m = naive_metrics(t[idx].tolist(), p[idx].tolist(), c)
        for k in METRIC_NAMES:
            values[k].append(m[k])
    for k in METRIC_NAMES:
        low, high = np.percentile(values[k], [5.0, 95.0])
        assert rep["metrics"][k]["low"] == pytest.approx(low, rel=1e-12, abs=1e-12)
        assert rep["metrics"][k]["high"] == pytest.approx(high, rel=1e-12, abs=1e-12)


def test_bootstrap_chunking_does_not_change_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import medistill.metrics.bootstrap as mod

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 101), rng.integers(0, 4, 101)
    full = classification_report(t, p, 4, n_resamples=333, seed=1)
    monkeypatch.setattr(mod, "MAX_CHUNK_ELEMENTS", 101 * 50)  # 50 resamples per chunk
    chunked = classification_report(t, p, 4, n_resamples=333, seed=1)
    assert full == chunked


def _noisy_labels(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.75, t, rng.integers(0, 3, n))
    return t, p


def test_ci_contains_point_deterministic_and_narrows() -> None:
    t, p = _noisy_labels(200, 0)
    a = classification_report(t, p, 3, n_resamples=2000, seed=3)
    assert a == classification_report(t, p, 3, n_resamples=2000, seed=3)
    other = classification_report(t, p, 3, n_resamples=2000, seed=4)
    assert a["metrics"] != other["metrics"]  # another seed gives other resamples
    for entry in a["metrics"].values():
        assert entry["low"] <= entry["value"] <= entry["high"]
        assert entry["low"] < entry["high"]

    # Same data repeated 10x: same point estimates, intervals about sqrt(10) times narrower.
    big = classification_report(np.tile(t, 10), np.tile(p, 10), 3, n_resamples=2000, seed=3)
    for k in METRIC_NAMES:
        small_w = a["metrics"][k]["high"] - a["metrics"][k]["low"]
        big_w = big["metrics"][k]["high"] - big["metrics"][k]["low"]
        assert big["metrics"][k]["value"] == pytest.approx(a["metrics"][k]["value"])
        assert big_w < 0.5 * small_w


def test_bootstrap_is_fast() -> None:
    t, p = _noisy_labels(2000, 1)
    start = time.perf_counter()
    rep = classification_report(t, p, 3, n_resamples=10_000, seed=0)
    elapsed = time.perf_counter() - start
    assert rep["n_resamples"] == 10_000
    assert elapsed < 3.0  # well under a second on an idle 2-core machine
