"""The shared recipe stages of :class:`medistill.pipelines.base.Pipeline` (issue #14): build a
model from a seed, the teacher from a checkpoint or trained, evaluate a model file once."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medistill.config import ModelConfig
from medistill.engine.checkpoint import save_model
from medistill.errors import RecipeError
from medistill.models import create_model
from medistill.models.segmenter import Segmenter
from medistill.pipelines.base import Pipeline
from medistill.tasks import ClassificationCard

NORM = {"mean": [0.5] * 3, "std": [0.2] * 3}


def pipeline(tmp_path: Path, **recipe) -> Pipeline:
    """A Pipeline's stages without a recipe plan (they read only ``r`` and ``out``)."""
    p = Pipeline.__new__(Pipeline)
    p.r, p.out, p.resume = SimpleNamespace(**recipe), tmp_path / "out", False
    return p


def classifier_file(tmp_path: Path, classes: list[str]) -> Path:
    card = ClassificationCard(model={"name": "small_resnet", "kwargs": {}}, classes=classes,
                              normalization=NORM).model_dump()
    return save_model(create_model("small_resnet", len(classes)), card, tmp_path / "t.pt")


def test_build_model_depends_on_the_seed_only_and_checks_the_kind(tmp_path):
    p = pipeline(tmp_path)
    spec = ModelConfig(name="small_resnet")
    a = p.build_model(spec, 2, seed=3)
    torch.manual_seed(99)  # whatever ran before
    torch.rand(10)
    b = p.build_model(spec, 2, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values(), strict=True))
    with pytest.raises(RecipeError, match="'small_resnet' is not a segmentation model"):
        p.build_model(spec, 2, 0, Segmenter, "a segmentation model")


def test_the_teacher_stage_uses_the_checkpoint_or_trains(tmp_path):
    trained = []

    def train(seed: int) -> Path:
        trained.append(seed)
        return tmp_path / f"seed{seed}/teacher/best.pt"

    assert pipeline(tmp_path, teacher_checkpoint=None).teacher(2, train) == \
        tmp_path / "seed2/teacher/best.pt"
    assert trained == [2]
    path = classifier_file(tmp_path, ["a", "b"])
    assert pipeline(tmp_path, teacher_checkpoint=str(path)).teacher(5, train) == path
    assert trained == [2]  # a checkpoint is not trained again
    assert pipeline(tmp_path).teacher(1, train).name == "best.pt"  # a recipe without the key


def test_a_teacher_checkpoint_of_another_task_or_classes_is_refused(tmp_path):
    path = classifier_file(tmp_path, ["a", "b"])
    p = pipeline(tmp_path, teacher_checkpoint=str(path))
    assert p.check_teacher_checkpoint("classification", ["a", "b"])["classes"] == ["a", "b"]
    assert pipeline(tmp_path, teacher_checkpoint=None).check_teacher_checkpoint(
        "classification") is None
    with pytest.raises(RecipeError, match=r"t\.pt: a classification model of the classes "
                                          r"\['a', 'b'\], the recipe needs a classification "
                                          r"model of the classes \['a', 'c'\]"):
        p.check_teacher_checkpoint("classification", ["a", "c"])
    with pytest.raises(RecipeError, match="needs a segmentation model"):
        p.check_teacher_checkpoint("segmentation")


def test_the_evaluation_stage_adds_history_and_runs_once(tmp_path):
    path = classifier_file(tmp_path, ["a", "b"])
    (path.parent / "log.csv").write_text("epoch,loss\n1,0.5\n")
    p = pipeline(tmp_path)
    calls = []

    def evaluate(model, card):
        calls.append(card["classes"])
        return {"name": "run", "n": 1}

    (p.out / "run").mkdir(parents=True)
    record = p.evaluate_record("run", path, evaluate)
    assert record == {"name": "run", "n": 1, "history": [{"epoch": 1.0, "loss": 0.5}],
                      "model_path": str(path)}
    assert json.loads((p.out / "run" / "eval.json").read_text()) == record
    p.resume = True
    assert p.evaluate_record("run", path, evaluate) == record
    assert calls == [["a", "b"]]  # resumed: read from eval.json, not evaluated again
