"""The hlfd recipe end to end on a tiny synthetic 3-class dataset (tiny models, 1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from seg_fixtures import write_seg_dataset
from typer.testing import CliRunner

from medistill.cli import app
from medistill.engine import load_model
from medistill.errors import DataError, RecipeError
from medistill.pipelines import load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.image_size=32",
    "data.classes=[background, disc, square]",
    "data.image_pattern='images/{name}.png'",
    "teacher.kwargs={features: [4, 4, 8, 8, 16, 4]}",
    "student.kwargs={widths: [8, 8, 16, 16], decoder_widths: [16, 8, 8, 4, 4]}",
    "seeds=[0]",
    "train.epochs=1",
    "train.batch_size=4",
    "train.device=cpu",
    "train.tensorboard=false",
    "train.progress=false",
    "eval.n_resamples=50",
    "eval.latency_repeats=1",
    "eval.overlays=2",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg") / "data"
    return write_seg_dataset(root, {"train": 6, "testB": 2, "testA": 3}, classes=3)


def tiny(root: Path, *extra: str):
    return load_recipe(ROOT / "recipes" / "hlfd_glas.yaml",
                       [f"data.root={root}", *TINY, *extra])


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("run") / "out"
    return out, run_recipe(tiny(data_root), out, progress=False)


def test_teacher_and_every_student_are_trained_evaluated_and_reported(full_run):
    out, results = full_run
    assert [r["role"] for r in results["runs"]] == ["teacher", "no_kd", "logit_kd", "at", "hlfd"]
    for r in results["runs"]:
        assert r["n"] == 3 and r["split"] == "test"
        for name in ("dice", "voe", "rvd", "hd95"):
            m = r["metrics"][name]
            assert m["value"] != m["value"] or m["low"] <= m["value"] <= m["high"]  # NaN ok
        assert set(r["per_class"]) == {"disc", "square"}
        assert r["efficiency"]["params"] > 0 and r["efficiency"]["gflops"] > 0
        assert r["efficiency"]["latency_ms"] > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "segmentation" and saved["runs"][0]["name"] == "seed0/teacher"
    assert "cases" not in saved["runs"][0]  # per-case values stay in each run's eval.json
    assert len(json.loads((out / "seed0/hlfd/eval.json").read_text())["cases"]) == 3
    html = (out / "report.html").read_text()
    assert "DSC (95% CI)" in html and "seed0/hlfd" in html and 'id="overlays"' in html
    assert "Per class" in html and "Accuracy" not in html
    md = (out / "report.md").read_text()
    assert "figures/overlays.png" in md and (out / "figures/overlays.png").is_file()
    _, meta = load_model(out / "seed0/hlfd/best.pt")
    assert meta["task"] == "segmentation" and meta["model"]["name"] == "resnet18_unet"
    assert meta["threshold"] == 0.4 and "root" not in meta["data"]


def test_existing_output_needs_resume_and_resume_reuses_runs(full_run, data_root):
    out, results = full_run
    with pytest.raises(RecipeError, match="--resume"):
        run_recipe(tiny(data_root, "runs=[no_kd]"), out, progress=False)
    again = run_recipe(tiny(data_root, "runs=[no_kd]"), out, resume=True, progress=False)
    assert again["runs"][1]["metrics"] == results["runs"][1]["metrics"]


def test_cli_evaluate_dispatches_on_segmentation_checkpoints(full_run, data_root, tmp_path):
    out, _ = full_run
    res = CliRunner().invoke(app, ["evaluate", str(out / "seed0/hlfd/best.pt"), "--data",
                                   str(data_root), "--split", "testB", "--n-resamples", "20",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "DSC" in res.output and (tmp_path / "ev" / "report.html").is_file()
    record = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert record["n"] == 2 and "dice" in record["metrics"]


def test_teacher_checkpoint_of_other_classes_is_rejected(full_run, data_root, tmp_path):
    out, _ = full_run
    recipe = tiny(data_root, f"teacher_checkpoint={out / 'seed0/teacher/best.pt'}",
                  "data.classes=[background, gland]", "runs=[no_kd]")
    with pytest.raises(RecipeError, match="teacher_checkpoint"):
        run_recipe(recipe, tmp_path / "o", progress=False)


@pytest.mark.parametrize(("override", "message"), [
    ("runs=[fitnets]", "runs.0"),
    ("kd.temperature=0", "kd.temperature"),
    ("kd.at_reduction=batchmean", "kd.at_reduction"),
    ("data.image_size=2", "data.image_size"),
    ("train.select_metric=dsc", "train.select_metric"),
])
def test_bad_recipe_values_name_the_key(data_root, override, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        tiny(data_root, override)


def test_missing_data_names_the_file(tmp_path):
    with pytest.raises(DataError, match="labels.csv"):
        run_recipe(tiny(tmp_path / "nowhere"), tmp_path / "o", progress=False)
