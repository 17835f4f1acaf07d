"""The trainer: exact resume, non-finite loss, best-on-validation, logs."""

from __future__ import annotations

import csv

import pytest
import torch

from medistill.config import TrainConfig
from medistill.data import PairedViewDataset, ResolutionView, read_manifest
from medistill.engine import Trainer, load_model
from medistill.errors import TrainingError
from medistill.methods import Supervised
from medistill.models import create_model
from medistill.pipelines import demo_data_root


def _sets(n_train: int = 24, n_val: int = 12):
    root = demo_data_root()
    train = read_manifest(root / "labels.csv", "train").samples
    val = read_manifest(root / "labels.csv", "val").samples
    # a class-mixed subset: every 7th image
    train, val = train[::7][:n_train], val[::3][:n_val]
    views = {"input": ResolutionView(factor=8)}
    from medistill.data import Augment

    return (
        PairedViewDataset(train, views, augment=Augment(), seed=3),
        PairedViewDataset(val, views),
    )


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=8, lr=1e-3, progress=False, tensorboard=False, seed=5)
    return TrainConfig(**{**base, **kw})


def _method():
    torch.manual_seed(0)
    return Supervised(create_model("small_resnet", 4))


def test_resume_continues_exactly(tmp_path, monkeypatch):
    train, val = _sets()
    full = Trainer(_method(), train, val, _cfg(grad_accum=2), tmp_path / "full", num_classes=4)
    ref = full.fit()

    interrupted = Trainer(_method(), train, val, _cfg(grad_accum=2), tmp_path / "cut",
                          num_classes=4)
    original = Trainer._train_epoch

    def stop_at_epoch_3(self, epoch, opt, sched):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch, opt, sched)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    monkeypatch.setattr(Trainer, "_train_epoch", original)
    assert not (tmp_path / "cut" / "train_done.json").exists()

    resumed = Trainer(_method(), train, val, _cfg(grad_accum=2), tmp_path / "cut", num_classes=4)
    out = resumed.fit(resume=True)

    drop = ("images_per_s",)
    strip = [{k: v for k, v in row.items() if k not in drop} for row in out["history"]]
    expect = [{k: v for k, v in row.items() if k not in drop} for row in ref["history"]]
    assert strip == expect  # identical losses and validation metrics, epoch by epoch
    for a, b in zip(full.method.state_dict().values(), resumed.method.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    with (tmp_path / "cut" / "log.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_best_checkpoint_is_the_best_validation_epoch(tmp_path):
    train, val = _sets()
    out = Trainer(_method(), train, val, _cfg(), tmp_path, num_classes=4,
                  model_meta={"model": {"name": "small_resnet", "kwargs": {}},
                              "classes": list("abcd")}).fit()
    scores = [row["val_macro_f1"] for row in out["history"]]
    assert out["best_epoch"] == scores.index(max(scores)) + 1
    model, meta = load_model(tmp_path / "best.pt")
    assert meta["classes"] == list("abcd")
    assert not model.training


class _NaNAfterOneStep(Supervised):
    calls = 0

    def training_step(self, batch):
        out = super().training_step(batch)
        _NaNAfterOneStep.calls += 1
        if _NaNAfterOneStep.calls > 1:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_with_a_clear_error_and_no_model(tmp_path):
    train, val = _sets()
    method = _NaNAfterOneStep(create_model("small_resnet", 4))
    with pytest.raises(TrainingError, match=r"not finite at epoch 1, step 2"):
        Trainer(method, train, val, _cfg(), tmp_path, num_classes=4).fit()
    assert not (tmp_path / "best.pt").exists()
    assert not (tmp_path / "last.pt").exists()


def test_gradient_accumulation_equals_a_big_batch(tmp_path):
    """batch 4 x accumulation 2 == batch 8 for a model without batch statistics (GroupNorm)."""
    train, _ = _sets(n_train=8)
    train.augment = None
    outs = []
    for i, (bs, acc) in enumerate([(8, 1), (4, 2)]):
        t = Trainer(_method(), train, None, _cfg(epochs=1, batch_size=bs, grad_accum=acc,
                                                  optimizer="sgd", lr=0.1, schedule="none"),
                    tmp_path / str(i), num_classes=4)
        t.fit()
        outs.append(t.method.state_dict())
    for k in outs[0]:
        assert torch.allclose(outs[0][k], outs[1][k], atol=1e-5), k


def test_channels_last_trains_the_same_model(tmp_path):
    train, _ = _sets(n_train=8)
    outs = []
    for flag in (False, True):
        t = Trainer(_method(), train, None, _cfg(epochs=1, channels_last=flag),
                    tmp_path / str(flag), num_classes=4)
        t.fit()
        outs.append(t.method.state_dict())
    for k in outs[0]:
        assert torch.allclose(outs[0][k], outs[1][k], atol=1e-4), k


def test_bf16_autocast_runs_and_stays_close(tmp_path):
    train, _ = _sets(n_train=8)
    losses = []
    for amp in ("none", "bf16"):
        t = Trainer(_method(), train, None, _cfg(epochs=1, amp=amp), tmp_path / amp,
                    num_classes=4)
        losses.append(t.fit()["history"][0]["train_loss"])
    assert abs(losses[0] - losses[1]) < 0.05 * abs(losses[0])


def test_a_select_metric_the_method_does_not_produce_is_an_error(tmp_path, monkeypatch):
    """It used to fall back silently to the training loss."""
    train, val = _sets(8, 4)
    method = _method()
    monkeypatch.setattr(type(method), "validation_metrics",
                        lambda self, loader, device, num_classes=None: {"dice": 0.5})
    trainer = Trainer(method, train, val, _cfg(epochs=1), tmp_path / "run", num_classes=4)
    with pytest.raises(TrainingError, match=r"select_metric 'macro_f1' .*produces: dice"):
        trainer.fit()
