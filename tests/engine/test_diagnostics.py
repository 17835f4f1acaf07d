"""Per-step loss terms and gradient shares (steps.csv): hand-computed shares, no effect on
training, one row per step, resume, the summary."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medistill.config import TrainConfig
from medistill.engine import Trainer
from medistill.engine.diagnostics import (
    STEPS_FILE,
    gradient_shares,
    read_steps,
    summarise_steps,
    trainable_parameters,
)
from medistill.methods.base import Method, freeze, loss_terms, weighted_loss

pytestmark = pytest.mark.usefixtures("single_thread")


class _Linear(Method):
    """f(x) = w . x with w = (1, 2); a frozen teacher scalar v = 7 enters one term."""

    frozen_prefixes = ("teacher",)

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        self.teacher = freeze(nn.Linear(1, 1, bias=False))
        with torch.no_grad():
            self.teacher.weight.fill_(7.0)

    def training_step(self, batch: dict) -> dict:
        f = self.model(torch.tensor([[1.0, 0.0], [3.0, 4.0]]))[:, 0]
        # a = 2 w1 -> grad (2, 0), |.| = 2;  b = 3 w1 + 4 w2 + 10 v -> grad (3, 4), |.| = 5
        a = 2 * f[0]
        b = f[1] + 10 * self.teacher(torch.ones(1, 1))[0, 0]
        return weighted_loss({"raw_a": a.detach()}, {"a": a, "b": b})


def test_hand_computed_norms_shares_and_cosines():
    m = _Linear()
    params = trainable_parameters(m)
    assert params == [m.model.weight]  # the frozen teacher is excluded
    out = m.training_step({})
    assert set(loss_terms(out)) == {"a", "b"}
    stats = gradient_shares(loss_terms(out), out["loss"], params)
    # total gradient (5, 4): |g| = sqrt(41); shares 2/7 and 5/7
    assert stats["grad_norm"] == pytest.approx(math.sqrt(41))
    assert stats["norm_a"] == pytest.approx(2.0) and stats["norm_b"] == pytest.approx(5.0)
    assert stats["share_a"] == pytest.approx(2 / 7) and stats["share_b"] == pytest.approx(5 / 7)
    assert stats["cos_a"] == pytest.approx(10 / (2 * math.sqrt(41)))  # (2,0).(5,4) = 10
    assert stats["cos_b"] == pytest.approx(31 / (5 * math.sqrt(41)))  # (3,4).(5,4) = 31
    # .grad untouched, and the graph is still there for the real backward
    assert m.model.weight.grad is None
    out["loss"].backward()
    assert torch.equal(m.model.weight.grad, torch.tensor([[5.0, 4.0]]))
    # a loss scale (fp16) is divided out of the norms
    out = m.training_step({})
    scaled = gradient_shares(loss_terms(out), out["loss"], params, scale=1024.0)
    assert scaled == pytest.approx(stats)


def test_a_constant_term_has_zero_share_and_no_cosine():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    stats = gradient_shares({"x": (w**2).sum() / 2, "zero": torch.zeros(())},
                            (w**2).sum() / 2, [w])
    assert stats["share_x"] == 1.0 and stats["share_zero"] == 0.0
    assert stats["norm_x"] == pytest.approx(5.0) and math.isnan(stats["cos_zero"])


def test_a_loss_without_terms_is_one_term():
    out = {"loss": torch.ones((), requires_grad=True) * 2, "ce": torch.ones(())}
    assert list(loss_terms(out)) == ["loss"]


# ------------------------------------------------------------------------------- training
class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 20) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "index": i}


class _TwoTerms(Method):
    """A student with dropout (so any change of the random stream would show) matched to a
    frozen teacher (MSE) plus a tiny L1 penalty."""

    frozen_prefixes = ("teacher",)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5),
                                     nn.Linear(16, 2))
        self.teacher = freeze(nn.Linear(4, 2))

    def training_step(self, batch: dict) -> dict:
        s = self.student(batch["x"])
        with torch.no_grad():
            t = self.teacher(batch["x"])
        out = {"mse": F.mse_loss(s, t), "l1": s.abs().mean()}
        return weighted_loss(out, {"mse": out["mse"], "l1": 1e-4 * out["l1"]})

    def deployable(self) -> nn.Module:
        return self.student


def _fit(out_dir, epochs: int = 3, **kw) -> _TwoTerms:
    method = _TwoTerms()
    cfg = TrainConfig(epochs=epochs, batch_size=6, lr=1e-2, optimizer="sgd", progress=False,
                      tensorboard=False, seed=3, **kw)
    Trainer(method, _Data(), None, cfg, out_dir).fit()
    return method


def test_diagnostics_do_not_change_training(tmp_path):
    off = _fit(tmp_path / "off", diag_every=0)
    on = _fit(tmp_path / "on", diag_every=1)
    for (k, a), b in zip(off.state_dict().items(), on.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # bit-identical
    rows_off, rows_on = read_steps(tmp_path / "off" / STEPS_FILE), read_steps(
        tmp_path / "on" / STEPS_FILE)
    assert all("grad_norm" not in r for r in rows_off)
    assert all(r["share_mse"] + r["share_l1"] == pytest.approx(1.0) for r in rows_on)
    assert [r["loss"] for r in rows_off] == [r["loss"] for r in rows_on]


def test_steps_csv_has_one_row_per_step_with_every_term(tmp_path):
    _fit(tmp_path, diag_every=2)
    rows = read_steps(tmp_path / STEPS_FILE)
    assert len(rows) == 3 * 4  # 20 images in batches of 6: 4 steps per epoch
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["epoch"] for r in rows] == [1] * 4 + [2] * 4 + [3] * 4
    for r in rows:
        assert r["loss"] == pytest.approx(r["term_mse"] + r["term_l1"], rel=1e-6)
    assert [r["step"] for r in rows if "grad_norm" in r] == [1, 2, 4, 6, 8, 10, 12]
    # the weighted terms reach log.csv too (epoch means)
    assert "train_term/l1" in (tmp_path / "log.csv").read_text().splitlines()[0]
    summary = {s.name: s for s in summarise_steps(rows)}
    assert list(summary) == ["mse", "l1"]
    assert summary["l1"].untested and not summary["mse"].untested  # 1e-4 * L1 moves nothing
    assert summary["mse"].diag_steps == 7 and summary["mse"].steps == 12


def test_resume_keeps_the_steps_of_finished_epochs(tmp_path, monkeypatch):
    _fit(tmp_path / "full", diag_every=3)
    original = Trainer._train_epoch

    def stop_at_epoch_3(self, epoch, opt, sched):
        if epoch == 3:
            self.monitor.step(3, 9, {"loss": torch.ones(())})  # a step of the cut epoch
            raise KeyboardInterrupt
        return original(self, epoch, opt, sched)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", diag_every=3)
    assert len(read_steps(tmp_path / "cut" / STEPS_FILE)) == 9  # kept for a look
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    method = _TwoTerms()
    cfg = TrainConfig(epochs=3, batch_size=6, lr=1e-2, optimizer="sgd", progress=False,
                      tensorboard=False, seed=3, diag_every=3)
    Trainer(method, _Data(), None, cfg, tmp_path / "cut").fit(resume=True)
    assert read_steps(tmp_path / "cut" / STEPS_FILE) == read_steps(
        tmp_path / "full" / STEPS_FILE)


def test_summary_flags_terms_under_one_percent():
    rows = [
        {"epoch": 1, "step": 1, "loss": 2.0, "term_a": 1.5, "term_b": -0.5, "grad_norm": 1.0,
         "share_a": 0.995, "share_b": 0.005, "cos_a": 1.0, "cos_b": 0.5},
        {"epoch": 1, "step": 2, "loss": 1.0, "term_a": 0.5, "term_b": 0.5},
        {"epoch": 1, "step": 3, "loss": 1.0, "term_a": 1.0, "term_b": 0.0, "grad_norm": 1.0,
         "share_a": 0.985, "share_b": 0.015, "cos_a": 0.9, "cos_b": float("nan")},
    ]
    a, b = summarise_steps(rows)
    assert (a.name, a.mean_abs_value, a.steps, a.diag_steps) == ("a", 1.0, 3, 2)
    assert a.mean_share == pytest.approx(0.99) and a.mean_cos == pytest.approx(0.95)
    assert b.mean_abs_value == pytest.approx(1 / 3) and b.mean_share == pytest.approx(0.01)
    assert b.mean_cos == 0.5  # NaN (no gradient) left out
    assert not a.untested and not b.untested  # 1% is not under 1%
    (b2,) = [s for s in summarise_steps(rows, threshold=0.011) if s.name == "b"]
    assert b2.untested
    (c,) = summarise_steps([{"epoch": 1, "step": 1, "loss": 1.0, "term_c": 1.0}])
    assert c.mean_share is None and not c.untested  # no diagnostic step: nothing to say


def test_tensorboard_gets_the_step_scalars(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator").EventAccumulator
    method = _TwoTerms()
    cfg = TrainConfig(epochs=2, batch_size=6, lr=1e-2, optimizer="sgd", progress=False,
                      tensorboard=True, seed=3, diag_every=4)
    Trainer(method, _Data(), None, cfg, tmp_path).fit()
    events = accumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/l1")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("grad/share_mse")] == [1, 4, 8]
    assert "epoch/mse" in tags
