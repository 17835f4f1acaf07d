"""Small shared fixtures: tiny synthetic image datasets built in ``tmp_path``."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

#: the real datasets (``../shared/data`` next to the repository, or $MEDISTILL_SHARED_DATA);
#: tests that need one skip when it is absent
SHARED_DATA = Path(os.environ.get("MEDISTILL_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")

TINY_CLASSES = ("benign", "malignant")
TINY_SPLITS = {"train": 3, "val": 2}  # images per class


@dataclass(frozen=True)
class TinyDataset:
    root: Path  # <root>/<split>/<class>/*.png
    csv: Path  # <root>/labels.csv with columns path,label,split (paths relative to root)
    classes: tuple[str, ...]
    counts: dict[str, int]  # images per split


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def random_image(seed: int, size: int = 32) -> np.ndarray:
    """A reproducible, asymmetric RGB uint8 image (no flip/rotation of it equals another)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[: size // 4, : size // 2] = (250, 10, 10)  # an off-centre block breaks symmetry
    return image


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> TinyDataset:
    """A 2-class dataset of 32-px PNGs in the class-folder layout plus the same as a CSV."""
    root = tmp_path / "tiny"
    rows = []
    seed = 0
    for split, per_class in TINY_SPLITS.items():
        for cls in TINY_CLASSES:
            for i in range(per_class):
                rel = Path(split) / cls / f"img{i}.png"
                write_png(root / rel, random_image(seed))
                seed += 1
                rows.append({"path": rel.as_posix(), "label": cls, "split": split})
    csv_path = root / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    counts = {split: n * len(TINY_CLASSES) for split, n in TINY_SPLITS.items()}
    return TinyDataset(root, csv_path, TINY_CLASSES, counts)


@pytest.fixture(scope="module")
def single_thread():
    """Run torch on one thread: tiny tensors on a shared 2-core box are far faster that way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
