"""Weakly labelled segmentation data: images with an image-level label (tumour / no tumour)
for training, pixel masks for evaluation only.

:class:`WeakSegDataset` is a :class:`~medistill.data.segmentation.SegmentationDataset` whose
items also carry ``"label"`` (1 = positive image, 0 = negative) and whose NEGATIVE images have
an EMPTY target mask whatever their mask file holds (GlaS benign images have gland masks, but
the target of weakly supervised tumour segmentation is the tumour: none in a benign image).
Training methods read only ``"label"``; ``"mask"`` is for validation and testing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medistill.data.io import read_csv
from medistill.data.segmentation import SegItem, SegmentationDataset
from medistill.errors import DataError


class WeakSegDataset(SegmentationDataset):
    """A segmentation dataset with image labels; negatives get an empty target mask."""

    def __init__(self, items: Sequence[SegItem], labels: Sequence[int], *args, **kwargs) -> None:
        super().__init__(items, *args, **kwargs)
        if len(labels) != len(self.items):
            raise DataError(f"{len(labels)} image labels for {len(self.items)} images")
        self.labels = [int(v) for v in labels]

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = super().pair(index)
        if self.labels[index] == 0 and mask.any():
            mask = np.zeros_like(mask)
            self._cache[index] = (image, mask)
        return image, mask

    def augmented(self, index: int, p: Mapping[str, float] | None) -> dict:
        out = super().augmented(index, p)
        out["label"] = self.labels[index]
        return out


def column_by_image(csv_path: str | Path, root: str | Path, path_column: str | None,
                    name_column: str, image_pattern: str, column: str) -> dict[Path, str]:
    """Image path (as :func:`read_seg_manifest` builds it) -> the value of ``column`` in its
    row (the image label, or a patient / case id)."""
    csv_path, base = Path(csv_path), Path(root)
    _, rows = read_csv(csv_path, [column])
    out = {}
    for row in rows:
        rel = row[path_column] if path_column else image_pattern.format(name=row[name_column])
        out[base / rel] = row[column].strip()
    return out


def assign_labels(items: Sequence[SegItem], raw: dict[Path, str], positive: Sequence[str],
                  negative: Sequence[str], source: str) -> tuple[list[SegItem], list[int]]:
    """Keep the items whose label is positive (1) or negative (0); drop the others."""
    pos, neg = set(positive), set(negative)
    if pos & neg:
        raise DataError(f"{source}: labels {sorted(pos & neg)} are both positive and negative")
    kept, labels = [], []
    for item in items:
        value = raw.get(item.image) if item.image is not None else None
        if value is None:
            raise DataError(f"{source}: no label for {item.image}")
        if not value:
            raise DataError(f"{source}: empty label for {item.image}")
        if value in pos or value in neg:
            kept.append(item)
            labels.append(1 if value in pos else 0)
    return kept, labels


def split_off(items: Sequence[SegItem], labels: Sequence[int], fraction: float, seed: int,
              groups: Sequence[str] | None = None
              ) -> tuple[tuple[list[SegItem], list[int]], tuple[list[SegItem], list[int]]]:
    """Seeded split into (kept, held out ~``fraction``), stratified by label; with ``groups``
    whole groups are held out (groups shuffled, taken until the fraction is reached)."""
    rng = np.random.default_rng(seed)
    n = len(items)
    held: set[int] = set()
    if groups is not None:
        uniq = sorted(set(groups))
        for g in [uniq[i] for i in rng.permutation(len(uniq))]:
            if len(held) >= fraction * n:
                break
            held |= {i for i in range(n) if groups[i] == g}
    else:
        for label in sorted(set(labels)):
            idx = [i for i in range(n) if labels[i] == label]
            take = max(1, round(fraction * len(idx))) if len(idx) > 1 else 0
            held |= {idx[i] for i in rng.permutation(len(idx))[:take]}
    a = [i for i in range(n) if i not in held]
    b = sorted(held)
    if not a or not b:
        raise DataError(f"cannot split {n} images into train/val with fraction {fraction}")
    return ([items[i] for i in a], [labels[i] for i in a]), ([items[i] for i in b],
                                                           [labels[i] for i in b])


def cap_per_class(items: Sequence[SegItem], labels: Sequence[int], max_per_class: int | None,
                  seed: int) -> tuple[list[SegItem], list[int]]:
    """At most ``max_per_class`` images of each label (a seeded subset; order kept)."""
    if not max_per_class:
        return list(items), list(labels)
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for label in sorted(set(labels)):
        idx = [i for i in range(len(items)) if labels[i] == label]
        keep |= {idx[i] for i in rng.permutation(len(idx))[:max_per_class]}
    order = sorted(keep)
    return [items[i] for i in order], [labels[i] for i in order]
