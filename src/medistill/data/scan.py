"""Cheap checks of every file a run will read, done before anything is created or trained.

A bad image in the test split used to surface only after the teacher had trained; these
scans read image headers (PNG chunks are verified, JPEGs checked for their end marker) and
decode only the masks (small, and their classes must be known), so thousands of images take
seconds (EBHI-Seg's 2,032 classification images: 6 s on a busy 2-core box). Every problem
is a one-line :class:`DataError` naming the file: unreadable or truncated images, masks /
label maps that are missing, colour, of another size than their image or holding an unknown
class, and images of mixed sizes where the data gives no ``image_size`` to bring them to one
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medistill.data.io import image_size
from medistill.data.records import Sample
from medistill.data.segmentation import SegItem, load_mask
from medistill.errors import DataError

#: (path, mtime, bytes) -> (width, height) of files already scanned in this process
_SIZES: dict[tuple[str, float, int], tuple[int, int]] = {}


def checked_size(path: Path, kind: str = "image") -> tuple[int, int]:
    """:func:`~medistill.data.io.image_size`, remembered per file version."""
    try:
        st = path.stat()
    except OSError:
        return image_size(path, kind)  # raises the "not found" error
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _SIZES:
        _SIZES[key] = image_size(path, kind)
    return _SIZES[key]


def _same_size(sizes: dict[Path, tuple[int, int]], where: str, key: str) -> None:
    distinct = {}
    for path, size in sizes.items():
        distinct.setdefault(size, path)
        if len(distinct) > 1:
            (s0, p0), (s1, p1) = list(distinct.items())[:2]
            raise DataError(f"{where}: images of different sizes ({p0} is {s0[0]}x{s0[1]}, "
                            f"{p1} is {s1[0]}x{s1[1]}); set {key} to bring them to one size")


def verify_samples(samples: Sequence[Sample], where: str, same_size: bool = False,
                   key: str = "data.image_size") -> None:
    """Every image of a classification split opens; with ``same_size`` all share one size."""
    sizes = {s.path: checked_size(s.path) for s in samples}
    if same_size:
        _same_size(sizes, where, key)


def verify_pairs(items: Sequence[SegItem], where: str, num_classes: int | None = None,
                 mask_mode: str = "index", same_size: bool = False,
                 key: str = "data.image_size") -> None:
    """Every image/mask pair opens and agrees in size; index masks hold classes
    ``< num_classes``; ``num_classes=None``: instance label maps (files or mask folders)."""
    from medistill.data.instance import load_instance_map

    sizes = {}
    for item in items:
        if item.arrays is not None or item.image is None or item.mask is None:
            continue  # NIfTI slices: checked when the volumes were read
        w, h = sizes[item.image] = checked_size(item.image)
        if num_classes is None:
            mask = load_instance_map(item.mask)
            kind = "label map"
        else:
            mask = load_mask(item.mask, mask_mode)
            kind = "mask"
            top = int(mask.max(initial=0))
            if top >= num_classes:
                raise DataError(f"mask {item.mask} holds class {top}, but there are "
                                f"{num_classes} classes (0-{num_classes - 1})")
        if mask.shape != (h, w):
            raise DataError(f"{kind} {item.mask} is {mask.shape[1]}x{mask.shape[0]} px but its "
                            f"image {item.image} is {w}x{h}")
    if same_size:
        _same_size(sizes, where, key)


__all__ = ["checked_size", "verify_pairs", "verify_samples"]
