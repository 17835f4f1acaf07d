"""Segmentation predictions as files: one PNG mask per image and per-class pixel fractions.

A mask holds the class index of every pixel (0 = background) at the image's ORIGINAL size:
the logits are resized back (bilinear) before thresholding, exactly as evaluation does
(:func:`medistill.pipelines.evaluate_segmentation.predict_masks`); a weakly supervised model's
tumour probability is smoothed and thresholded as in
:mod:`medistill.pipelines.evaluate_weak`. The masks are written into a temporary folder that
replaces the masks folder only when every image is done, so a failed or interrupted call
leaves no partial folder; a folder is only ever replaced if medistill wrote it (its marker
file), never a foreign one.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medistill.errors import CheckpointError, OutputError
from medistill.metrics.segmentation import logits_to_labels
from medistill.metrics.weak_scoring import sigma_axes
from medistill.metrics.weak_segmentation import smooth_probability
from medistill.output import check_output_dir

#: the file that marks a folder as masks medistill wrote
MASKS_MARKER = ".medistill-masks"


def mask_files(names: list[str]) -> dict[str, str]:
    """Image name (relative path) -> its mask file (relative): ``a/b.jpg`` -> ``a/b.png``;
    names that would collide (``b.jpg``, ``b.png``) keep their suffix (``b.jpg.png``)."""
    files = {n: Path(n).with_suffix(".png").as_posix() for n in names}
    taken = Counter(files.values())
    return {n: (f if taken[f] == 1 else f"{n}.png") for n, f in files.items()}


class MaskWriter:
    """Turns a batch of per-pixel logits into mask files and CSV rows (see the module doc).

    Args:
        info: the model's sidecar / meta keys (classes, image_size; threshold, weak, sigma,
            sigma_at where present).
        folder: the masks folder (checked now: absent, empty or written by medistill).
        names: the images' relative paths, in prediction order.
        base: the mask paths in the rows are relative to this folder (the CSV's).
    """

    def __init__(self, info: dict[str, Any], folder: str | Path, names: list[str],
                 base: str | Path) -> None:
        self.classes = [str(c) for c in info["classes"]]
        self.columns = [f"fraction_{c}" for c in self.classes]
        self.weak = bool(info.get("weak"))
        # evaluation's defaults for model files that do not record them
        self.threshold = float(info.get("threshold", 0.5 if self.weak else 0.4))
        self.sigma = float(info.get("sigma", 0.0))
        self.sigma_at = info.get("sigma_at", "original")
        self.image_size = info.get("image_size")
        self.folder = _check_masks_folder(Path(folder))
        self.files = mask_files(names)
        self.base = Path(base)
        self.tmp: Path | None = None

    def add(self, logits: np.ndarray, names: list[str], shapes: list[tuple[int, int]],
            source: str) -> list[dict[str, Any]]:
        """Write the masks of one batch; their rows (path, mask, fraction_<class>)."""
        k = len(self.classes)
        if logits.ndim != 4 or len(logits) != len(names) or not (
                self.weak or logits.shape[1] in (1, k)):
            raise CheckpointError(f"{source}: model returned shape {tuple(logits.shape)}, "
                                  f"expected per-pixel logits ({len(names)}, {k}, H, W)")
        rows = []
        for lg, name, hw in zip(logits, names, shapes, strict=True):
            mask = self.mask(torch.from_numpy(lg[None]), hw)
            self._write(self.files[name], mask)
            fractions = np.bincount(mask.ravel(), minlength=k)[:k] / mask.size
            rows.append({"path": name, "mask": os.path.relpath(self.folder / self.files[name],
                                                               self.base),
                         **{c: float(v) for c, v in zip(self.columns, fractions, strict=True)}})
        return rows

    def mask(self, logits: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
        """(1, K, h, w) logits -> the (H, W) uint8 class mask at the original size ``hw``."""
        lg = F.interpolate(logits.float(), size=tuple(hw), mode="bilinear", align_corners=False)
        if not self.weak:
            return logits_to_labels(lg, self.threshold)[0].numpy().astype(np.uint8)
        prob = torch.sigmoid(lg[0, 0]).numpy()
        prob = smooth_probability(prob, sigma_axes(self.sigma, prob.shape, self.image_size,
                                                   self.sigma_at))
        return (prob > self.threshold).astype(np.uint8)

    def _start(self) -> Path:
        if self.tmp is None:
            self.tmp = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.tmp")
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir(parents=True)
            (self.tmp / MASKS_MARKER).write_text("masks written by medistill predict\n")
        return self.tmp

    def _write(self, name: str, mask: np.ndarray) -> None:
        path = self._start() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(path)

    def commit(self) -> None:
        """Put the finished masks in place (replacing an earlier medistill masks folder)."""
        tmp = self._start()  # (no image could be segmented: an empty masks folder)
        old = self.folder.with_name(f".{self.folder.name}.{os.getpid()}.old")
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(tmp, self.folder)
        self.tmp = None
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Remove the temporary folder of an unfinished prediction (no-op after commit)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _check_masks_folder(folder: Path) -> Path:
    check_output_dir(folder, "--masks")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MASKS_MARKER).is_file():
        raise OutputError(f"--masks {folder}: not empty and not a masks folder medistill wrote "
                          f"(no {MASKS_MARKER}); choose another")
    return folder
