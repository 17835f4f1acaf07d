"""``predict`` with a run's best.pt and with segmentation models (masks), ``--device`` on
predict / evaluate, and how ``evaluate`` names runs and says what it evaluated (issue #16)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from seg_fixtures import write_seg_dataset

from medistill.deploy import export_model, predict_folder
from medistill.deploy.masks import MASKS_MARKER
from medistill.engine import save_model
from medistill.errors import CheckpointError, OutputError
from medistill.models import create_model
from medistill.pipelines import demo_data_root
from medistill.pipelines.seg_data import SegDataConfig, load_seg_split

CLASSES = ["adenocarcinoma", "low_grade_in", "normal", "polyp"]
CLS_META = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": CLASSES,
            "view": {"factor": 8, "upsample": False},
            "normalization": {"mean": [0.7, 0.5, 0.6], "std": [0.15, 0.2, 0.15]},
            "image_size": 224}
SEG_META = {"task": "segmentation", "model": {"name": "resnet18_unet_small", "kwargs": {}},
            "classes": ["background", "gland"], "view": {"factor": 1, "upsample": False},
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "image_size": 32,
            "threshold": 0.1, "data": {"format": "csv", "image_size": 32}}


def medistill(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medistill.cli", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def seg(tmp_path_factory) -> dict[str, Path]:
    """A segmentation dataset (images of 40 px, the model takes 32) and a segmenter's best.pt
    whose masks are neither empty nor full."""
    root = tmp_path_factory.mktemp("seg")
    data = write_seg_dataset(root / "data", {"train": 2, "test": 5}, size=40)
    torch.manual_seed(0)
    net = create_model("resnet18_unet_small", 2)
    with torch.no_grad():  # logits of a few units, not all within 0.01 of p = 0.5
        for param in net.head.parameters():
            param.mul_(300)
    model = save_model(net, SEG_META, root / "run" / "best.pt")
    return {"data": data, "images": data / "images", "model": model}


def _evaluation_masks(model_path: Path, data: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The masks ``medistill evaluate`` scores, for the images named."""
    from medistill.engine import load_model
    from medistill.pipelines.evaluate_segmentation import dataset_for_segmenter, predict_masks

    model, meta = load_model(model_path)
    cfg = SegDataConfig(root=str(data), image_size=32,
                        splits={"train": ["train", "test"], "val": [], "test": []})
    items = [i for i in load_seg_split(cfg, "train") if f"{i.name}.png" in names]
    masks = predict_masks(model, dataset_for_segmenter(items, meta), meta["threshold"])
    return {f"{i.name}.png": m for i, m in zip(items, masks, strict=True)}


def test_segmentation_model_writes_one_mask_per_image_as_evaluation_predicts(seg, tmp_path):
    out = tmp_path / "p" / "preds.csv"
    rows = predict_folder(seg["model"], seg["images"], out, batch_size=3)
    masks_dir = tmp_path / "p" / "preds_masks"
    names = sorted(p.name for p in seg["images"].iterdir())
    assert [r["path"] for r in rows] == names
    expected = _evaluation_masks(seg["model"], seg["data"], names)
    table = read_csv(out)
    assert list(table[0]) == ["path", "mask", "fraction_background", "fraction_gland", "error"]
    some_foreground = False
    for row in table:
        mask = np.asarray(Image.open(tmp_path / "p" / row["mask"]))
        assert mask.shape == (40, 40) and mask.dtype == np.uint8  # the original size
        np.testing.assert_array_equal(mask, expected[row["path"]])
        assert float(row["fraction_gland"]) == pytest.approx(mask.mean(), abs=1e-6)
        some_foreground |= 0 < mask.mean() < 1
    assert some_foreground  # the comparison is not between two empty masks
    assert (masks_dir / MASKS_MARKER).is_file()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["preds.csv", "preds_masks"]
    # a second call replaces the masks folder medistill wrote
    predict_folder(seg["model"], seg["images"], out, masks=masks_dir)
    assert len(list(masks_dir.glob("*.png"))) == len(names)


def test_exported_segmenter_gives_the_same_masks(seg, tmp_path, single_thread):
    exported = export_model(seg["model"], tmp_path / "seg.torchscript.pt", "torchscript")
    info = json.loads(Path(exported["path"] + ".json").read_text())
    assert info["threshold"] == 0.1  # the sidecar keeps what turning logits into masks needs
    predict_folder(seg["model"], seg["images"], tmp_path / "a.csv")
    predict_folder(exported["path"], seg["images"], tmp_path / "b.csv")
    for a, b in zip(sorted((tmp_path / "a_masks").glob("*.png")),
                    sorted((tmp_path / "b_masks").glob("*.png")), strict=True):
        assert a.name == b.name
        agree = (np.asarray(Image.open(a)) == np.asarray(Image.open(b))).mean()
        assert agree > 0.999


def test_masks_never_overwrite_a_foreign_folder_nor_stay_half_written(seg, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match=f"--masks {foreign}: not empty and not a masks"):
        predict_folder(seg["model"], seg["images"], tmp_path / "p.csv", masks=foreign)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # a model whose output is not per-pixel logits fails on the first batch: nothing left
    bad = save_model(create_model("small_resnet", 2), {**SEG_META, "model": {
        "name": "small_resnet", "kwargs": {}}}, tmp_path / "bad" / "best.pt")
    with pytest.raises(CheckpointError, match=r"expected per-pixel logits \(5, 2, H, W\)"):
        predict_folder(bad, seg["images"], tmp_path / "q.csv", batch_size=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "mine"]


def test_predict_takes_a_best_pt_classifier_and_refuses_instance_models(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for src in sorted((demo_data_root() / "test" / "polyp").iterdir())[:3]:
        shutil.copy(src, images / src.name)
    torch.manual_seed(0)
    best = save_model(create_model("small_resnet", 4), CLS_META, tmp_path / "r" / "best.pt")
    exported = export_model(best, tmp_path / "m.onnx")["path"]
    a = predict_folder(best, images, tmp_path / "a.csv")
    b = predict_folder(exported, images, tmp_path / "b.csv")
    assert [r["prediction"] for r in a] == [r["prediction"] for r in b]
    np.testing.assert_allclose([[r[f"prob_{c}"] for c in CLASSES] for r in a],
                               [[r[f"prob_{c}"] for c in CLASSES] for r in b], atol=1e-5)
    res = medistill("predict", str(best), "--images", str(images), "--out",
                    str(tmp_path / "c.csv"))
    assert res.returncode == 0, res.stderr
    assert "3 images:" in res.stdout and (tmp_path / "c.csv").is_file()
    inst = save_model(create_model("resunet_embedding", 2), {**CLS_META, "task": "instance",
                      "model": {"name": "resunet_embedding", "kwargs": {}}, "offsets": [1, 3]},
                      tmp_path / "i.pt")  # a valid instance card (task layer, issue #14)
    with pytest.raises(CheckpointError, match="a instance model; predict takes classifiers"):
        predict_folder(inst, images, tmp_path / "d.csv")
    assert not (tmp_path / "d.csv").exists()


def test_predict_cli_segments_and_names_the_masks_folder(seg, tmp_path):
    out = tmp_path / "preds.csv"
    res = medistill("predict", str(seg["model"]), "--images", str(seg["images"]), "--out",
                    str(out), "--masks", str(tmp_path / "m"))
    assert res.returncode == 0, res.stderr
    assert f"7 images segmented; masks: {tmp_path / 'm'}" in res.stdout
    assert read_csv(out)[0]["mask"] == "m/test_0.png"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_device_is_checked_before_anything_is_read_or_written(seg, tmp_path, command):
    out = tmp_path / ("p.csv" if command == "predict" else "ev")
    where = ["--images", str(seg["images"])] if command == "predict" else [
        "--data", str(seg["data"])]
    for device, message in [("cuda", "CUDA is not available here"),
                            ("tpu9", "is not a device")]:
        res = medistill(command, str(tmp_path / "missing.pt"), *where, "--out", str(out),
                        "--device", device)
        assert res.returncode == 2
        assert res.stderr.startswith(f"error: --device '{device}'") and message in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()


def test_evaluate_names_runs_by_their_folder_and_says_what_it_evaluated(tmp_path):
    run = tmp_path / "rkd"
    (run / "seed0" / "x8").mkdir(parents=True)
    (run / ".medistill-run").write_text("{}")
    torch.manual_seed(0)
    meta = {**CLS_META, "view": {"factor": 8, "upsample": False}}
    base = save_model(create_model("small_resnet", 4), meta, run / "seed0/x8/baseline/best.pt")
    kd = save_model(create_model("small_resnet", 4), meta, run / "seed0/x8/kd/best.pt")
    data = demo_data_root()
    res = medistill("evaluate", str(base), str(kd), "--data", str(data), "--split", "val",
                    "--n-resamples", "50", "--out", str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"data: {data}  split: val  (39 images)"
    assert [ln.split()[0] for ln in lines[3:5]] == ["seed0/x8/baseline", "seed0/x8/kd"]
    assert "best" not in " ".join(ln.split()[0] for ln in lines[3:5])
    body = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [r["name"] for r in body["runs"]] == ["seed0/x8/baseline", "seed0/x8/kd"]
    assert body["runs"][1]["model_file"] == str(kd) and body["runs"][0]["data"] == str(data)
    assert body["comparisons"][0]["reference"] == "seed0/x8/baseline"
    # outside a run folder: the model's folder; a named file: its stem
    lone = tmp_path / "elsewhere" / "kd_student" / "best.pt"
    lone.parent.mkdir(parents=True)
    shutil.copy(kd, lone)
    from medistill.cli.evaluate import run_name, run_names

    assert run_name(lone) == "kd_student" and run_name(tmp_path / "m.pt") == "m"
    assert run_names([kd, kd]) == [str(kd), str(kd)]  # the same name twice: the paths


def test_weakly_supervised_model_masks_are_smoothed_and_thresholded_as_evaluated(tmp_path):
    from weak_fixtures import write_weak_dataset

    from medistill.data.weak import WeakSegDataset
    from medistill.metrics.weak_segmentation import smooth_probability
    from medistill.pipelines.evaluate_weak import predict_probabilities, sigma_axes
    from medistill.pipelines.weak_data import WeakDataConfig, load_weak_split

    data = write_weak_dataset(tmp_path / "data", {"train": 2, "test": 4}, size=40)
    cfg = WeakDataConfig(root=str(data), positive=["tumour"], negative=["benign"],
                         image_size=32)
    items, labels = load_weak_split(cfg, "test")
    norm = {"mean": [0.5] * 3, "std": [0.25] * 3}
    torch.manual_seed(0)
    net = create_model("mil_segmenter", 2, backbone_kwargs={"widths": [8, 8, 16, 16],
                                                            "groups": 4}).eval()
    dataset = WeakSegDataset(items, labels, 2, 32, norm["mean"], norm["std"])
    probs = [smooth_probability(p, sigma_axes(2.0, p.shape, 32, "input"))
             for p in predict_probabilities(net, dataset)]
    threshold = float(np.median(probs[0]))  # masks neither empty nor full
    meta = {**SEG_META, "model": {"name": "mil_segmenter", "kwargs": {"backbone_kwargs": {
        "widths": [8, 8, 16, 16], "groups": 4}}}, "classes": ["background", "tumour"],
        "normalization": norm, "threshold": threshold, "sigma": 2.0, "sigma_at": "input",
        "weak": True}
    model = save_model(net, meta, tmp_path / "best.pt")
    predict_folder(model, data / "images", tmp_path / "p.csv")
    for item, prob in zip(items, probs, strict=True):
        got = np.asarray(Image.open(tmp_path / "p_masks" / f"{item.name}.png"))
        np.testing.assert_array_equal(got, (prob > threshold).astype(np.uint8))
    assert 0.2 < np.asarray(Image.open(tmp_path / "p_masks" / f"{items[0].name}.png")).mean() < 0.8
