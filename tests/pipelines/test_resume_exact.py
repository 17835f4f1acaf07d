"""Resume is bit-exact on CPU for every recipe: a run interrupted after epoch 1 of EVERY one of
its training stages (each time resumed with ``resume=True``) ends with the same weights,
optimizer states and test metrics as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from instance_fixtures import write_instance_dataset
from seg_fixtures import write_seg_dataset
from weak_fixtures import write_weak_dataset

from medistill.engine.checkpoint import load_checkpoint
from medistill.engine.trainer import Trainer
from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
COMMON = ["seeds=[0]", "train.epochs=2", "train.tensorboard=false", "train.progress=false",
          "train.device=cpu"]


def _recipe(name: str, tmp: Path) -> Any:
    demo = demo_data_root()
    if name == "resolution_kd":
        return load_recipe(demo_recipe_path(), [
            *COMMON, "teacher_factor=4", "student_factors=[2]", "runs=[baseline, kd]",
            "train.batch_size=16", "stages.teacher={epochs: 2}", "eval.n_resamples=20",
            "eval.latency=false"], {"demo_data": str(demo)})
    if name == "more_from_less":
        return load_recipe(RECIPES / "more_from_less_vicreg.yaml", [
            *COMMON, f"data.root={demo}", f"transfer={{format: csv, root: '{demo}', splits: "
            "{train: train, val: val, test: val}}", "levels=[7]", "pairs=[asymmetric]",
            "input_size=16", "ssl.expander_width=16", "train.batch_size=32",
            "stages.probe={epochs: 2, batch_size: 64}", "stages.supervised={epochs: 2}",
            "eval.n_resamples=20", "eval.latency=false", "analysis={enabled: false}"])
    if name == "hlfd":
        root = write_seg_dataset(tmp / "seg", {"train": 4, "testB": 2, "testA": 2}, classes=3)
        return load_recipe(RECIPES / "hlfd_glas.yaml", [
            *COMMON, f"data.root={root}", "data.image_size=32",
            "data.classes=[background, disc, square]", "data.image_pattern='images/{name}.png'",
            "teacher.kwargs={features: [4, 4, 8, 8, 16, 4]}",
            "student.kwargs={widths: [8, 8, 16, 16], decoder_widths: [16, 8, 8, 4, 4]}",
            "runs=[hlfd]", "train.batch_size=4", "eval.n_resamples=20", "eval.latency=false",
            "eval.overlays=0"])
    if name == "mil_fusion":
        root = write_weak_dataset(tmp / "weak", {"train": 4, "val": 4, "test": 2})
        return load_recipe(RECIPES / "mil_fusion_glas.yaml", [
            *COMMON, f"data.root={root}", "data.setup=custom",
            "data.image_pattern='images/{name}.png'", "data.positive=[tumour]",
            "data.negative=[benign]", "data.splits={train: train, val: val, test: test}",
            "data.image_size=32", "model.kwargs={backbone_kwargs: {widths: [8, 8, 16, 16], "
            "groups: 4}}", "runs=[ikd]", "train.batch_size=4", "stages.round={epochs: 2}",
            "fusion.rounds=2", "eval.n_resamples=20", "eval.overlays=0"])
    # graph_relation: "intra" (no memory bank) or "full" (intra + inter-image, with the bank)
    run = "intra" if name == "graph_relation_intra" else "full"
    root = write_instance_dataset(tmp / "inst", {"train": 2, "val": 1, "test": 1})
    return load_recipe(RECIPES / "graph_relation_monuseg.yaml", [
        *COMMON, f"data.root={root}", "data.crop_size=24", "data.crops_per_image=2",
        "data.splits={train: train, val: val, test: test}",
        "teacher.kwargs={widths: [4, 4, 8], embedding_dim: 4}",
        "student.kwargs={widths: [2, 2, 4], embedding_dim: 4}", "kd.offsets=[1, 3, 9]",
        "kd.bank_size=3", "kd.bank_sample=2", f"runs=[{run}]", "train.batch_size=2",
        "postprocess.method=watershed", "postprocess.min_size=2", "eval.n_resamples=20",
        "eval.latency=false", "eval.overlays=0"])


def _tensors(node: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if torch.is_tensor(node):
        return {prefix: node}
    items = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list | tuple) else ())
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


def _weights(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every model and training file of a run folder (not the RNG states,
    which differ by design: the interrupted run restarted its processes' generators)."""
    found = {}
    for path in sorted(out.rglob("*.pt")):
        ckpt = load_checkpoint(path)
        ckpt.pop("rng", None)
        found.update(_tensors(ckpt, str(path.relative_to(out))))
    return found


def _metrics(out: Path) -> list[Any]:
    return [(r["name"], r["metrics"]) for r in json.loads((out / "results.json").read_text())
            ["runs"]]


SLOW = pytest.mark.slow  # a minute or two each on a busy 2-core machine
CASES = [
    pytest.param("resolution_kd", marks=SLOW),
    pytest.param("more_from_less", marks=SLOW),
    pytest.param("hlfd", marks=SLOW),
    "mil_fusion",  # this and the graph cases: seconds, run by default
    "graph_relation_intra",
    "graph_relation",  # `full`: the inter-image memory bank is part of the checkpoint
]


@pytest.mark.parametrize("name", CASES)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(name, tmp_path, monkeypatch,
                                                                 single_thread):
    recipe = _recipe(name, tmp_path)
    run_recipe(recipe, tmp_path / "full", progress=False)

    interrupted: list[Path] = []
    save = Trainer._save

    def save_then_interrupt(self, path, opt, sched, state):
        save(self, path, opt, sched, state)
        if state["epoch"] == 1 and self.cfg.epochs > 1 and self.out_dir not in interrupted:
            interrupted.append(self.out_dir)
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_interrupt)
    cut, resume = tmp_path / "cut", False
    for _ in range(50):
        try:
            run_recipe(recipe, cut, resume=resume, progress=False)
            break
        except KeyboardInterrupt:
            resume = True
    assert len(interrupted) >= 2  # every stage was cut (teacher and students at least)

    full, got = _weights(tmp_path / "full"), _weights(cut)
    assert sorted(got) == sorted(full)
    differ = [k for k in full if not torch.equal(full[k], got[k])]
    assert not differ, f"{len(differ)} of {len(full)} tensors differ, e.g. {differ[:3]}"
    assert _metrics(cut) == _metrics(tmp_path / "full")
