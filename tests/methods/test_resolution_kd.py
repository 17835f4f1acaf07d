"""ResolutionKD (DiPalma et al., 2021, eq. 1) and Supervised / head-only fine-tuning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medistill.errors import CheckpointError, RecipeError
from medistill.methods import ResolutionKD, Supervised
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")

TEMPERATURE = 4.0


def _teacher(num_classes: int = 3, name: str = "resnet18"):
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes)


def _student(num_classes: int = 3):
    torch.manual_seed(1)
    return create_model("small_resnet", num_classes=num_classes)


def _batch(labels=(0, 2)) -> dict:
    torch.manual_seed(2)
    n = len(labels)
    return {
        # teacher at 64 px -> 2x2 final map; student at 32 px -> 1x1 final map
        "views": {"teacher": torch.randn(n, 3, 64, 64), "student": torch.randn(n, 3, 32, 32)},
        "label": torch.tensor(labels),
    }


def _expected_components(method: ResolutionKD, batch: dict) -> tuple[float, float, torch.Tensor]:
    """Eq. 2 and eq. 3 written out independently of the loss modules."""
    with torch.no_grad():
        t_map, t_logits = method.teacher(batch["views"]["teacher"])
        s_map, s_logits = method.student(batch["views"]["student"])
        p_t = torch.softmax(t_logits / TEMPERATURE, 1)
        p_s = torch.softmax(s_logits / TEMPERATURE, 1)
        soft = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * TEMPERATURE**2
        projected = method.projection(s_map)
        assert projected.shape[-2:] == (1, 1) and t_map.shape[-2:] == (2, 2)
        # 2x2 -> 1x1: max-pool = max of the 4 values; bicubic = their mean (see test_feature_mse)
        t_max = t_map.amax(dim=(2, 3), keepdim=True)
        t_bicubic = t_map.mean(dim=(2, 3), keepdim=True)
        pixel = (((projected - t_max) ** 2).mean() + ((projected - t_bicubic) ** 2).mean()) / 2
    return soft.item(), pixel.item(), s_logits


@pytest.fixture
def kd() -> ResolutionKD:
    return ResolutionKD(_teacher(), _student(), temperature=TEMPERATURE).train()


def test_loss_is_soft_plus_pixel_with_unit_weights(kd: ResolutionKD) -> None:
    batch = _batch()
    out = kd.training_step(batch)
    assert {"loss", "soft", "pixel"} <= set(out) and "ce" not in out
    assert out["loss"].ndim == 0
    assert out["loss"].item() == pytest.approx(out["soft"].item() + out["pixel"].item(), rel=1e-6)
    soft, pixel, _ = _expected_components(kd, batch)
    assert out["soft"].item() == pytest.approx(soft, rel=1e-4)
    assert out["pixel"].item() == pytest.approx(pixel, rel=1e-4)
    assert soft > 0 and pixel > 0


def test_weights_scale_the_components() -> None:
    method = ResolutionKD(_teacher(), _student(), temperature=TEMPERATURE, soft_weight=0.5,
                          pixel_weight=2.0).train()
    out = method.training_step(_batch())
    assert out["loss"].item() == pytest.approx(
        0.5 * out["soft"].item() + 2.0 * out["pixel"].item(), rel=1e-6)


def test_zero_pixel_weight_skips_the_feature_term() -> None:
    method = ResolutionKD(_teacher(), _student(), pixel_weight=0.0).train()
    out = method.training_step(_batch())
    assert out["pixel"].item() == 0.0
    assert out["loss"].item() == pytest.approx(out["soft"].item(), rel=1e-6)


def test_maxpool_only_resize() -> None:
    both = ResolutionKD(_teacher(), _student(), resize=("maxpool", "bicubic")).train()
    only = ResolutionKD(_teacher(), _student(), resize=("maxpool",)).train()
    only.projection.load_state_dict(both.projection.state_dict())
    batch = _batch()
    with torch.no_grad():
        t_map, _ = both.teacher(batch["views"]["teacher"])
        s_map, _ = both.student(batch["views"]["student"])
        expected = ((both.projection(s_map) - t_map.amax(dim=(2, 3), keepdim=True)) ** 2).mean()
    assert only.training_step(batch)["pixel"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_teacher_is_frozen_and_stays_in_eval_mode(kd: ResolutionKD) -> None:
    kd.train()
    assert kd.training and kd.student.training
    assert not any(m.training for m in kd.teacher.modules())
    assert not any(p.requires_grad for p in kd.teacher.parameters())
    running = {k: v.clone() for k, v in kd.teacher.state_dict().items()}
    kd.training_step(_batch())["loss"].backward()
    assert all(p.grad is None for p in kd.teacher.parameters())
    # teacher BatchNorm statistics did not move
    for k, v in kd.teacher.state_dict().items():
        assert torch.equal(v, running[k]), k
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.student.parameters())


def test_projection_is_a_trained_1x1_conv_when_channels_differ(kd: ResolutionKD) -> None:
    proj = kd.projection
    assert isinstance(proj, nn.Conv2d)
    assert (proj.in_channels, proj.out_channels) == (256, 512)
    assert proj.kernel_size == (1, 1)
    assert proj.weight.requires_grad
    before = proj.weight.detach().clone()
    trainable = [p for p in kd.parameters() if p.requires_grad]
    assert any(p is proj.weight for p in trainable)
    assert not any(p is q for p in trainable for q in kd.teacher.parameters())
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    kd.training_step(_batch())["loss"].backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(proj.weight, before)


def test_trainable_state_has_projection_and_student_not_teacher(kd: ResolutionKD) -> None:
    state = kd.trainable_state()
    assert {"projection.weight", "projection.bias"} <= set(state)
    assert any(k.startswith("student.") for k in state)
    assert not any(k.startswith("teacher.") for k in state)
    assert set(state) == {k for k in kd.state_dict() if not k.startswith("teacher.")}


def test_trainable_state_round_trip(kd: ResolutionKD) -> None:
    state = {k: v.clone() for k, v in kd.trainable_state().items()}
    other = ResolutionKD(_teacher(), create_model("small_resnet", num_classes=3))
    other.load_trainable_state(state, "last.pt")
    for k, v in other.trainable_state().items():
        assert torch.equal(v, state[k]), k
    del state["projection.weight"]
    with pytest.raises(CheckpointError, match="projection.weight"):
        other.load_trainable_state(state, "last.pt")


def test_same_channels_use_identity_projection() -> None:
    method = ResolutionKD(_teacher(name="small_resnet"), _student())
    assert isinstance(method.projection, nn.Identity)
    assert not any(k.startswith("projection") for k in method.trainable_state())
    out = method.train().training_step(_batch())
    assert out["loss"].item() == pytest.approx(out["soft"].item() + out["pixel"].item(),
                                               rel=1e-6)


def test_mismatched_class_counts_raise() -> None:
    with pytest.raises(RecipeError, match="classes"):
        ResolutionKD(_teacher(num_classes=4), _student(num_classes=3))


def test_label_weight_adds_cross_entropy_ignoring_unlabeled() -> None:
    method = ResolutionKD(_teacher(), _student(), temperature=TEMPERATURE,
                          label_weight=0.5).train()
    batch = _batch(labels=(1, -1))
    out = method.training_step(batch)
    _, _, s_logits = _expected_components(method, batch)
    # only sample 0 is labelled (class 1): CE = -log softmax(z_0)[1]
    z = s_logits[0]
    expected_ce = -(z[1] - torch.logsumexp(z, 0)).item()
    assert out["ce"].item() == pytest.approx(expected_ce, rel=1e-4)
    assert out["loss"].item() == pytest.approx(
        out["soft"].item() + out["pixel"].item() + 0.5 * expected_ce, rel=1e-5)


def test_label_weight_with_all_unlabeled_batch_has_no_ce() -> None:
    method = ResolutionKD(_teacher(), _student(), label_weight=1.0).train()
    out = method.training_step(_batch(labels=(-1, -1)))
    assert "ce" not in out
    assert out["loss"].item() == pytest.approx(out["soft"].item() + out["pixel"].item(), rel=1e-6)


def test_labels_are_ignored_by_default() -> None:
    method = ResolutionKD(_teacher(), _student()).train()
    a = method.training_step(_batch(labels=(0, 1)))["loss"].item()
    b = method.training_step(_batch(labels=(-1, -1)))["loss"].item()
    assert a == pytest.approx(b, rel=1e-6)


def test_custom_view_names_predict_and_deployable() -> None:
    student = _student()
    method = ResolutionKD(_teacher(), student, teacher_view="hi", student_view="lo").eval()
    batch = _batch()
    batch["views"] = {"hi": batch["views"]["teacher"], "lo": batch["views"]["student"]}
    assert torch.isfinite(method.training_step(batch)["loss"])
    logits, labels = method.predict(batch)
    assert method.deployable() is student
    with torch.no_grad():
        assert torch.allclose(logits, student(batch["views"]["lo"])[1])
    assert torch.equal(labels, batch["label"])


def test_a_few_steps_reduce_the_distillation_loss(kd: ResolutionKD) -> None:
    batch = _batch()
    optimizer = torch.optim.Adam([p for p in kd.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = kd.training_step(batch)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --------------------------------------------------------------------------- Supervised


def _sup_batch() -> dict:
    torch.manual_seed(3)
    return {"views": {"input": torch.randn(2, 3, 32, 32)}, "label": torch.tensor([0, 2])}


def test_supervised_loss_is_cross_entropy() -> None:
    method = Supervised(_student()).train()
    batch = _sup_batch()
    out = method.training_step(batch)
    with torch.no_grad():
        _, z = method.model(batch["views"]["input"])
    expected = -(z[[0, 1], [0, 2]] - torch.logsumexp(z, 1)).mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert all(p.requires_grad for p in method.model.parameters())
    assert all(m.training for m in method.model.modules())
    assert method.deployable() is method.model
    logits, labels = method.predict(batch)
    assert logits.shape == (2, 3) and torch.equal(labels, batch["label"])


def test_supervised_head_only_trains_only_the_head() -> None:
    model = _teacher(name="resnet18")  # BatchNorm backbone: its statistics must not move
    method = Supervised(model, head_only=True).train()
    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        assert p.requires_grad == (id(p) in head)
    assert model.head.training
    assert not any(m.training for name, m in model.named_modules()
                   if name and not name.startswith("head"))
    backbone_state = {k: v.clone() for k, v in model.state_dict().items()
                      if not k.startswith("head.")}
    method.training_step(_sup_batch())["loss"].backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    for k, v in model.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, backbone_state[k]), k
    # switching to eval and back keeps the backbone frozen in eval mode
    method.eval()
    assert not model.head.training
    method.train()
    assert model.head.training and not model.layer1.training


def test_tensorboard_samples_show_the_student_view(kd: ResolutionKD) -> None:
    batch = _batch()
    picture, caption = kd.eval().sample_overlays(batch)
    student = batch["views"][kd.views[1]]
    side = student.shape[-1]
    assert picture.shape == (side, 2 * side + 2, 3)  # the student's input, not the teacher's
    pred = kd.predict(batch)[0].argmax(1).tolist()
    assert f"item 1: predicted {pred[1]} " in caption and caption.endswith("true 2")
