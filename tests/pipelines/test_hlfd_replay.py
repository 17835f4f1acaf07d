"""kd.teacher_replay in the HLFD recipe: the frozen teacher's taps stored for K paired
(image + mask) augmentation draws per image and replayed; off by default."""

from __future__ import annotations

import pytest
import torch
from replay_fixtures import Counted, assert_replayed_step_is_online, online_and_replayed
from seg_fixtures import write_seg_dataset

from medistill.data.seg_replay import SegReplayDataset
from medistill.engine.trainer import Trainer
from medistill.errors import RecipeError
from medistill.methods import SegmentationKD
from medistill.methods.hlfd import PRESETS
from medistill.pipelines.segmentation import SegmentationPipeline

from .test_hlfd_pipeline import tiny

pytestmark = pytest.mark.usefixtures("single_thread")
N_IMAGES = 6
REPLAY = "kd.teacher_replay={draws: 3, dtype: float32}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_seg_dataset(tmp_path_factory.mktemp("segr") / "data",
                             {"train": N_IMAGES, "testB": 2, "testA": 2}, classes=3)


def _pipeline(root, tmp_path, *extra: str) -> SegmentationPipeline:
    pipe = SegmentationPipeline(tiny(root, "runs=[hlfd]", *extra), tmp_path, progress=False)
    pipe._load_data()
    return pipe


def _kd(pipe: SegmentationPipeline, terms=PRESETS["hlfd"]) -> SegmentationKD:
    r = pipe.r
    return SegmentationKD(pipe._model(r.teacher, 0), pipe._model(r.student, 1), terms)


def test_a_replayed_hlfd_step_equals_the_online_step_bit_for_bit(root, tmp_path,
                                                                  monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path, REPLAY)
    cfg = pipe.r.stage_train("hlfd", 0)
    online_kd, method = _kd(pipe), _kd(pipe)
    counted = Counted(monkeypatch, SegmentationKD)
    served = pipe._replay_set(method, pipe._dataset(pipe.train_items, True, cfg.seed),
                              pipe.r.kd.teacher_replay, cfg)
    assert isinstance(served, SegReplayDataset) and served.replay.filled
    assert counted.images == 3 * N_IMAGES  # the fill: every draw of every image, once
    stored = served.replay.outputs(torch.tensor([0]), torch.tensor([0]))
    assert set(stored) == set(method.teacher_taps()) and "logits" in stored
    served.set_epoch(1)
    # another composition than the fill's batches (0-3, 4-5)
    online_batch, replayed_batch, params = online_and_replayed(served, 1, [3, 0, 5, 1])
    assert params["rot"].any() and (params["angle"] != 0).all() and (params["crop"] < 1).all()
    assert "mask" in online_batch
    online, _ = assert_replayed_step_is_online(online_kd, method, online_batch, replayed_batch,
                                               counted)
    assert {"ufd", "ifd", "upd", "ipd"} <= set(online[0])

def test_replay_fills_once_and_trains_without_the_teacher(root, tmp_path, monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path, "kd.teacher_replay={draws: 2, storage: disk}")
    counted, seen = Counted(monkeypatch, SegmentationKD), []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(self.train_set), fit(self, resume))[1])
    cfg, meta = pipe.r.stage_train("hlfd", 0), pipe._meta(pipe.r.student)
    pipe._train("a/hlfd", _kd(pipe), cfg, meta)
    assert counted.images == 2 * N_IMAGES  # the fill only: one epoch trained without it
    pipe._train("b/hlfd", _kd(pipe), cfg, meta)  # same teacher, taps and images: reused
    assert counted.images == 2 * N_IMAGES
    assert all(isinstance(s, SegReplayDataset) for s in seen)
    assert seen[0].replay is seen[1].replay and seen[0].replay.cache.dtype.__name__ == "float16"
    assert [p.name for p in (tmp_path / "teacher_replay").iterdir()] == [seen[0].replay.cache.key]
    assert (tmp_path / "b/hlfd/best.pt").is_file()
    pipe._train("c/logit", _kd(pipe, PRESETS["logit_kd"]), cfg, meta)  # other taps: refilled
    assert counted.images == 4 * N_IMAGES and seen[2].replay is not seen[0].replay
    assert set(seen[2].replay.outputs(torch.tensor([0]), torch.tensor([1]))) == {"logits"}


def test_without_replay_the_teacher_runs_every_step(root, tmp_path, monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path)
    assert pipe.r.kd.teacher_replay is None
    counted, seen = Counted(monkeypatch, SegmentationKD), []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(type(self.train_set).__name__), fit(self, resume))[1])
    pipe._train("hlfd", _kd(pipe), pipe.r.stage_train("hlfd", 0), pipe._meta(pipe.r.student))
    assert seen == ["SegmentationDataset"] and counted.images == N_IMAGES


def test_replay_needs_augmentation(root) -> None:
    with pytest.raises(RecipeError, match="teacher_replay needs augment.enabled: true"):
        tiny(root, REPLAY, "augment.enabled=false")
    with pytest.raises(RecipeError, match="draws"):
        tiny(root, "kd.teacher_replay={draws: 0}")
