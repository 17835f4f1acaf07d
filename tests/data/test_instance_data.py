"""Instance data: label-map and mask-folder layouts, crops and augmentations keep ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from instance_fixtures import nuclei_pair, write_instance_dataset
from PIL import Image

from medistill.data.instance import (
    InstanceAugment,
    InstanceDataset,
    load_instance_map,
    relabel,
    rescale_pair,
    scan_instance_mask_folders,
)
from medistill.data.segmentation import SegItem
from medistill.errors import DataError
from medistill.pipelines.instance_data import InstanceDataConfig, load_instance_split


def test_uint16_label_map_roundtrip(tmp_path: Path):
    labels = np.zeros((5, 6), np.uint16)
    labels[1:3, 1:3] = 40000
    Image.fromarray(labels).save(tmp_path / "l.png")
    Image.fromarray(labels).save(tmp_path / "l.tif")
    for name in ("l.png", "l.tif"):
        got = load_instance_map(tmp_path / name)
        assert got.dtype == np.int32 and got.max() == 40000 and (got > 0).sum() == 4


def test_label_map_errors_name_the_file(tmp_path: Path):
    with pytest.raises(DataError, match="missing.png"):
        load_instance_map(tmp_path / "missing.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png"):
        load_instance_map(tmp_path / "rgb.png")


def test_dsb2018_mask_folders(tmp_path: Path):
    sample = tmp_path / "train" / "abc"
    (sample / "images").mkdir(parents=True)
    (sample / "masks").mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(sample / "images" / "abc.png")
    for i, (y, x) in enumerate([(0, 0), (3, 3)]):
        m = np.zeros((6, 6), np.uint8)
        m[y : y + 2, x : x + 2] = 255
        Image.fromarray(m).save(sample / "masks" / f"m{i}.png")
    items = scan_instance_mask_folders(tmp_path, "train")
    assert [it.name for it in items] == ["abc"]
    labels = load_instance_map(items[0].mask)
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]
    ds = InstanceDataset(items)
    assert ds[0]["labels"].max() == 2


def test_manifest_layout_and_relabel(tmp_path: Path):
    root = write_instance_dataset(tmp_path / "d", {"train": 2, "test": 1})
    cfg = InstanceDataConfig(root=str(root))
    assert len(load_instance_split(cfg, "train")) == 2
    assert load_instance_split(cfg, "val") == []
    ds = InstanceDataset(load_instance_split(cfg, "test"))
    y = ds[0]["labels"]
    assert y.unique().tolist() == list(range(int(y.max()) + 1))  # 1000.. -> 1..n
    assert relabel(np.array([[5, 5], [9, 0]])).tolist() == [[1, 1], [2, 0]]


def test_crops_and_augmentations_keep_ids_consistent():
    image, labels = nuclei_pair(3, size=40)
    # encode the instance id in the image so that image and ids can be compared after
    image = np.zeros_like(image)
    image[..., 0] = (labels % 256).astype(np.uint8) * 40
    item = SegItem(name="x", arrays=(image, labels))
    ds = InstanceDataset([item], crop_size=24, crops_per_image=6, augment=InstanceAugment(
        brightness=0.0, contrast=0.0), mean=(0, 0, 0), std=(1, 1, 1), seed=1)
    seen_shapes = set()
    for i in range(len(ds)):
        b = ds[i]
        x, y = b["image"][0], b["labels"]
        seen_shapes.add(tuple(y.shape))
        for k in y.unique().tolist():
            values = x[y == k].unique()
            assert len(values) == 1  # each id covers exactly one original instance
        assert ((x > 0) == (y > 0)).all()
    assert seen_shapes == {(24, 24)}
    # determinism: the same (seed, epoch, index) gives the same crop
    assert (ds[2]["labels"] == ds[2]["labels"]).all()
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i]["labels"], InstanceDataset(
        [item], 24, 1.0, 6, InstanceAugment(), seed=1)[i]["labels"]) for i in range(6))


def test_rescale_uses_nearest_for_ids_and_small_images_are_padded():
    image, labels = nuclei_pair(0, size=40)
    im2, lb2 = rescale_pair(image, labels.astype(np.int32), 0.5)
    assert lb2.shape == (20, 20) and set(np.unique(lb2)) <= set(np.unique(labels))
    ds = InstanceDataset([SegItem(name="s", arrays=(image, labels))], crop_size=64)
    assert ds[0]["labels"].shape == (64, 64)
