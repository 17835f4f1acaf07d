"""A tiny synthetic weakly labelled dataset: positive images hold a bright 'tumour' disc,
negative images a blue 'benign gland' disc whose mask file is NOT empty (as GlaS benign
images): the weak target of a negative image must still be empty."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def weak_pair(seed: int, positive: bool, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2).tolist()
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 5) ** 2
    image[disc] = (230, 200, 220) if positive else (40, 60, 200)
    return image, disc.astype(np.uint8)


def write_weak_dataset(root: Path, counts: dict[str, int], size: int = 32) -> Path:
    """``images/<name>.png``, ``masks/<name>.png``, ``labels.csv`` (name, split, label);
    ``counts``: images per split, half positive."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for split, n in counts.items():
        for i in range(n):
            name, label = f"{split}_{i}", i % 2
            image, mask = weak_pair(seed, bool(label), size)
            Image.fromarray(image).save(root / "images" / f"{name}.png")
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
            rows.append({"name": name, "split": split, "label": "tumour" if label else "benign"})
            seed += 1
    with (root / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "split", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root
