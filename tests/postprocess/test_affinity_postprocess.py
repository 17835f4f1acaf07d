"""Affinities -> instances: the pure scikit-image watershed and (optional) mutex watershed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.losses import label_affinity
from medistill.postprocess import affinities_to_instances, decode_embeddings

OFFSETS = (1, 3, 5)


def _touching() -> np.ndarray:
    labels = np.zeros((24, 24), int)
    labels[4:20, 2:12] = 1
    labels[4:20, 12:22] = 2  # touches instance 1
    return labels


def _perfect_affinities(labels: np.ndarray) -> np.ndarray:
    aff, _ = label_affinity(torch.from_numpy(labels)[None], OFFSETS)
    return aff[0].numpy()


def _check(pred: np.ndarray, truth: np.ndarray) -> None:
    assert pred.max() == 2
    for i in (1, 2):
        ids = np.unique(pred[truth == i])
        assert len(ids) == 1 and ids[0] > 0
    assert (pred[truth == 0] == 0).all()
    assert pred[truth == 1][0] != pred[truth == 2][0]


def test_watershed_fallback_separates_touching_instances():
    truth = _touching()
    pred = affinities_to_instances(_perfect_affinities(truth), OFFSETS,
                                   (truth > 0).astype(float), method="watershed", min_size=1)
    _check(pred, truth)


def test_mutex_watershed_separates_touching_instances():
    pytest.importorskip("mwatershed")
    truth = _touching()
    pred = affinities_to_instances(_perfect_affinities(truth), OFFSETS,
                                   (truth > 0).astype(float), method="mutex", min_size=1)
    _check(pred, truth)


def test_decode_embeddings_from_one_hot_embeddings():
    truth = _touching()
    emb = torch.nn.functional.one_hot(torch.from_numpy(truth), 3).permute(2, 0, 1).float()
    fg = torch.from_numpy(np.where(truth > 0, 10.0, -10.0)).float()[None]
    pred = decode_embeddings(torch.cat([emb, fg]), OFFSETS, method="watershed", min_size=1)
    _check(pred, truth)


def test_small_instances_dropped_and_bad_method():
    truth = _touching()
    truth[0, 0] = 3  # a 1-px instance
    pred = affinities_to_instances(_perfect_affinities(truth), OFFSETS,
                                   (truth > 0).astype(float), method="watershed", min_size=5)
    assert pred[0, 0] == 0
    from medistill.errors import RecipeError

    with pytest.raises(RecipeError):
        affinities_to_instances(_perfect_affinities(truth), OFFSETS, truth > 0, method="x")
