"""Paired-view classification dataset.

Each item is ``{"views": {name: (C, H, W) tensor}, "label": int, "index": int}``: the same image
at every requested resolution (e.g. ``teacher`` and ``student``), augmented identically (or
independently per view, for self-supervised pairs), and
normalised with per-channel statistics. Randomness comes from ``(seed, epoch, index)`` only, so a
resumed run and a run with DataLoader workers see exactly the same augmentations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medistill.data.io import load_image
from medistill.data.records import Sample
from medistill.data.transforms import Augment, ResolutionView, to_tensor
from medistill.errors import DataError


def center_crop_or_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Crop (or zero-pad) an (H, W, C) image around its centre to ``size`` x ``size``."""
    h, w = image.shape[:2]
    out = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = image[top : top + size, left : left + size]
    oy, ox = (size - crop.shape[0]) // 2, (size - crop.shape[1]) // 2
    out[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return out


class PairedViewDataset(Dataset):
    """Images at several resolutions (or other views), sharing one augmentation by default.

    Args:
        samples: the images and labels (label -1 = unlabeled).
        views: name -> :class:`ResolutionView`.
        mean, std: per-channel normalisation (of the training set, in [0, 1] units).
        augment: the augmentation (:class:`Augment`, :class:`~medistill.data.SSLAugment` or
            anything with ``sample_params(rng)`` and ``apply(x, params)``), or None (evaluation).
        independent_views: draw the augmentation separately for every view (self-supervised
            pairs: two views that differ by augmentation) instead of once per sample (paired
            distillation: teacher and student see the same augmented image).
        image_size: centre-crop/pad originals to this square size first (None: keep).
        seed: augmentation seed; call :meth:`set_epoch` every epoch.
        cache: keep the degraded views in memory (uint8) after their first use; a dict is
            used as the cache and may be shared by several datasets (keys are the file, the
            view and ``image_size``, so datasets over other samples or views can share it).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        views: Mapping[str, ResolutionView],
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
        augment: Augment | None = None,
        independent_views: bool = False,
        image_size: int | None = None,
        seed: int = 0,
        cache: bool | dict = True,
    ) -> None:
        if not samples:
            raise DataError("dataset is empty")
        self.samples = list(samples)
        self.views = dict(views)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.independent_views = independent_views
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0
        self._cache: dict | None = cache if isinstance(cache, dict) else ({} if cache else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])

    def original(self, index: int) -> np.ndarray:
        image = load_image(self.samples[index].path)
        return center_crop_or_pad(image, self.image_size) if self.image_size else image

    def view_array(self, index: int, name: str, store: bool = True) -> np.ndarray:
        """The (H, W, C) uint8 view, from the cache if there; ``store=False`` does not add it
        (a one-off read of images that would not all fit)."""
        key = (str(self.samples[index].path), self.views[name], self.image_size)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        array = self.views[name](self.original(index))
        if self._cache is not None and store:
            self._cache[key] = array
        return array

    def __getitem__(self, index: int) -> dict:
        params = None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            params = self.augment.sample_params(rng)
        views = {}
        for number, name in enumerate(self.views):
            x = to_tensor(self.view_array(index, name))
            if self.augment is not None:
                if self.independent_views and number > 0:
                    rng = np.random.default_rng([self.seed, self.epoch, index, number])
                    params = self.augment.sample_params(rng)
                x = self.augment.apply(x, params)
            views[name] = (x - self.mean) / self.std
        return {"views": views, "label": self.samples[index].label, "index": index}


def channel_stats(samples: Sequence[Sample], max_images: int = 256, seed: int = 0) -> tuple:
    """Per-channel mean and std (in [0, 1] units) over (a seeded subset of) the images."""
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(samples))[:max_images]
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for i in chosen:
        x = load_image(samples[i].path).reshape(-1, 3).astype(np.float64) / 255.0
        total += x.sum(0)
        total_sq += (x**2).sum(0)
        count += x.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)
