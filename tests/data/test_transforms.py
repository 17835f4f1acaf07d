"""ResolutionView (Lanczos degradation from the original) and the shared Augment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medistill.data import Augment, ResolutionView, lanczos_resize
from medistill.data.transforms import degraded_size, to_tensor
from medistill.errors import RecipeError

pytestmark = pytest.mark.usefixtures("single_thread")

NEUTRAL = {
    "hflip": False, "vflip": False, "rot": 0,
    "brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0,
}


def noise_image(size: int = 64, seed: int = 0, width: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, width or size, 3), dtype=np.uint8)


def smooth_image(size: int = 32) -> np.ndarray:
    """Mid-range gradients: no Lanczos overshoot, no clipping under mild colour jitter."""
    yy, xx = np.mgrid[0:size, 0:size] * (32 / size)
    return np.stack([64 + 4 * xx, 64 + 4 * yy, 128 + 2 * (xx - yy)], -1).astype(np.uint8)


def pil_lanczos(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.permute(1, 2, 0) * 255).round().byte().numpy()


# --------------------------------------------------------------------------- ResolutionView


def test_factor_4_on_64px_gives_16px() -> None:
    out = ResolutionView(factor=4)(noise_image(64))
    assert out.shape == (16, 16, 3)
    assert out.dtype == np.uint8


def test_non_square_and_non_integer_factors() -> None:
    assert ResolutionView(factor=4)(noise_image(64, width=48)).shape == (16, 12, 3)
    # 64 / 3 = 21.33 -> 21 px
    assert ResolutionView(factor=3)(noise_image(64)).shape == (21, 21, 3)
    assert degraded_size(64, 64, 1000) == (1, 1)


def test_factor_4_equals_pil_lanczos_of_the_original() -> None:
    image = noise_image(64)
    np.testing.assert_array_equal(ResolutionView(factor=4)(image), pil_lanczos(image, 16))


def test_factor_8_is_direct_lanczos_not_three_composed_halvings() -> None:
    image = noise_image(64)
    view = ResolutionView(factor=8)(image)
    np.testing.assert_array_equal(view, pil_lanczos(image, 8))
    composed = pil_lanczos(pil_lanczos(pil_lanczos(image, 32), 16), 8)
    assert composed.shape == view.shape
    assert np.abs(composed.astype(int) - view.astype(int)).max() > 0


def test_factor_1_returns_the_original() -> None:
    image = noise_image(32)
    np.testing.assert_array_equal(ResolutionView()(image), image)


def test_upsample_returns_original_size() -> None:
    image = noise_image(64)
    view = ResolutionView(factor=4, upsample=True)
    out = view(image)
    assert out.shape == image.shape
    assert view.size_for(64, 64) == (64, 64)
    assert ResolutionView(factor=4).size_for(64, 64) == (16, 16)
    # information was lost: it is not the original
    assert np.abs(out.astype(int) - image.astype(int)).max() > 0


def test_mpp_sets_factor_from_source_mpp() -> None:
    view = ResolutionView(mpp=2.0, source_mpp=0.5)
    assert view.factor == pytest.approx(4.0)
    assert view(noise_image(64)).shape == (16, 16, 3)


def test_mpp_without_source_mpp_raises() -> None:
    with pytest.raises(RecipeError, match="source_mpp"):
        ResolutionView(mpp=2.0)


@pytest.mark.parametrize("factor", [0.5, 0.0, -2.0])
def test_factor_below_one_raises(factor: float) -> None:
    with pytest.raises(RecipeError, match="factor"):
        ResolutionView(factor=factor)


def test_mpp_finer_than_source_raises() -> None:
    with pytest.raises(RecipeError):
        ResolutionView(mpp=0.25, source_mpp=0.5)


def test_to_tensor_layout_and_range() -> None:
    image = noise_image(8)
    x = to_tensor(image)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert x[1, 2, 3].item() == pytest.approx(image[2, 3, 1] / 255)


# --------------------------------------------------------------------------- Augment


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("vflip", [False, True])
@pytest.mark.parametrize("rot", [0, 1, 2, 3])
def test_flips_and_rotations_commute_with_lanczos(hflip: bool, vflip: bool, rot: int) -> None:
    image = noise_image(32)
    params = {**NEUTRAL, "hflip": hflip, "vflip": vflip, "rot": rot}
    augment_then_resize = to_tensor(lanczos_resize(to_uint8(Augment.apply(to_tensor(image),
                                                                          params)), (8, 8)))
    resize_then_augment = Augment.apply(to_tensor(lanczos_resize(image, (8, 8))), params)
    # PIL resizes the two axes in separate passes, so a rotation may shift rounding by 1/255
    assert (augment_then_resize - resize_then_augment).abs().max().item() <= 1.5 / 255


def test_geometric_ops_are_the_expected_permutations() -> None:
    x = torch.arange(4.0).view(1, 2, 2)  # [[0, 1], [2, 3]], one channel: no colour ops
    assert Augment.apply(x, {**NEUTRAL, "hflip": True}).flatten().tolist() == [1, 0, 3, 2]
    assert Augment.apply(x, {**NEUTRAL, "vflip": True}).flatten().tolist() == [2, 3, 0, 1]
    # rot90 by one step, counter-clockwise
    assert Augment.apply(x, {**NEUTRAL, "rot": 1}).flatten().tolist() == [1, 3, 0, 2]


def test_colour_jitter_approximately_commutes_with_lanczos_on_a_smooth_image() -> None:
    image = smooth_image(32)
    augment = Augment(flip=False, rotate90=False, brightness=0.3, contrast=0.3,
                      saturation=0.3, hue=0.1)
    for seed in range(3):
        params = augment.sample_params(np.random.default_rng(seed))
        after = to_tensor(lanczos_resize(to_uint8(Augment.apply(to_tensor(image), params)),
                                         (8, 8)))
        before = Augment.apply(to_tensor(lanczos_resize(image, (8, 8))), params)
        assert (after - before).abs().max().item() < 0.015


def test_neutral_colour_jitter_is_identity() -> None:
    x = to_tensor(noise_image(16))
    assert torch.allclose(Augment.apply(x, NEUTRAL), x, atol=1e-5)


def test_hue_full_turn_is_identity() -> None:
    x = to_tensor(smooth_image(16))
    assert torch.allclose(Augment.apply(x, {**NEUTRAL, "hue": 1.0}), x, atol=1e-4)


def test_brightness_scales_pixels() -> None:
    x = torch.full((3, 4, 4), 0.4)
    out = Augment.apply(x, {**NEUTRAL, "brightness": 1.5})
    assert torch.allclose(out, torch.full_like(x, 0.6), atol=1e-6)
    # and results are clipped to [0, 1]
    assert Augment.apply(x, {**NEUTRAL, "brightness": 3.0}).max().item() == 1.0


def test_zero_saturation_gives_grey() -> None:
    x = to_tensor(noise_image(8))
    out = Augment.apply(x, {**NEUTRAL, "saturation": 0.0})
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    for c in range(3):
        assert torch.allclose(out[c], grey, atol=1e-5)


def test_sample_params_ranges_and_disabled_ops() -> None:
    augment = Augment(flip=False, rotate90=False, brightness=0.2, contrast=0.0,
                      saturation=0.1, hue=0.05)
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = augment.sample_params(rng)
        assert not p["hflip"] and not p["vflip"] and p["rot"] == 0
        assert 0.8 <= p["brightness"] <= 1.2
        assert p["contrast"] == 1.0
        assert 0.9 <= p["saturation"] <= 1.1
        assert -0.05 <= p["hue"] <= 0.05


def test_sample_params_cover_all_geometric_cases() -> None:
    rng = np.random.default_rng(0)
    seen = {(p["hflip"], p["vflip"], p["rot"])
            for p in (Augment().sample_params(rng) for _ in range(400))}
    assert len(seen) == 16
