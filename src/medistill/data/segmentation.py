"""Segmentation data: image + index-mask pairs, paired augmentation, a deterministic dataset.

Layouts (see :func:`read_seg_manifest`, :func:`scan_seg_folders` and :func:`nifti_items`):

- a CSV manifest with one row per image: image/mask paths in columns (EBHI-Seg:
  ``path``, ``mask_path``) or built from a name column with patterns (GlaS:
  ``images/{name}.jpg``, ``masks/{name}.png``); the split from a split column, or from a
  group column (e.g. the patient/case id) and an explicit group -> split assignment
  (KiTS19 slices, so that slices of one case never land in two splits);
- folders ``<root>/<split>/images/*`` with ``<root>/<split>/masks/<stem>.png``;
- NIfTI CT volumes, cut into windowed 2D slices (:mod:`medistill.data.nifti`).

Masks are uint8 index masks (0 = background, 1..K-1 = classes; KiTS19: 1 kidney, 2 tumour);
``mask_mode="binary"`` maps every non-zero value to 1 (0/255 masks). Images are read as RGB
(grey CT slices are repeated to 3 channels).

:class:`SegmentationDataset` resizes every pair to ``image_size`` x ``image_size`` (image
bilinear, mask nearest) and applies :class:`SegAugment` with the SAME random parameters to
image and mask (crop, rotation, flips; the mask always with nearest interpolation; intensity
jitter on the image only). Randomness comes from ``(seed, epoch, index)`` only, as in
:class:`~medistill.data.PairedViewDataset`, so resumed runs see the same augmentations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from medistill.data.io import IMAGE_SUFFIXES, PIL_ERRORS, load_image, read_csv
from medistill.data.records import check_split_overlap
from medistill.errors import DataError


@dataclass(frozen=True)
class SegItem:
    """One image/mask pair: files, or arrays already in memory (NIfTI slices).

    ``case`` groups items that form one evaluation case (a volume's slices); by default each
    item is its own case.
    """

    name: str
    image: Path | None = None
    mask: Path | None = None
    case: str = ""
    arrays: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def case_id(self) -> str:
        return self.case or self.name


def read_label_array(path: Path, kind: str, rule: str) -> np.ndarray:
    """The 2-D integer array of a label image (mask or instance map) ``path``; a colour,
    unreadable or non-2-D file is a :class:`DataError` naming it as ``kind`` (with ``rule``)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                raise DataError(f"{kind} {path} is a colour image; {rule}")
            arr = np.asarray(im)
    except PIL_ERRORS as e:
        raise DataError(f"cannot read {kind} {path}: {e}") from None
    if arr.ndim != 2:
        raise DataError(f"{kind} {path} must be 2-D, got shape {arr.shape}")
    return arr


def load_mask(path: str | Path, mode: str = "index") -> np.ndarray:
    """An (H, W) uint8 index mask; ``mode="binary"`` maps non-zero to 1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}")
    arr = read_label_array(path, "mask", "masks must be index images (one integer class per "
                                         "pixel)")
    if mode == "binary":
        return (arr > 0).astype(np.uint8)
    if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
        raise DataError(f"mask {path} holds values outside 0-255")
    return arr.astype(np.uint8)


def load_pair(item: SegItem, mask_mode: str = "index") -> tuple[np.ndarray, np.ndarray]:
    """``(image (H, W, 3) uint8, mask (H, W) uint8)`` of an item; sizes must agree."""
    if item.arrays is not None:
        image, mask = item.arrays
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        return image, (mask > 0).astype(np.uint8) if mask_mode == "binary" else mask
    assert item.image is not None and item.mask is not None
    image = load_image(item.image)
    mask = load_mask(item.mask, mask_mode)
    if image.shape[:2] != mask.shape:
        raise DataError(f"mask {item.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                        f"{item.image} is {image.shape[1]}x{image.shape[0]}")
    return image, mask


# ------------------------------------------------------------------------------------ layouts
def read_seg_manifest(
    csv_path: str | Path,
    splits: Sequence[str],
    *,
    root: str | Path | None = None,
    image_column: str | None = None,
    mask_column: str | None = None,
    name_column: str = "name",
    image_pattern: str = "images/{name}.png",
    mask_pattern: str = "masks/{name}.png",
    split_column: str | None = "split",
    group_column: str | None = None,
    group_splits: Mapping[str, Sequence[str]] | None = None,
) -> list[SegItem]:
    """Items of the rows of a CSV manifest whose split is one of ``splits``.

    Paths are relative to ``root`` (default: the CSV's folder). The split of a row is its
    ``split_column`` value or, with ``group_column`` + ``group_splits`` (split -> group
    values), the split its group is assigned to (rows of unassigned groups are skipped).
    """
    csv_path = Path(csv_path)
    base = Path(root) if root is not None else csv_path.parent
    header, rows = read_csv(csv_path)
    if not rows:
        raise DataError(f"{csv_path}: the manifest has no rows")
    needed = [c for c in (image_column, mask_column) if c]
    if not image_column or not mask_column:
        needed.append(name_column)
    needed.append(group_column if group_splits else split_column or "")
    for col in needed:
        if col and col not in header:
            raise DataError(f"{csv_path}: no column {col!r} (columns: {', '.join(header)})")
    if not split_column and not group_splits:
        raise DataError(f"{csv_path}: give a split column or a group column with group_splits "
                        "(otherwise every split would hold every row)")
    group_of: dict[str, str] = {}
    if group_splits:
        if not group_column:
            raise DataError(f"{csv_path}: group_splits needs a group_column")
        for split, groups in group_splits.items():
            for g in groups:
                if group_of.setdefault(str(g), split) != split:
                    raise DataError(f"{csv_path}: group {g!r} is assigned to splits "
                                    f"{group_of[str(g)]!r} and {split!r}")
    items, entries = [], []
    for row in rows:
        split = group_of.get(row[group_column]) if group_splits else row[split_column]
        name = row.get(name_column) or (Path(row[image_column]).stem if image_column else "")
        if not name.strip():
            raise DataError(f"{csv_path}: line {row['__line__']}: empty image name or path")
        image = row[image_column] if image_column else image_pattern.format(name=name)
        mask = row[mask_column] if mask_column else mask_pattern.format(name=name)
        if split is not None:
            entries.append((row["__line__"], split, base / image))
        if split in splits:
            if not mask.strip():
                raise DataError(f"{csv_path}: line {row['__line__']}: empty mask path")
            items.append(SegItem(name=name, image=base / image, mask=base / mask))
    check_split_overlap(csv_path, entries)
    if not items:
        raise DataError(f"{csv_path}: no rows in split(s) {', '.join(splits)}")
    return items


def scan_seg_folders(root: str | Path, split: str, images: str = "images",
                     masks: str = "masks", mask_suffix: str = ".png") -> list[SegItem]:
    """``<root>/<split>/<images>/*`` paired with ``<root>/<split>/<masks>/<stem><suffix>``."""
    base = Path(root) / split
    img_dir, mask_dir = base / images, base / masks
    if not img_dir.is_dir():
        raise DataError(f"image folder not found: {img_dir}")
    items = []
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask = mask_dir / (p.stem + mask_suffix)
        if not mask.is_file():
            raise DataError(f"no mask for {p}: expected {mask}")
        items.append(SegItem(name=p.stem, image=p, mask=mask))
    if not items:
        raise DataError(f"{img_dir}: no images")
    return items


def nifti_items(
    volumes: Sequence[tuple[str | Path, str | Path]],
    window: str | Sequence[float] = "kits",
    axis: int = 2,
    label_map: Mapping[int, int] | None = None,
    target_only: bool = False,
) -> list[SegItem]:
    """The 2D slices of NIfTI (image, mask) volume pairs as in-memory items (case = volume)."""
    from medistill.data.nifti import volume_slices

    items = []
    for image_path, mask_path in volumes:
        case = Path(image_path).name.split(".")[0]
        for i, image, mask in volume_slices(image_path, mask_path, window, axis, label_map,
                                            target_only):
            items.append(SegItem(name=f"{case}_{i:04d}", case=case, arrays=(image, mask)))
    if not items:
        raise DataError(f"no slices from {[str(v[0]) for v in volumes]}"
                        + (" contain the target" if target_only else ""))
    return items


# ------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class SegAugment:
    """Paired augmentation: random crop (area fraction in [crop_scale, 1]), rotation by up to
    ``rotate_degrees``, flips, 90-degree rotations, and brightness/contrast jitter (image
    only)."""

    flip: bool = True
    rotate90: bool = True
    rotate_degrees: float = 0.0
    crop_scale: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0

    def sample_params(self, rng: np.random.Generator) -> dict[str, float]:
        return {
            "crop": float(rng.uniform(self.crop_scale, 1.0)) if self.crop_scale < 1 else 1.0,
            "cy": float(rng.random()), "cx": float(rng.random()),
            "angle": float(rng.uniform(-self.rotate_degrees, self.rotate_degrees))
            if self.rotate_degrees else 0.0,
            "hflip": bool(self.flip and rng.random() < 0.5),
            "vflip": bool(self.flip and rng.random() < 0.5),
            "rot": int(rng.integers(0, 4)) if self.rotate90 else 0,
            "brightness": float(rng.uniform(1 - self.brightness, 1 + self.brightness)),
            "contrast": float(rng.uniform(1 - self.contrast, 1 + self.contrast)),
        }


def _crop(array: np.ndarray, p: Mapping[str, float]) -> np.ndarray:
    if p["crop"] >= 1.0:
        return array
    h, w = array.shape[:2]
    side = np.sqrt(p["crop"])
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    top, left = round((h - ch) * p["cy"]), round((w - cw) * p["cx"])
    return array[top : top + ch, left : left + cw]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int | None,
                angle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Resize (image bilinear, mask nearest) and rotate by ``angle`` degrees (0 fill)."""
    im, mk = Image.fromarray(image), Image.fromarray(mask)
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
        mk = mk.resize((size, size), Image.Resampling.NEAREST)
    if angle:
        im = im.rotate(angle, Image.Resampling.BILINEAR)
        mk = mk.rotate(angle, Image.Resampling.NEAREST)
    return np.asarray(im), np.asarray(mk)


class SegmentationDataset(Dataset):
    """Items ``{"image": (3, S, S) float, "mask": (S, S) long, "index": int}``.

    Args:
        items: the image/mask pairs.
        num_classes: masks with a value >= this raise :class:`DataError` naming the file.
        image_size: every pair is resized to this square size (None: keep; then all images
            of a batch must have the same size).
        mean, std: per-channel normalisation in [0, 1] units.
        augment: paired augmentation, or None (evaluation).
        mask_mode: ``"index"`` or ``"binary"`` (non-zero -> 1).
        seed: augmentation seed; call :meth:`set_epoch` every epoch.
    """

    def __init__(self, items: Sequence[SegItem], num_classes: int, image_size: int | None = None,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25,) * 3,
                 augment: SegAugment | None = None, mask_mode: str = "index",
                 seed: int = 0) -> None:
        if not items:
            raise DataError("segmentation dataset is empty")
        self.items = list(items)
        self.num_classes = num_classes
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.mask_mode = mask_mode
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The original (unaugmented, unresized) pair, checked and cached."""
        if index not in self._cache:
            item = self.items[index]
            image, mask = load_pair(item, self.mask_mode)
            if mask.max(initial=0) >= self.num_classes:
                where = item.mask or item.name
                raise DataError(f"mask {where} holds class {int(mask.max())}, but there are "
                                f"{self.num_classes} classes (0-{self.num_classes - 1})")
            self._cache[index] = (image, mask)
        return self._cache[index]

    def resized(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The evaluation pair: resized to ``image_size``, no augmentation (uint8)."""
        return resize_pair(*self.pair(index), self.image_size)

    def __getitem__(self, index: int) -> dict:
        p = None
        if self.augment is not None:
            p = self.sample_params(index, np.random.default_rng([self.seed, self.epoch, index]))
        return self.augmented(index, p)

    def sample_params(self, index: int, rng: np.random.Generator) -> dict[str, float]:
        """One draw of item ``index``'s augmentation parameters (the same for every item)."""
        assert self.augment is not None
        return self.augment.sample_params(rng)

    def augmented(self, index: int, p: Mapping[str, float] | None) -> dict:
        """Item ``index`` under the augmentation parameters ``p`` (a
        :meth:`SegAugment.sample_params` dict; None: none), as :meth:`__getitem__` serves it."""
        image, mask = self.pair(index)
        if p is None:
            image, mask = resize_pair(image, mask, self.image_size)
        else:
            image, mask = resize_pair(_crop(image, p), _crop(mask, p), self.image_size,
                                      p["angle"])
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
        y = torch.from_numpy(np.array(mask)).long()
        if p is not None:
            if p["hflip"]:
                x, y = x.flip(-1), y.flip(-1)
            if p["vflip"]:
                x, y = x.flip(-2), y.flip(-2)
            if p["rot"]:
                x, y = torch.rot90(x, p["rot"], (-2, -1)), torch.rot90(y, p["rot"], (-2, -1))
            mean = x.mean()
            x = ((x - mean) * p["contrast"] + mean) * p["brightness"]
            x = x.clamp(0.0, 1.0)
        x = (x.contiguous() - self.mean) / self.std
        return {"image": x, "mask": y.contiguous(), "index": index}


def seg_channel_stats(dataset: SegmentationDataset, max_items: int = 128,
                      seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (in [0, 1] units) of (a seeded subset of) the resized images."""
    rng = np.random.default_rng(seed)
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for i in rng.permutation(len(dataset))[:max_items]:
        x = dataset.resized(int(i))[0].reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += (x**2).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(max(s, 1e-3)) for s in std)
