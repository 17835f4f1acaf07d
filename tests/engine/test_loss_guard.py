"""The trainer stops a diverging run (loss exploding while still finite) with one clear line."""

from __future__ import annotations

import pytest

from medistill.config import TrainConfig
from medistill.engine import Trainer
from medistill.errors import TrainingError

from .test_trainer import _cfg, _method, _sets


def test_a_diverging_run_stops_instead_of_reporting_garbage(tmp_path, single_thread):
    """lr 1e6 with Adam: the loss goes from ~1.5 to ~1e14 at step 2, still finite."""
    train, val = _sets()
    with pytest.raises(TrainingError) as err:
        Trainer(_method(), train, val, _cfg(lr=1e6), tmp_path, num_classes=4).fit()
    message = str(err.value)
    assert message.startswith("train: loss exploded (over 10000 x the first step's 1.5")
    assert "at epoch 1, step 2" in message and "train.max_loss_factor" in message
    assert "\n" not in message
    assert not (tmp_path / "best.pt").exists()


def test_the_guard_is_configurable(tmp_path, single_thread):
    train, val = _sets(n_train=16, n_val=4)
    out = Trainer(_method(), train, val, _cfg(lr=1e6, epochs=1, max_loss_factor=None),
                  tmp_path, num_classes=4).fit()
    assert out["history"][0]["train_loss"] > 1e6  # what used to pass unnoticed
    with pytest.raises(ValueError):
        TrainConfig(max_loss_factor=0.5)
