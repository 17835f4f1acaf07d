"""Finding the samples of a dataset in the layouts users already have.

Layouts:
    ``folders``: ``<root>/<split>/<class>/*.png|jpg|tif``
    ``csv``:     a manifest with a path, a label and a split column (paths relative to the
                 CSV's folder unless absolute), e.g. EBHI-Seg's ``labels.csv``
    ``images``:  every image below ``<root>`` (or ``<root>/<split>``), no labels (auxiliary data)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medistill.data.io import IMAGE_SUFFIXES, list_images, read_csv
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
    needed = (label_column, split_column) + (() if path_template else (path_column,))
    _, all_rows = read_csv(csv_path, needed)
    paths = []
    for r in all_rows:
        try:
            path = Path(path_template.format(**r) if path_template else r[path_column])
        except KeyError as e:
            raise DataError(f"{csv_path}: path_template {path_template!r} names no column "
                            f"{e.args[0]!r}") from None
        if not str(path).strip() or str(path) == ".":
            raise DataError(f"{csv_path}: line {r['__line__']}: empty {path_column!r}")
        paths.append(path if path.is_absolute() else csv_path.parent / path)
    check_split_overlap(csv_path, ((r["__line__"], r[split_column], p)
                                   for r, p in zip(all_rows, paths, strict=True)))
    chosen = [(r, p) for r, p in zip(all_rows, paths, strict=True) if r[split_column] == split]
    if not chosen:
        raise DataError(f"{csv_path}: split {split!r} is empty")
    for r, _ in chosen:
        if labeled and not r[label_column].strip():
            raise DataError(f"{csv_path}: line {r['__line__']}: empty {label_column!r}")
    all_labels = [r[label_column] for r, _ in chosen if labeled or r[label_column].strip()]
    classes = _check_classes(all_labels, classes, str(csv_path))
    samples = []
    for r, path in chosen:
        if not path.is_file():
            raise DataError(f"{csv_path}: file listed for split {split!r} not found: {path}")
        samples.append(Sample(path, classes.index(r[label_column]) if labeled else UNLABELED))
    return SampleList(samples, classes)


def check_split_overlap(source: str | Path, entries: Iterable[tuple[int, str, Path]]) -> None:
    """Refuse a file listed in two splits (``(line, split, path)`` entries): test images seen
    in training make the test scores meaningless. A file listed twice in ONE split is only
    warned about (it is then sampled twice as often)."""
    first: dict[Path, tuple[int, str]] = {}
    repeats = 0
    example = ""
    for line, split, path in entries:
        if path not in first:
            first[path] = (line, split)
            continue
        line0, split0 = first[path]
        if split0 != split:
            raise DataError(f"{source}: {path} is in split {split0!r} (line {line0}) and in "
                            f"split {split!r} (line {line})")
        repeats += 1
        example = example or f"{path} (lines {line0} and {line})"
    if repeats:
        warnings.warn(f"{source}: {repeats} duplicate row(s), e.g. {example}", stacklevel=3)


def scan_images(root: str | Path, split: str | None = None) -> SampleList:
    """Unlabeled samples: every image below ``root`` (or ``root/split`` if it exists)."""
    base = Path(root)
    if split and (base / split).is_dir():
        base = base / split
    files = list_images(base)
    if not files:
        raise DataError(f"no images found below {base}")
    return SampleList([Sample(p, UNLABELED) for p in files], [])
