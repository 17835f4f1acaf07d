"""A tiny synthetic instance dataset (touching and separate discs on noise), uint16 ids."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def nuclei_pair(seed: int, size: int = 40, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with ``n`` dark discs and its uint16 instance map (ids 1..n, large
    offsets to exercise 16-bit ids)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(180, 230, (size, size, 3), dtype=np.uint8)
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.integers(5, size - 5, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
        labels[disc] = 1000 + i
        image[disc] = (80 + 10 * i, 40, 120)
    return image, labels


def write_instance_dataset(root: Path, counts: dict[str, int], size: int = 40) -> Path:
    """MoNuSeg layout: ``images/<name>.png``, ``labels/<name>.png`` (uint16), ``splits.csv``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for split, k in counts.items():
        for i in range(k):
            name = f"{split}_{i}"
            image, labels = nuclei_pair(seed, size)
            Image.fromarray(image).save(root / "images" / f"{name}.png")
            Image.fromarray(labels).save(root / "labels" / f"{name}.png")
            rows.append({"name": name, "split": split})
            seed += 1
    with (root / "splits.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "split"])
        w.writeheader()
        w.writerows(rows)
    return root
