"""DDP: a 2-process CPU (gloo) run equals a 1-process run with the same global batch."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from medistill.config import TrainConfig
from medistill.data import Augment, PairedViewDataset, ResolutionView, read_manifest
from medistill.engine import Trainer, load_model
from medistill.engine.distributed import EpochSampler, launch
from medistill.methods import Supervised
from medistill.models import create_model
from medistill.pipelines import demo_data_root

#: the stated tolerance: float reductions in another order (gradients averaged over 2 ranks)
ATOL = 1e-4


def fit(out: str) -> None:
    """Train a GroupNorm ResNet on 16 demo images, global batch 8, 2 epochs."""
    torch.set_num_threads(1)
    root = demo_data_root()
    train = read_manifest(root / "labels.csv", "train").samples[::10][:16]
    val = read_manifest(root / "labels.csv", "val").samples[:12]
    views = {"input": ResolutionView(factor=8)}
    train_set = PairedViewDataset(train, views, augment=Augment(), seed=3)
    val_set = PairedViewDataset(val, views)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-3, progress=False, tensorboard=False,
                      seed=5)
    torch.manual_seed(0)
    meta = {"task": "classification", "model": {"name": "small_resnet", "kwargs": {}},
            "classes": ["a", "b", "c", "d"], "view": {"factor": 8},
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    Trainer(Supervised(create_model("small_resnet", 4)), train_set, val_set, cfg, out, meta,
            num_classes=4).fit()


def _log(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_epoch_sampler_shards_the_single_process_order() -> None:
    one = list(EpochSampler(10, seed=7, rank_=0, world=1))
    assert one == torch.randperm(10, generator=torch.Generator().manual_seed(7)).tolist()
    shards = [list(EpochSampler(10, seed=7, rank_=r, world=2)) for r in range(2)]
    assert shards == [one[0::2], one[1::2]]
    padded = [list(EpochSampler(5, seed=1, shuffle=False, rank_=r, world=2)) for r in range(2)]
    assert padded == [[0, 2, 4], [1, 3, 0]]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_processes_reach_the_same_model_and_metrics(tmp_path: Path) -> None:
    fit(str(tmp_path / "one"))
    launch(fit, 2, str(tmp_path / "two"), backend="gloo", threads=1)
    one, _ = load_model(tmp_path / "one" / "best.pt")
    two, _ = load_model(tmp_path / "two" / "best.pt")
    for (k, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=ATOL), k
    log_one, log_two = _log(tmp_path / "one" / "log.csv"), _log(tmp_path / "two" / "log.csv")
    for r1, r2 in zip(log_one, log_two, strict=True):
        for key in ("train_loss", "val_accuracy", "val_macro_f1"):
            assert abs(r1[key] - r2[key]) < ATOL, key
