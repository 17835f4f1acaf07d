"""Finding the samples of a dataset in the layouts users already have.

Layouts:
    ``folders``: ``<root>/<split>/<class>/*.png|jpg|tif``
    ``csv``:     a manifest with a path, a label and a split column (paths relative to the
                 CSV's folder unless absolute), e.g. EBHI-Seg's ``labels.csv``
    ``images``:  every image below ``<root>`` (or ``<root>/<split>``), no labels (auxiliary data)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medistill.data.io import IMAGE_SUFFIXES, list_images
from medistill.errors import DataError

UNLABELED = -1


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # UNLABELED (-1) when labels are ignored or absent


@dataclass(frozen=True)
class SampleList:
    samples: list[Sample]
    classes: list[str]


def _check_classes(found: list[str], classes: list[str] | None, where: str) -> list[str]:
    if classes is None:
        return sorted(set(found))
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{where}: unknown class {unknown[0]!r} (known: {', '.join(classes)})")
    return list(classes)


def scan_folders(
    root: str | Path, split: str, classes: list[str] | None = None, labeled: bool = True
) -> SampleList:
    """Samples of ``<root>/<split>/<class>/*``."""
    base = Path(root) / split
    if not base.is_dir():
        raise DataError(f"split folder not found: {base}")
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir())
    classes = _check_classes([d.name for d in class_dirs], classes, str(base))
    samples = []
    for d in class_dirs:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        label = classes.index(d.name) if labeled else UNLABELED
        samples += [Sample(p, label) for p in files]
    if not samples:
        raise DataError(f"split {split!r} is empty: no images in {base}/<class>/")
    return SampleList(samples, classes)


def read_manifest(
    csv_path: str | Path,
    split: str,
    classes: list[str] | None = None,
    labeled: bool = True,
    path_column: str = "path",
    label_column: str = "label",
    split_column: str = "split",
    path_template: str | None = None,
) -> SampleList:
    """Samples of one split of a CSV manifest; every listed file must exist.

    ``path_template`` builds the file path from a row's columns instead of reading
    ``path_column``, e.g. ``"images/{name}.jpg"`` for GlaS's ``labels.csv``.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"CSV manifest not found: {csv_path}")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        needed = (label_column, split_column) + (() if path_template else (path_column,))
        for column in needed:
            if column not in header:
                raise DataError(f"{csv_path}: no column {column!r} (columns: {', '.join(header)})")
        rows = [r for r in reader if r[split_column] == split]
    if not rows:
        raise DataError(f"{csv_path}: split {split!r} is empty")
    all_labels = [r[label_column] for r in rows]
    classes = _check_classes(all_labels, classes, str(csv_path))
    samples = []
    for r in rows:
        try:
            path = Path(path_template.format(**r) if path_template else r[path_column])
        except KeyError as e:
            raise DataError(f"{csv_path}: path_template {path_template!r} names no column "
                            f"{e.args[0]!r}") from None
        path = path if path.is_absolute() else csv_path.parent / path
        if not path.is_file():
            raise DataError(f"{csv_path}: file listed for split {split!r} not found: {path}")
        samples.append(Sample(path, classes.index(r[label_column]) if labeled else UNLABELED))
    return SampleList(samples, classes)


def scan_images(root: str | Path, split: str | None = None) -> SampleList:
    """Unlabeled samples: every image below ``root`` (or ``root/split`` if it exists)."""
    base = Path(root)
    if split and (base / split).is_dir():
        base = base / split
    files = list_images(base)
    if not files:
        raise DataError(f"no images found below {base}")
    return SampleList([Sample(p, UNLABELED) for p in files], [])
