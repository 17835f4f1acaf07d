"""PairedViewDataset (same image at several resolutions, one shared augmentation) and stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medistill.data import (
    Augment,
    PairedViewDataset,
    ResolutionView,
    Sample,
    channel_stats,
    lanczos_resize,
    scan_folders,
)
from medistill.data.datasets import center_crop_or_pad
from medistill.errors import DataError

pytestmark = pytest.mark.usefixtures("single_thread")

VIEWS = {"teacher": ResolutionView(factor=1), "student": ResolutionView(factor=4)}
IDENTITY_NORM = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
GEOMETRIC = Augment(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def _dataset(samples, augment=None, seed=0, **kwargs) -> PairedViewDataset:
    return PairedViewDataset(samples, VIEWS, augment=augment, seed=seed,
                             **{**IDENTITY_NORM, **kwargs})


def _hwc_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()


def _dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of an (H, W, C) array, computed with numpy."""
    out = []
    for flipped in (image, image[:, ::-1]):
        out += [np.rot90(flipped, k) for k in range(4)]
    return out


def _which_dihedral(view: np.ndarray, original: np.ndarray, atol: int = 0) -> list[int]:
    return [i for i, d in enumerate(_dihedral(original))
            if d.shape == view.shape and np.abs(d.astype(int) - view.astype(int)).max() <= atol]


@pytest.fixture
def train_samples(tiny_dataset):
    return scan_folders(tiny_dataset.root, "train").samples


def test_views_have_the_right_sizes(train_samples) -> None:
    item = _dataset(train_samples)[0]
    assert item["views"]["teacher"].shape == (3, 32, 32)
    assert item["views"]["student"].shape == (3, 8, 8)
    assert item["views"]["student"].dtype == torch.float32
    assert item["label"] == train_samples[0].label
    assert item["index"] == 0


def test_views_without_augment_are_normalised_lanczos_views(train_samples) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    ds = PairedViewDataset(train_samples, VIEWS, mean=mean, std=std)
    original = np.asarray(Image.open(train_samples[1].path).convert("RGB"))
    low = np.asarray(Image.fromarray(original).resize((8, 8), Image.Resampling.LANCZOS))
    student = ds[1]["views"]["student"]
    for c in range(3):
        expected = (torch.from_numpy(low[..., c].astype(np.float32)) / 255 - mean[c]) / std[c]
        assert torch.allclose(student[c], expected, atol=1e-5)


def test_both_views_get_the_same_flip_and_rotation(train_samples) -> None:
    ds = _dataset(train_samples, GEOMETRIC, seed=3)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for index in range(len(ds)):
            original = np.asarray(Image.open(train_samples[index].path).convert("RGB"))
            item = ds[index]
            high = _hwc_uint8(item["views"]["teacher"])
            low = _hwc_uint8(item["views"]["student"])
            (which,) = _which_dihedral(high, original)  # asymmetric images: exactly one match
            seen.add(which)
            # the low view is the SAME flip/rotation of the low-resolution original ... (PIL
            # resizes the axes in two rounded passes, so a rotation may move a pixel by a few
            # levels near the saturated block; different transforms differ by ~100 levels)
            assert _which_dihedral(low, lanczos_resize(original, (8, 8)), atol=4) == [which]
            # ... and equals Lanczos-downsampling the augmented high-resolution view
            assert np.abs(lanczos_resize(high, (8, 8)).astype(int) - low.astype(int)).max() <= 4
    assert len(seen) >= 4  # augmentation really varied


def test_both_views_get_the_same_colour_jitter(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([64 + 4 * xx, 64 + 4 * yy, 128 + 2 * (xx - yy)], -1).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "smooth.png")
    samples = [Sample(tmp_path / "smooth.png", 0)]
    colour = Augment(flip=False, rotate90=False, brightness=0.3, contrast=0.3, saturation=0.3,
                     hue=0.1)
    ds = _dataset(samples, colour)
    plain = _dataset(samples)[0]["views"]["teacher"]
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        high, low = item["views"]["teacher"], item["views"]["student"]
        assert (high - plain).abs().max().item() > 0.02  # jitter did something
        downsampled = torch.from_numpy(lanczos_resize(_hwc_uint8(high), (8, 8)).copy())
        downsampled = downsampled.permute(2, 0, 1)
        assert (downsampled.float() / 255 - low).abs().max().item() < 0.015


def test_deterministic_for_same_seed_epoch_index(train_samples) -> None:
    a, b = _dataset(train_samples, Augment(), seed=7), _dataset(train_samples, Augment(), seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    for index in (0, 3, 5):
        for name in VIEWS:
            assert torch.equal(a[index]["views"][name], b[index]["views"][name])
    # order of access does not matter (no hidden RNG state)
    first = a[4]["views"]["teacher"].clone()
    _ = [a[i] for i in range(len(a))]
    assert torch.equal(a[4]["views"]["teacher"], first)


def test_different_epochs_and_seeds_differ(train_samples) -> None:
    ds = _dataset(train_samples, Augment(), seed=7)
    per_epoch = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        per_epoch.append(ds[0]["views"]["teacher"].clone())
    assert not torch.equal(per_epoch[0], per_epoch[1])
    assert not torch.equal(per_epoch[1], per_epoch[2])
    other = _dataset(train_samples, Augment(), seed=8)
    assert not torch.equal(other[0]["views"]["teacher"], per_epoch[0])
    # back to epoch 0: the cached views were not modified by augmentation
    ds.set_epoch(0)
    assert torch.equal(ds[0]["views"]["teacher"], per_epoch[0])


def test_cache_and_no_cache_agree(train_samples) -> None:
    cached = _dataset(train_samples, Augment(), cache=True)
    uncached = _dataset(train_samples, Augment(), cache=False)
    for _ in range(2):
        for name in VIEWS:
            assert torch.equal(cached[1]["views"][name], uncached[1]["views"][name])


def test_unlabeled_samples_give_label_minus_one(tiny_dataset) -> None:
    samples = scan_folders(tiny_dataset.root, "val", labeled=False).samples
    ds = _dataset(samples)
    assert all(ds[i]["label"] == -1 for i in range(len(ds)))
    assert (ds.labels == -1).all()


def test_labels_property(train_samples) -> None:
    assert _dataset(train_samples).labels.tolist() == [s.label for s in train_samples]


def test_image_size_crops_or_pads_the_original(train_samples) -> None:
    item = _dataset(train_samples, image_size=16)[0]
    assert item["views"]["teacher"].shape == (3, 16, 16)
    assert item["views"]["student"].shape == (3, 4, 4)
    assert _dataset(train_samples, image_size=40)[0]["views"]["teacher"].shape == (3, 40, 40)


def test_center_crop_or_pad_by_hand() -> None:
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    assert center_crop_or_pad(image, 2)[..., 0].tolist() == [[5, 6], [9, 10]]
    padded = center_crop_or_pad(image, 6)[..., 0]
    assert padded[1:5, 1:5].tolist() == image[..., 0].tolist()
    assert padded[0].sum() == 0 and padded[:, 0].sum() == 0


def test_empty_dataset_raises() -> None:
    with pytest.raises(DataError, match="empty"):
        PairedViewDataset([], VIEWS)


def test_corrupt_image_raises_on_load_naming_file(train_samples) -> None:
    path = train_samples[2].path
    path.write_bytes(path.read_bytes()[:40])
    ds = _dataset(train_samples)
    ds[0]  # other images still load
    with pytest.raises(DataError, match=path.name):
        ds[2]


def test_channel_stats_of_constant_image(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8, 3), (51, 102, 204), dtype=np.uint8)).save(tmp_path / "c.png")
    mean, std = channel_stats([Sample(tmp_path / "c.png", 0)] * 3)
    assert mean == pytest.approx((0.2, 0.4, 0.8), abs=1e-9)
    assert max(std) < 1e-4


def test_channel_stats_of_half_black_half_white(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:4] = 255
    Image.fromarray(image).save(tmp_path / "bw.png")
    # mean = (0 + 1) / 2 = 0.5; std = sqrt(E[x^2] - mean^2) = sqrt(0.5 - 0.25) = 0.5
    mean, std = channel_stats([Sample(tmp_path / "bw.png", 0)])
    assert mean == pytest.approx((0.5, 0.5, 0.5))
    assert std == pytest.approx((0.5, 0.5, 0.5))


def test_channel_stats_pool_pixels_over_images(tmp_path: Path) -> None:
    for name, value in (("a.png", 0), ("b.png", 255)):
        Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(tmp_path / name)
    samples = [Sample(tmp_path / "a.png", 0), Sample(tmp_path / "b.png", 0)]
    mean, std = channel_stats(samples)
    assert mean == pytest.approx((0.5, 0.5, 0.5))
    assert std == pytest.approx((0.5, 0.5, 0.5))
    # max_images=1 uses one (seeded) image only: a constant, so std ~ 0
    mean1, std1 = channel_stats(samples, max_images=1)
    assert mean1[0] in (pytest.approx(0.0), pytest.approx(1.0))
    assert max(std1) < 1e-4


def test_a_shared_cache_serves_several_datasets(train_samples) -> None:
    cache: dict = {}
    first = _dataset(train_samples, cache=cache)
    first[0]
    assert len(cache) == 2  # teacher and student views of image 0
    second = PairedViewDataset(train_samples[:1], {"s": VIEWS["student"]}, cache=cache,
                               **IDENTITY_NORM)
    assert torch.equal(second[0]["views"]["s"], first[0]["views"]["student"])
    assert len(cache) == 2  # found, not recomputed
