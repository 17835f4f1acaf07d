"""A tiny synthetic segmentation dataset (discs on noise) in the GlaS manifest layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def disc_pair(seed: int, size: int = 32, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with a bright disc (class 1) and, for 3 classes, a dark square (class 2)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 6]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[disc] = (230, 200, 220)
    mask[disc] = 1
    if classes > 2:
        mask[1:5, 1:5] = 2
        image[1:5, 1:5] = (10, 10, 40)
    return image, mask


def write_seg_dataset(root: Path, counts: dict[str, int], size: int = 32,
                      classes: int = 2) -> Path:
    """``images/<name>.png``, ``masks/<name>.png`` and ``labels.csv`` (name, split, case)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for split, n in counts.items():
        for i in range(n):
            name = f"{split}_{i}"
            image, mask = disc_pair(seed, size, classes)
            Image.fromarray(image).save(root / "images" / f"{name}.png")
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
            rows.append({"name": name, "split": split, "case": f"c{seed % 3}"})
            seed += 1
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "split", "case"])
        writer.writeheader()
        writer.writerows(rows)
    return root
