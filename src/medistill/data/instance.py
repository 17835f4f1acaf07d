"""Instance segmentation data: images with instance-id maps, random crops and paired
augmentations that keep the ids consistent.

Label layouts (every one ends as an ``(H, W)`` int32 map, 0 = background, 1..N = instances):

- a label-map file (PNG / TIFF, 8 or 16 bit; MoNuSeg here is stored as uint16 PNGs), reached
  through the CSV-manifest or folder layouts of :mod:`medistill.data.segmentation` (the
  ``mask`` path of a :class:`~medistill.data.segmentation.SegItem`);
- a folder of per-instance binary masks, one file per instance (Data Science Bowl 2018:
  ``<root>/<split>/<id>/images/<id>.png`` with ``<root>/<split>/<id>/masks/*.png``, see
  :func:`scan_instance_mask_folders`); where masks overlap, the later file wins.

:class:`InstanceDataset` rescales each pair by ``scale`` (image bilinear, ids nearest), draws
``crops_per_image`` random ``crop_size`` crops per image and epoch (reflect-padded when the
image is smaller), applies flips / 90-degree rotations to image and ids alike and
brightness / contrast jitter to the image only, then renumbers the ids of the crop to
1..n (instances cut by the crop stay one id; ids never merge). Randomness comes from
``(seed, epoch, index)`` only, so resumed runs see the same crops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from medistill.data.io import IMAGE_SUFFIXES, load_image
from medistill.data.segmentation import SegItem, read_label_array
from medistill.errors import DataError


def _read_mask_array(path: Path) -> np.ndarray:
    return read_label_array(path, "label map", "instance maps must hold one integer id per "
                                               "pixel")


def load_instance_map(path: str | Path) -> np.ndarray:
    """An ``(H, W)`` int32 instance map from a label-map file or a folder of instance masks."""
    path = Path(path)
    if path.is_dir():
        return masks_folder_to_map(path)
    if not path.is_file():
        raise DataError(f"label map not found: {path}")
    arr = _read_mask_array(path)
    if arr.dtype.kind == "f" or arr.min(initial=0) < 0:
        raise DataError(f"label map {path} must hold non-negative integer ids")
    return arr.astype(np.int32)


def masks_folder_to_map(folder: str | Path) -> np.ndarray:
    """One id per mask file of ``folder`` (sorted by name, ids 1..N; later files win)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no instance mask files")
    out: np.ndarray | None = None
    for i, p in enumerate(files, start=1):
        m = _read_mask_array(p) > 0
        if out is None:
            out = np.zeros(m.shape, dtype=np.int32)
        elif m.shape != out.shape:
            raise DataError(f"instance mask {p} is {m.shape[1]}x{m.shape[0]} px, the others "
                            f"{out.shape[1]}x{out.shape[0]}")
        out[m] = i
    assert out is not None
    return out


def scan_instance_mask_folders(root: str | Path, split: str) -> list[SegItem]:
    """Data Science Bowl 2018 layout: ``<root>/<split>/<id>/images/<image>`` and
    ``<root>/<split>/<id>/masks/*.png`` (the item's ``mask`` is the masks folder)."""
    base = Path(root) / split
    if not base.is_dir():
        raise DataError(f"folder not found: {base}")
    items = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        images = sorted(p for p in (d / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"{d}: no image in {d / 'images'}")
        if not (d / "masks").is_dir():
            raise DataError(f"{d}: no masks folder")
        items.append(SegItem(name=d.name, image=images[0], mask=d / "masks"))
    if not items:
        raise DataError(f"{base}: no sample folders")
    return items


def relabel(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered to 0..n in increasing order (0 stays background)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int64)


def rescale_pair(image: np.ndarray, labels: np.ndarray, scale: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``scale`` (image bilinear, ids nearest)."""
    if scale == 1.0:
        return image, labels
    h, w = labels.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)
    lb = Image.fromarray(labels.astype(np.int32)).resize(size, Image.Resampling.NEAREST)
    return np.asarray(im), np.asarray(lb).astype(np.int32)


@dataclass(frozen=True)
class InstanceAugment:
    """Flips, 90-degree rotations (image and ids), brightness/contrast jitter (image only)."""

    flip: bool = True
    rotate90: bool = True
    brightness: float = 0.1
    contrast: float = 0.1


class InstanceDataset(Dataset):
    """Items ``{"image": (3, h, w) float, "labels": (h, w) long ids 0..n, "index": int}``.

    Args:
        items: image / label pairs (``mask`` = label-map file or instance-mask folder).
        crop_size: side of the random training crops; None = the whole (rescaled) image.
        scale: resize factor applied to every pair first (0.5 = 40x -> 20x).
        crops_per_image: crops drawn from each image per epoch (the dataset length is
            ``len(items) * crops_per_image``).
        augment: paired augmentation, or None.
        mean, std: per-channel normalisation in [0, 1] units.
        seed: crop / augmentation seed; call :meth:`set_epoch` every epoch.
    """

    def __init__(self, items: Sequence[SegItem], crop_size: int | None = None,
                 scale: float = 1.0, crops_per_image: int = 1,
                 augment: InstanceAugment | None = None,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25,) * 3,
                 seed: int = 0) -> None:
        if not items:
            raise DataError("instance dataset is empty")
        self.items = list(items)
        self.crop_size = crop_size
        self.scale = float(scale)
        self.crops_per_image = int(crops_per_image) if crop_size else 1
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items) * self.crops_per_image

    def original(self, item_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The unscaled ``(image uint8 (H, W, 3), ids int32 (H, W))`` of an item."""
        item = self.items[item_index]
        if item.arrays is not None:
            return item.arrays[0], item.arrays[1].astype(np.int32)
        assert item.image is not None and item.mask is not None
        image, labels = load_image(item.image), load_instance_map(item.mask)
        if image.shape[:2] != labels.shape:
            raise DataError(f"label map {item.mask} is {labels.shape[1]}x{labels.shape[0]} px "
                            f"but its image {item.image} is {image.shape[1]}x{image.shape[0]}")
        return image, labels

    def pair(self, item_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The rescaled pair of an item (cached)."""
        if item_index not in self._cache:
            self._cache[item_index] = rescale_pair(*self.original(item_index), self.scale)
        return self._cache[item_index]

    def _padded(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pair reflect-padded (ids: 0) to at least ``crop_size`` on each side."""
        s = self.crop_size
        assert s is not None
        h, w = labels.shape
        if h < s or w < s:
            ph, pw = max(0, s - h), max(0, s - w)
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            labels = np.pad(labels, ((0, ph), (0, pw)))
        return image, labels

    def sample_params(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        """One draw of crop ``index``'s parameters: the crop's ``top`` / ``left`` (with a
        ``crop_size``) and, with ``augment``, ``hflip``, ``vflip``, ``rot`` (quarter turns),
        ``brightness``, ``contrast``; in the order :meth:`__getitem__` always drew them."""
        p: dict[str, Any] = {}
        if self.crop_size:
            h, w = self.pair(index // self.crops_per_image)[1].shape
            s = self.crop_size
            p["top"] = int(rng.integers(0, max(h, s) - s + 1))
            p["left"] = int(rng.integers(0, max(w, s) - s + 1))
        a = self.augment
        if a is not None:
            p["hflip"] = bool(a.flip and rng.random() < 0.5)
            p["vflip"] = bool(a.flip and rng.random() < 0.5)
            p["rot"] = int(rng.integers(0, 4)) if a.rotate90 else 0
            p["brightness"] = float(rng.uniform(1 - a.brightness, 1 + a.brightness))
            p["contrast"] = float(rng.uniform(1 - a.contrast, 1 + a.contrast))
        return p

    def augmented(self, index: int, p: Mapping[str, Any]) -> dict:
        """Crop ``index`` under the parameters ``p`` (a :meth:`sample_params` dict), as
        :meth:`__getitem__` serves it."""
        image, labels = self.pair(index // self.crops_per_image)
        if "top" in p:
            s, top, left = self.crop_size, int(p["top"]), int(p["left"])
            assert s is not None
            image, labels = self._padded(image, labels)
            rows, cols = slice(top, top + s), slice(left, left + s)
            image, labels = image[rows, cols], labels[rows, cols]
        if p.get("hflip"):
            image, labels = image[:, ::-1], labels[:, ::-1]
        if p.get("vflip"):
            image, labels = image[::-1], labels[::-1]
        if p.get("rot"):
            k = int(p["rot"])
            image, labels = np.rot90(image, k), np.rot90(labels, k)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
        if "brightness" in p:
            mean = x.mean()
            x = (((x - mean) * p["contrast"] + mean) * p["brightness"]).clamp(0.0, 1.0)
        x = (x - self.mean) / self.std
        y = torch.from_numpy(relabel(np.ascontiguousarray(labels)))
        return {"image": x.contiguous(), "labels": y, "index": index}

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.augmented(index, self.sample_params(index, rng))


def instance_channel_stats(dataset: InstanceDataset) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) of the rescaled images."""
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for i in range(len(dataset.items)):
        x = dataset.pair(i)[0].reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += (x**2).sum(0)
        count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [float(v) for v in mean], [float(v) for v in std]
