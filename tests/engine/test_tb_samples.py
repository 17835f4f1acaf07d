"""TensorBoard pictures of fixed validation items: drawn by the method (the trainer knows no
task), every ``tb_samples_every`` epochs, ``tb_samples`` items, nothing when off, and training
unchanged by them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from medistill.engine.samples import (
    PRED_RGB,
    RIGHT_RGB,
    TRUTH_RGB,
    WRONG_RGB,
    class_samples,
    mask_samples,
)
from medistill.methods import SegSupervised
from medistill.models import create_model

from .test_trainer import Trainer, _cfg, _method, _sets

accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator").EventAccumulator


def _events(folder):
    events = accumulator(str(folder / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events


def _png(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def _caption(events, step: int) -> str:
    tensor = next(e for e in events.Tensors("samples/val/text_summary") if e.step == step)
    return tensor.tensor_proto.string_val[0].decode()


def test_classification_samples_every_n_epochs_with_predicted_and_true_class(tmp_path):
    train, val = _sets(n_train=8, n_val=6)
    cfg = _cfg(epochs=3, tensorboard=True, tb_samples=3, tb_samples_every=2)
    Trainer(_method(), train, val, cfg, tmp_path, num_classes=4).fit()
    events = _events(tmp_path)
    images = events.Images("samples/val")
    assert [e.step for e in images] == [1, 2, 3]  # epoch 1, every 2nd, the last
    side = val[0]["views"]["input"].shape[-1]
    assert (images[0].height, images[0].width) == (side, 3 * side + 2 * 2)  # 3 tiles in a row
    caption = _caption(events, 3)
    assert [line.split(":")[0] for line in caption.split("  \n")[1:]] == [
        "item 0", "item 1", "item 2"]
    assert f"true {int(val[0]['label'])}" in caption.split("  \n")[1]


def test_no_samples_when_off(tmp_path):
    train, val = _sets(n_train=8, n_val=4)
    Trainer(_method(), train, val, _cfg(epochs=1, tensorboard=True, tb_samples=0), tmp_path,
            num_classes=4).fit()
    events = _events(tmp_path)
    assert events.Tags()["images"] == [] and events.Tags()["scalars"]


def test_samples_leave_training_bit_identical(tmp_path):
    train, val = _sets(n_train=8, n_val=4)
    models = []
    for n in (0, 4):
        method = _method()
        Trainer(method, train, val, _cfg(epochs=2, tensorboard=True, tb_samples=n,
                                         tb_samples_every=1), tmp_path / str(n),
                num_classes=4).fit()
        models.append(method.state_dict())
    for (k, a), b in zip(models[0].items(), models[1].values(), strict=True):
        assert torch.equal(a, b), k


def _discs(root, split: str):
    """A real segmentation split (validation scores it at the original size, issue #14)."""
    from seg_fixtures import write_seg_dataset

    from medistill.data.segmentation import SegmentationDataset
    from medistill.pipelines.seg_data import SegDataConfig, load_seg_split

    if not (root / "labels.csv").is_file():
        write_seg_dataset(root, {"train": 4, "val": 3}, size=32)
    return SegmentationDataset(load_seg_split(SegDataConfig(root=str(root)), split), 2, 32)


def test_segmentation_samples_outline_truth_and_prediction(tmp_path):
    torch.manual_seed(0)
    student = create_model("resnet18_unet", 2, widths=[8, 8, 16, 16],
                           decoder_widths=[16, 8, 8, 4, 4])
    cfg = _cfg(epochs=1, batch_size=4, tensorboard=True, tb_samples=2, select_metric="dice")
    data = tmp_path / "d"
    Trainer(SegSupervised(student), _discs(data, "train"), _discs(data, "val"), cfg,
            tmp_path / "run", num_classes=2).fit()
    events = _events(tmp_path / "run")
    (image,) = events.Images("samples/val")
    picture = _png(image)
    assert picture.shape == (32, 2 * 32 + 2, 3)
    green = (picture == TRUTH_RGB).all(-1)
    assert green[:, :32].any() and green[:, 34:].any()  # the truth outlined on both tiles
    assert "ground truth outlined green, prediction outlined magenta" in _caption(events, 1)


def test_mask_samples_draw_contours_not_fills():
    truth = np.zeros((2, 16, 16), np.int64)
    truth[:, 4:12, 4:12] = 1
    pred = np.zeros_like(truth)
    pred[1, 2:6, 2:6] = 1
    picture, _ = mask_samples(torch.zeros(2, 3, 16, 16), pred, truth)
    left, right = picture[:, :16], picture[:, 18:]
    is_green, is_magenta = ((left == TRUTH_RGB).all(-1), (right == PRED_RGB).all(-1))
    assert is_green[4, 4:12].all() and not is_green[6:10, 6:10].any()  # outline, inside left
    assert not (left == PRED_RGB).all(-1).any()  # nothing predicted on the first
    assert is_magenta[2, 2:6].all() and not is_magenta[3:5, 3:5].any()


def test_class_samples_frame_right_green_and_wrong_red():
    logits = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    picture, caption = class_samples(torch.rand(2, 3, 32, 32), logits, torch.tensor([0, 1]),
                                     names=["benign", "tumour"])
    assert tuple(picture[0, 0]) == RIGHT_RGB and tuple(picture[0, 34]) == WRONG_RGB
    assert "item 1: predicted benign (p 0.88), true tumour" in caption


def test_at_most_one_validation_batch_of_samples(tmp_path):
    """``tb_samples`` over the batch size draws one batch: items validation collates together
    (a crop-size mix would fail to collate in a larger batch)."""
    train, val = _sets(n_train=8, n_val=6)
    cfg = _cfg(epochs=1, batch_size=4, tensorboard=True, tb_samples=6)
    Trainer(_method(), train, val, cfg, tmp_path, num_classes=4).fit()
    (image,) = _events(tmp_path).Images("samples/val")
    side = val[0]["views"]["input"].shape[-1]
    assert (image.height, image.width) == (side, 4 * side + 3 * 2)  # 4 tiles, not 6
