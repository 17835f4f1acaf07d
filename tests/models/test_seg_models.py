"""Every registered segmentation model: logits shape, taps, roles, save/load and export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medistill.deploy import export_model
from medistill.engine import load_model, save_model
from medistill.models import MODELS, Segmenter, create_model, segmentation_models

pytestmark = pytest.mark.usefixtures("single_thread")

K = 3
#: small widths keep the tests fast; every model also builds with its defaults
SMALL = {"unetpp": {"features": [4, 4, 8, 8, 16, 4]},
         "resnet18_unet": {"widths": [8, 8, 16, 16], "decoder_widths": [16, 8, 8, 4, 4]}}


#: multi-class segmenters with an encoder-decoder layout (the binary MIL segmenter has its own
#: tests in test_mil_segmenter.py)
MULTICLASS = [n for n in segmentation_models() if not getattr(MODELS.get(n), "binary_only", False)]


def _model(name: str) -> Segmenter:
    torch.manual_seed(0)
    return create_model(name, K, **SMALL.get(name, {})).eval()


def test_the_teacher_and_students_are_registered():
    assert {"unetpp", "resnet18_unet", "resnet18_unet_small"} <= set(segmentation_models())


@pytest.mark.parametrize("name", MULTICLASS)
def test_logits_and_taps(name):
    model = _model(name)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert logits.shape == (2, K, 48, 64)
    assert torch.allclose(feats["logits"], logits)
    assert set(model.encoder_taps) | set(model.decoder_taps) | {"logits"} == set(feats)
    for tap in model.encoder_taps + model.decoder_taps:
        assert feats[tap].shape[:2] == (2, model.tap_channels[tap]), tap
    # roles: early / middle / final encoder layers, shallow to deep
    assert model.early == model.encoder_taps[0] and model.final == model.encoder_taps[-1]
    assert len(model.middle) >= 2
    sizes = [feats[t].shape[-1] for t in model.encoder_taps]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    # decoder outputs deep to shallow, the last at (or near) the input size
    dec = [feats[t].shape[-1] for t in model.decoder_taps]
    assert dec == sorted(dec)


@pytest.mark.parametrize("name", MULTICLASS)
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_save_load_and_export(name, fmt, tmp_path):
    model = _model(name)
    meta = {"task": "segmentation", "model": {"name": name, "kwargs": SMALL.get(name, {})},
            "classes": ["bg", "a", "b"], "view": {"factor": 1, "upsample": False},
            "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}, "image_size": 32}
    path = save_model(model, meta, tmp_path / "m.pt")
    loaded, got = load_model(path)
    assert got["task"] == "segmentation"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.ts.pt")
    res = export_model(path, out, fmt)
    assert res["max_abs_diff"] < 1e-4 and tuple(res["input_size"]) == (32, 32)
    info = json.loads(out.with_name(out.name + ".json").read_text())
    assert info["classes"] == ["bg", "a", "b"]
    from medistill.deploy import load_exported

    runner, _ = load_exported(out)
    with torch.no_grad():
        np.testing.assert_allclose(runner(x.numpy()), model(x).numpy(), atol=1e-4, rtol=0)
