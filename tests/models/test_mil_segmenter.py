"""The MIL segmenter: side outputs at three depths fused by a weighted average."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import RecipeError
from medistill.models import create_model, segmentation_models
from medistill.models.mil_segmenter import MILSegmenter, prob_to_logit

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = {"backbone_kwargs": {"widths": [8, 8, 16, 16], "groups": 4}}


def test_fixed_fusion_is_the_weighted_average_of_the_side_probabilities():
    torch.manual_seed(0)
    m = create_model("mil_segmenter", 2, **TINY).eval()
    assert isinstance(m, MILSegmenter) and "mil_segmenter" in segmentation_models()
    x = torch.randn(2, 3, 32, 32)
    sides, fused = m.maps(x)
    assert len(sides) == 3 and all(s.shape == (2, 1, 32, 32) for s in sides)
    expected = 0.3 * sides[0] + 0.3 * sides[1] + 0.4 * sides[2]
    assert torch.allclose(fused, expected, atol=1e-6)
    logits = m(x)
    assert logits.shape == (2, 1, 32, 32)
    assert torch.allclose(logits, prob_to_logit(fused), atol=1e-4)
    assert not any("fusion" in n for n, _ in m.named_parameters())


def test_learnable_fusion_weights_sum_to_one_and_train():
    m = create_model("mil_segmenter", 2, fusion="learnable", **TINY)
    assert torch.allclose(m.fusion_weights(), torch.tensor([0.3, 0.3, 0.4]))
    _, fused = m.maps(torch.randn(1, 3, 32, 32))
    fused.mean().backward()
    assert m.fusion_logits.grad is not None


def test_bad_configurations_fail_with_one_line_errors():
    with pytest.raises(RecipeError, match="3 or more"):
        create_model("mil_segmenter", 2, side_taps=["layer1", "layer2"], **TINY)
    with pytest.raises(RecipeError, match="no taps"):
        create_model("mil_segmenter", 2, side_taps=["layer1", "layer2", "nope"], **TINY)
    with pytest.raises(RecipeError, match="binary"):
        create_model("mil_segmenter", 3, **TINY)
    with pytest.raises(RecipeError, match="fusion_weights"):
        create_model("mil_segmenter", 2, fusion_weights=[1, 1], **TINY)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_save_load_and_export(fmt, tmp_path):
    import numpy as np

    from medistill.deploy import export_model, load_exported
    from medistill.engine import load_model, save_model

    torch.manual_seed(0)
    model = create_model("mil_segmenter", 2, **TINY).eval()
    meta = {"task": "segmentation", "model": {"name": "mil_segmenter", "kwargs": TINY},
            "classes": ["background", "tumour"], "view": {"factor": 1, "upsample": False},
            "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}, "image_size": 32}
    path = save_model(model, meta, tmp_path / "m.pt")
    loaded, _ = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.ts.pt")
    assert export_model(path, out, fmt)["max_abs_diff"] < 1e-4
    runner, _ = load_exported(out)
    with torch.no_grad():
        np.testing.assert_allclose(runner(x.numpy()), model(x).numpy(), atol=1e-4, rtol=0)
