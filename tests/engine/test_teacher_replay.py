"""TeacherReplay (FKD): stored augmentation draws; replayed teacher outputs equal online ones."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image, write_png

from medistill.config import TrainConfig
from medistill.data import Augment, PairedViewDataset, ResolutionView, Sample
from medistill.data.tensor_views import TensorViewDataset, decode_views
from medistill.data.transforms import augment_batch
from medistill.engine.teacher_cache import (
    TeacherReplay,
    dihedral_elements,
    replay_dataset,
    replay_params,
)
from medistill.engine.trainer import Trainer
from medistill.errors import TrainingError
from medistill.methods import ResolutionKD
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")

DIHEDRAL = Augment(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
COLOUR = Augment(flip=False, rotate90=False, brightness=0.3, contrast=0.3, saturation=0.3,
                 hue=0.1)
BOTH = Augment(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)


def source(tmp_path: Path, augment: Augment | None, n: int = 10) -> PairedViewDataset:
    samples = [Sample(write_png(tmp_path / f"{i}.png", random_image(i, 32)), i % 2)
               for i in range(n)]
    views = {"teacher": ResolutionView(1), "student": ResolutionView(2)}
    return PairedViewDataset(samples, views, mean=(0.6, 0.5, 0.4), std=(0.2, 0.25, 0.3),
                             augment=augment, seed=3)


def kd_method() -> ResolutionKD:
    torch.manual_seed(0)
    teacher = create_model("small_resnet", 2)
    student = create_model("small_resnet", 2, input_size=16)
    return ResolutionKD(teacher, student)


class Forward:
    """The teacher forward, counting the images it sees."""

    def __init__(self, method: ResolutionKD) -> None:
        self.forward, self.images = method.teacher_forward, 0

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.images += len(x)
        return self.forward(x)


def test_draws_cover_every_flip_and_rotation_exactly() -> None:
    params = replay_params(BOTH, 5, 16, seed=1)
    assert params["hflip"].shape == (5, 16)
    for i in range(5):
        seen = list(zip(params["hflip"][i].tolist(), params["vflip"][i].tolist(),
                        params["rot"][i].tolist(), strict=True))
        assert sorted(seen[:8]) == sorted(dihedral_elements(True, True))  # all 8, once each
        assert sorted(seen) == sorted(dihedral_elements(True, True) * 2)  # 16 draws: each twice
    assert len(set(params["brightness"].flatten().tolist())) == 80  # colour: fresh every draw
    assert params["brightness"].min() >= 0.7 and params["brightness"].max() <= 1.3
    assert params["hue"].abs().max() <= 0.1
    again = replay_params(BOTH, 5, 16, seed=1)
    assert all(torch.equal(params[k], again[k]) for k in params)
    assert not torch.equal(params["hue"], replay_params(BOTH, 5, 16, seed=2)["hue"])
    assert len(dihedral_elements(True, False)) == len(dihedral_elements(False, True)) == 4
    assert dihedral_elements(False, False) == [(False, False, 0)]


def test_each_epoch_draws_one_stored_augmentation_per_sample() -> None:
    replay = TeacherReplay(BOTH, 200, 8, seed=0, key="k")
    one, two = replay.draws(1), replay.draws(2)
    assert one.shape == (200,) and 0 <= int(one.min()) and int(one.max()) == 7
    assert torch.equal(one, replay.draws(1)) and not torch.equal(one, two)
    with pytest.raises(TrainingError, match="before fill"):
        replay.outputs(torch.tensor([0]), torch.tensor([0]))


def _online_batch(src: PairedViewDataset, replay: TeacherReplay, idx: torch.Tensor,
                  draws: torch.Tensor) -> dict:
    """What an online KD step sees with the replay's augmentation of these draws: both views
    augmented with the same parameters; the teacher runs on its view."""
    params = replay.params_at(idx, draws)
    views = {name: augment_batch(u8, params, src.mean, src.std)
             for name, u8 in decode_views(src, ["teacher", "student"], idx.tolist()).items()}
    return {"views": views, "index": idx, "label": torch.tensor([src.samples[i].label
                                                                 for i in idx.tolist()])}


def _step(method: ResolutionKD, batch: dict) -> tuple[dict, list[torch.Tensor]]:
    method.zero_grad(set_to_none=True)
    out = method.training_step(batch)
    out["loss"].backward()
    return ({k: v.detach().clone() for k, v in out.items()},
            [p.grad.clone() for p in method.student.parameters()])


@pytest.mark.parametrize("augment", [DIHEDRAL, COLOUR, BOTH], ids=["dihedral", "colour", "both"])
def test_a_replayed_step_equals_the_online_step_bit_for_bit(tmp_path, augment) -> None:
    src, method = source(tmp_path, augment), kd_method()
    replay = TeacherReplay(augment, len(src), 8, src.seed, "k", dtype="float32")
    forward = Forward(method)
    assert replay.fill(forward, src, "teacher", batch_size=4) == 80 == forward.images
    assert replay.filled
    served = TensorViewDataset(src, replay)
    assert set(served.views) == {"student"}  # the teacher's view is not even decoded
    served.set_epoch(2)
    idx = torch.tensor([7, 0, 3, 9, 4, 1])  # another composition than the fill's batches
    draws = replay.draws(2)[idx]
    params = replay.params_at(idx, draws)
    if augment.rotate90:  # the check is not vacuous: real flips/rotations and colour changes
        assert params["rot"].any() and params["hflip"].any()
    if augment.hue:
        assert (params["hue"] != 0).all() and (params["brightness"] != 1).all()
    online, online_grads = _step(method, _online_batch(src, replay, idx, draws))
    replayed_batch = served.__getitems__(idx.tolist())
    assert "teacher" not in replayed_batch["views"]
    replayed, replayed_grads = _step(method, replayed_batch)
    assert online.keys() == replayed.keys()
    for k in online:
        assert torch.equal(online[k], replayed[k]), k
    for a, b in zip(online_grads, replayed_grads, strict=True):
        assert torch.equal(a, b)
    assert forward.images == 80  # no teacher forward in the replayed step


def test_float16_replays_the_online_outputs_rounded(tmp_path) -> None:
    src, method = source(tmp_path, BOTH, n=6), kd_method()
    replay = TeacherReplay(BOTH, len(src), 4, src.seed, "k", dtype="float16")
    replay.fill(method.teacher_forward, src, "teacher")
    idx, draws = torch.arange(6), torch.tensor([0, 1, 2, 3, 0, 1])
    online = method.teacher_forward(_online_batch(src, replay, idx, draws)["views"]["teacher"])
    stored = replay.outputs(idx, draws)
    for name, value in online.items():
        assert stored[name].dtype == torch.float32
        assert torch.equal(stored[name], value.half().float()), name
        assert not torch.equal(stored[name], value)


def test_a_disk_replay_is_reused_and_an_interrupted_fill_completed(tmp_path) -> None:
    src, method = source(tmp_path / "img", BOTH, n=6), kd_method()
    forward = Forward(method)
    replay = TeacherReplay(BOTH, len(src), 4, src.seed, "key", tmp_path / "c")
    replay.cache.get_or_compute(torch.tensor([0, 1, 2, 3]), lambda: forward(  # sample 0 only
        augment_batch(decode_views(src, ["teacher"], [0] * 4)["teacher"],
                      replay.params_at(torch.zeros(4, dtype=torch.long), torch.arange(4)),
                      src.mean, src.std)))
    replay.cache.flush()
    reopened = TeacherReplay(BOTH, len(src), 4, src.seed, "key", tmp_path / "c")
    assert reopened.fill(forward, src, "teacher") == 5 * 4  # samples 1..5, 4 draws each
    again = TeacherReplay(BOTH, len(src), 4, src.seed, "key", tmp_path / "c")
    assert again.filled and again.fill(forward, src, "teacher") == 0
    fresh = TeacherReplay(BOTH, len(src), 4, src.seed, "key", dtype="float16")
    fresh.fill(method.teacher_forward, src, "teacher")
    idx, draws = torch.arange(6), torch.tensor([3, 2, 1, 0, 3, 2])
    for name, value in fresh.outputs(idx, draws).items():
        assert torch.equal(again.outputs(idx, draws)[name], value)


class OnlineWithReplayDraws(TensorViewDataset):
    """Online KD (the teacher runs every step) on exactly the draws a replay serves."""

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        draws = self.replay.draws(self.epoch)[idx]
        return _online_batch(self.src, self.replay, idx, draws)


def test_training_with_replay_equals_online_training_on_the_same_draws(tmp_path) -> None:
    """Three epochs through the Trainer: identical student weights online, with the upfront
    fill and with the lazy fill; the upfront run's teacher never runs in training, the lazy
    run's only on the (image, draw) pairs drawn for the first time (fewer than online's 3
    passes, none in an epoch whose pairs were all seen)."""
    src = source(tmp_path / "img", BOTH, n=12)
    cfg = TrainConfig(epochs=3, batch_size=5, progress=False, tensorboard=False, diag_every=0)
    finals = []
    for mode in ("online", "upfront", "lazy"):
        method = kd_method()
        forward = Forward(method)
        train = replay_dataset(method.teacher, forward, src, "teacher", 8, dtype="float32",
                               batch_size=4, fill="lazy" if mode == "lazy" else "upfront",
                               view=src.views["teacher"])
        if mode == "online":
            online = OnlineWithReplayDraws.__new__(OnlineWithReplayDraws)
            online.__dict__.update(train.__dict__, src=src)
            train = online
        filled = forward.images
        in_step = method.teacher_forward = Forward(method)  # counts the step's teacher runs
        Trainer(method, train, None, cfg, tmp_path / mode).fit()
        assert forward.images == filled == (0 if mode == "lazy" else 12 * 8)
        if mode == "lazy":
            drawn = {(i, int(train.replay.draws(e)[i])) for e in (1, 2, 3) for i in range(12)}
            # each pair computed once, fewer than online's 3 x 12 (the teacher's rows include
            # the padding of each step's last chunk: < LAZY_CHUNK per step, 9 steps)
            assert int(np.asarray(train.replay.cache.filled).sum()) == len(drawn) < 3 * 12
            assert in_step.images == train.replay.teacher_rows < len(drawn) + 4 * 9
        elif mode == "online":
            assert in_step.images == 3 * 12
        finals.append(method.student.state_dict())
    for j, other in enumerate(finals[1:]):
        for (k, a), b in zip(finals[0].items(), other.values(), strict=True):
            assert torch.equal(a, b), (j, k, (a.float() - b.float()).abs().max())


def test_replay_needs_augmentation_and_square_views_for_rotations(tmp_path) -> None:
    method = kd_method()
    with pytest.raises(TrainingError, match="augmented"):
        replay_dataset(method.teacher, method.teacher_forward, source(tmp_path, None),
                       "teacher", 2)
    x = torch.zeros(2, 3, 4, 6, dtype=torch.uint8)
    params = replay_params(BOTH, 2, 8, 0)
    p = {k: v[:, 1] for k, v in params.items()}
    p["rot"] = torch.tensor([1, 0])
    with pytest.raises(ValueError, match="square"):
        augment_batch(x, p, torch.zeros(3), torch.ones(3))
    assert np.isfinite(augment_batch(x, {**p, "rot": torch.tensor([2, 0])}, torch.zeros(3),
                                     torch.ones(3)).numpy()).all()


def test_stored_pixel_targets_step_exactly_as_the_teacher_map(tmp_path) -> None:
    """``use_targets``: the replay stores the pixel loss's resized targets (two 2 x 2 maps
    instead of the teacher's 4 x 4: half the values here, 1/8 for 112 -> 28 px) and the
    replayed step equals the online step on the teacher's map bit for bit."""
    src = source(tmp_path, BOTH)
    torch.manual_seed(0)
    method = ResolutionKD(create_model("small_resnet", 2, input_size=32),
                          create_model("small_resnet", 2, input_size=16))
    online_method = copy.deepcopy(method)
    views = src[0]["views"]
    key = method.use_targets([views["student"]], views["teacher"])
    assert key == {"size": (2, 2), "resize": ["maxpool", "bicubic"]}
    replay = TeacherReplay(BOTH, len(src), 4, src.seed, "k", dtype="float32")
    replay.fill(method.teacher_forward, src, "teacher", batch_size=4)
    idx = torch.tensor([7, 0, 3, 9, 4, 1])
    draws = replay.draws(2)[idx]
    batch = _online_batch(src, replay, idx, draws)
    t_map = online_method.teacher_forward(batch["views"]["teacher"])["features"]
    assert t_map.shape[-2:] == (4, 4)  # the resize is not the identity
    stored = replay.outputs(idx, draws)
    c = t_map.shape[1]
    assert {k: tuple(v.shape) for k, v in stored.items()} == {
        "logits": (6, 2), "target_maxpool": (6, c, 2, 2), "target_bicubic": (6, c, 2, 2)}
    assert torch.equal(stored["target_maxpool"], F.adaptive_max_pool2d(t_map, 2))
    online, online_grads = _step(online_method, batch)
    served = TensorViewDataset(src, replay)
    served.set_epoch(2)
    replayed, replayed_grads = _step(method, served.__getitems__(idx.tolist()))
    assert online.keys() == replayed.keys() and online["pixel"] > 0
    for k in online:
        assert torch.equal(online[k], replayed[k]), k
    for a, b in zip(online_grads, replayed_grads, strict=True):
        assert torch.equal(a, b)


def test_the_teacher_map_is_stored_when_smaller_and_no_map_without_the_pixel_term(
        tmp_path) -> None:
    src = source(tmp_path, BOTH, n=4)
    views = src[0]["views"]
    method = kd_method()  # teacher map 1 x 1 at 32 px, student map 2 x 2 at 16 px
    assert method.use_targets([views["student"]], views["teacher"])["size"] is None
    assert set(method.teacher_forward(views["teacher"][None])) == {"features", "logits"}
    torch.manual_seed(0)
    no_pixel = ResolutionKD(create_model("small_resnet", 2),
                            create_model("small_resnet", 2, input_size=16), pixel_weight=0.0)
    assert no_pixel.use_targets([views["student"]], views["teacher"]) == {"size": (2, 2),
                                                                          "resize": []}
    assert set(no_pixel.teacher_forward(views["teacher"][None])) == {"logits"}
