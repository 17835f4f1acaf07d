"""Reading images and CSV manifests with errors that name the file, and cheap file checks.

Images are returned as RGB ``uint8``. 16-bit files (grey ``I;16`` PNG / TIFF, common in
microscopy) are scaled by the 16-bit maximum (``v / 257``) rather than clipped to white, as
``PIL.Image.convert("RGB")`` would do; float images must hold values in [0, 1].
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medistill.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

#: the exceptions PIL raises for missing, truncated or malformed files
PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    """An opened PIL image as (H, W, 3) ``uint8``, scaling 16-bit and [0, 1] float data."""
    if im.mode in _SIXTEEN_BIT:
        arr = np.asarray(im)
        if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
            raise DataError(f"image {path}: {im.mode} values outside 0-65535 cannot be "
                            "scaled to 8 bits")
        grey = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if not np.isfinite(arr).all() or arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
            raise DataError(f"image {path}: float images must hold finite values in [0, 1]")
        grey = np.round(arr * 255.0).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB ``uint8`` array of shape (H, W, 3).

    Raises:
        DataError: the file is missing, truncated or not an image (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # force decoding now: truncated files fail here, not later
            return to_rgb8(im, path)
    except PIL_ERRORS as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def image_size(path: str | Path, kind: str = "image") -> tuple[int, int]:
    """``(width, height)`` of an image file after cheap integrity checks (no full decode).

    Reads the header; PNGs are verified chunk by chunk (CRCs, so truncation shows), and a
    JPEG without its end-of-image marker is decoded to tell a truncated file from trailing
    bytes. Raises a :class:`DataError` naming the file (as ``kind``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}")
    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            if fmt == "PNG":
                im.verify()
        if fmt == "JPEG" and not _ends_with_eoi(path):
            with Image.open(path) as im:
                im.load()
    except PIL_ERRORS as e:
        raise DataError(f"cannot read {kind} {path}: {e}") from None
    if size[0] < 1 or size[1] < 1:
        raise DataError(f"{kind} {path} is empty ({size[0]}x{size[1]} px)")
    return size


def _ends_with_eoi(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 2))
        return f.read(2) == b"\xff\xd9"


def list_images(root: str | Path) -> list[Path]:
    """All image files below ``root`` (recursive), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_csv(path: str | Path, required: Sequence[str] = ()) -> tuple[list[str], list[dict]]:
    """``(header, rows)`` of a CSV manifest, checked: UTF-8 (with or without the BOM Excel
    writes), every row with as many fields as the header, the ``required`` columns present.

    Each row dict also carries ``"__line__"`` (its line number, for messages).
    Raises a one-line :class:`DataError` naming the file (and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV manifest not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            rows = []
            for fields in reader:
                if not fields or all(not v.strip() for v in fields):
                    continue  # blank lines
                if len(fields) != len(header):
                    raise DataError(f"{path}: line {reader.line_num}: {len(fields)} fields, the "
                                    f"header has {len(header)}")
                row = dict(zip(header, fields, strict=True))
                row["__line__"] = reader.line_num
                rows.append(row)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                        f"{e.start}); save it as CSV UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    if not header:
        raise DataError(f"{path}: the manifest is empty")
    for column in required:
        if column not in header:
            raise DataError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
    return header, rows
