"""What every registered model promises (issue #14): it runs forward with the output its task
expects, every parameter gets a finite gradient, and a model file written with the model card
its recipe pipeline writes exports with parity (deploy/export, ONNX).

New models (including ones a plugin registers) are covered by name; the tiny kwargs below only
keep the wide default models fast.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medistill.config import ModelConfig
from medistill.deploy import export_model
from medistill.engine import save_model
from medistill.engine.checkpoint import load_checkpoint
from medistill.models import (
    Classifier,
    Segmenter,
    create_model,
    instance_models,
    list_models,
    segmentation_models,
)
from medistill.pipelines import RECIPES

pytestmark = pytest.mark.usefixtures("single_thread")

#: small widths for the models whose defaults are wide (others build with their defaults)
TINY = {
    "resnet18_unet": {"widths": [8, 8, 16, 16], "decoder_widths": [16, 8, 8, 4, 4]},
    "unetpp": {"features": [4, 4, 8, 8, 16, 4]},
    "mil_segmenter": {"backbone_kwargs": {"widths": [8, 8, 16, 16], "groups": 4}},
    "resunet_embedding": {"widths": [4, 4, 8], "embedding_dim": 4},
}
SIZE = 32
#: parameters a model holds but its forward does not use (so they get no gradient):
#: mil_segmenter's side outputs read layer1..3 of its backbone classifier, not layer4 or the
#: classifier head; unetpp's deep-supervision outputs 0_1..0_3 are built but not returned
UNUSED = {
    "mil_segmenter": ("backbone.layer4.", "backbone.head."),
    "unetpp": ("net.final_conv_0_1.", "net.final_conv_0_2.", "net.final_conv_0_3."),
}
NORM = {"mean": [0.6, 0.5, 0.4], "std": [0.2, 0.25, 0.3]}


def task_of(name: str) -> str:
    if name in instance_models():
        return "instance"
    if name == "mil_segmenter":
        return "weak"
    return "segmentation" if name in segmentation_models() else "classification"


def classes_of(task: str) -> list[str]:
    return ["benign", "malignant"] if task == "classification" else ["background", "object"]


def model_card(name: str, data: dict | None = None) -> dict:
    """The meta the recipe pipeline of the model's task writes into its model files (its data
    section, where it has one, from ``data``)."""
    spec = ModelConfig(name=name, kwargs=TINY.get(name, {}))
    task = task_of(name)
    method = {"classification": "resolution_kd", "segmentation": "hlfd", "weak": "mil_fusion",
              "instance": "graph_relation"}[task]
    schema, pipeline = RECIPES[method]
    recipe = schema.model_validate({"method": method, "data": {"root": "unused", **(data or {})},
                                    **({"model": spec.model_dump()} if task == "weak" else {})})
    owner = SimpleNamespace(r=recipe, classes=classes_of(task), norm=NORM)
    if task == "classification":
        return pipeline._meta(owner, spec, 1)
    return pipeline._meta(owner) if task == "weak" else pipeline._meta(owner, spec)


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model(name, len(classes_of(task_of(name))), **TINY.get(name, {}))
    for m in model.modules():  # norm layers that are not the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm) and m.affine:
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
    return model


def outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = model(x)
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("name", list_models())
def test_forward_gives_the_task_output(name):
    model = build(name).eval()
    task, k = task_of(name), len(classes_of(task_of(name)))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = outputs(model, x)
    if task == "classification":
        assert isinstance(model, Classifier)
        features, logits = out
        assert features.dim() == 4 and features.shape[1] == model.feature_channels
        assert logits.shape == (2, k) and model.head.out_features == k
        taps = model.taps(x)
        assert tuple(taps) == tuple(model.tap_names)
        assert torch.equal(taps["features"], features) and torch.equal(taps["logits"], logits)
    elif task == "instance":
        assert out[0].shape == (2, model.embedding_dim + 1, SIZE, SIZE)
    else:  # a weakly supervised (MIL) segmenter returns one foreground logit per pixel
        channels = 1 if task == "weak" else k
        assert isinstance(model, Segmenter) and out[0].shape == (2, channels, SIZE, SIZE)
    assert all(torch.isfinite(o).all() for o in out)


@pytest.mark.parametrize("name", list_models())
def test_backward_reaches_every_parameter(name):
    model = build(name).train()
    loss = sum(o.square().mean() for o in outputs(model, torch.randn(2, 3, SIZE, SIZE)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    unused = [n for n, _ in model.named_parameters() if n.startswith(UNUSED.get(name, ()))]
    assert missing == unused, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", list_models())
def test_a_real_model_file_exports_with_parity(name, tmp_path):
    card = model_card(name)
    path = save_model(build(name).eval(), card, tmp_path / "best.pt")
    assert load_checkpoint(path)["model"]["name"] == name
    size = card.get("image_size")
    res = export_model(path, tmp_path / "m.onnx", "onnx", input_size=None if size else SIZE)
    assert res["max_abs_diff"] < 1e-4
    assert tuple(res["input_size"]) == ((size, size) if size else (SIZE, SIZE))


def test_every_model_has_a_task():
    """A model of none of the known kinds (classifier, segmenter, instance) fails loudly."""
    for name in list_models():
        model = build(name)
        assert isinstance(model, Classifier | Segmenter) or name in instance_models(), name
