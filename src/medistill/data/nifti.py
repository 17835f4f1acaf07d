"""NIfTI CT volumes -> windowed 2D slices (for slice-wise segmentation).

CT windowing maps Hounsfield units to [0, 255]: values below the window's low end become 0,
above its high end 255, linear in between. Presets: ``kits`` [-200, 300] HU (kidney / tumour),
``lits`` [-40, 160] HU (liver / tumour). nibabel is imported lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medistill.errors import DataError

#: name -> (low, high) Hounsfield units
WINDOW_PRESETS: dict[str, tuple[float, float]] = {"kits": (-200.0, 300.0),
                                                   "lits": (-40.0, 160.0)}


def resolve_window(window: str | Sequence[float]) -> tuple[float, float]:
    """A preset name or an explicit ``(low, high)`` pair in HU."""
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise DataError(f"unknown CT window {window!r}; choose one of: "
                            + ", ".join(WINDOW_PRESETS) + " or give [low, high]")
        return WINDOW_PRESETS[window]
    low, high = (float(v) for v in window)
    if not high > low:
        raise DataError(f"CT window must have high > low, got [{low}, {high}]")
    return low, high


def apply_window(hu: np.ndarray, window: str | Sequence[float]) -> np.ndarray:
    """Clip ``hu`` to the window and scale it linearly to ``uint8`` [0, 255]."""
    low, high = resolve_window(window)
    scaled = (np.clip(hu.astype(np.float32), low, high) - low) / (high - low)
    return np.round(scaled * 255.0).astype(np.uint8)


def load_volume(path: str | Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI volume as (array in its stored orientation, voxel spacing)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIfTI file not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as e:  # noqa: BLE001  (nibabel raises many kinds)
        raise DataError(f"cannot read NIfTI file {path}: {e}") from None
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    return data, tuple(float(z) for z in img.header.get_zooms()[:3])


def remap_labels(mask: np.ndarray, label_map: Mapping[int, int] | None) -> np.ndarray:
    """Map source label ids to class indices (ids not listed become 0); None keeps ids."""
    if not label_map:
        return mask.astype(np.uint8)
    out = np.zeros(mask.shape, dtype=np.uint8)
    for src, dst in label_map.items():
        out[mask == int(src)] = int(dst)
    return out


def volume_slices(
    image_path: str | Path,
    mask_path: str | Path,
    window: str | Sequence[float] = "kits",
    axis: int = 2,
    label_map: Mapping[int, int] | None = None,
    target_only: bool = False,
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(slice index, windowed uint8 image (H, W), uint8 class mask (H, W))`` along ``axis``.

    ``target_only`` keeps only the slices whose (remapped) mask has a foreground pixel.
    """
    image, _ = load_volume(image_path)
    mask, _ = load_volume(mask_path)
    if image.shape != mask.shape:
        raise DataError(f"{mask_path}: mask shape {mask.shape} differs from the image's "
                        f"{image.shape} ({image_path})")
    if axis not in (0, 1, 2):
        raise DataError(f"slice axis must be 0, 1 or 2, got {axis}")
    image = apply_window(image, window)
    mask = remap_labels(mask, label_map)
    out = []
    for i in range(image.shape[axis]):
        m = np.take(mask, i, axis=axis)
        if target_only and not m.any():
            continue
        out.append((i, np.ascontiguousarray(np.take(image, i, axis=axis)), np.ascontiguousarray(m)))
    return out
