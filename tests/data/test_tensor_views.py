"""Batched tensor augmentation and TensorViewDataset against the per-sample path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image, write_png
from torch.utils.data import DataLoader

from medistill.data import Augment, PairedViewDataset, ResolutionView, Sample
from medistill.data.tensor_views import TensorViewDataset
from medistill.data.transforms import augment_batch, dihedral_batch, stack_params, to_tensor

pytestmark = pytest.mark.usefixtures("single_thread")

MEAN, STD = torch.tensor([0.6, 0.5, 0.4]), torch.tensor([0.2, 0.25, 0.3])


def test_batched_flips_and_rotations_equal_the_per_sample_ones_exactly() -> None:
    x = torch.rand(16, 3, 5, 5)
    combos = [(h, v, r) for h in (False, True) for v in (False, True) for r in range(4)]
    hflip, vflip, rot = (torch.tensor(c) for c in zip(*combos, strict=True))
    out = dihedral_batch(x, hflip, vflip, rot)
    neutral = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
    for i, (h, v, r) in enumerate(combos):
        one = Augment.apply(x[i, :1], {"hflip": h, "vflip": v, "rot": r, **neutral})
        assert torch.equal(out[i, :1], one), (h, v, r)
    assert torch.equal(out[0], x[0])


def test_batched_augmentation_matches_the_per_sample_path() -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (24, 3, 9, 9), dtype=np.uint8))
    augment = Augment(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    params = [augment.sample_params(np.random.default_rng(i)) for i in range(24)]
    params[0]["hue"] = 0.0  # a sample without hue rotation in the same batch
    batch = augment_batch(images, stack_params(params), MEAN, STD)
    for i in range(24):
        x = Augment.apply(to_tensor(images[i].permute(1, 2, 0).numpy()), params[i])
        assert torch.allclose(batch[i], (x - MEAN.view(3, 1, 1)) / STD.view(3, 1, 1),
                              atol=1e-5), i
    assert torch.equal(augment_batch(images, None, MEAN, STD)[3],
                       (to_tensor(images[3].permute(1, 2, 0).numpy()) - MEAN.view(3, 1, 1))
                       / STD.view(3, 1, 1))


def test_tensor_views_serve_the_per_sample_datasets_batches(tmp_path) -> None:
    samples = [Sample(write_png(tmp_path / f"{i}.png", random_image(i, 16)), i % 3)
               for i in range(7)]
    views = {"teacher": ResolutionView(1), "student": ResolutionView(2)}
    augment = Augment(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    per_sample = PairedViewDataset(samples, views, MEAN.tolist(), STD.tolist(), augment, seed=5)
    batched = TensorViewDataset(per_sample)
    assert batched.views["student"].dtype == torch.uint8
    assert batched.views["student"].shape == (7, 3, 8, 8)
    for epoch in (1, 2):
        per_sample.set_epoch(epoch)
        batched.set_epoch(epoch)
        loader = DataLoader(batched, batch_size=4, collate_fn=batched.collate_fn)
        got = list(loader)
        assert [b["index"].tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6]]
        for b in got:
            for j, i in enumerate(b["index"].tolist()):
                item = per_sample[i]
                assert int(b["label"][j]) == item["label"]
                for name in views:  # the same augmentation parameters, up to float rounding
                    assert torch.allclose(b["views"][name][j], item["views"][name],
                                          atol=1e-5), (epoch, i, name)
    assert torch.allclose(batched[2]["views"]["teacher"], per_sample[2]["views"]["teacher"],
                          atol=1e-5)


def test_batched_augmentation_permutes_uint8_and_normalises_in_place_bit_for_bit() -> None:
    """The hot-loop form of augment_batch (flips/rotations on the uint8 pixels, in-place
    normalisation) equals the float form (to float, permute, jitter, (x - mean) / std)."""
    from medistill.data.transforms import color_jitter_batch

    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (16, 3, 8, 8), dtype=np.uint8))
    augment = Augment(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    p = stack_params([augment.sample_params(np.random.default_rng(i)) for i in range(16)])
    assert p["hflip"].any() and p["rot"].any()
    x = dihedral_batch(images.float() / 255.0, p["hflip"], p["vflip"], p["rot"])
    x = color_jitter_batch(x, p["brightness"], p["contrast"], p["saturation"], p["hue"])
    reference = (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)
    before = images.clone()
    assert torch.equal(augment_batch(images, p, MEAN, STD), reference)
    assert torch.equal(images, before)  # the input is not touched
