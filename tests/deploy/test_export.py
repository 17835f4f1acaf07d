"""Export to ONNX / TorchScript: parity with PyTorch for every model, sidecar, failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medistill.deploy import export as export_module
from medistill.deploy import export_model, load_exported, sidecar_path
from medistill.engine import load_model, save_model
from medistill.errors import CheckpointError
from medistill.models import classification_models, create_model

CLASSES = ["benign", "malignant", "other"]
META = {
    "model": {"name": "small_resnet", "kwargs": {}},
    "classes": CLASSES,
    "view": {"factor": 2, "upsample": False},
    "normalization": {"mean": [0.6, 0.5, 0.4], "std": [0.2, 0.25, 0.3]},
    "image_size": 64,  # -> a 32x32 model input at factor 2
}


def perturbed(name: str) -> torch.nn.Module:
    """A model whose norm layers are not the identity (as after training)."""
    torch.manual_seed(0)
    model = create_model(name, len(CLASSES))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.8, 1.5)
    with torch.no_grad():
        model.head.weight.mul_(10)  # logits of a few units, as after training
    return model


def write_model(path: Path, name: str = "small_resnet", **meta_changes) -> Path:
    meta = {**META, "model": {"name": name, "kwargs": {}}, **meta_changes}
    meta = {k: v for k, v in meta.items() if v is not None}
    return save_model(perturbed(name), meta, path)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: write_model(root / f"{name}.pt", name) for name in classification_models()}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", classification_models())
def test_export_parity_for_every_model(name, fmt, model_files, tmp_path, single_thread):
    out = tmp_path / "exp" / f"{name}.{'onnx' if fmt == 'onnx' else 'ts.pt'}"
    res = export_model(model_files[name], out, fmt)
    assert res["path"] == str(out) and res["format"] == fmt
    assert res["max_abs_diff"] < 1e-4
    assert tuple(res["input_size"]) == (32, 32)
    assert out.is_file() and not leftovers(out.parent)
    info = json.loads(sidecar_path(out).read_text())
    assert sidecar_path(out) == out.with_name(out.name + ".json")
    assert info["format"] == fmt and info["classes"] == CLASSES
    assert info["normalization"] == META["normalization"] and info["view"] == META["view"]
    assert info["input_size"] == [32, 32] and info["image_size"] == 64
    assert info["model"]["name"] == name and info["dynamic_size"] is False

    # the exported file, run independently, gives PyTorch's logits on other inputs too
    model, _ = load_model(model_files[name])
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)[1].numpy()
    runner, _ = load_exported(out)
    np.testing.assert_allclose(runner(x.numpy()), ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_takes_any_batch_size(fmt, tmp_path, single_thread):
    src = write_model(tmp_path / "m.pt")
    out = tmp_path / f"m.{fmt}"
    export_model(src, out, fmt)
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].shape[0] == "batch"
        run = lambda a: session.run(None, {"input": a})[0]  # noqa: E731
    else:
        run, _ = load_exported(out)
    model, _ = load_model(src)
    for n in (1, 5):
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            ref = model(x)[1].numpy()
        got = run(x.numpy())
        assert got.shape == (n, len(CLASSES))
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_failing_parity_raises_and_writes_nothing(fmt, tmp_path, monkeypatch, single_thread):
    src = write_model(tmp_path / "m.pt")
    real = export_module._exported_logits
    monkeypatch.setattr(export_module, "_exported_logits",
                        lambda path, f, x: real(path, f, x) + 0.01)
    out = tmp_path / "exp" / "m.out"
    with pytest.raises(CheckpointError, match="differs from PyTorch by 0.01") as err:
        export_model(src, out, fmt)
    assert "\n" not in str(err.value) and str(out) in str(err.value)
    assert not out.exists() and not sidecar_path(out).exists()
    assert not leftovers(out.parent)
    # a looser tolerance accepts the same difference
    res = export_model(src, out, fmt, atol=0.02)
    assert out.is_file() and res["max_abs_diff"] == pytest.approx(0.01, abs=1e-4)


def test_input_size_without_image_size(tmp_path, single_thread):
    src = write_model(tmp_path / "m.pt", image_size=None)
    with pytest.raises(CheckpointError, match="no image_size.*--input-size"):
        export_model(src, tmp_path / "m.onnx")
    res = export_model(src, tmp_path / "m.onnx", input_size=(24, 20))
    assert res["input_size"] == (24, 20)
    info = json.loads(sidecar_path(tmp_path / "m.onnx").read_text())
    assert info["input_size"] == [24, 20] and info["dynamic_size"] is True
    # H/W stay dynamic: the model was trained on images of their native size
    runner, _ = load_exported(tmp_path / "m.onnx")
    model, _ = load_model(src)
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        ref = model(x)[1].numpy()
    np.testing.assert_allclose(runner(x.numpy()), ref, atol=1e-4, rtol=0)


def test_bad_requests_are_one_line_checkpoint_errors(tmp_path):
    src = write_model(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="takes 32x32 inputs.*not the requested 28x28"):
        export_model(src, tmp_path / "m.onnx", input_size=28)
    with pytest.raises(CheckpointError, match="unknown export format 'tflite'"):
        export_model(src, tmp_path / "m.tflite", "tflite")
    with pytest.raises(CheckpointError, match="overwrite the model file"):
        export_model(src, src, "torchscript")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        export_model(tmp_path / "missing.pt", tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_instance_model_file_exports_with_its_decoding_metadata(tmp_path, single_thread):
    """A graph-relation model file (no view, no image_size) used to crash with KeyError 'view'."""
    from medistill.pipelines.graph_relation import CLASSES

    spec = {"name": "resunet_embedding", "kwargs": {"widths": [4, 4, 8], "embedding_dim": 4}}
    model = create_model(spec["name"], 2, **spec["kwargs"])
    meta = {"task": "instance", "model": spec, "classes": CLASSES,
            "normalization": META["normalization"], "scale": 0.5, "offsets": [1, 3],
            "postprocess": {"method": "watershed"}}
    src = save_model(model, meta, tmp_path / "best.pt")
    res = export_model(src, tmp_path / "m.onnx", input_size=(32, 32))
    info = json.loads(sidecar_path(tmp_path / "m.onnx").read_text())
    assert info["task"] == "instance" and info["view"] == {"factor": 1, "upsample": False}
    assert (info["scale"], info["offsets"], info["postprocess"]) == (0.5, [1, 3],
                                                                   {"method": "watershed"})
    assert "embedding" in info["output"]["kind"] and res["max_abs_diff"] < 1e-3
    runner, _ = load_exported(tmp_path / "m.onnx")
    assert runner(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 5, 32, 32)
