"""Registered classifiers: (features, logits) forward, taps, normalisation and sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medistill.errors import RecipeError
from medistill.models import (
    MODELS,
    Classifier,
    classification_models,
    create_model,
    list_models,
)

pytestmark = pytest.mark.usefixtures("single_thread")

NUM_CLASSES = 3
EXPECTED_CHANNELS = {"small_resnet": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048}
# MONAI 1.6's ResNet._make_layer is called without `norm`: left alone, every residual block
# and shortcut would use BatchNorm whatever `norm` says. The GroupNorm tests below guard that.

_cache: dict[str, Classifier] = {}


def _model(name: str) -> Classifier:
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = create_model(name, num_classes=NUM_CLASSES).eval()
    return _cache[name]


def _input(name: str) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1 if name == "resnet50" else 2, 3, 32, 32)


def _norm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))]


def test_registry_lists_every_model() -> None:
    assert set(list_models()) >= set(EXPECTED_CHANNELS)
    assert list_models() == sorted(list_models())
    assert all(name in MODELS for name in list_models())


@pytest.mark.parametrize("name", classification_models())
def test_forward_returns_features_and_logits(name: str) -> None:
    model, x = _model(name), _input(name)
    with torch.no_grad():
        features, logits = model(x)
    assert features.ndim == 4
    assert features.shape[:2] == (x.shape[0], model.feature_channels)
    assert logits.shape == (x.shape[0], NUM_CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", classification_models())
def test_taps(name: str) -> None:
    model, x = _model(name), _input(name)
    with torch.no_grad():
        taps = model.taps(x)
        features, logits = model(x)
    assert set(model.tap_names) <= set(taps)
    assert {"features", "logits", "layer4"} <= set(model.tap_names)
    assert torch.equal(taps["features"], taps["layer4"])
    assert torch.allclose(taps["features"], features)
    assert torch.allclose(taps["logits"], logits)
    # logits = head(global average pool(features))
    pooled = taps["features"].mean(dim=(2, 3))
    assert torch.allclose(taps["logits"], model.head(pooled), atol=1e-5)
    # at 32 px: stem /4, then layer2..4 halve -> 8, 8, 4, 2, 1
    assert [taps[k].shape[-1] for k in ("stem", "layer1", "layer2", "layer3", "layer4")] == [
        8, 8, 4, 2, 1]


@pytest.mark.parametrize("name", classification_models())
def test_feature_channels(name: str) -> None:
    model = _model(name)
    assert model.feature_channels == EXPECTED_CHANNELS[name]
    assert model.head.in_features == model.feature_channels
    assert model.head.out_features == NUM_CLASSES


@pytest.mark.parametrize("name", classification_models())
def test_backbone_parameters_exclude_head(name: str) -> None:
    model = _model(name)
    backbone = model.backbone_parameters()
    head_ids = {id(p) for p in model.head.parameters()}
    assert head_ids and not head_ids & {id(p) for p in backbone}
    assert len(backbone) + len(head_ids) == len(list(model.parameters()))


def test_small_resnet_layout() -> None:
    from monai.networks.nets.resnet import ResNetBlock

    model = _model("small_resnet")
    for layer, width in zip(("layer1", "layer2", "layer3", "layer4"), (32, 64, 128, 256),
                            strict=True):
        blocks = list(getattr(model, layer).children())
        assert len(blocks) == 1 and isinstance(blocks[0], ResNetBlock)  # one BasicBlock
        assert blocks[0].conv2.out_channels == width
    with torch.no_grad():
        taps = model.taps(_input("small_resnet"))
    assert [taps[k].shape[1] for k in ("stem", "layer1", "layer2", "layer3", "layer4")] == [
        32, 32, 64, 128, 256]


def test_small_resnet_parameter_count_for_6_classes() -> None:
    model = create_model("small_resnet", num_classes=6)
    norm = lambda c: 2 * c  # noqa: E731  (affine weight + bias, GroupNorm or BatchNorm)
    stem = 3 * 32 * 7 * 7 + norm(32)
    layer1 = 2 * 32 * 32 * 9 + 2 * norm(32)

    def down_stage(cin: int, c: int) -> int:  # 2 3x3 convs, 2 norms, 1x1 conv (+bias) + norm
        return cin * c * 9 + c * c * 9 + 2 * norm(c) + cin * c + c + norm(c)

    head = 256 * 6 + 6
    expected = stem + layer1 + down_stage(32, 64) + down_stage(64, 128) + down_stage(128, 256)
    expected += head
    assert expected == 1_232_230  # ~1.23 M
    assert sum(p.numel() for p in model.parameters()) == expected


def test_small_resnet_stem_uses_groupnorm_32() -> None:
    assert isinstance(_model("small_resnet").stem[1], nn.GroupNorm)
    assert _model("small_resnet").stem[1].num_groups == 32


def test_small_resnet_uses_only_groupnorm_32() -> None:
    model = _model("small_resnet")
    norms = _norm_layers(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in norms)
    assert norms and all(isinstance(m, nn.GroupNorm) and m.num_groups == 32 for m in norms)


def test_small_resnet_trains_with_batch_size_1() -> None:
    # GroupNorm does not depend on the batch: a batch of one 32-px image (1x1 final map) must
    # train. With BatchNorm in the blocks this raises "Expected more than 1 value per channel".
    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=NUM_CLASSES).train()
    _, logits = model(torch.randn(1, 3, 32, 32))
    logits.sum().backward()


def test_resnet18_group_norm_has_no_batchnorm() -> None:
    model = create_model("resnet18", num_classes=NUM_CLASSES, norm="group")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_resnet18_default_is_batchnorm() -> None:
    norms = _norm_layers(_model("resnet18"))
    assert norms and all(isinstance(m, nn.BatchNorm2d) for m in norms)


@pytest.mark.parametrize("name", ["small_resnet", "resnet18"])
def test_trains_in_train_mode_with_batch_2(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES).train()
    features, logits = model(torch.randn(2, 3, 32, 32))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_in_channels() -> None:
    model = create_model("small_resnet", num_classes=2, in_channels=1).eval()
    with torch.no_grad():
        _, logits = model(torch.randn(1, 1, 32, 32))
    assert logits.shape == (1, 2)


def test_unknown_model_raises_listing_names() -> None:
    with pytest.raises(RecipeError) as info:
        create_model("vgg11", num_classes=2)
    message = str(info.value)
    assert "vgg11" in message
    assert all(name in message for name in list_models())


def test_unknown_norm_raises() -> None:
    with pytest.raises(RecipeError, match="norm"):
        create_model("resnet18", num_classes=2, norm="layer")


def test_reset_head_reinitialises_only_the_head() -> None:
    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=NUM_CLASSES)
    backbone_before = [p.detach().clone() for p in model.backbone_parameters()]
    with torch.no_grad():
        model.head.weight.zero_()
    model.reset_head()
    assert model.head.weight.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in
               zip(backbone_before, model.backbone_parameters(), strict=True))


@pytest.mark.parametrize(("size", "stem", "final"), [
    (224, (2, True), 7), (112, (2, True), 4), (56, (2, False), 4), (28, (1, False), 4),
    (14, (1, False), 2), (7, (1, False), 1)])
def test_resolution_aware_stem_keeps_the_final_map_spatial(size, stem, final) -> None:
    """At 28 px the ImageNet stem leaves a 1x1 final map (eq. 3 would compare one vector);
    ``input_size`` picks the stem that keeps >= 4x4 where a stem change can."""
    from medistill.models.resnet import final_map_size, stem_for_input

    assert stem_for_input(size) == stem
    torch.manual_seed(0)
    model = create_model("small_resnet", NUM_CLASSES, input_size=size).eval()
    with torch.no_grad():
        features, logits = model(torch.randn(1, 3, size, size))
    assert features.shape[-2:] == (final, final) == (final_map_size(size, *stem),) * 2
    assert logits.shape == (1, NUM_CLASSES)
    # the standard stem at 28 px: the degenerate 1x1 map this option exists for
    with torch.no_grad():
        assert _model("small_resnet")(torch.randn(1, 3, 28, 28))[0].shape[-2:] == (1, 1)


def test_stem_options_change_map_sizes_not_weights() -> None:
    standard = create_model("small_resnet", NUM_CLASSES)
    light = create_model("small_resnet", NUM_CLASSES, stem_stride=1, stem_pool=False)
    assert {k: v.shape for k, v in standard.state_dict().items()} == {
        k: v.shape for k, v in light.state_dict().items()}
    assert not any(isinstance(m, nn.MaxPool2d) for m in light.modules())
    with torch.no_grad():
        taps = light.eval().taps(torch.randn(1, 3, 32, 32))
    assert [taps[k].shape[-1] for k in ("stem", "layer1", "layer2", "layer3", "layer4")] == [
        32, 32, 16, 8, 4]
    with pytest.raises(RecipeError, match="stem_stride"):
        create_model("small_resnet", NUM_CLASSES, stem_stride=3)
    with pytest.raises(RecipeError, match="input_size"):
        create_model("small_resnet", NUM_CLASSES, input_size=0)
