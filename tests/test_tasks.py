"""The task layer (issue #14): typed, versioned model cards and the task registry."""

from __future__ import annotations

import pytest
import torch

from medistill.engine import load_model, save_model
from medistill.engine.checkpoint import load_checkpoint
from medistill.errors import CheckpointError
from medistill.models import create_model
from medistill.tasks import (
    CARD_VERSION,
    TASKS,
    ClassificationCard,
    InstanceCard,
    SegmentationCard,
    WeakSegmentationCard,
    card_from_meta,
    get_task,
    task_name,
)

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}


def test_every_task_is_registered_with_its_card():
    assert TASKS.names() == ["classification", "instance", "segmentation", "weak_segmentation"]
    assert get_task("instance").card is InstanceCard
    assert get_task("weak_segmentation").card is WeakSegmentationCard
    for name in TASKS.names():
        sig = get_task(name).export_signature()
        assert sig["input"]["name"] == "input" and sig["output"]["name"] == "logits"
        assert get_task(name).columns


def test_a_card_is_versioned_and_a_weak_card_is_a_segmentation_card():
    card = WeakSegmentationCard(model={"name": "mil_segmenter"}, classes=["bg", "t"],
                                normalization=NORM, threshold=0.5, sigma=2.0, sigma_at="input")
    meta = card.model_dump()
    assert meta["card_version"] == CARD_VERSION and meta["task"] == "segmentation"
    assert meta["weak"] is True and meta["view"] == {"factor": 1, "upsample": False}
    assert task_name(meta) == "weak_segmentation"
    assert card_from_meta(meta) == card


def test_an_old_model_file_without_card_version_is_migrated_on_load(tmp_path):
    """A file written before cards (no card_version; a classifier without ``task``) loads as
    a current card."""
    old = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": ["a", "b"],
           "normalization": NORM, "image_size": 32}
    path = save_model(create_model("small_resnet", 2), old, tmp_path / "old.pt")
    assert "card_version" not in load_checkpoint(path)
    _, meta = load_model(path)
    assert meta["card_version"] == CARD_VERSION and meta["task"] == "classification"
    assert meta["view"] == {"factor": 1, "upsample": False} and meta["format"]
    card = card_from_meta(meta)
    assert isinstance(card, ClassificationCard) and card.image_size == 32 and card.mpp is None


def test_instance_cards_get_no_view_and_bad_cards_name_the_key(tmp_path):
    card = card_from_meta({"task": "instance", "model": {"name": "resunet_embedding"},
                           "classes": ["background", "nucleus"], "normalization": NORM,
                           "offsets": [1, 3]})
    assert isinstance(card, InstanceCard) and not hasattr(card, "view")
    with pytest.raises(CheckpointError, match="f.pt: model card key 'offsets'"):
        card_from_meta({"task": "instance", "model": {"name": "x"}, "classes": ["a"],
                        "normalization": NORM}, "f.pt")
    with pytest.raises(CheckpointError, match="unknown task 'depth'"):
        card_from_meta({"task": "depth", "model": {}, "classes": [], "normalization": NORM})
    with pytest.raises(CheckpointError, match="card version 99"):
        card_from_meta({"card_version": 99, "task": "segmentation"})
    seg = SegmentationCard(model={"name": "unetpp"}, classes=["bg", "fg"], normalization=NORM)
    assert seg.threshold == 0.4 and torch.tensor(seg.normalization["mean"]).shape == (3,)
