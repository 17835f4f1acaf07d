"""JointEmbedding and LinearProbe of "More From Less" (Farndale et al., 2023, section 2)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medistill.config import TrainConfig
from medistill.data import Augment, PairedViewDataset, ResolutionView, SparseView, read_manifest
from medistill.engine import Trainer, load_model
from medistill.errors import RecipeError, TrainingError
from medistill.methods import Expander, FeatureDataset, JointEmbedding, LinearProbe
from medistill.models import Classifier, create_model
from medistill.pipelines import demo_data_root

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 64  # expander width for CPU tests (8192 in the paper)


def _encoder(seed: int, **kwargs) -> Classifier:
    torch.manual_seed(seed)
    return create_model("small_resnet", num_classes=3, **kwargs)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _method(shared: bool = False, **kwargs) -> JointEmbedding:
    enc_b = None if shared else _encoder(1)
    return JointEmbedding(_encoder(0), enc_b, shared=shared, expander_width=WIDTH, **kwargs)


def _batch(n: int = 8) -> dict:
    """A fixed batch of 32-px images: a dense view and its 4 x 4 px sparse version."""
    g = torch.Generator().manual_seed(2)
    dense = torch.randn(n, 3, 32, 32, generator=g)
    sparse = F.interpolate(F.interpolate(dense, size=4, mode="area"), size=32, mode="bilinear")
    return {"views": {"dense": dense, "sparse": sparse}, "label": torch.arange(n) % 3}


# -- Expander -----------------------------------------------------------------------------------


def test_expander_is_three_dense_layers() -> None:
    expander = Expander(16, width=WIDTH)
    kinds = [type(m) for m in expander]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU,
                     nn.Linear]
    assert [m.out_features for m in expander if isinstance(m, nn.Linear)] == [WIDTH] * 3
    assert expander(torch.randn(4, 16)).shape == (4, WIDTH)
    assert [type(m) for m in Expander(16, 8, layers=1)] == [nn.Linear]
    assert inspect.signature(Expander).parameters["width"].default == 8192  # the paper's
    with pytest.raises(RecipeError):
        Expander(16, layers=0)


# -- JointEmbedding -----------------------------------------------------------------------------


def test_shared_mode_has_one_encoder_and_one_expander() -> None:
    method = _method(shared=True)
    encoder = method.encoder_a
    assert method.encoder("a") is method.encoder("b") is encoder
    assert method.expander("a") is method.expander("b")
    assert _count(method) == _count(encoder) + _count(method.expander_a)
    assert not any(k.startswith(("encoder_b", "expander_b")) for k in method.state_dict())


def test_independent_mode_has_two_encoders_and_two_expanders() -> None:
    method = _method(shared=False)
    assert method.encoder("a") is not method.encoder("b")
    assert _count(method) == 2 * _count(method.encoder_a) + 2 * _count(method.expander_a)
    # different architectures per branch are allowed (section 4.3)
    narrow = _encoder(5, widths=(32, 32, 32, 64))
    mixed = JointEmbedding(_encoder(0), narrow, expander_width=WIDTH)
    assert mixed.expander("b").in_dim == 64 and mixed.expander("a").in_dim == 256
    out = mixed.training_step(_batch(4))
    assert torch.isfinite(out["loss"])


def test_invalid_configurations_are_rejected() -> None:
    enc = _encoder(0)
    with pytest.raises(RecipeError, match="shared=True"):
        JointEmbedding(enc)  # independent without encoder_b
    with pytest.raises(RecipeError, match="shares weights"):
        JointEmbedding(enc, enc)
    with pytest.raises(RecipeError, match="leave encoder_b out"):
        JointEmbedding(enc, _encoder(1), shared=True)
    with pytest.raises(RecipeError, match="loss"):
        JointEmbedding(enc, shared=True, loss="byol", expander_width=WIDTH)
    with pytest.raises(RecipeError, match="two views"):
        JointEmbedding(enc, shared=True, view_a="x", view_b="x", expander_width=WIDTH)
    with pytest.raises(RecipeError, match="deploy_branch"):
        JointEmbedding(enc, shared=True, deploy_branch="c", expander_width=WIDTH)


def test_vicreg_step_returns_the_weighted_terms() -> None:
    method = _method().train()
    out = method.training_step(_batch())
    assert {"loss", "invariance", "variance", "covariance"} <= set(out)
    expected = 25 * out["invariance"] + 25 * out["variance"] + 1 * out["covariance"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    # the representation is the pooled final feature map, through branch b's expander
    batch = _batch()
    with torch.no_grad():
        features = method.encoder_b(batch["views"]["sparse"])[0].mean(dim=(2, 3))
        assert torch.allclose(method.embed(batch, "b"), features, atol=1e-6)


def test_simclr_step_is_ntxent() -> None:
    from medistill.losses import NTXentLoss

    method = _method(loss="simclr", temperature=0.5).train()
    batch = _batch()
    torch.manual_seed(0)
    out = method.training_step(batch)
    assert set(out) == {"loss", "ntxent"}
    with torch.no_grad():
        z_a = method.expander_a(method.embed(batch, "a"))
        z_b = method.expander_b(method.embed(batch, "b"))
    assert out["loss"].item() == pytest.approx(NTXentLoss(0.5)(z_a, z_b).item(), rel=1e-5)


@pytest.mark.parametrize(("loss", "shared"), [("vicreg", False), ("simclr", True)])
def test_loss_decreases_on_a_fixed_batch(loss: str, shared: bool) -> None:
    method = _method(shared=shared, loss=loss).train()
    batch = _batch()
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        out = method.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_gradients_reach_both_branches_but_not_the_unused_heads() -> None:
    method = _method().train()
    method.training_step(_batch())["loss"].backward()
    for enc in (method.encoder_a, method.encoder_b):
        assert all(p.grad is not None for p in enc.backbone_parameters())
        assert all(p.grad is None for p in enc.head.parameters())
    assert all(p.grad is not None for p in method.expander_b.parameters())


def test_deployable_is_the_sparse_branch_encoder() -> None:
    method = _method()
    assert method.deployable() is method.encoder_b  # branch b sees the "sparse" view
    dense_side = _method(deploy_branch="a")
    assert dense_side.deployable() is dense_side.encoder_a
    flipped = JointEmbedding(_encoder(0), _encoder(1), view_a="sparse", view_b="dense",
                             deploy_branch="a", expander_width=WIDTH)
    assert flipped.deployable() is flipped.encoder_a
    shared = _method(shared=True)
    assert shared.deployable() is shared.encoder_a


def test_predict_raises_and_tiny_batches_are_refused() -> None:
    method = _method()
    with pytest.raises(TrainingError, match="LinearProbe"):
        method.predict(_batch())
    with pytest.raises(TrainingError, match="at least 2"):
        method.train().training_step(_batch(1))
    with pytest.raises(TrainingError, match="no view"):
        method.training_step({"views": {"dense": torch.zeros(2, 3, 32, 32)}})


# -- LinearProbe --------------------------------------------------------------------------------


def test_linear_probe_trains_only_the_head() -> None:
    encoder = _encoder(0)
    probe = LinearProbe(encoder, num_classes=3, view="sparse").train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert isinstance(probe.head, nn.Linear) and probe.head.in_features == 256
    assert set(probe.trainable_state()) == {"head.weight", "head.bias"}
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = probe.head.weight.detach().clone()
    opt = torch.optim.Adam([p for p in probe.parameters() if p.requires_grad], lr=1e-3)
    out = probe.training_step(_batch())
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(probe.head.weight, head_before)
    logits, labels = probe.predict(_batch())
    assert logits.shape == (8, 3) and torch.equal(labels, _batch()["label"])


def test_linear_probe_deployable_is_a_classifier() -> None:
    encoder = _encoder(0)
    probe = LinearProbe(encoder, num_classes=4)
    model = probe.deployable().eval()
    assert isinstance(model, Classifier) and model.head is probe.head
    x = _batch()["views"]["sparse"]
    features, logits = model(x)
    assert torch.equal(features, encoder(x)[0])
    assert torch.allclose(logits, probe.predict(_batch())[0])
    assert model.taps(x)["logits"].shape == (8, 4)
    # the state dict is the encoder architecture's with 4 classes: it rebuilds from the registry
    rebuilt = create_model("small_resnet", num_classes=4)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert torch.allclose(rebuilt.eval()(x)[1], logits, atol=1e-6)


def test_feature_dataset_gives_the_probe_the_same_logits() -> None:
    encoder = _encoder(0)
    probe = LinearProbe(encoder, num_classes=3, view="sparse").eval()
    batch = _batch()
    items = [{"views": {"sparse": batch["views"]["sparse"][i]}, "label": int(batch["label"][i])}
             for i in range(8)]
    feats = FeatureDataset.extract(encoder, items, "sparse", batch_size=3)
    assert len(feats) == 8 and feats.features.shape == (8, 256)
    assert torch.equal(feats.labels, batch["label"])
    cached = {"features": feats.features, "label": feats.labels}
    assert torch.allclose(probe.predict(cached)[0], probe.predict(batch)[0], atol=1e-5)
    assert feats[2]["index"] == 2 and torch.equal(feats[2]["features"], feats.features[2])


# -- with the trainer -----------------------------------------------------------------------------


def test_end_to_end_with_the_trainer(tmp_path) -> None:
    root = demo_data_root()
    split = read_manifest(root / "labels.csv", "train")
    samples = split.samples[::20][:6]  # a few class-mixed images
    views = {"dense": ResolutionView(4), "sparse": SparseView(7, size=56)}
    train = PairedViewDataset(samples, views, augment=Augment(), seed=1)
    cfg = TrainConfig(epochs=1, batch_size=3, progress=False, tensorboard=False, seed=0)
    method = JointEmbedding(_encoder(0), _encoder(1), expander_width=WIDTH)
    result = Trainer(method, train, None, cfg, tmp_path / "ssl").fit()
    assert (tmp_path / "ssl" / "last.pt").is_file() and (tmp_path / "ssl" / "best.pt").is_file()
    row = result["history"][0]
    assert {"train_loss", "train_invariance", "train_variance", "train_covariance"} <= set(row)
    assert not any(k.startswith("val_") for k in row)

    # linear evaluation of the sparse encoder, validated on the same tiny set
    probe = LinearProbe(method.deployable(), num_classes=len(split.classes), view="sparse")
    meta = {"model": {"name": "small_resnet"}, "classes": split.classes}
    out = Trainer(probe, train, train, cfg, tmp_path / "probe", model_meta=meta,
                  num_classes=len(split.classes)).fit()
    assert "val_accuracy" in out["history"][0]
    model, _ = load_model(tmp_path / "probe" / "best.pt")
    x = train[0]["views"]["sparse"][None]
    probe.eval()
    assert torch.allclose(model(x)[1], probe.deployable()(x)[1], atol=1e-5)
