"""SegmentationKD (HLFD and baselines): terms, trained projections, frozen teacher."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import RecipeError
from medistill.methods import SegmentationKD, SegSupervised
from medistill.methods.hlfd import PRESETS
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _pair(k: int = 2):
    torch.manual_seed(0)
    teacher = create_model("unetpp", k, features=[4, 4, 8, 8, 16, 4])
    student = create_model("resnet18_unet", k, widths=[8, 8, 16, 16],
                           decoder_widths=[16, 8, 8, 4, 4])
    return teacher, student


def _batch(k: int = 2, n: int = 2, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 3, size, size, generator=g),
            "mask": torch.randint(0, k, (n, size, size), generator=g), "index": torch.arange(n)}


@pytest.mark.parametrize("run", sorted(PRESETS))
def test_each_run_logs_its_terms_and_the_weighted_total(run):
    teacher, student = _pair()
    method = SegmentationKD(teacher, student, PRESETS[run])
    out = method.training_step(_batch())
    for term in PRESETS[run]:
        assert term in out and torch.isfinite(out[term])
    expected = out["seg"] + 0.1 * out["pixel"] + 0.9 * out["feature"]
    expected = expected + out.get("upd_probe", 0.0)
    assert torch.allclose(out["loss"], expected)
    if run == "hlfd":
        assert torch.allclose(out["feature"], out["ufd"] + out["ifd"])
        assert torch.allclose(out["pixel"], out["upd"] + out["ipd"])
    assert method.deployable() is student


def test_projections_are_trained_parameters_of_the_distiller():
    """Defect in the authors' code: 1x1 convs created inside the loss each call (random,
    never trained). Here they are created once, optimised and checkpointed."""
    teacher, student = _pair()
    method = SegmentationKD(teacher, student, PRESETS["hlfd"])
    heads = list(method.student_heads.parameters()) + list(
        method.teacher_projection.parameters())
    assert heads and all(p.requires_grad for p in heads)
    ids = {id(p) for p in method.parameters() if p.requires_grad}
    assert all(id(p) in ids for p in heads)  # what the trainer's optimiser receives
    state = method.trainable_state()
    assert any(k.startswith("student_heads.") for k in state)
    assert any(k.startswith("teacher_projection.") for k in state)
    assert not any(k.startswith("teacher.") for k in state)  # the frozen teacher is left out
    # the same input gives the same loss twice: nothing is re-created at random per call
    method.eval()
    b = _batch()
    assert torch.equal(method.training_step(b)["upd"], method.training_step(b)["upd"])
    # one optimiser step changes the projections (they get gradients)
    method.train()
    before = [p.detach().clone() for p in heads]
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    method.training_step(b)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads)
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, heads, strict=True))


def test_teacher_is_frozen_and_the_probe_cannot_reach_the_student():
    teacher, student = _pair()
    method = SegmentationKD(teacher, student, ["upd"]).train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    out = method.training_step(_batch())
    grads = torch.autograd.grad(out["upd_probe"], list(student.parameters()), allow_unused=True)
    assert all(g is None for g in grads)
    assert all(p.grad is None for p in teacher.parameters())


def test_bad_terms_and_class_mismatch_are_recipe_errors():
    teacher, student = _pair()
    with pytest.raises(RecipeError, match="unknown"):
        SegmentationKD(teacher, student, ["ufd", "nope"])
    t3 = create_model("unetpp", 3, features=[4, 4, 8, 8, 16, 4])
    with pytest.raises(RecipeError, match="3 classes"):
        SegmentationKD(t3, student)


def test_validation_metrics_report_dice_for_selection():
    _, student = _pair()
    method = SegSupervised(student).eval()
    b = _batch()
    loader = [b]
    scores = method.validation_metrics(loader, torch.device("cpu"), 2)
    assert set(scores) == {"dice", "iou"} and 0 <= scores["dice"] <= 1
