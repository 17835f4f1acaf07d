"""Segmentation data: layouts, paired augmentation, determinism, NIfTI slices and windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image
from seg_fixtures import write_seg_dataset

from medistill.data.nifti import WINDOW_PRESETS, apply_window, volume_slices
from medistill.data.segmentation import (
    SegAugment,
    SegItem,
    SegmentationDataset,
    load_mask,
    nifti_items,
    read_seg_manifest,
    scan_seg_folders,
)
from medistill.errors import DataError

TOTALSEG = SHARED_DATA / "totalseg_example_ct"


@pytest.fixture
def seg_root(tmp_path: Path) -> Path:
    return write_seg_dataset(tmp_path / "seg", {"train": 4, "val": 2, "test": 2})


def test_manifest_with_patterns_columns_and_group_splits(seg_root):
    items = read_seg_manifest(seg_root / "labels.csv", ["train"])
    assert [i.name for i in items] == [f"train_{k}" for k in range(4)]
    assert items[0].image == seg_root / "images/train_0.png"
    # several split values at once
    assert len(read_seg_manifest(seg_root / "labels.csv", ["val", "test"])) == 4
    # split by a group column (cases never straddle splits)
    by_case = read_seg_manifest(seg_root / "labels.csv", ["a"], split_column=None,
                                group_column="case", group_splits={"a": ["c0"], "b": ["c1"]})
    assert {i.name for i in by_case} == {"train_0", "train_3", "test_0"}
    with pytest.raises(DataError, match="no column 'nope'"):
        read_seg_manifest(seg_root / "labels.csv", ["train"], split_column="nope")
    with pytest.raises(DataError, match="every split would hold every row"):
        read_seg_manifest(seg_root / "labels.csv", ["train"], split_column=None)
    with pytest.raises(DataError, match="no rows in split"):
        read_seg_manifest(seg_root / "labels.csv", ["missing"])


def test_folders_layout_and_missing_mask(tmp_path, seg_root):
    base = tmp_path / "f" / "train"
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    for n in ("a", "b"):
        Image.open(seg_root / "images/train_0.png").save(base / "images" / f"{n}.jpg")
        Image.open(seg_root / "masks/train_0.png").save(base / "masks" / f"{n}.png")
    assert [i.name for i in scan_seg_folders(tmp_path / "f", "train")] == ["a", "b"]
    (base / "masks" / "b.png").unlink()
    with pytest.raises(DataError, match="no mask for .*b.jpg"):
        scan_seg_folders(tmp_path / "f", "train")


def test_bad_masks_name_the_file(seg_root, tmp_path):
    items = read_seg_manifest(seg_root / "labels.csv", ["train"])
    ds = SegmentationDataset(items, num_classes=2, image_size=16)
    bad = items[1].mask
    Image.fromarray(np.full((32, 32), 3, np.uint8)).save(bad)
    with pytest.raises(DataError, match=f"{bad.name}.*holds class 3"):
        ds[1]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(bad)
    with pytest.raises(DataError, match="colour image"):
        load_mask(bad)
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(bad)
    assert load_mask(bad, "binary").max() == 1


def test_paired_augmentation_moves_image_and_mask_together(seg_root):
    items = read_seg_manifest(seg_root / "labels.csv", ["train"])
    aug = SegAugment(flip=True, rotate90=True, rotate_degrees=30, crop_scale=0.6)
    ds = SegmentationDataset(items, 2, image_size=24, mean=(0, 0, 0), std=(1, 1, 1),
                             augment=aug, seed=3)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            x, y = item["image"], item["mask"]
            assert x.shape == (3, 24, 24) and y.shape == (24, 24) and y.dtype == torch.long
            assert set(y.unique().tolist()) <= {0, 1}  # nearest: no interpolated labels
            # the disc is bright in the image: mask pixels must be bright pixels (edges aside)
            bright = x[2] > 0.7
            inside = y.bool()
            if inside.sum() > 8:
                assert (bright & inside).sum() >= 0.7 * inside.sum()
                assert (bright & ~inside).sum() <= 0.3 * inside.sum() + 4


def test_augmentation_is_deterministic_per_seed_epoch_index(seg_root):
    items = read_seg_manifest(seg_root / "labels.csv", ["train"])
    aug = SegAugment(rotate_degrees=20, crop_scale=0.5, brightness=0.2)

    def draw(seed: int, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds = SegmentationDataset(items, 2, 16, augment=aug, seed=seed)
        ds.set_epoch(epoch)
        item = ds[index]
        return item["image"], item["mask"]

    a, b = draw(0, 1, 2), draw(0, 1, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(draw(0, 2, 2)[0], a[0])
    assert not torch.equal(draw(1, 1, 2)[0], a[0])


def _write_volume(path: Path, data: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_ct_windows_and_target_slices_only(tmp_path):
    assert WINDOW_PRESETS["kits"] == (-200, 300) and WINDOW_PRESETS["lits"] == (-40, 160)
    hu = np.array([-1000, -200, 50, 300, 2000])
    assert apply_window(hu, "kits").tolist() == [0, 0, 128, 255, 255]
    assert apply_window(np.array([-40, 60, 160]), "lits").tolist() == [0, 128, 255]
    with pytest.raises(DataError, match="unknown CT window"):
        apply_window(hu, "brain")
    image = np.full((6, 5, 4), -100, np.int16)
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[2:4, 1:3, 1] = 7  # target only in slice 1 (axis 2)
    mask[0, 0, 3] = 9
    img = _write_volume(tmp_path / "ct.nii.gz", image)
    seg = _write_volume(tmp_path / "seg.nii.gz", mask)
    every = volume_slices(img, seg, "kits", axis=2, label_map={7: 1})
    assert [s[0] for s in every] == [0, 1, 2, 3] and every[0][1].shape == (6, 5)
    assert every[3][2].max() == 0  # label 9 is not mapped
    only = volume_slices(img, seg, "kits", axis=2, label_map={7: 1}, target_only=True)
    assert [s[0] for s in only] == [1] and only[0][2].sum() == 4
    items = nifti_items([(img, seg)], "kits", 2, {7: 1})
    assert len(items) == 4 and {i.case_id for i in items} == {"ct"}
    ds = SegmentationDataset(items, 2, image_size=8)
    assert ds[1]["image"].shape == (3, 8, 8)


@pytest.mark.skipif(not TOTALSEG.is_dir(), reason="shared TotalSegmentator example not present")
def test_real_ct_volume_kidney_slices():
    items = nifti_items([(TOTALSEG / "example_ct_sm.nii.gz", TOTALSEG / "example_seg.nii.gz")],
                        "kits", 2, {2: 1, 3: 1}, target_only=True)
    assert 0 < len(items) < 30
    assert all(isinstance(i, SegItem) and i.arrays[1].any() for i in items)


def test_manifest_with_image_and_mask_columns_like_ebhi_seg(seg_root):
    import csv

    rows = [{"path": f"images/train_{i}.png", "mask_path": f"masks/train_{i}.png",
             "split": "train" if i < 3 else "val"} for i in range(4)]
    with (seg_root / "ebhi.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "mask_path", "split"])
        w.writeheader()
        w.writerows(rows)
    items = read_seg_manifest(seg_root / "ebhi.csv", ["val"], image_column="path",
                              mask_column="mask_path")
    assert [(i.name, i.mask.name) for i in items] == [("train_3", "train_3.png")]
    with pytest.raises(DataError, match="no column 'mask'"):
        read_seg_manifest(seg_root / "ebhi.csv", ["val"], image_column="path",
                          mask_column="mask")


def test_slices_of_one_volume_are_one_3d_case():
    from medistill.pipelines.evaluate_segmentation import case_arrays

    m = [np.zeros((4, 5), np.uint8) for _ in range(3)]
    items = [SegItem(name=f"v_{k}", case="v", arrays=(m[k], m[k])) for k in range(2)]
    items.append(SegItem(name="single", arrays=(m[2], m[2])))
    cases = case_arrays(items, m)
    assert cases["v"].shape == (4, 5, 2) and cases["single"].shape == (4, 5)
