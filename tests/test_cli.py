"""The command line: help, errors as one line with a non-zero exit, profile, evaluate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medistill.engine import save_model
from medistill.models import create_model
from medistill.pipelines import demo_data_root


def medistill(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medistill.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900)  # a loaded 2-core machine is slow


@pytest.mark.parametrize("command", [[], ["run"], ["evaluate"], ["profile"], ["demo"]])
def test_help_everywhere(command):
    res = medistill(*command, "--help")
    assert res.returncode == 0 and "Usage" in res.stdout


def test_bad_recipe_is_one_line_naming_the_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: resolution_kd\ndata: {root: x}\ntrain: {epochs: 2, lrr: 0.1}\n")
    res = medistill("run", str(recipe), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {recipe}: train.lrr: unknown key"
    assert not (tmp_path / "o").exists()


def test_missing_data_root_names_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    root = tmp_path / "nowhere"
    recipe.write_text(f"method: resolution_kd\nruns: [baseline]\ndata: {{root: {root}}}\n")
    res = medistill("run", str(recipe), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "CSV manifest not found" in res.stderr and "nowhere" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_unknown_method_lists_the_known_ones(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: magic\n")
    res = medistill("run", str(recipe))
    assert res.returncode == 2 and "resolution_kd" in res.stderr


def test_profile_prints_gflops_and_params():
    res = medistill("profile", "--model", "small_resnet", "--size", "64", "--num-classes", "6",
                    "--repeats", "2")
    assert res.returncode == 0, res.stderr
    assert "params: 1,232,230" in res.stdout and "GFLOPs" in res.stdout


def test_evaluate_a_checkpoint_on_a_split(tmp_path):
    meta = {"model": {"name": "small_resnet", "kwargs": {}},
            "classes": ["adenocarcinoma", "low_grade_in", "normal", "polyp"],
            "view": {"factor": 8, "upsample": False},
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    path = save_model(create_model("small_resnet", 4), meta, tmp_path / "m.pt")
    res = medistill("evaluate", str(path), "--data", str(demo_data_root()), "--split", "val",
                    "--n-resamples", "100", "--out", str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr
    assert "28x28" in res.stdout
    assert (tmp_path / "ev" / "report.html").is_file()


def test_evaluate_several_classifiers_compares_them_paired(tmp_path):
    meta = {"model": {"name": "small_resnet", "kwargs": {}},
            "classes": ["adenocarcinoma", "low_grade_in", "normal", "polyp"],
            "view": {"factor": 8, "upsample": False},
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    a = save_model(create_model("small_resnet", 4), meta, tmp_path / "a.pt")
    b = save_model(create_model("small_resnet", 4), {**meta, "view": {"factor": 4}},
                   tmp_path / "b.pt")
    res = medistill("evaluate", str(a), str(b), str(a), "--data", str(demo_data_root()),
                    "--split", "val", "--n-resamples", "100", "--out", str(tmp_path / "ev"))
    assert res.returncode == 0, res.stderr
    assert "paired on the same 39 images (100 bootstrap resamples)" in res.stdout
    # the first model against itself: a zero difference, and the verdict says so
    assert ("no significant difference between " f"{a} and {a}: +0.0 points [+0.0, +0.0]"
            in res.stdout)
    import json

    body = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [c["model"] for c in body["comparisons"]] == [str(b), str(a)]
    other = save_model(create_model("small_resnet", 3), {**meta, "classes": ["x", "y", "z"]},
                       tmp_path / "c.pt")
    res = medistill("evaluate", str(a), str(other), "--data", str(demo_data_root()),
                    "--split", "val", "--n-resamples", "10")
    assert res.returncode == 2 and "cannot compare" in res.stderr and str(other) in res.stderr


def test_evaluate_rejects_a_non_model_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    res = medistill("evaluate", str(bad), "--data", str(demo_data_root()))
    assert res.returncode == 2 and str(bad) in res.stderr


def test_nproc_refuses_pipelines_without_ddp_support(tmp_path, monkeypatch):
    """Every packaged recipe supports DDP (issue #15); a pipeline that does not opt in (a
    plugin's default) is refused before any process starts."""
    from typer.testing import CliRunner

    from medistill.cli import app
    from medistill.errors import RecipeError
    from medistill.pipelines import RECIPES

    assert all(pipeline.supports_ddp for _, pipeline in RECIPES.values())
    monkeypatch.setattr(RECIPES["more_from_less"][1], "supports_ddp", False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: more_from_less\ndata: {{root: {demo_data_root()}}}\n")
    res = CliRunner().invoke(app, ["run", str(recipe), "--nproc", "2", "--out",
                                   str(tmp_path / "o")])
    assert isinstance(res.exception, RecipeError)
    assert "does not support multi-process training" in str(res.exception)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_run_with_two_processes_writes_one_report(tmp_path):
    res = medistill(
        "run", "src/medistill/recipes/demo.yaml", "--out", str(tmp_path / "o"), "--nproc", "2",
        "--no-progress", "--set", f"data.root={demo_data_root()}", "--set", "teacher_factor=4",
        "--set", "student_factors=[2]", "--set", "train.epochs=1", "--set",
        "stages.teacher.epochs=1", "--set", "eval.n_resamples=100",
        cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0, res.stderr
    assert "seed0/x2/kd" in res.stdout
    assert (tmp_path / "o" / "report.html").is_file()


def test_demo_prints_accuracies_paired_difference_and_a_verdict_that_follows(tmp_path):
    """The demo with a tiny config (the full demo is not run in the suite)."""
    import json

    from medistill.metrics.paired import verdict

    tiny = ["teacher_factor=8", "student_factors=[2]", "student.kwargs={input_size: 14}",
            "train.epochs=1", "stages={teacher: {epochs: 1}, finetune: {epochs: 1}}",
            "eval.n_resamples=200", "eval.latency=false", "train.tensorboard=false"]
    res = medistill("demo", "--out", str(tmp_path / "d"), "--no-progress",
                    *[a for o in tiny for a in ("--set", o)])
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    assert [r["role"] for r in results["runs"]] == ["teacher", "baseline", "kd", "kd_aux"]
    assert "a " in res.stdout and "-point gap to distil" in res.stdout
    assert "paired on the same 129 images (200 bootstrap resamples)" in res.stdout
    names = {"kd": "KD", "kd_aux": "KD+aux"}
    for c in results["comparisons"]:
        line = verdict(c["metrics"]["accuracy"], names[c["model"]], "the baseline")
        assert f"-> {line}" in res.stdout


def test_version_prints_the_package_version():
    import tomllib

    from medistill import __version__

    res = medistill("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"medistill {__version__}"
    root = Path(__file__).resolve().parents[1]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"] == __version__
