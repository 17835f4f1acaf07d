"""SegmentationKD (HLFD and baselines): terms, trained projections, frozen teacher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medistill.errors import RecipeError
from medistill.losses import AttentionTransfer, PixelKL
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
    if run == "hlfd":  # the authors' halves (train_kd.py, recursive_feedback_ours)
        assert torch.allclose(out["feature"], 0.5 * out["ufd"] + 0.5 * out["ifd"])
        assert torch.allclose(out["pixel"], 0.5 * out["upd"] + 0.5 * out["ipd"])
    assert method.deployable() is student


def test_ifd_and_ipd_are_sums_over_layers_at_the_authors_sizes():
    """IFD: sum over the student's middle encoder layers of AT(student resized to the teacher's
    last encoder layer, sum over positions); IPD: sum over dec2..dec4 (the authors' d4, d3, d2);
    UFD compared at the student's earliest layer's size."""
    teacher, student = _pair()
    method = SegmentationKD(teacher, student, PRESETS["hlfd"]).eval()
    b = _batch()
    out = method.training_step(b)
    with torch.no_grad():
        s, t = student.features(b["image"]), teacher.features(b["image"])
    at_t = AttentionTransfer(4.0, "sum", resize="student")
    ifd = sum(at_t(s[n], t["x4_0"]) for n in ("enc1", "enc2", "enc3"))
    assert torch.allclose(out["ifd"], ifd, rtol=1e-5)
    assert set(method.student_heads) == {"dec1", "dec2", "dec3", "dec4"}
    kl = PixelKL(4.0)
    ipd = sum(kl(F.interpolate(method.student_heads[n](s[n]), size=(32, 32), mode="bilinear",
                               align_corners=False), t["logits"])
              for n in ("dec2", "dec3", "dec4"))
    assert torch.allclose(out["ipd"], ipd, rtol=1e-5)
    mids = [t[n] for n in ("x1_0", "x2_0", "x3_0")]
    unified = torch.cat([F.interpolate(m, size=mids[-1].shape[-2:], mode="bilinear",
                                       align_corners=False) for m in mids], dim=1)
    ufd = AttentionTransfer(4.0, "sum", resize="teacher")(s["enc0"], unified)
    assert torch.allclose(out["ufd"], ufd, rtol=1e-5)


def test_feature_terms_are_not_negligible_and_mean_reduction_is_hw_smaller():
    """Sum over positions (the authors'): beta * feature is of the order of the segmentation
    loss at initialisation. The mean-over-positions option divides UFD by the H*W of the
    student's earliest layer (16 x 16 here) and IFD by that of the teacher's last encoder layer
    (2 x 2 at this toy size; 8 x 8 at 128 px), i.e. practically switches them off."""
    teacher, student = _pair()
    b = _batch()
    summed = SegmentationKD(teacher, student, PRESETS["hlfd"]).eval().training_step(b)
    mean = SegmentationKD(teacher, student, PRESETS["hlfd"],
                          at_reduction="mean").eval().training_step(b)
    assert torch.allclose(summed["ufd"], 16 * 16 * mean["ufd"], rtol=1e-5)
    assert torch.allclose(summed["ifd"], 2 * 2 * mean["ifd"], rtol=1e-5)
    assert 0.9 * summed["feature"] > 0.5 * summed["seg"]


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


def test_validation_metrics_report_dice_for_selection(tmp_path):
    from seg_fixtures import write_seg_dataset

    from medistill.data.segmentation import SegmentationDataset
    from medistill.pipelines.seg_data import SegDataConfig, load_seg_split

    _, student = _pair()
    method = SegSupervised(student).eval()
    # validation scores the original masks of a segmentation dataset (issue #14)
    root = write_seg_dataset(tmp_path / "d", {"train": 1, "val": 2}, size=32)
    items = load_seg_split(SegDataConfig(root=str(root)), "val")
    loader = torch.utils.data.DataLoader(SegmentationDataset(items, 2, 32), batch_size=2)
    scores = method.validation_metrics(loader, torch.device("cpu"), 2)
    assert set(scores) == {"dice", "iou"} and 0 <= scores["dice"] <= 1
