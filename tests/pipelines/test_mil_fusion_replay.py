"""fusion.teacher_replay in the MIL fusion recipe: each round's teacher is frozen for the whole
round, so its fused maps are stored for K paired augmentation draws per image at the start of
the round and replayed; a round with the same teacher reuses the fill. Off by default."""

from __future__ import annotations

import pytest
from replay_fixtures import Counted, assert_replayed_step_is_online, online_and_replayed
from weak_fixtures import write_weak_dataset

from medistill.data.seg_replay import SegReplayDataset
from medistill.data.weak import WeakSegDataset
from medistill.engine.trainer import Trainer
from medistill.errors import RecipeError
from medistill.methods import FusionKD, MILTraining
from medistill.pipelines.mil_fusion import MILFusionPipeline

from .test_mil_fusion_pipeline import tiny

pytestmark = pytest.mark.usefixtures("single_thread")
N_IMAGES = 6
REPLAY = "fusion.teacher_replay={draws: 3, dtype: float32}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_weak_dataset(tmp_path_factory.mktemp("weakr") / "data",
                              {"train": N_IMAGES, "val": 2, "test": 2})


def _pipeline(root, tmp_path, *extra: str) -> MILFusionPipeline:
    pipe = MILFusionPipeline(tiny(root, "runs=[fusion_kd]", *extra), tmp_path, progress=False)
    pipe._load_data()
    return pipe


def _kd(pipe: MILFusionPipeline, teacher_seed: int = 0) -> FusionKD:
    return FusionKD(pipe._model(teacher_seed), pipe._model(1), mil=pipe._mil_loss(),
                    mil_weight=0.5)


def test_a_replayed_fusion_kd_step_equals_the_online_step_bit_for_bit(root, tmp_path,
                                                                      monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path, REPLAY, "augment={rotate_degrees: 15, crop_scale: 0.7}")
    cfg = pipe.r.stage_train("round", 0)
    pipe.train_set.seed = cfg.seed
    online_kd, replay_kd, counted = _kd(pipe), _kd(pipe), Counted(monkeypatch, FusionKD)
    served = pipe._replay_set(replay_kd, cfg)
    assert isinstance(served, SegReplayDataset) and served.replay.filled
    assert counted.images == 3 * N_IMAGES
    served.set_epoch(2)
    online_batch, replayed_batch, params = online_and_replayed(served, 2, [4, 1, 5, 0])
    assert (params["angle"] != 0).all() and (params["crop"] < 1).all()
    assert 0 < int(replayed_batch["label"].sum()) < 4 and "mask" in online_batch
    online, _ = assert_replayed_step_is_online(online_kd, replay_kd, online_batch,
                                               replayed_batch, counted)
    assert {"fusion_kd", "wce", "mil"} <= set(online[0])

def test_a_round_with_the_same_teacher_reuses_the_fill(root, tmp_path, monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path, "fusion.teacher_replay={draws: 2}")
    counted, seen = Counted(monkeypatch, FusionKD), []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(self.train_set), fit(self, resume))[1])
    cfg = pipe.r.stage_train("round", 0)
    teacher = MILTraining(pipe._model(0))
    pipe._train("teacher", teacher, pipe.r.stage_train("teacher", 0))  # no teacher: online
    assert counted.images == 0 and seen[0] is pipe.train_set
    pipe._train("round1", _kd(pipe), cfg)
    assert counted.images == 2 * N_IMAGES  # the fill only
    pipe._train("round2", _kd(pipe), cfg)  # the same teacher weights: the fill is reused
    assert counted.images == 2 * N_IMAGES and seen[2].replay is seen[1].replay
    pipe._train("round3", _kd(pipe, teacher_seed=5), cfg)  # role reversal: a new teacher
    assert counted.images == 4 * N_IMAGES and seen[3].replay is not seen[1].replay
    assert isinstance(seen[3].source, WeakSegDataset)


def test_replay_needs_augmentation(root) -> None:
    assert tiny(root).fusion.teacher_replay is None
    with pytest.raises(RecipeError, match="fusion.teacher_replay needs augment.enabled: true"):
        tiny(root, REPLAY, "augment.enabled=false")
