"""Every recipe under DDP: 2 gloo processes with per-rank batch b/2 train the same models as
1 process with batch b.

Each test (9-20 s on a quiet machine; the two ~20 s ones are marked slow) runs a tiny recipe
end to end once in this process and once in 2 processes
(:func:`~medistill.engine.distributed.launch`, gloo) and compares every trained run's
``last.pt`` (all trainable parameters and buffers: batch-norm running statistics, the
graph-relation memory bank) and its logged training losses.

Tolerance: the arithmetic is the same but not in the same order -- a convolution over b/2
images instead of b, batch-norm statistics as an all-reduced sum instead of one kernel, the
gradient as the mean of two rank gradients -- so single-step gradients agree to ~1e-4
RELATIVE (batch-norm backward subtracts nearly equal means: measured on the HLFD student).
The tests train with SGD: Adam would turn the pure rounding noise of parameters whose exact
gradient is 0 (a conv bias before batch norm) into +-lr steps. Measured after 4 SGD steps
(lr 0.01): the segmentation-loss teacher 6e-8 max abs (bit level), the HLFD student 4e-5
(its feature terms grow the rounding); with the per-rank loss instead of the global-batch one
(the bug these tests guard against) the HLFD student is 1e-2 off. ``ATOL`` = 2e-4 sits 5x
above the rounding and 50x below that bug.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from instance_fixtures import write_instance_dataset
from seg_fixtures import write_seg_dataset
from weak_fixtures import write_weak_dataset

from medistill.engine.checkpoint import load_checkpoint
from medistill.engine.distributed import launch
from medistill.pipelines import demo_data_root, load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
ATOL = 2e-4
COMMON = ["seeds=[0]", "train.optimizer=sgd", "train.lr=0.01", "train.device=cpu",
          "train.tensorboard=false", "train.progress=false", "eval.n_resamples=20"]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def recipe_path(recipe: str) -> Path:
    """A recipe of ``recipes/`` or a packaged one (``src/medistill/recipes/``)."""
    path = ROOT / "recipes" / recipe
    return path if path.is_file() else ROOT / "src" / "medistill" / "recipes" / recipe


def run_tiny(recipe: str, overrides: list[str], out: str) -> None:
    """One process of the comparison (module level: :func:`launch` pickles it)."""
    torch.set_num_threads(1)
    run_recipe(load_recipe(recipe_path(recipe), overrides), out, progress=False)


def run_single(recipe: str, overrides: list[str], out: str | Path) -> None:
    """The 1-process reference run, in this process (its torch thread count restored)."""
    threads = torch.get_num_threads()
    try:
        run_tiny(recipe, overrides, str(out))
    finally:
        torch.set_num_threads(threads)


def _losses(path: Path) -> list[float]:
    with path.open() as f:
        return [float(row["train_loss"]) for row in csv.DictReader(f)]


def assert_same_training(one: Path, two: Path, expect: int) -> float:
    """Every run folder trained in ``one`` has the same parameters, buffers (and memory bank)
    and training losses in ``two``; returns the largest parameter / buffer difference."""
    runs = sorted(p.parent.relative_to(one) for p in one.rglob("last.pt"))
    assert len(runs) == expect, runs
    largest = 0.0
    for run in runs:
        a = load_checkpoint(one / run / "last.pt")["method"]
        b = load_checkpoint(two / run / "last.pt")["method"]
        assert a.keys() == b.keys(), run
        for k in a:
            if a[k].is_floating_point():
                diff = float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0
                largest = max(largest, diff)
                assert torch.allclose(a[k], b[k], atol=ATOL), (run, k, diff)
            else:
                assert torch.equal(a[k], b[k]), (run, k)
        la, lb = _losses(one / run / "log.csv"), _losses(two / run / "log.csv")
        assert la == pytest.approx(lb, abs=ATOL), run
    assert (two / "report.html").is_file() and (two / "results.json").is_file()
    return largest


def compare(tmp_path: Path, recipe: str, overrides: list[str], expect: int) -> None:
    overrides = [*COMMON, *overrides]
    run_single(recipe, overrides, tmp_path / "one")
    launch(run_tiny, 2, recipe, overrides, str(tmp_path / "two"), backend="gloo", threads=1)
    assert_same_training(tmp_path / "one", tmp_path / "two", expect)


@pytest.mark.slow  # ~20 s on a quiet 2-core machine (3 processes, 2 tiny pipelines)
def test_hlfd_two_processes_equal_one(tmp_path: Path) -> None:
    """Batch-norm U-Nets (teacher and student), batch-pooled Dice, HLFD's feature terms."""
    root = write_seg_dataset(tmp_path / "data", {"train": 8, "testB": 2, "testA": 2}, classes=3)
    compare(tmp_path, "hlfd_glas.yaml", [
        f"data.root={root}", "data.image_size=32", "data.classes=[background, disc, square]",
        "data.image_pattern='images/{name}.png'", "teacher.kwargs={features: [4, 4, 8, 8, 16, 4]}",
        "student.kwargs={widths: [8, 8, 16, 16], decoder_widths: [16, 8, 8, 4, 4]}",
        "runs=[hlfd]", "train.epochs=2", "train.batch_size=4", "eval.latency_repeats=1",
        "eval.overlays=0"], expect=2)


GRAPH_RELATION = [
    "data.crop_size=24", "data.crops_per_image=2",
    "data.splits={train: train, val: val, test: test}",
    "teacher.kwargs={widths: [4, 4, 8], embedding_dim: 4}",
    "student.kwargs={widths: [2, 2, 4], embedding_dim: 4}", "kd.offsets=[1, 3, 9]",
    "kd.bank_size=3", "kd.bank_sample=2", "runs=[full]", "train.epochs=2",
    "train.batch_size=4", "postprocess.method=watershed", "postprocess.min_size=2",
    "eval.latency_repeats=1", "eval.latency_size=32", "eval.overlays=0"]


def test_graph_relation_two_processes_equal_one(tmp_path: Path) -> None:
    """Batch-norm embedding U-Nets, every KD term incl. the inter-image ones: each rank's
    memory bank (entries, pointer, count, sampling RNG; in ``last.pt``) equals the 1-process
    bank."""
    root = write_instance_dataset(tmp_path / "data", {"train": 4, "val": 1, "test": 1})
    compare(tmp_path, "graph_relation_monuseg.yaml", [f"data.root={root}", *GRAPH_RELATION],
            expect=2)


@pytest.mark.slow  # ~20 s
def test_graph_relation_with_a_disk_teacher_replay_two_processes_equal_one(tmp_path: Path
                                                                          ) -> None:
    """``kd.teacher_replay`` on disk: local rank 0 fills the one replay folder, both ranks
    read it; the replayed embeddings feed the loss and every rank's memory bank as in 1
    process."""
    root = write_instance_dataset(tmp_path / "data", {"train": 4, "val": 1, "test": 1})
    compare(tmp_path, "graph_relation_monuseg.yaml", [
        f"data.root={root}", *GRAPH_RELATION,
        "kd.teacher_replay={draws: 2, storage: disk, dtype: float32}"], expect=2)
    replay = tmp_path / "two" / "teacher_replay"
    assert len(list(replay.iterdir())) == 1 and not list(replay.glob("node*"))


def test_mil_fusion_two_processes_equal_one(tmp_path: Path) -> None:
    """The MIL teacher (per-image Dice summed over images: not a per-rank mean) and a fusion
    KD round; the role-reversal decision is rank 0's validation score."""
    root = write_weak_dataset(tmp_path / "data", {"train": 8, "val": 2, "test": 2})
    compare(tmp_path, "mil_fusion_glas.yaml", [
        f"data.root={root}", "data.setup=custom", "data.image_pattern='images/{name}.png'",
        "data.positive=[tumour]", "data.negative=[benign]",
        "data.splits={train: train, val: val, test: test}", "data.image_size=32",
        "model.kwargs={backbone_kwargs: {widths: [8, 8, 16, 16], groups: 4}}", "runs=[fusion_kd]",
        "train.epochs=2", "train.batch_size=4", "stages.round={epochs: 1}", "fusion.rounds=1",
        "eval.overlays=0"], expect=2)


def test_more_from_less_two_processes_equal_one(tmp_path: Path) -> None:
    """VICReg over the global batch (its variance / covariance terms couple the images) with a
    batch-norm expander, then the linear probe."""
    demo = demo_data_root()
    compare(tmp_path, "more_from_less_vicreg.yaml", [
        f"data.root={demo}", "transfer=null", "levels=[7]", "input_size=16",
        "ssl.expander_width=32",
        "pairs=[asymmetric]", "losses=[vicreg]", "supervised=false", "train.epochs=1",
        # VICReg's gradient norm is ~180 at the start: SGD at 0.01 would jump ~1.8 per step,
        # a chaotic regime where rounding grows 1e5x in 5 steps (measured); 1e-4 keeps the
        # steps as small as in the other tests
        "train.batch_size=32", "stages.ssl={lr: 0.0001}",
        "stages.probe={epochs: 1, batch_size: 64}",
        "eval.latency=false", "analysis={enabled: false}"], expect=2)


RESOLUTION_DISK_CACHE = [
    "teacher_factor=4", "student_factors=[2]", "runs=[kd]", "augment.enabled=false",
    "kd.cache_teacher=disk", "train.epochs=2",
    # 160 images: 2 steps per epoch (at batch 16 the 10 SGD steps per epoch at lr 0.01
    # climb the loss, a regime where rounding grows ~3x per step: measured 4e-3 after 10)
    "train.batch_size=80", "stages={teacher: {epochs: 1}}", "eval.latency=false"]


@pytest.mark.slow  # ~20 s
def test_resolution_with_a_disk_teacher_cache_two_processes_equal_one(tmp_path: Path) -> None:
    """The resolution recipe with ``kd.cache_teacher: disk``: under DDP local rank 0 fills the
    one cache folder before training and rank 1 reads it (no per-rank folders)."""
    compare(tmp_path, "demo.yaml", [f"data.root={demo_data_root()}", *RESOLUTION_DISK_CACHE],
            expect=2)
    cache = tmp_path / "two" / "teacher_cache"
    assert len(list(cache.iterdir())) == 1 and not list(cache.glob("rank*"))
