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


EBHI = SHARED_DATA / "ebhi_seg"


@pytest.mark.skipif(not (EBHI / "labels.csv").is_file(), reason="no EBHI-Seg data")
def test_aux_pool_from_ebhi_train_val_only(tmp_path: Path) -> None:
    """The KD+aux pool: EBHI-Seg train + val images only (never its test split), one file per
    image although stems recur across class folders, resized to ``size``; a smaller pool is a
    subset of a larger one (same seed); the recipe reads it as 68 GlaS train images + the pool,
    unlabeled, with the teacher of ``--reuse`` and only the kd_aux run."""
    from PIL import Image

    from medistill.pipelines import load_recipe
    from medistill.pipelines.resolution import ResolutionPipeline

    listed = _rows(EBHI / "labels.csv")
    usable = [r["path"] for r in listed if r["split"] in ("train", "val")]
    assert len({Path(p).name for p in usable}) < len(usable)  # stems alone would collide
    assert len({bench.pool_name(p, 512) for p in usable}) == len(usable)
    rows = _rows(bench.write_pool(EBHI, tmp_path, 12, 64))
    assert len(rows) == 12 and {r["split"] for r in rows} == {"train"}
    assert {r["label"] for r in rows} == {""}
    test_names = {bench.pool_name(r["path"], 64) for r in listed if r["split"] == "test"}
    assert not {Path(r["path"]).name for r in rows} & test_names
    assert {bench.pool_name(p, 64) for p in usable} >= {Path(r["path"]).name for r in rows}
    with Image.open(rows[0]["path"]) as im:
        assert im.size == (64, 64)
    small = _rows(bench.write_pool(EBHI, tmp_path / "small", 5, 64))
    assert {Path(r["path"]).name for r in small} <= {Path(r["path"]).name for r in rows}

    bench.write_split(GLAS, tmp_path)
    args = bench.argparse.Namespace(
        out=tmp_path, crop=512, teacher_factor=2.0, factor=8.0, epochs=30, teacher_epochs=40,
        accum=16, aux_pool=12, aux_epochs=10, reuse=tmp_path / "old", overrides=[])
    cfg = load_recipe(bench.ROOT / "recipes" / "resolution_kd.yaml", bench.overrides(args, 3))
    assert cfg.runs == ["kd_aux"] and cfg.stage_train("kd_aux", 3).epochs == 10
    assert cfg.teacher_checkpoint == str((tmp_path / "old/seed3/seed3/teacher/best.pt")
                                         .resolve())
    pipe = ResolutionPipeline(cfg, tmp_path / "run")
    pipe._load_data()
    aux = pipe.aux_samples.samples
    assert len(aux) == 68 + 12 and all(s.label == -1 for s in aux)
    assert pipe.aux_dropped == 0
