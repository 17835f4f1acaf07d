"""Finding samples: class folders, CSV manifests, unlabeled images, and reading image files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medistill.data import (
    UNLABELED,
    list_images,
    load_image,
    read_manifest,
    scan_folders,
    scan_images,
)
from medistill.errors import DataError
from medistill.pipelines import demo_data_root


def _write_csv(path: Path, rows: list[dict], fieldnames: list[str]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(csv_path: Path) -> list[dict]:
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- layouts agree


@pytest.mark.parametrize("split", ["train", "val"])
def test_folders_and_csv_give_the_same_samples(tiny_dataset, split: str) -> None:
    folders = scan_folders(tiny_dataset.root, split)
    manifest = read_manifest(tiny_dataset.csv, split)
    assert folders.classes == manifest.classes == list(tiny_dataset.classes)
    assert len(folders.samples) == tiny_dataset.counts[split]
    assert sorted((s.path.resolve(), s.label) for s in folders.samples) == sorted(
        (s.path.resolve(), s.label) for s in manifest.samples
    )


def test_labels_follow_the_class_folder(tiny_dataset) -> None:
    samples = scan_folders(tiny_dataset.root, "train")
    for s in samples.samples:
        assert samples.classes[s.label] == s.path.parent.name
        assert s.path.is_file()
    assert {s.label for s in samples.samples} == {0, 1}


def test_classes_passed_in_fix_the_label_order(tiny_dataset) -> None:
    order = ["malignant", "benign", "other"]
    for found in (scan_folders(tiny_dataset.root, "val", order),
                  read_manifest(tiny_dataset.csv, "val", order)):
        assert found.classes == order
        for s in found.samples:
            assert order[s.label] in str(s.path)


def test_unlabeled_mode_gives_minus_one(tiny_dataset) -> None:
    assert UNLABELED == -1
    for found in (scan_folders(tiny_dataset.root, "train", labeled=False),
                  read_manifest(tiny_dataset.csv, "train", labeled=False)):
        assert found.samples and all(s.label == -1 for s in found.samples)


def test_scan_images_finds_every_image_unlabeled(tiny_dataset) -> None:
    everything = scan_images(tiny_dataset.root)
    assert len(everything.samples) == sum(tiny_dataset.counts.values())
    assert everything.classes == []
    assert all(s.label == UNLABELED for s in everything.samples)
    assert len(scan_images(tiny_dataset.root, "val").samples) == tiny_dataset.counts["val"]
    assert list_images(tiny_dataset.root) == sorted(list_images(tiny_dataset.root))


def test_absolute_paths_in_csv(tiny_dataset, tmp_path: Path) -> None:
    rows = [{**r, "path": str((tiny_dataset.root / r["path"]).resolve())}
            for r in _rows(tiny_dataset.csv)]
    csv_path = _write_csv(tmp_path / "elsewhere.csv", rows, ["path", "label", "split"])
    assert len(read_manifest(csv_path, "train").samples) == tiny_dataset.counts["train"]


def test_custom_column_names(tiny_dataset, tmp_path: Path) -> None:
    rows = [{"file": r["path"], "diagnosis": r["label"], "fold": r["split"]}
            for r in _rows(tiny_dataset.csv)]
    csv_path = _write_csv(tiny_dataset.root / "custom.csv", rows, ["file", "diagnosis", "fold"])
    found = read_manifest(csv_path, "val", path_column="file", label_column="diagnosis",
                          split_column="fold")
    assert len(found.samples) == tiny_dataset.counts["val"]


# --------------------------------------------------------------------------- errors


def test_empty_split_folder_raises_naming_it(tiny_dataset) -> None:
    empty = tiny_dataset.root / "test"
    (empty / "benign").mkdir(parents=True)
    with pytest.raises(DataError, match="empty") as info:
        scan_folders(tiny_dataset.root, "test")
    assert str(empty) in str(info.value)


def test_missing_split_folder_raises_naming_it(tiny_dataset) -> None:
    with pytest.raises(DataError) as info:
        scan_folders(tiny_dataset.root, "holdout")
    assert str(tiny_dataset.root / "holdout") in str(info.value)


def test_empty_csv_split_raises(tiny_dataset) -> None:
    with pytest.raises(DataError, match="'test'") as info:
        read_manifest(tiny_dataset.csv, "test")
    assert str(tiny_dataset.csv) in str(info.value)


def test_missing_csv_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.csv"):
        read_manifest(tmp_path / "nope.csv", "train")


def test_file_listed_in_csv_but_missing_raises_naming_it(tiny_dataset) -> None:
    gone = tiny_dataset.root / "train" / "benign" / "img1.png"
    gone.unlink()
    with pytest.raises(DataError, match="img1.png") as info:
        read_manifest(tiny_dataset.csv, "train")
    assert str(gone) in str(info.value)


def test_unknown_val_class_in_folders_raises_naming_it(tiny_dataset) -> None:
    train = scan_folders(tiny_dataset.root, "train")
    shutil.copytree(tiny_dataset.root / "val" / "benign", tiny_dataset.root / "val" / "mystery")
    with pytest.raises(DataError, match="mystery"):
        scan_folders(tiny_dataset.root, "val", train.classes)


def test_unknown_val_class_in_csv_raises_naming_it(tiny_dataset) -> None:
    train = read_manifest(tiny_dataset.csv, "train")
    rows = _rows(tiny_dataset.csv)
    rows.append({"path": "val/benign/img0.png", "label": "mystery", "split": "val"})
    _write_csv(tiny_dataset.csv, rows, ["path", "label", "split"])
    with pytest.raises(DataError, match="mystery"):
        read_manifest(tiny_dataset.csv, "val", train.classes)


@pytest.mark.parametrize("dropped", ["path", "label", "split"])
def test_missing_csv_column_raises_naming_it(tiny_dataset, dropped: str) -> None:
    kept = [c for c in ("path", "label", "split") if c != dropped]
    rows = [{c: r[c] for c in kept} for r in _rows(tiny_dataset.csv)]
    _write_csv(tiny_dataset.csv, rows, kept)
    with pytest.raises(DataError, match=f"'{dropped}'"):
        read_manifest(tiny_dataset.csv, "train")


def test_scan_images_of_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images"):
        scan_images(tmp_path)
    with pytest.raises(DataError, match="not found"):
        scan_images(tmp_path / "missing")


# --------------------------------------------------------------------------- image files


def test_load_image_is_rgb_uint8(tmp_path: Path) -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], grey)
    np.testing.assert_array_equal(image[..., 2], grey)


def test_truncated_png_raises_naming_file(tiny_dataset) -> None:
    path = tiny_dataset.root / "train" / "benign" / "img0.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="img0.png"):
        load_image(path)


@pytest.mark.parametrize("content", [b"", b"this is not a png at all" * 10])
def test_garbage_png_raises_naming_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.png"):
        load_image(path)


def test_missing_image_raises_naming_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ghost.png"):
        load_image(tmp_path / "ghost.png")


# --------------------------------------------------------------------------- demo data


def test_embedded_demo_data_manifest() -> None:
    root = demo_data_root()
    csv_path = root / "labels.csv"
    train = read_manifest(csv_path, "train")
    assert train.classes == ["adenocarcinoma", "low_grade_in", "normal", "polyp"]
    assert len(train.samples) == 160
    val = read_manifest(csv_path, "val", train.classes)
    test = read_manifest(csv_path, "test", train.classes)
    assert (len(val.samples), len(test.samples)) == (39, 129)
    assert {s.label for s in val.samples} == {0, 1, 2, 3}
    # the same images are reachable through the class-folder layout
    for split, found in (("train", train), ("val", val), ("test", test)):
        folders = scan_folders(root, split, train.classes)
        assert sorted((s.path.resolve(), s.label) for s in folders.samples) == sorted(
            (s.path.resolve(), s.label) for s in found.samples
        )
    image = load_image(train.samples[0].path)
    assert image.ndim == 3 and image.shape[2] == 3


def test_path_template_builds_paths_from_columns(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("a", "b"):
        (tmp_path / "images" / f"{name}.jpg").write_bytes(b"x")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("name,split,grade\na,train,benign\nb,train,malignant\n")
    got = read_manifest(csv_path, "train", label_column="grade",
                        path_template="images/{name}.jpg")
    assert [s.path.name for s in got.samples] == ["a.jpg", "b.jpg"]
    assert got.classes == ["benign", "malignant"]
    with pytest.raises(DataError, match="names no column 'stem'"):
        read_manifest(csv_path, "train", label_column="grade", path_template="{stem}.jpg")
