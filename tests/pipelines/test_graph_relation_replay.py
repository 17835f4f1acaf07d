"""kd.teacher_replay in the graph-relation recipe: the frozen teacher's embeddings stored for K
augmented crops per crop index and replayed; they feed the loss AND the memory bank of the
inter-image terms exactly as the online teacher's do. Off by default."""

from __future__ import annotations

import pytest
import torch
from instance_fixtures import write_instance_dataset
from replay_fixtures import Counted, assert_replayed_step_is_online, online_and_replayed

from medistill.data.instance import InstanceDataset
from medistill.data.seg_replay import SegReplayDataset
from medistill.engine.trainer import Trainer
from medistill.errors import RecipeError
from medistill.methods.graph_relation import KD_TERMS, PRESETS, GraphRelationKD
from medistill.pipelines.graph_relation import GraphRelationPipeline

from .test_graph_relation_pipeline import tiny

pytestmark = pytest.mark.usefixtures("single_thread")
N_CROPS = 6  # 3 training images x 2 crops
REPLAY = "kd.teacher_replay={draws: 3, dtype: float32}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_instance_dataset(tmp_path_factory.mktemp("instr") / "data",
                                  {"train": 3, "val": 1, "test": 1})


def _pipeline(root, tmp_path, *extra: str) -> GraphRelationPipeline:
    pipe = GraphRelationPipeline(tiny(root, "runs=[full]", *extra), tmp_path, progress=False)
    pipe._load_data()
    return pipe


def _kd(pipe: GraphRelationPipeline, terms=KD_TERMS) -> GraphRelationKD:
    r, k = pipe.r, pipe.r.kd
    return GraphRelationKD(pipe._model(r.teacher, 0), pipe._model(r.student, 1), terms,
                           k.offsets, bank_size=k.bank_size, bank_sample=k.bank_sample,
                           bank_seed=0)


def test_replayed_graph_relation_steps_equal_the_online_steps_bit_for_bit(root, tmp_path,
                                                                         monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path, REPLAY)
    cfg = pipe.r.stage_train("full", 0)
    online_kd, replay_kd = _kd(pipe), _kd(pipe)
    counted = Counted(monkeypatch, GraphRelationKD)
    served = pipe._replay_set(replay_kd, pipe._dataset(pipe.train_items, True, cfg.seed), cfg)
    assert isinstance(served, SegReplayDataset) and served.replay.filled
    assert counted.images == 3 * N_CROPS  # the fill: every draw of every crop, once
    served.set_epoch(1)
    # two steps: the second samples the memory bank the first one filled (bank_size 3 < 4)
    for idx in ([3, 0, 5, 1], [2, 4, 0, 3]):
        online_batch, replayed_batch, params = online_and_replayed(served, 1, idx)
        assert (params["top"] > 0).any() and (params["left"] > 0).any()
        assert "labels" in online_batch
        online, _ = assert_replayed_step_is_online(online_kd, replay_kd, online_batch,
                                                   replayed_batch, counted)
        assert {"agd", "igd_node", "inter_agd", "inter_igd"} <= set(online[0])
        bank_online, bank_replay = online_kd.bank.state("b."), replay_kd.bank.state("b.")
        assert bank_online.keys() == bank_replay.keys()
        for k in bank_online:
            assert torch.equal(bank_online[k], bank_replay[k]), k
    assert len(replay_kd.bank) == 3 and online[0]["inter_agd"] > 0  # the bank was used


def test_replay_fills_once_and_trains_without_the_teacher(root, tmp_path, monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path, "kd.teacher_replay={draws: 2, storage: disk}")
    counted, seen = Counted(monkeypatch, GraphRelationKD), []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(self.train_set), fit(self, resume))[1])
    cfg, meta = pipe.r.stage_train("full", 0), pipe._meta(pipe.r.student)
    pipe._train("a/full", _kd(pipe), cfg, meta)
    assert counted.images == 2 * N_CROPS  # the fill only: one epoch trained without it
    pipe._train("b/intra", _kd(pipe, PRESETS["intra"]), cfg, meta)  # same teacher: reused
    assert counted.images == 2 * N_CROPS
    assert isinstance(seen[0], SegReplayDataset) and seen[0].replay is seen[1].replay
    assert [p.name for p in (tmp_path / "teacher_replay").iterdir()] == [seen[0].replay.cache.key]
    assert (tmp_path / "b/intra/best.pt").is_file()


def test_without_replay_the_teacher_runs_every_step(root, tmp_path, monkeypatch) -> None:
    pipe = _pipeline(root, tmp_path)
    assert pipe.r.kd.teacher_replay is None
    counted, seen = Counted(monkeypatch, GraphRelationKD), []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: (
        seen.append(type(self.train_set)), fit(self, resume))[1])
    pipe._train("full", _kd(pipe), pipe.r.stage_train("full", 0), pipe._meta(pipe.r.student))
    assert seen == [InstanceDataset] and counted.images == N_CROPS


def test_replay_needs_augmentation(root) -> None:
    with pytest.raises(RecipeError, match="kd.teacher_replay needs augment.enabled: true"):
        tiny(root, REPLAY, "augment.enabled=false")
