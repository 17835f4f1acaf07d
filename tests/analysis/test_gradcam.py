"""Grad-CAM against a hand-computed case and on a registered model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medistill.analysis import gradcam
from medistill.errors import RecipeError
from medistill.models import create_model
from medistill.models.base import Classifier


class Linear(Classifier):
    """features = the input itself; logits = W @ mean(features) + b."""

    tap_names = ("features", "logits")

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.zero_()
        self.feature_channels = weight.shape[1]

    def taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x, "logits": self.head(x.mean(dim=(2, 3)))}


def test_hand_computed_case() -> None:
    # d y^c / d A^k_ij = W[c, k] / (H W), so alpha_k = W[c, k] / 4 on a 2x2 map
    weight = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    maps, target = gradcam(Linear(weight), x, "features", target=0)
    raw = F.relu(0.25 * x[0, 0] - 0.5 * x[0, 1])  # [[0, .5], [.75, .5]]
    assert torch.allclose(maps[0], raw / raw.max())
    assert target.tolist() == [0]
    # default target = predicted class: logits = [2.5 - 1, 1.25] -> class 0
    assert gradcam(Linear(weight), x, "features")[1].tolist() == [0]


def test_registered_model_maps_and_no_parameter_grads() -> None:
    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    maps, target = gradcam(model, x, "layer3", target=torch.tensor([1, 2]))
    assert maps.shape == (2, 32, 32) and 0 <= maps.min() and maps.max() <= 1
    assert target.tolist() == [1, 2]
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(RecipeError, match="unknown layer 'layer9'"):
        gradcam(model, x, "layer9")
