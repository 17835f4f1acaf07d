"""Predicting a folder with an exported model: same answers as PyTorch, CSV, errors, CLI."""

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

from medistill.data import Sample, SampleList, list_images
from medistill.deploy import export_model, predict_folder, sidecar_path
from medistill.engine import load_model, save_model
from medistill.errors import CheckpointError, DataError, OutputError
from medistill.models import create_model
from medistill.pipelines import demo_data_root
from medistill.pipelines.evaluate import dataset_for_model

CLASSES = ["adenocarcinoma", "low_grade_in", "normal", "polyp"]
META = {
    "model": {"name": "small_resnet", "kwargs": {}},
    "classes": CLASSES,
    "view": {"factor": 8, "upsample": False},
    "normalization": {"mean": [0.7, 0.5, 0.6], "std": [0.15, 0.2, 0.15]},
    "image_size": 224,  # the demo images' size -> 28x28 model input
}


def trained_like_model() -> torch.nn.Module:
    """A small_resnet with non-trivial norm layers and logits of a few units."""
    torch.manual_seed(0)
    model = create_model("small_resnet", len(CLASSES))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
        model.head.weight.mul_(10)
    return model


def pytorch_predictions(model_path: Path, folder: Path) -> tuple[list[str], np.ndarray]:
    """Predicted classes and probabilities of the PyTorch model, as evaluation computes them."""
    model, meta = load_model(model_path)
    samples = SampleList([Sample(p, -1) for p in list_images(folder)], meta["classes"])
    dataset = dataset_for_model(samples, meta)
    with torch.no_grad():  # one image at a time: sizes may differ
        logits = torch.cat([model(dataset[i]["views"]["input"][None])[1]
                            for i in range(len(dataset))])
    probs = torch.softmax(logits.double(), 1).numpy()
    return [meta["classes"][i] for i in probs.argmax(1)], probs


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two demo test images per class, in class sub-folders."""
    root = tmp_path_factory.mktemp("images")
    for cls in CLASSES:
        for src in sorted((demo_data_root() / "test" / cls).iterdir())[:2]:
            (root / cls).mkdir(exist_ok=True)
            shutil.copy(src, root / cls / src.name)
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_model(trained_like_model(), META, tmp_path_factory.mktemp("m") / "model.pt")


@pytest.fixture(scope="module")
def exported(model_path, single_thread) -> dict[str, Path]:
    root = model_path.parent
    return {fmt: Path(export_model(model_path, root / f"model.{fmt}", fmt)["path"])
            for fmt in ("onnx", "torchscript")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predictions_match_the_pytorch_model(fmt, exported, model_path, images, tmp_path,
                                             single_thread):
    out = tmp_path / "out" / "preds.csv"
    rows = predict_folder(exported[fmt], images, out, batch_size=3)
    classes, probs = pytorch_predictions(model_path, images)
    assert [r["prediction"] for r in rows] == classes
    got = np.array([[r[f"prob_{c}"] for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, probs, atol=1e-5, rtol=0)
    assert len(set(classes)) > 1  # the check is not vacuous

    table = read_csv(out)
    assert list(table[0]) == ["path", "prediction", *[f"prob_{c}" for c in CLASSES], "error"]
    assert all(r["error"] == "" for r in table)
    expected = [p.relative_to(images).as_posix() for p in list_images(images)]
    assert [r["path"] for r in table] == expected == [r["path"] for r in rows]
    assert [r["prediction"] for r in table] == classes
    sums = [sum(float(r[f"prob_{c}"]) for c in CLASSES) for r in table]
    np.testing.assert_allclose(sums, 1.0, atol=1e-4)
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.csv"]


def test_images_of_varying_size_with_a_dynamic_model(tmp_path, single_thread):
    meta = {**META, "view": {"factor": 2, "upsample": False}}
    del meta["image_size"]
    src = save_model(trained_like_model(), meta, tmp_path / "m.pt")
    exp = export_model(src, tmp_path / "m.onnx", input_size=16)["path"]
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, size in enumerate([32, 32, 40, 32, 24, 24]):
        array = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img{i}.png")
    rows = predict_folder(exp, folder, tmp_path / "p.csv", batch_size=2)
    classes, probs = pytorch_predictions(src, folder)
    assert [r["prediction"] for r in rows] == classes
    got = np.array([[r[f"prob_{c}"] for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got, probs, atol=1e-5, rtol=0)


def test_unreadable_images_are_reported_and_the_others_predicted(exported, model_path, images,
                                                                 tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(images, folder)
    bad = folder / "normal" / "broken.png"
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "p.csv"
    rows = predict_folder(exported["onnx"], folder, out, batch_size=3)
    assert len(rows) == len(list_images(images)) + 1
    failed = [r for r in rows if r.get("error")]
    assert [r["path"] for r in failed] == ["normal/broken.png"]
    assert "broken.png" in failed[0]["error"] and "\n" not in failed[0]["error"]
    table = read_csv(out)
    assert [r["path"] for r in table] == [p.relative_to(folder).as_posix()
                                          for p in list_images(folder)]
    good = [r["prediction"] for r in table if not r["error"]]
    assert good == pytorch_predictions(model_path, images)[0]
    row = next(r for r in table if r["path"] == "normal/broken.png")
    assert row["prediction"] == "" and row[f"prob_{CLASSES[0]}"] == ""

    res = medistill("predict", str(exported["onnx"]), "--images", str(folder), "--out",
                    str(tmp_path / "q.csv"))
    assert res.returncode == 1
    assert "1 unreadable image(s) skipped" in res.stderr and "broken.png" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert f"{len(list_images(images))} images:" in res.stdout


def test_predict_checks_its_output_before_reading_images(exported, images, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="afile"):
        predict_folder(exported["onnx"], images, blocker / "p.csv")
    res = medistill("predict", str(exported["onnx"]), "--images", str(images), "--out",
                    str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: --out {tmp_path}: is a folder, expected a file name"


def test_missing_or_bad_inputs(exported, images, tmp_path):
    with pytest.raises(DataError, match="no images found"):
        predict_folder(exported["onnx"], tmp_path, tmp_path / "p.csv")
    with pytest.raises(DataError, match="image folder not found"):
        predict_folder(exported["onnx"], tmp_path / "nowhere", tmp_path / "p.csv")
    lone = tmp_path / "lone.onnx"
    shutil.copy(exported["onnx"], lone)
    with pytest.raises(CheckpointError, match="lone.onnx.json not found"):
        predict_folder(lone, images, tmp_path / "p.csv")
    sidecar_path(lone).write_text(json.dumps({"schema": "something/else"}))
    with pytest.raises(CheckpointError, match="not a medistill export sidecar"):
        predict_folder(lone, images, tmp_path / "p.csv")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not onnx")
    shutil.copy(sidecar_path(exported["onnx"]), sidecar_path(garbage))
    with pytest.raises(CheckpointError, match="cannot load onnx model") as err:
        predict_folder(garbage, images, tmp_path / "p.csv")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "p.csv").exists()


def medistill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medistill.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_export_and_predict_round_trip(model_path, images, tmp_path):
    ckpt = tmp_path / "best.pt"
    shutil.copy(model_path, ckpt)
    res = medistill("export", str(ckpt), "--format", "onnx")
    assert res.returncode == 0, res.stderr
    onnx_file = tmp_path / "best.onnx"
    assert f"exported: {onnx_file}" in res.stdout and "3x28x28" in res.stdout
    assert "max abs difference vs PyTorch:" in res.stdout
    assert sidecar_path(onnx_file).is_file()

    out = tmp_path / "preds.csv"
    res = medistill("predict", str(onnx_file), "--images", str(images), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert f"predictions: {out}" in res.stdout and "8 images" in res.stdout
    classes, _ = pytorch_predictions(model_path, images)
    assert [r["prediction"] for r in read_csv(out)] == classes

    res = medistill("export", str(ckpt), "--format", "onnx", "--input-size", "30x30")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: ") and "28x28" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
