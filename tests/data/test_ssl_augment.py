"""SSLAugment (Table S1 of More From Less) and independent per-view augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.data import PairedViewDataset, ResolutionView, SSLAugment, scan_folders
from medistill.errors import RecipeError

pytestmark = pytest.mark.usefixtures("single_thread")

OFF = dict(p_crop=0.0, p_noise=0.0, p_rotate=0.0, p_solarize=0.0, p_jitter=0.0, flip=False)


def _image(seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((3, size, size))).float()


def _params(aug: SSLAugment, n: int = 2000) -> list[dict]:
    return [aug.sample_params(np.random.default_rng([7, i])) for i in range(n)]


def test_everything_off_is_the_identity() -> None:
    aug = SSLAugment(**OFF)
    x = _image()
    assert torch.equal(aug.apply(x, aug.sample_params(np.random.default_rng(0))), x)


def test_probabilities_follow_table_s1() -> None:
    params = _params(SSLAugment())
    rate = {
        "crop": np.mean([p["crop"] is not None for p in params]),
        "noise": np.mean([p["noise_seed"] is not None for p in params]),
        "rotate": np.mean([p["rot"] != 0 for p in params]),
        "solarize": np.mean([p["solarize"] for p in params]),
        "jitter": np.mean([p["jitter"] is not None for p in params]),
        "hflip": np.mean([p["hflip"] for p in params]),
    }
    expected = {"crop": 1.0, "noise": 0.3, "rotate": 0.4, "solarize": 0.3, "jitter": 1.0,
                "hflip": 0.5}
    for name, p in expected.items():
        assert abs(rate[name] - p) < 0.04, (name, rate[name])


def test_crop_keeps_75_to_100_percent_of_the_area() -> None:
    for p in _params(SSLAugment(), 500):
        fh, fw, top, left = p["crop"]
        assert 0.75 - 1e-9 <= fh * fw <= 1.0 + 1e-9 or fh == 1.0 or fw == 1.0
        assert 0 <= top <= 1 - fh and 0 <= left <= 1 - fw


def test_crop_is_a_resized_window() -> None:
    aug = SSLAugment(**OFF)
    x = torch.arange(16.0).view(1, 4, 4).repeat(3, 1, 1) / 16
    p = aug.sample_params(np.random.default_rng(0)) | {"crop": (0.5, 0.5, 0.5, 0.5)}
    out = aug.apply(x, p)
    # the bottom-right 2x2 window, upsampled x2 (bilinear, align_corners=False) to 4x4
    window = x[:, 2:, 2:]
    expected = torch.nn.functional.interpolate(window[None], size=(4, 4), mode="bilinear",
                                               align_corners=False)[0]
    assert out.shape == x.shape
    assert torch.allclose(out, expected)


def test_solarize_inverts_bright_pixels_only() -> None:
    aug = SSLAugment(**OFF)
    x = torch.tensor([0.1, 0.49, 0.5, 0.9]).view(1, 1, 4).repeat(3, 1, 1)
    p = aug.sample_params(np.random.default_rng(0)) | {"solarize": True}
    assert torch.allclose(aug.apply(x, p)[0, 0], torch.tensor([0.1, 0.49, 0.5, 0.1]))


def test_rotation_and_noise_are_deterministic_given_params() -> None:
    aug = SSLAugment(**OFF, noise_std=0.1)
    x = _image()
    p = aug.sample_params(np.random.default_rng(0)) | {"rot": 1, "noise_seed": 3}
    a, b = aug.apply(x, p), aug.apply(x, p)
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.rot90(x, 1, dims=(-2, -1)))
    assert (a - torch.rot90(x, 1, dims=(-2, -1))).abs().mean() < 0.15


def test_bad_probability_is_refused() -> None:
    with pytest.raises(RecipeError, match="p_noise"):
        SSLAugment(p_noise=1.5)


def test_independent_views_differ_shared_views_agree(tiny_dataset) -> None:
    samples = scan_folders(tiny_dataset.root, "train").samples
    views = {"a": ResolutionView(1), "b": ResolutionView(1)}
    norm = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    shared = PairedViewDataset(samples, views, augment=SSLAugment(), **norm)
    independent = PairedViewDataset(samples, views, augment=SSLAugment(),
                                    independent_views=True, **norm)
    for i in range(3):
        s, d = shared[i]["views"], independent[i]["views"]
        assert torch.equal(s["a"], s["b"])
        assert not torch.equal(d["a"], d["b"])
        assert torch.equal(d["a"], s["a"])  # the first view keeps the per-sample draw
        assert torch.equal(independent[i]["views"]["b"], d["b"])  # deterministic
