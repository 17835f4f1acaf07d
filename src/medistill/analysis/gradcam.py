"""Grad-CAM (Selvaraju et al., 2017, eqs. 1-2) on a named tap of a classifier.

For the score ``y^c`` of class ``c`` and the activations ``A^k`` of a layer:
``alpha_k^c = mean_{ij} d y^c / d A^k_ij`` (eq. 1) and
``L^c = ReLU(sum_k alpha_k^c A^k)`` (eq. 2). The map is upsampled (bilinear) to the input size
and scaled to [0, 1] per image (divided by its maximum; an all-zero map stays zero).

Compared with ``monai.visualize.GradCAM`` (``tests/analysis/test_gradcam.py``): for a given
class the maps are the same (to 1e-5, given the same scaling: MONAI min-max rescales by
default). We keep this one because MONAI's, with ``class_idx=None`` on a batch whose predicted
classes differ, back-propagates ``logits[:, predicted].sum()``: every image's map then mixes
the other images' classes (ours uses each image's own, eq. 1 per image); and because ours
works on any named tap (not only a module's output), on models returning ``(features,
logits)``, without touching parameter gradients or the model's train/eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medistill.errors import RecipeError
from medistill.models.base import Classifier


def gradcam(
    model: Classifier, x: torch.Tensor, layer: str, target: int | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps of ``x`` (N, C, H, W) at tap ``layer``.

    Args:
        model: a classifier whose ``taps(x)`` includes ``layer`` and ``"logits"``.
        target: the class per image (int or (N,) tensor); None = the predicted class.

    Returns:
        ``(maps (N, H, W) in [0, 1], target classes (N,))``. The model's mode is unchanged
        (call ``model.eval()`` first for inference behaviour) and no parameter gradient is
        accumulated.
    """
    if layer not in model.tap_names:
        raise RecipeError(f"gradcam: unknown layer {layer!r}; taps: {', '.join(model.tap_names)}")
    with torch.enable_grad():
        out = model.taps(x.detach().requires_grad_(True))  # every tap is then in the graph
        acts, logits = out[layer], out["logits"]
        if target is None:
            target = logits.argmax(1)
        target = torch.as_tensor(target, device=logits.device).expand(len(x)).long()
        score = logits.gather(1, target[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # eq. 1
    cam = F.relu((weights * acts).sum(1, keepdim=True)).detach()  # eq. 2
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).clamp(0, 1), target.detach()
