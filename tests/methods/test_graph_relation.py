"""Graph relation distillation method: FIFO memory bank (checkpointed), frozen teacher,
terms, exact resume, validation."""

from __future__ import annotations

import pytest
import torch

from medistill.config import TrainConfig
from medistill.engine import Trainer
from medistill.errors import CheckpointError, RecipeError
from medistill.methods import GraphRelationKD, InstanceEmbedding, MemoryBank
from medistill.models import create_model


def _entry(v: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((1, 2), v), torch.zeros(3, 2)


def _values(bank: MemoryBank) -> list[float]:
    return [float(e[0][0, 0]) for e in bank.entries]


def test_memory_bank_is_fifo_once_full():
    """Where we differ from the authors' ring buffer: after pushes 0..4 into 3 slots theirs
    holds [4, 1, 3] (the 4th push overwrote the last slot and reset the pointer to 0, the
    5th went to slot 0) with a pointer of 1, so the next step samples min(12, 1) = 1 map;
    ours holds the three most recent, oldest first, and samples from all of them."""
    bank = MemoryBank(size=3)
    for v in range(5):
        bank.push([_entry(float(v))])
    assert len(bank) == 3
    assert _values(bank) == [2.0, 3.0, 4.0]  # the two oldest evicted, in order
    assert bank.pointer == 2 and bank.count == 3
    bank.push([_entry(5.0), _entry(6.0)])
    assert _values(bank) == [4.0, 5.0, 6.0]
    assert len(bank.sample(12)) == 3


def test_memory_bank_sample_detach_and_own_rng():
    bank = MemoryBank(size=8, seed=3)
    x = torch.randn(4, 2, requires_grad=True)
    bank.push([(r * 2,) for r in x])
    got = bank.sample(3)
    assert len(got) == 3 and all(not e[0].requires_grad for e in got)
    assert len({id(e[0]) for e in got}) == 3  # without replacement
    assert len(bank.sample(10)) == 4
    assert MemoryBank(2).sample(5) == []
    with pytest.raises(ValueError):
        MemoryBank(0)
    # the bank's generator, not the global RNG, decides what is drawn
    other = MemoryBank(size=8, seed=3)
    other.push([(r * 2,) for r in x])
    torch.manual_seed(123)
    first = [float(e[0][0]) for e in other.sample(3)]
    assert first == [float(e[0][0]) for e in got]


def test_memory_bank_state_round_trip_and_errors():
    bank = MemoryBank(size=3, seed=1)
    for v in range(4):
        bank.push([_entry(float(v))])
    bank.sample(2)  # advance the RNG
    state = {k: v.clone() for k, v in bank.state("bank.").items()}
    assert {"bank.pointer", "bank.count", "bank.rng", "bank.slot0.0", "bank.slot2.1"} <= set(
        state)
    copy = MemoryBank(size=3, seed=99)
    copy.load_state(state, "bank.")
    assert _values(copy) == _values(bank) and copy.pointer == bank.pointer
    assert [float(e[0][0, 0]) for e in copy.sample(2)] == [
        float(e[0][0, 0]) for e in bank.sample(2)]
    with pytest.raises(CheckpointError, match="lacks 'bank.rng'"):
        MemoryBank(3).load_state({k: v for k, v in state.items() if k != "bank.rng"}, "bank.")
    with pytest.raises(CheckpointError, match="count"):
        MemoryBank(3).load_state({**state, "bank.count": torch.tensor(2)}, "bank.")
    with pytest.raises(CheckpointError, match="size 2"):
        MemoryBank(2).load_state(state, "bank.")


def _batch(n: int = 2, size: int = 16) -> dict:
    labels = torch.zeros(n, size, size, dtype=torch.long)
    labels[:, 2:7, 2:7] = 1
    labels[:, 9:14, 8:15] = 2
    return {"image": torch.randn(n, 3, size, size), "labels": labels, "index": torch.arange(n)}


def _nets():
    torch.manual_seed(0)
    t = create_model("resunet_embedding", 2, widths=[4, 4, 8], embedding_dim=4)
    s = create_model("resunet_embedding", 2, widths=[2, 2, 4], embedding_dim=4)
    return t, s


def test_kd_step_trains_student_only_and_fills_the_bank(single_thread):
    t, s = _nets()
    m = GraphRelationKD(t, s, bank_size=3, bank_sample=2).train()
    before = {k: v.clone() for k, v in t.state_dict().items()}
    out = m.training_step(_batch())
    assert out["inter_agd"] == 0 and out["inter_igd"] == 0  # empty bank at the first step
    out["loss"].backward()
    assert all(p.grad is None for p in t.parameters())
    assert any(p.grad is not None for p in s.parameters())
    assert not t.training  # frozen teacher stays in eval mode
    assert len(m.bank) == 2
    out = m.training_step(_batch())
    assert out["inter_agd"] > 0 and out["inter_igd"] > 0
    assert len(m.bank) == 3
    for k, v in t.state_dict().items():
        assert torch.equal(v, before[k]), k
    state = m.trainable_state()
    assert "teacher.head.weight" not in state
    assert state["bank.count"] == 3 and "bank.slot2.1" in state  # the bank is checkpointed
    assert m.deployable() is s


def test_intra_preset_has_no_bank_terms(single_thread):
    t, s = _nets()
    m = GraphRelationKD(t, s, terms=("agd", "igd"))
    out = m.training_step(_batch())
    assert {"agd", "igd_node", "igd_edge"} <= set(out) and "inter_agd" not in out
    assert len(m.bank) == 0
    assert not any(k.startswith("bank.") for k in m.trainable_state())


def test_bad_terms_and_mismatched_embeddings():
    t, s = _nets()
    with pytest.raises(RecipeError, match="unknown"):
        GraphRelationKD(t, s, terms=("agd", "nope"))
    other = create_model("resunet_embedding", 2, widths=[2, 2, 4], embedding_dim=3)
    with pytest.raises(RecipeError, match="channels"):
        GraphRelationKD(t, other)


def test_supervised_step_and_validation(single_thread, tmp_path):
    from instance_fixtures import write_instance_dataset

    from medistill.data.instance import InstanceDataset
    from medistill.pipelines.instance_data import InstanceDataConfig, load_instance_split

    _, s = _nets()
    m = InstanceEmbedding(s, postprocess={"method": "watershed", "min_size": 1})
    out = m.training_step(_batch())
    assert set(out) >= {"loss", "affinity", "foreground"}
    # validation scores the original label maps of an instance dataset (issue #14)
    root = write_instance_dataset(tmp_path / "d", {"train": 1, "val": 2}, size=32)
    items = load_instance_split(InstanceDataConfig(root=str(root), splits={
        "train": "train", "val": "val", "test": "val"}), "val")
    loader = torch.utils.data.DataLoader(InstanceDataset(items), batch_size=2)
    scores = m.eval().validation_metrics(loader, torch.device("cpu"))
    assert set(scores) == {"aji", "pq"} and 0 <= scores["aji"] <= 1
    picture, caption = m.sample_overlays(_batch())  # TensorBoard: instances outlined
    truth = (picture[:, :16] == (0, 220, 0)).all(-1)
    assert picture.shape == (16, 34, 3) and truth[2, 2:7].all() and truth[9, 8:15].all()
    assert "prediction outlined magenta" in caption


class _Crops(torch.utils.data.Dataset):
    def __init__(self, n: int = 6) -> None:
        g = torch.Generator().manual_seed(0)
        labels = torch.zeros(n, 16, 16, dtype=torch.long)
        labels[:, 2:7, 2:7] = 1
        labels[1::2, 9:14, 8:15] = 2
        self.items = [{"image": torch.randn(3, 16, 16, generator=g), "labels": labels[i],
                       "index": i} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _full_run(out, resume: bool = False) -> Trainer:
    t, s = _nets()
    method = GraphRelationKD(t, s, bank_size=4, bank_sample=3, pool=3, bank_seed=7)
    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-2, progress=False, tensorboard=False,
                      seed=5)
    trainer = Trainer(method, _Crops(), None, cfg, out)
    trainer.fit(resume=resume)
    return trainer


def test_full_run_resumes_exactly_with_its_memory_bank(tmp_path, single_thread, monkeypatch):
    """Issue #11: 2 epochs straight == stopped after epoch 1, then a new method + trainer
    with --resume: bit-identical student weights AND memory bank (entries, pointer, count,
    RNG). Before the bank was checkpointed the resumed run started with an empty bank and
    most weights differed."""
    straight = _full_run(tmp_path / "straight")
    original = Trainer._train_epoch

    def stop_at_epoch_2(self, epoch, opt, sched):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch, opt, sched)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _full_run(tmp_path / "cut")
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    resumed = _full_run(tmp_path / "cut", resume=True)
    a, b = straight.method.trainable_state(), resumed.method.trainable_state()
    assert set(a) == set(b) and any(k.startswith("bank.slot") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.method.bank.count == 4  # 6 crops x 2 epochs went through a 4-slot bank
