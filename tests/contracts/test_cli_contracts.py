"""Every registered model of every task exports and evaluates from the CLI (issue #14), with
the model card its recipe pipeline writes: ``medistill export`` (ONNX, parity checked) and
``medistill evaluate`` on a tiny dataset of the task's layout.

(The old failure this guards: ``medistill export`` of a graph-relation model crashed with
``KeyError: 'view'``: an instance card has no view.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SPLITS, random_image, write_png
from instance_fixtures import write_instance_dataset
from seg_fixtures import write_seg_dataset
from test_model_contracts import build, classes_of, model_card, task_of
from typer.testing import CliRunner
from weak_fixtures import write_weak_dataset

from medistill.cli import app
from medistill.engine import save_model
from medistill.models import list_models
from medistill.tasks import get_task, task_name

pytestmark = pytest.mark.usefixtures("single_thread")

#: per task: the card's data section and the split evaluated
DATA = {
    "classification": ({"format": "folders"}, "val"),
    "segmentation": ({"image_pattern": "images/{name}.png", "image_size": 32,
                      "classes": ["background", "object"]}, "testA"),
    "weak": ({"setup": "custom", "image_pattern": "images/{name}.png", "positive": ["tumour"],
              "negative": ["benign"], "splits": {"train": "train", "val": "val",
                                                 "test": "test"}, "image_size": 32}, "test"),
    "instance": ({"splits": {"train": "train", "val": "val", "test": "test"}}, "test"),
}


def write_data(task: str, root: Path) -> Path:
    if task == "classification":
        seed = 0
        for split, n in TINY_SPLITS.items():
            for cls in classes_of(task):
                for i in range(n):
                    write_png(root / split / cls / f"img{i}.png", random_image(seed))
                    seed += 1
        return root
    if task == "segmentation":
        return write_seg_dataset(root, {"train": 2, "testA": 2})
    if task == "weak":
        return write_weak_dataset(root, {"train": 2, "val": 2, "test": 2})
    return write_instance_dataset(root, {"train": 1, "val": 1, "test": 2}, size=32)


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_and_evaluates_from_the_cli(name, tmp_path):
    task = task_of(name)
    data, split = DATA[task]
    card = model_card(name, data)
    model_file = save_model(build(name).eval(), card, tmp_path / "run" / "best.pt")
    cli = CliRunner()
    size = [] if card.get("image_size") else ["--input-size", "32"]
    res = cli.invoke(app, ["export", str(model_file), "--out", str(tmp_path / "m.onnx"), *size])
    assert res.exit_code == 0, res.output
    sidecar = json.loads((tmp_path / "m.onnx.json").read_text())
    assert sidecar["max_abs_diff"] < 1e-4 and sidecar["card_version"] == card["card_version"]
    registered = get_task(task_name(card))
    assert sidecar["output"] == registered.export_signature()["output"]
    assert all(sidecar[k] == card[k] for k in registered.export_keys)

    root = write_data(task, tmp_path / "data")
    res = cli.invoke(app, ["evaluate", str(model_file), "--data", str(root), "--layout",
                           "folders", "--split", split, "--n-resamples", "20",
                           "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "ev" / "eval.json").read_text())
    shown = [m for c in registered.columns for m in (c.metric, c.then) if m]
    assert record["metrics"] and all(m in record["metrics"] for m in shown)


#: the function ``medistill evaluate`` hands each task's model to
EVALUATORS = {
    "classification": ("medistill.pipelines.evaluate", "evaluate_classifier"),
    "segmentation": ("medistill.pipelines.evaluate_segmentation", "evaluate_segmenter"),
    "weak": ("medistill.pipelines.evaluate_weak", "evaluate_weak"),
    "instance": ("medistill.pipelines.evaluate_instances", "evaluate_instance_model"),
}


@pytest.mark.parametrize("task", sorted(EVALUATORS))
def test_evaluate_passes_device_to_every_task(task, tmp_path, monkeypatch):
    """``--device`` reaches the evaluation of every task (the instance branch ignored it and
    ran on the CPU whatever was asked)."""
    import importlib

    name = next(m for m in list_models() if task_of(m) == task)
    data, split = DATA[task]
    model_file = save_model(build(name).eval(), model_card(name, data),
                            tmp_path / "run" / "best.pt")
    module, attr = EVALUATORS[task]
    seen: list[str] = []

    def stop(*args, **kwargs):
        seen.append(kwargs.get("device", "<not passed>"))
        raise SystemExit(0)

    monkeypatch.setattr(importlib.import_module(module), attr, stop)
    root = write_data(task, tmp_path / "data")
    CliRunner().invoke(app, ["evaluate", str(model_file), "--data", str(root), "--layout",
                             "folders", "--split", split, "--device", "auto"])
    assert seen == ["auto"]
