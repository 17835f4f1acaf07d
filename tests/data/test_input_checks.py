"""Input checks: CSV encodings and rows, split overlap, 16-bit images, the pre-run file scan."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import random_image, write_png
from PIL import Image

from medistill.config import DataConfig
from medistill.data import load_image, read_manifest
from medistill.data.io import image_size, read_csv
from medistill.data.scan import verify_pairs
from medistill.data.segmentation import SegItem, read_seg_manifest
from medistill.errors import DataError
from medistill.pipelines.datasets import load_split


def _manifest(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows([["path", "label", "split"], *rows])
    return path


def test_an_excel_csv_with_a_bom_loads(tiny_dataset):
    text = tiny_dataset.csv.read_text(encoding="utf-8")
    tiny_dataset.csv.write_text(text, encoding="utf-8-sig")  # what Excel's "CSV UTF-8" writes
    assert tiny_dataset.csv.read_bytes()[:3] == b"\xef\xbb\xbf"
    samples = read_manifest(tiny_dataset.csv, "train")
    assert len(samples.samples) == tiny_dataset.counts["train"]


def test_a_non_utf8_csv_is_one_line_naming_the_file(tiny_dataset):
    _manifest(tiny_dataset.csv, [["train/benign/img0.png", "bénin", "train"]], "latin-1")
    with pytest.raises(DataError, match=r"labels.csv: not UTF-8 text \(byte 0xe9") as err:
        read_manifest(tiny_dataset.csv, "train")
    assert "\n" not in str(err.value)


def test_malformed_rows_and_empty_labels_name_the_line(tiny_dataset):
    _manifest(tiny_dataset.csv, [["train/benign/img0.png", "benign", "train"],
                                 ["train/benign/img1.png", "benign", "train", "extra"]])
    with pytest.raises(DataError, match=r"labels.csv: line 3: 4 fields, the header has 3"):
        read_manifest(tiny_dataset.csv, "train")
    _manifest(tiny_dataset.csv, [["train/benign/img0.png", "benign", "train"],
                                 ["train/benign/img1.png", " ", "train"]])
    with pytest.raises(DataError, match=r"labels.csv: line 3: empty 'label'"):
        read_manifest(tiny_dataset.csv, "train")


def test_a_file_in_two_splits_is_refused_and_duplicate_rows_warned(tiny_dataset):
    _manifest(tiny_dataset.csv, [["train/benign/img0.png", "benign", "train"],
                                 ["val/benign/img0.png", "benign", "val"],
                                 ["train/benign/img0.png", "benign", "test"]])
    with pytest.raises(DataError, match=r"img0.png is in split 'train' \(line 2\) and in split "
                                        r"'test' \(line 4\)"):
        read_manifest(tiny_dataset.csv, "val")  # whichever split is asked for
    _manifest(tiny_dataset.csv, [["train/benign/img0.png", "benign", "train"],
                                 ["train/benign/img0.png", "benign", "train"]])
    with pytest.warns(UserWarning, match=r"1 duplicate row\(s\).*lines 2 and 3"):
        assert len(read_manifest(tiny_dataset.csv, "train").samples) == 2


def test_segmentation_manifests_share_the_checks(tmp_path):
    for name in ("a", "b"):
        write_png(tmp_path / "images" / f"{name}.png", random_image(0, 16))
        write_png(tmp_path / "masks" / f"{name}.png", np.zeros((16, 16), np.uint8))
    (tmp_path / "labels.csv").write_text("name,split\na,train\nb,test\na,test\n",
                                         encoding="utf-8-sig")
    with pytest.raises(DataError, match=r"a.png is in split 'train' \(line 2\) and in split "
                                        r"'test' \(line 4\)"):
        read_seg_manifest(tmp_path / "labels.csv", ["train"])
    (tmp_path / "labels.csv").write_bytes(b"name,split\na,train\nb,t\xe9st\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_seg_manifest(tmp_path / "labels.csv", ["train"])
    (tmp_path / "labels.csv").write_text("\ufeffname,split\na,train\nb,test\n")
    assert [i.name for i in read_seg_manifest(tmp_path / "labels.csv", ["train"])] == ["a"]


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "g16.tif", ramp)
    expect = np.round(ramp / 257.0).astype(np.uint8)
    for name in ("g16.png", "g16.tif"):
        with Image.open(tmp_path / name) as im:
            assert im.mode.startswith("I")  # really a 16-bit file
        rgb = load_image(tmp_path / name)
        assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
        np.testing.assert_array_equal(rgb[..., 0], expect)
        assert (rgb == 255).mean() < 0.01  # was: everything above 255 clipped to white
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif")[..., 1],
                                  np.round(ramp / 65535.0 * 255).astype(np.uint8))
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "big.tif")
    with pytest.raises(DataError, match=r"big.tif: float images must hold finite values"):
        load_image(tmp_path / "big.tif")


def test_the_header_scan_catches_truncated_and_fake_images(tmp_path):
    good = write_png(tmp_path / "good.png", random_image(1, 48))
    assert image_size(good) == (48, 48)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:-40])
    (tmp_path / "fake.jpg").write_bytes(b"definitely not a jpeg")
    Image.fromarray(random_image(2, 64)).save(tmp_path / "ok.jpg", quality=90)
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:600])
    (tmp_path / "tail.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes() + b"\0\0trailer")
    assert image_size(tmp_path / "ok.jpg") == image_size(tmp_path / "tail.jpg") == (64, 64)
    for name in ("cut.png", "fake.jpg", "cut.jpg"):
        with pytest.raises(DataError, match=rf"cannot read image .*{name}"):
            image_size(tmp_path / name)


def test_load_split_scans_every_image_and_sizes(tiny_dataset):
    cfg = DataConfig(root=str(tiny_dataset.root))
    bad = tiny_dataset.root / "val" / "malignant" / "img1.png"
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DataError, match=r"cannot read image .*val/malignant/img1.png"):
        load_split(cfg, "val")
    write_png(bad, random_image(7, 40))
    with pytest.raises(DataError, match=r"images of different sizes .* set image_size"):
        load_split(cfg, "val")
    assert len(load_split(cfg.model_copy(update={"image_size": 32}), "val").samples) == 4


def test_mask_scan_sizes_and_classes(tmp_path):
    image = write_png(tmp_path / "i.png", random_image(3, 16))
    small = write_png(tmp_path / "small.png", np.zeros((8, 16), np.uint8))
    three = write_png(tmp_path / "three.png", np.full((16, 16), 3, np.uint8))
    with pytest.raises(DataError, match=r"mask .*small.png is 16x8 px but its image .*i.png "
                                        r"is 16x16"):
        verify_pairs([SegItem("a", image, small)], "x", 2)
    with pytest.raises(DataError, match=r"three.png holds class 3, but there are 2 classes"):
        verify_pairs([SegItem("a", image, three)], "x", 2)
    verify_pairs([SegItem("a", image, three)], "x", 2, mask_mode="binary")  # 3 -> 1 is fine
    verify_pairs([SegItem("a", image, three)], "x", None)  # an instance map: any ids


def test_read_csv_reports_line_numbers_after_blank_lines(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b\n1,2\n\n3\n")
    with pytest.raises(DataError, match="line 4: 1 fields"):
        read_csv(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path.write_text("a,b\n1,2\n\n3,4\n")
        header, rows = read_csv(path, ["a"])
    assert header == ["a", "b"] and [r["__line__"] for r in rows] == [2, 4]
