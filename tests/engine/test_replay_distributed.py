"""A disk teacher replay filled lazily under DDP: one store per node that every rank fills
with the (image, draw) pairs of its own shard; 2 gloo processes train as 1 process does and
store exactly the pairs 1 process stores (none twice, none recomputed in a later epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_distributed_recipes import compare

from medistill.pipelines import demo_data_root


def _store(run: Path) -> Path:
    (store,) = [p for p in (run / "teacher_replay").iterdir() if p.is_dir()]
    return store


@pytest.mark.slow  # ~20 s on a quiet 2-core machine
def test_a_lazy_disk_replay_two_processes_equal_one(tmp_path: Path) -> None:
    compare(tmp_path, "demo.yaml", [
        f"data.root={demo_data_root()}", "teacher_factor=4", "student_factors=[2]",
        "runs=[kd]", "train.epochs=3", "train.batch_size=80",  # 2 steps per epoch
        "kd.teacher_replay={draws: 4, storage: disk, dtype: float32, fill: lazy}",
        "stages={teacher: {epochs: 1}}", "eval.latency=false"], expect=2)
    one, two = _store(tmp_path / "one"), _store(tmp_path / "two")
    filled_one, filled_two = np.load(one / "filled.npy"), np.load(two / "filled.npy")
    # 3 epochs of 4 draws: some pairs drawn twice, so fewer than 3 per image were computed
    assert 0 < filled_one.sum() < 3 * len(filled_one) / 4
    assert np.array_equal(filled_one, filled_two)  # the same pairs, stored once by some rank
    names = sorted(p.name for p in one.glob("*.npy") if p.name != "filled.npy")
    assert "logits.npy" in names
    assert names == sorted(p.name for p in two.glob("*.npy") if p.name != "filled.npy")
    for name in names:
        a, b = np.load(one / name)[filled_one], np.load(two / name)[filled_two]
        # the two teachers (trained by 1 and by 2 processes) differ by rounding: measured
        # 5e-4 of the largest output; a row of another image or draw would be off by O(1)
        assert np.abs(a - b).max() < 2e-3 * np.abs(a).max(), name
    assert not list((tmp_path / "two" / "teacher_replay").glob("rank*"))
