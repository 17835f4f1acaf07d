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


class _Logits(nn.Module):
    """A classifier's logits only (what MONAI's GradCAM hooks into)."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[1]


def _by_peak(cam: torch.Tensor) -> torch.Tensor:
    """Our scaling (divided by the maximum), as MONAI's ``postprocessing``."""
    return cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)


def _model_and_batch() -> tuple[Classifier, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("small_resnet", 3).eval(), torch.randn(3, 3, 48, 48)


@pytest.mark.parametrize("layer, target", [("layer3", 0), ("layer4", 1), ("layer2", 2)])
def test_agrees_with_monai_gradcam(layer: str, target: int) -> None:
    """Cross-check against ``monai.visualize.GradCAM`` on the module behind each tap: the same
    maps once scaled alike (ours divides by the maximum, MONAI's default min-max rescales)."""
    from monai.visualize import GradCAM

    model, x = _model_and_batch()
    ours, _ = gradcam(model, x, layer, target=target)
    theirs = GradCAM(_Logits(model), target_layers=f"model.{layer}",
                     postprocessing=_by_peak)(x, class_idx=target)[:, 0]
    assert ours.shape == theirs.shape == (3, 48, 48)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_each_image_gets_its_own_predicted_class_unlike_monai() -> None:
    """Why we keep our own: for a batch whose predicted classes differ, MONAI's GradCAM
    (``class_idx=None``) scores ``logits[:, predicted].sum()``, so every image's map is the
    gradient of the sum of ALL the batch's predicted-class logits; ours back-propagates each
    image's own predicted class (eq. 1 per image), which equals MONAI's one image at a time.
    Ours also works on any named tap, leaves parameter gradients and the model's mode alone."""
    from monai.visualize import GradCAM

    model, x = _model_and_batch()
    ours, classes = gradcam(model, x, "layer3")
    assert len(set(classes.tolist())) > 1  # a mixed batch (predicted 2, 0, 0)
    cam = GradCAM(_Logits(model), target_layers="model.layer3", postprocessing=_by_peak)
    one_by_one = torch.cat([cam(x[i:i + 1])[:, 0] for i in range(len(x))])
    assert torch.allclose(ours, one_by_one, atol=1e-5)
    batched = cam(x)[:, 0]
    assert (ours - batched).abs().amax() > 0.1  # measured 0.83, 0.24, 0.52 per image
