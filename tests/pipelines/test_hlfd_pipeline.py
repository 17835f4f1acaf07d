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
from medistill.pipelines.segmentation import case_values, paired_comparisons

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


def test_paired_differences_against_no_kd_are_computed_and_reported(full_run):
    """Per seed, each role minus no_kd on the same test cases, from the eval.json cases."""
    out, results = full_run
    paired = results["paired"]
    assert paired["reference"] == "no_kd" and paired["metric"] == "dice"
    assert [d["role"] for d in paired["per_seed"]] == ["teacher", "logit_kd", "at", "hlfd"]
    ref = case_values(json.loads((out / "seed0/no_kd/eval.json").read_text()))
    hlfd = case_values(json.loads((out / "seed0/hlfd/eval.json").read_text()))
    d = paired["per_seed"][-1]
    assert d["n"] == 3 and d["value"] == pytest.approx(
        sum(hlfd[k] - ref[k] for k in ref) / 3, abs=1e-12)
    assert d["low"] <= d["value"] <= d["high"]
    assert [s["role"] for s in paired["over_seeds"]][0] == "teacher"
    html = (out / "report.html").read_text()
    assert "Paired differences vs no_kd (dice per case)" in html
    assert json.loads((out / "results.json").read_text())["paired"] == paired


def _record(role: str, seed: int, dice: dict[str, list[float]]) -> dict:
    return {"name": f"seed{seed}/{role}", "role": role, "seed": seed,
            "cases": {c: {f"k{i}": {"dice": v} for i, v in enumerate(vs)}
                      for c, vs in dice.items()}}


def test_paired_comparisons_by_hand():
    """Two seeds, two cases of two classes (per case: the mean over its defined classes).
    Seed 0: hlfd cases 0.6, 0.8 vs no_kd 0.5, 0.5 -> +0.2; seed 1: 0.5, 0.7 vs 0.5, 0.5 ->
    +0.1; over seeds 0.15 ± 0.0707. Teacher first (gap 0.9 - 0.5 = 0.4)."""
    nan = float("nan")
    runs = [
        _record("hlfd", 0, {"a": [0.6, 0.6], "b": [0.8, nan]}),
        _record("no_kd", 0, {"a": [0.4, 0.6], "b": [0.5, 0.5]}),
        _record("teacher", 0, {"a": [0.9, 0.9], "b": [0.9, 0.9]}),
        _record("no_kd", 1, {"a": [0.5, 0.5], "b": [0.5, 0.5]}),
        _record("hlfd", 1, {"b": [0.7, 0.7], "a": [0.5, 0.5]}),
    ]
    res = paired_comparisons(runs, n_resamples=200)
    assert [(d["role"], d["seed"]) for d in res["per_seed"]] == [
        ("teacher", 0), ("hlfd", 0), ("hlfd", 1)]
    assert [d["value"] for d in res["per_seed"]] == pytest.approx([0.4, 0.2, 0.1])
    assert res["per_seed"][1]["model"] == pytest.approx(0.7)
    hlfd = res["over_seeds"][1]
    assert hlfd["role"] == "hlfd" and hlfd["n_seeds"] == 2
    assert (hlfd["mean"], hlfd["sd"]) == pytest.approx((0.15, 0.05 * 2 ** 0.5))
    assert paired_comparisons([r for r in runs if r["role"] != "no_kd"]) is None
    runs[0]["cases"].pop("b")
    with pytest.raises(DataError, match="different images"):
        paired_comparisons(runs, n_resamples=10)


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
