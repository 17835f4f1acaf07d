"""kd.teacher_replay in the resolution recipe: off by default (nothing changes), wired when on."""

from __future__ import annotations

import pytest
import torch

from medistill.data import PairedViewDataset, ResolutionView, SampleList
from medistill.data.tensor_views import TensorViewDataset
from medistill.engine.trainer import Trainer
from medistill.errors import RecipeError
from medistill.methods import ResolutionKD
from medistill.models import create_model
from medistill.pipelines.datasets import make_augment, make_dataset
from medistill.pipelines.resolution import ResolutionPipeline

from .test_resolution import tiny_recipe

pytestmark = pytest.mark.usefixtures("single_thread")
N_IMAGES = 12


def _kd() -> ResolutionKD:
    torch.manual_seed(0)
    teacher = create_model("small_resnet", 4)
    return ResolutionKD(teacher, create_model("small_resnet", 4, input_size=28))


def _pipeline(tmp_path, *extra: str) -> tuple[ResolutionPipeline, SampleList]:
    pipe = ResolutionPipeline(tiny_recipe("runs=[kd]", "train.diag_every=0", *extra), tmp_path)
    pipe._load_data()
    pipe.val_samples = SampleList(pipe.val_samples.samples[:8], pipe.classes)  # kept fast
    return pipe, SampleList(pipe.train_samples.samples[:N_IMAGES], pipe.classes)


PAIR = {"teacher": ResolutionView(4), "student": ResolutionView(8)}


def test_without_replay_kd_trains_exactly_as_before(tmp_path, monkeypatch) -> None:
    """The default recipe (no kd.teacher_replay) trains on the per-sample dataset with the
    teacher run every step: the same weights, bit for bit, as those components by hand."""
    pipe, subset = _pipeline(tmp_path)
    assert pipe.r.kd.teacher_replay is None and pipe.r.augment.enabled
    seen = []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(type(self.train_set)), fit(self, resume))[1])
    cfg = pipe.r.stage_train("kd", 0)
    method = _kd()
    pipe._train("kd", method, PAIR, subset, cfg, pipe._meta(pipe.r.student, 8))
    assert seen == [PairedViewDataset] and method.teacher_cache is None
    by_hand = _kd()
    train = make_dataset(subset, PAIR, pipe.r.data, pipe.norm, make_augment(pipe.r.augment),
                         cfg.seed)
    val = make_dataset(pipe.val_samples, {"student": PAIR["student"]}, pipe.r.data, pipe.norm)
    Trainer(by_hand, train, val, cfg.model_copy(update={"progress": False}),
            tmp_path / "by_hand", num_classes=4).fit()
    for (k, a), b in zip(method.student.state_dict().items(),
                         by_hand.student.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("fill", ["upfront", "lazy", "auto"])
def test_replay_fills_once_and_serves_every_kd_run(tmp_path, monkeypatch, fill) -> None:
    """Upfront: the fill runs the teacher on every (image, draw) before training, never in
    it. Lazy (and auto, the default, for this 1-epoch run of 2 draws): 1 epoch draws one pair
    per image, computed in the step; the next run (same replay, same epochs, so the same
    draws) runs no teacher at all."""
    pipe, subset = _pipeline(
        tmp_path, f"kd.teacher_replay={{draws: 2, storage: disk, dtype: float32, fill: {fill}}}")
    assert pipe.r.kd.teacher_replay.resolved_fill(1) == ("upfront" if fill == "upfront"
                                                         else "lazy")
    cfg = pipe.r.stage_train("kd", 0)
    calls = []
    forward = ResolutionKD.teacher_forward
    monkeypatch.setattr(ResolutionKD, "teacher_forward",
                        lambda self, x: (calls.append(len(x)), forward(self, x))[1])
    seen = []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(self.train_set), fit(self, resume))[1])
    meta = pipe._meta(pipe.r.student, 8)
    assert cfg.epochs == 1
    kd = _kd()
    pipe._train("a/kd", kd, PAIR, subset, cfg, meta)
    first = sum(calls)
    # upfront: 2 draws per image, none while training; lazy: one draw per image (one step
    # of 12 rows, 3 teacher chunks of 4)
    assert first == (2 * N_IMAGES if fill == "upfront" else N_IMAGES)
    pipe._train("b/kd", _kd(), PAIR, subset, cfg, meta)  # e.g. the next student factor
    replay = seen[0].replay
    stored = int(replay.cache.filled.sum())
    if fill == "upfront":
        assert sum(calls) == first and stored == 2 * N_IMAGES
    else:  # the draws depend on (seed, epoch) only: the second run replays the first's
        assert stored == N_IMAGES and sum(calls) == first == replay.teacher_rows
    assert all(isinstance(s, TensorViewDataset) and s.replay is not None for s in seen)
    assert seen[0].replay is seen[1].replay
    # the teacher's map is stored here: not larger than two student-sized targets
    assert kd.target_size is None and sorted(replay.cache.arrays) == ["features", "logits"]
    assert [p.name for p in (tmp_path / "teacher_replay").iterdir()] == [seen[0].replay.cache.key]
    assert (tmp_path / "a/kd/log.csv").is_file() and (tmp_path / "b/kd/best.pt").is_file()


def test_replay_needs_augmentation_and_no_plain_cache() -> None:
    with pytest.raises(RecipeError, match="teacher_replay needs augment.enabled: true"):
        tiny_recipe("kd.teacher_replay={draws: 4}", "augment.enabled=false")
    with pytest.raises(RecipeError, match="cache_teacher"):
        tiny_recipe("kd.teacher_replay={draws: 4}", "kd.cache_teacher=memory")
    with pytest.raises(RecipeError, match="draws"):
        tiny_recipe("kd.teacher_replay={draws: 0}")


@pytest.mark.parametrize("factors", ["[4]", "[2, 4]"])
def test_the_replay_stores_pixel_targets_only_when_every_factor_shares_them(tmp_path,
                                                                            factors) -> None:
    """One student factor (14 px: a 2 x 2 student map): the two 2 x 2 targets, smaller than
    the 56 px teacher's 4 x 4 map; with a 28 px factor too (its 4 x 4 map: no smaller targets)
    the teacher's map is stored, so that one replay serves both factors' runs."""
    pipe = ResolutionPipeline(tiny_recipe(f"student_factors={factors}"), tmp_path)
    pipe._load_data()
    torch.manual_seed(0)
    kd = ResolutionKD(create_model("small_resnet", 4, input_size=56),
                      create_model("small_resnet", 4, input_size=16))
    views = {"teacher": ResolutionView(4), "student": ResolutionView(16)}  # 56 / 14 px
    key = pipe._replay_targets(kd, pipe.train_samples, views)
    x = make_dataset(pipe.train_samples, views, pipe.r.data, pipe.norm)[0]["views"]["teacher"]
    stored = kd.teacher_forward(x[None])
    if factors == "[4]":
        assert key == {"size": (2, 2), "resize": ["maxpool", "bicubic"]}
        assert set(stored) == {"logits", "target_maxpool", "target_bicubic"}
        assert stored["target_maxpool"].shape[-2:] == (2, 2)
    else:
        assert key["size"] is None and kd.target_size is None
        assert set(stored) == {"features", "logits"} and stored["features"].shape[-2:] == (4, 4)


def test_auto_fill_is_upfront_from_twice_as_many_epochs_as_draws() -> None:
    r = tiny_recipe("kd.teacher_replay={draws: 8}")
    replay = r.kd.teacher_replay
    assert replay.fill == "auto"
    assert [replay.resolved_fill(e) for e in (1, 3, 15, 16, 20)] == [
        "lazy", "lazy", "lazy", "upfront", "upfront"]
    assert replay.resolved_fill(20, processes=2) == "lazy"  # the ranks fill in parallel
    for fixed in ("lazy", "upfront"):
        chosen = tiny_recipe(f"kd.teacher_replay={{draws: 8, fill: {fixed}}}").kd.teacher_replay
        assert {chosen.resolved_fill(e) for e in (1, 20)} == {fixed}
