"""Every task scores validation with its final evaluation's routine (issue #14): the metric an
epoch is selected on equals the test metric of the same model on the same data.

(Before, segmentation and instance validation scored the resized masks / label maps of the
batches while the test scored the original sizes: epochs were selected on one metric and
reported on another.) The data here is deliberately resized (segmentation: 40 px images at
``image_size`` 24, several items per case; instance: ``scale`` 0.5) so the two would differ.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from instance_fixtures import write_instance_dataset
from seg_fixtures import write_seg_dataset
from torch.utils.data import DataLoader
from weak_fixtures import write_weak_dataset

from medistill.data import scan_folders
from medistill.data.instance import InstanceDataset
from medistill.data.segmentation import SegmentationDataset
from medistill.data.weak import WeakSegDataset
from medistill.methods import SegSupervised, Supervised
from medistill.methods.graph_relation import InstanceEmbedding
from medistill.methods.mil_fusion import MILTraining
from medistill.models import create_model
from medistill.pipelines.evaluate import dataset_for_model, evaluate_classifier
from medistill.pipelines.evaluate_instances import evaluate_instance_model
from medistill.pipelines.evaluate_segmentation import evaluate_segmenter
from medistill.pipelines.evaluate_weak import evaluate_weak
from medistill.pipelines.instance_data import InstanceDataConfig, load_instance_split
from medistill.pipelines.seg_data import SegDataConfig, load_seg_split
from medistill.pipelines.weak_data import WeakDataConfig, load_weak_split
from medistill.tasks import ClassificationCard, InstanceCard, SegmentationCard

pytestmark = pytest.mark.usefixtures("single_thread")
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
CPU = torch.device("cpu")


def loader(dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=2, shuffle=False)


def test_classification_validation_is_the_test_metric(tiny_dataset):
    samples = scan_folders(tiny_dataset.root, "train")
    torch.manual_seed(0)
    model = create_model("resnet18", 2).eval()
    card = ClassificationCard(model={"name": "resnet18"}, classes=list(samples.classes),
                              normalization=NORM, view={"factor": 2, "upsample": True}
                              ).model_dump()
    # validation in batches of 4 through the method's predict; the test in one batch of 64
    val = Supervised(model, view="input").validation_metrics(
        DataLoader(dataset_for_model(samples, card), batch_size=4), CPU, 2)
    test = evaluate_classifier(model, card, samples, n_resamples=0, latency=False)
    assert set(val) == {"accuracy", "macro_precision", "macro_recall", "macro_f1",
                        "ovr_accuracy"}
    assert 0 < val["accuracy"] < 1  # a real mix of right and wrong predictions
    assert val == {m: test["metrics"][m]["value"] for m in val}


def test_segmentation_validation_is_the_test_metric(tmp_path):
    root = write_seg_dataset(tmp_path / "seg", {"train": 1, "testA": 5}, size=40)
    cfg = SegDataConfig(root=str(root), image_pattern="images/{name}.png", image_size=24)
    # two cases of several slices each (as a volume's): scored as 3-D cases
    items = [replace(it, case=f"c{i % 2}") for i, it in enumerate(load_seg_split(cfg, "testA"))]
    assert len({it.case_id for it in items}) < len(items)  # cases of several items (3-D)
    torch.manual_seed(0)
    model = create_model("resnet18_unet", 2, widths=[8, 8, 16, 16],
                         decoder_widths=[16, 8, 8, 4, 4]).eval()
    card = SegmentationCard(model={"name": "resnet18_unet"}, classes=["bg", "disc"],
                            normalization=NORM, image_size=24, threshold=0.4).model_dump()
    val = SegSupervised(model, threshold=0.4).validation_metrics(
        loader(SegmentationDataset(items, 2, 24, NORM["mean"], NORM["std"])), CPU, 2)
    test = evaluate_segmenter(model, card, items, n_resamples=0, hd95=False, latency=False)
    assert math.isfinite(val["dice"])
    assert val == {m: test["metrics"][m]["value"] for m in ("dice", "iou")}


def test_weak_segmentation_validation_is_the_test_metric(tmp_path):
    root = write_weak_dataset(tmp_path / "weak", {"train": 1, "val": 1, "test": 4}, size=40)
    cfg = WeakDataConfig(root=str(root), setup="custom", image_pattern="images/{name}.png",
                         positive=["tumour"], negative=["benign"], image_size=24,
                         splits={"train": "train", "val": "val", "test": "test"})
    items, labels = load_weak_split(cfg, "test")
    torch.manual_seed(0)
    model = create_model("mil_segmenter", 2,
                         backbone_kwargs={"widths": [8, 8, 16, 16], "groups": 4}).eval()
    dataset = WeakSegDataset(items, labels, 2, 24, NORM["mean"], NORM["std"])
    val = MILTraining(model, threshold=0.5, sigma=1.0).validation_metrics(loader(dataset), CPU)
    test = evaluate_weak(model, dataset, 0.5, 1.0, n_resamples=0)
    assert math.isfinite(val["dice"])
    assert val == {m: test["metrics"][m]["value"] for m in val}


def test_instance_validation_is_the_test_metric(tmp_path):
    root = write_instance_dataset(tmp_path / "inst", {"train": 1, "val": 1, "test": 3},
                                  size=40)
    cfg = InstanceDataConfig(root=str(root), scale=0.5,
                             splits={"train": "train", "val": "val", "test": "test"})
    items = load_instance_split(cfg, "test")
    torch.manual_seed(0)
    model = create_model("resunet_embedding", 2, widths=[4, 4, 8], embedding_dim=4).eval()
    with torch.no_grad():  # foreground everywhere: instances overlap the nuclei, AJI > 0
        model.head.weight[-1].zero_()
        model.head.bias[-1] = 2.0
    post = {"method": "watershed", "min_size": 2}
    card = InstanceCard(model={"name": "resunet_embedding"}, classes=["bg", "nucleus"],
                        normalization=NORM, scale=0.5, offsets=[1, 3], postprocess=post)
    method = InstanceEmbedding(model, offsets=[1, 3], postprocess=post)
    dataset = InstanceDataset(items, None, 0.5, mean=NORM["mean"], std=NORM["std"])
    val = method.validation_metrics(DataLoader(dataset, batch_size=1), CPU)
    test = evaluate_instance_model(model, card.model_dump(), items, n_resamples=0,
                                   latency=False)
    assert val["aji"] > 0
    assert val == {m: test["metrics"][m]["value"] for m in ("aji", "pq")}
