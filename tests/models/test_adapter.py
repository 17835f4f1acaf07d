"""TappedModel: a user's own nn.Module as a medistill classifier, taps by forward hooks."""

from __future__ import annotations

import copy

import pytest
import torch
from byo_fixtures import clean_registries
from torch import nn

from medistill.deploy import export_model
from medistill.engine import load_model, save_model
from medistill.methods import ResolutionKD
from medistill.models import TappedModel, register_model

__all__ = ["clean_registries"]


def sequential(num_classes: int = 3, width: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),             # 0, 1
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),      # 2
        nn.ReLU(),                                                # 3: the final map
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, num_classes))                        # 6


class Custom(nn.Module):
    """A network written without medistill in mind."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"low": nn.Conv2d(3, 4, 3, padding=1),
                                      "high": nn.Conv2d(4, 6, 3, stride=2, padding=1)})
        self.classifier = nn.Linear(6, num_classes)
        self.aux = nn.Linear(6, 1)  # not the head: named explicitly below

    def forward(self, x):
        h = self.encoder["high"](torch.relu(self.encoder["low"](x)))
        return self.classifier(h.mean((2, 3)))


def test_taps_are_the_named_submodule_outputs():
    torch.manual_seed(0)
    net = sequential()
    model = TappedModel(net, features="3", taps={"early": "1"})
    x = torch.randn(2, 3, 16, 16)
    out = model.taps(x)
    assert list(out) == ["early", "features", "logits"] == list(model.tap_names)
    assert torch.equal(out["early"], torch.relu(net[0](x)))
    assert torch.equal(out["features"], torch.relu(net[2](torch.relu(net[0](x)))))
    assert torch.equal(out["logits"], net(x))
    feats, logits = model(x)
    assert feats.shape == (2, 16, 8, 8) and torch.equal(logits, net(x))
    assert model.head is net[6] and model.feature_channels == 16 and model.num_classes == 3
    assert {id(p) for p in model.backbone_parameters()} == {
        id(p) for m in (net[0], net[2]) for p in m.parameters()}
    # outside taps() the hooks record nothing (a plain forward of the module is untouched)
    net(x)
    assert model._captured is None


def test_a_deep_copy_records_into_the_copy():
    model = TappedModel(Custom(), features="encoder.high", head="classifier")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.module.encoder["high"].weight.add_(1.0)
    x = torch.randn(1, 3, 8, 8)
    assert not torch.equal(twin(x)[0], model(x)[0])
    assert torch.equal(twin(x)[0], twin.taps(x)["features"])


def test_bad_names_and_outputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"tap 'features': the module has no submodule "
                                         r"'encoder.mid' \(it has: encoder, encoder.low"):
        TappedModel(Custom(), features="encoder.mid")
    with pytest.raises(ValueError, match="head: 'encoder.low' is a Conv2d, not an nn.Linear"):
        TappedModel(Custom(), features="encoder.high", head="encoder.low")
    with pytest.raises(ValueError, match="'logits' is reserved"):
        TappedModel(Custom(), features="encoder.high", taps={"logits": "classifier"})
    # the last nn.Linear is the default head: here that is the unused "aux" layer
    unused = TappedModel(Custom(), features="encoder.high", taps=["aux"])
    with pytest.raises(ValueError, match=r"taps \['aux'\]: submodule\(s\) \['aux'\] did not run"):
        unused.taps(torch.randn(1, 3, 8, 8))
    flat = TappedModel(sequential(), features="5")
    with pytest.raises(ValueError, match=r"features: '5' returns shape \(1, 16\), not a"):
        flat.taps(torch.randn(1, 3, 8, 8))


def test_adapted_modules_distil_through_resolution_kd():
    """The resolution-KD forward (eq. 1-3) with a plain nn.Sequential teacher and a custom
    student of other widths (the 1x1 projection bridges 16 -> 6 channels)."""
    torch.manual_seed(0)
    teacher = TappedModel(sequential(), features="3")
    student = TappedModel(Custom(), features="encoder.high", head="classifier")
    kd = ResolutionKD(teacher, student, label_weight=1.0)
    kd.train()
    batch = {"views": {"teacher": torch.randn(4, 3, 32, 32),
                       "student": torch.randn(4, 3, 16, 16)},
             "label": torch.tensor([0, 1, 2, 1]), "index": torch.arange(4)}
    out = kd.training_step(batch)
    assert torch.isfinite(out["loss"]) and set(out) >= {"term/soft", "term/pixel", "term/ce"}
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.module.encoder.parameters())
    assert student.module.aux.weight.grad is None  # not in the forward
    assert kd.predict(batch)[0].shape == (4, 3)


def test_a_registered_adapter_saves_loads_and_exports(tmp_path, clean_registries):
    @register_model("byo_tapped_custom")
    def factory(num_classes: int) -> TappedModel:
        return TappedModel(Custom(num_classes), features="encoder.high", head="classifier")

    torch.manual_seed(0)
    meta = {"model": {"name": "byo_tapped_custom", "kwargs": {}}, "classes": ["a", "b", "c"],
            "view": {"factor": 1, "upsample": False}, "image_size": 16,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    path = save_model(factory(3), meta, tmp_path / "m.pt")
    model, _ = load_model(path)
    assert model.taps(torch.randn(1, 3, 16, 16))["features"].shape == (1, 6, 8, 8)
    res = export_model(path, tmp_path / "m.onnx", "onnx")
    assert res["max_abs_diff"] < 1e-5
