"""The GlaS split of benchmarks/resolution_kd_glas.py (issue #13): the official train/test
split restored, a stratified validation part of train, readable by the recipe's CSV loader."""

from __future__ import annotations

import csv
import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from medistill.config import DataConfig
from medistill.pipelines.datasets import load_labeled, load_split
from tests.conftest import SHARED_DATA

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "resolution_kd_glas.py"
_spec = importlib.util.spec_from_file_location("bench_resolution_glas", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

GLAS = SHARED_DATA / "glas"
pytestmark = pytest.mark.skipif(not (GLAS / "labels.csv").is_file(), reason="no GlaS data")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_official_split_with_stratified_validation(tmp_path: Path) -> None:
    """GlaS train: 37 benign + 48 malignant -> val 7 + 10 (20%, rounded per label), train
    30 + 38; testA + testB (33 + 4 benign, 27 + 16 malignant) are the test split; no image in
    two splits; the same seed gives the same split, another seed another one."""
    rows = _rows(bench.write_split(GLAS, tmp_path))
    counts = Counter((r["split"], r["label"]) for r in rows)
    assert counts == {("train", "benign"): 30, ("train", "malignant"): 38,
                      ("val", "benign"): 7, ("val", "malignant"): 10,
                      ("test", "benign"): 37, ("test", "malignant"): 43}
    assert len({r["path"] for r in rows}) == len(rows) == 165
    official = {r["name"]: r["split"] for r in _rows(GLAS / "labels.csv")}
    for r in rows:
        name = Path(r["path"]).stem
        assert (r["split"] == "test") == official[name].startswith("test")
    again = _rows(bench.write_split(GLAS, tmp_path / "again"))
    assert again == rows
    other = _rows(bench.write_split(GLAS, tmp_path / "other", seed=1))
    assert {r["path"] for r in other if r["split"] == "val"} != {
        r["path"] for r in rows if r["split"] == "val"}


def test_split_loads_with_the_recipe_data_section(tmp_path: Path) -> None:
    """The recipe's CSV loader reads it (absolute paths, classes benign/malignant); with the
    centre crop the mixed image sizes (775 x 522 and ~580 x 440) pass the one-size check."""
    bench.write_split(GLAS, tmp_path)
    cfg = DataConfig(root=str(tmp_path), csv="glas_split.csv", image_size=512)
    train, val = load_labeled(cfg)
    test = load_split(cfg, "test", train.classes)
    assert train.classes == ["benign", "malignant"]
    assert (len(train.samples), len(val.samples), len(test.samples)) == (68, 17, 80)
