"""Graph relation distillation method: FIFO memory bank, frozen teacher, terms, validation."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import RecipeError
from medistill.methods import GraphRelationKD, InstanceEmbedding, MemoryBank
from medistill.models import create_model


def _entry(v: float) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((1, 1, 2, 2), v), torch.zeros(1, 2, 2, dtype=torch.long)


def test_memory_bank_is_fifo_once_full():
    """Defect in the authors' code: once full, only the LAST slot was overwritten."""
    bank = MemoryBank(size=3)
    for v in range(5):
        bank.push(*_entry(float(v)))
    assert len(bank) == 3
    stored = [float(e[0, 0, 0]) for e, _ in bank.entries]
    assert stored == [2.0, 3.0, 4.0]  # the two oldest evicted, in order
    bank.push(*_entry(5.0))
    assert [float(e[0, 0, 0]) for e, _ in bank.entries] == [3.0, 4.0, 5.0]


def test_memory_bank_sample_and_detach():
    bank = MemoryBank(size=8)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    bank.push(x * 2, torch.zeros(4, 3, 3, dtype=torch.long))
    got = bank.sample(3, torch.Generator().manual_seed(0))
    assert len(got) == 3 and all(not e.requires_grad for e, _ in got)
    ids = {id(e) for e, _ in got}
    assert len(ids) == 3  # without replacement
    assert len(bank.sample(10)) == 4
    assert MemoryBank(2).sample(5) == []
    with pytest.raises(ValueError):
        MemoryBank(0)


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
    assert "teacher.head.weight" not in m.trainable_state()
    assert m.deployable() is s


def test_intra_preset_has_no_bank_terms(single_thread):
    t, s = _nets()
    m = GraphRelationKD(t, s, terms=("agd", "igd"))
    out = m.training_step(_batch())
    assert {"agd", "igd_node", "igd_edge"} <= set(out) and "inter_agd" not in out
    assert len(m.bank) == 0


def test_bad_terms_and_mismatched_embeddings():
    t, s = _nets()
    with pytest.raises(RecipeError, match="unknown"):
        GraphRelationKD(t, s, terms=("agd", "nope"))
    other = create_model("resunet_embedding", 2, widths=[2, 2, 4], embedding_dim=3)
    with pytest.raises(RecipeError, match="channels"):
        GraphRelationKD(t, other)


def test_supervised_step_and_validation(single_thread):
    _, s = _nets()
    m = InstanceEmbedding(s, postprocess={"method": "watershed", "min_size": 1})
    out = m.training_step(_batch())
    assert set(out) >= {"loss", "affinity", "foreground"}
    loader = torch.utils.data.DataLoader(
        [{k: v[i] for k, v in _batch().items()} for i in range(2)], batch_size=2)
    scores = m.eval().validation_metrics(loader, torch.device("cpu"))
    assert set(scores) == {"aji", "pq"} and 0 <= scores["aji"] <= 1
