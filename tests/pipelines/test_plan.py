"""The plan of a recipe (stages, seeds, epochs) matches what its pipeline trains; the banner,
stage counter and run.log of a run; ``--dry-run`` checks everything and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe
from medistill.pipelines.plan import plan_recipe

from .test_resume_exact import _recipe

SLOW = pytest.mark.slow


def _demo(*overrides: str):
    return load_recipe(demo_recipe_path(), list(overrides), {"demo_data": str(demo_data_root())})


TINY_DEMO = ["teacher_factor=8", "student_factors=[2]", "student.kwargs={input_size: 14}",
             "train.epochs=1", "stages={teacher: {epochs: 2}, finetune: {epochs: 1}}",
             "eval.n_resamples=20", "eval.latency=false", "train.tensorboard=false"]


def _trained(out: Path) -> list[str]:
    return sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("train_done.json"))


def test_demo_plan():
    plan = plan_recipe(_demo())
    assert [(s.name, s.stage, s.epochs) for s in plan.stages] == [
        ("seed0/teacher", "teacher", 40), ("seed0/x4/baseline", "baseline", 30),
        ("seed0/x4/kd", "kd", 30), ("seed0/x4/kd_aux_distill", "kd_aux", 30),
        ("seed0/x4/kd_aux", "finetune", 20)]
    assert plan.total_epochs == 150
    banner = plan.banner("runs/demo").splitlines()
    assert banner[0].endswith("-> runs/demo")
    assert banner[1] == "  5 training stages, 150 epochs; seeds [0]; runs baseline, kd, kd_aux"
    assert banner[2].split() == ["1", "seed0/teacher", "teacher", "40", "epochs"]


def test_a_long_plan_shows_the_first_seed_only():
    plan = plan_recipe(_demo("seeds=[0, 1, 2]", "student_factors=[2, 4, 8]"))
    assert len(plan.stages) == 3 * (1 + 3 * 4)
    lines = plan.banner().splitlines()
    assert len(lines) == 2 + 12 + 1
    assert lines[-1] == "  ... and 27 more stages for the other seeds [1, 2] (the same per seed)"


def test_plans_of_the_other_recipes(tmp_path):
    names = {m: [s.name for s in plan_recipe(_recipe(m, tmp_path)).stages]
             for m in ("more_from_less", "hlfd", "mil_fusion", "graph_relation")}
    assert names["more_from_less"] == [
        "seed0/7px/vicreg_asymmetric/ssl", "seed0/7px/vicreg_asymmetric/probe_main",
        "seed0/7px/vicreg_asymmetric/probe_transfer", "seed0/7px/supervised",
        "seed0/7px/supervised/probe_transfer"]
    assert names["hlfd"] == ["seed0/teacher", "seed0/hlfd"]
    assert names["mil_fusion"] == ["seed0/mil_teacher", "seed0/kd_round1", "seed0/ikd/round2"]
    assert names["graph_relation"] == ["seed0/teacher", "seed0/full"]
    mil = plan_recipe(_recipe("mil_fusion", tmp_path))
    assert [s.optional for s in mil.stages] == [False, False, True]  # ikd may stop early
    assert "1 may be skipped" in mil.banner()


def _check_plan(recipe, out: Path) -> None:
    """Every stage trained was planned; every planned stage not marked optional was trained."""
    trained, planned = set(_trained(out)), plan_recipe(recipe).stages
    assert trained <= {s.name for s in planned}
    assert {s.name for s in planned if not s.optional} <= trained


@pytest.mark.parametrize("name", ["mil_fusion", "graph_relation",
                                  pytest.param("hlfd", marks=SLOW),
                                  pytest.param("more_from_less", marks=SLOW)])
def test_the_plan_is_what_the_pipeline_trains(name, tmp_path, single_thread):
    recipe = _recipe(name, tmp_path)
    run_recipe(recipe, tmp_path / "out", progress=False)
    _check_plan(recipe, tmp_path / "out")


def test_run_log_has_the_banner_and_numbered_epoch_lines_and_resume_skips(tmp_path, capsys,
                                                                         single_thread):
    recipe = _recipe("graph_relation", tmp_path)
    out = tmp_path / "out"
    run_recipe(recipe, out, progress=False)
    printed = capsys.readouterr().out
    log = (out / "run.log").read_text()
    assert log.startswith("medistill starting graph_relation: ")
    assert "2 training stages, 4 epochs; seeds [0]; runs full" in log
    assert "[stage 1/2 seed0/teacher] 2 epochs, " in log
    assert "[stage 1/2 seed0/teacher] epoch 1/2  loss " in log
    assert "[stage 2/2 seed0/full] epoch 2/2  loss " in log and "(affinity " in log
    assert "ETA " in log  # the first epoch estimates the rest of the stage and run
    assert "[stage 2/2 seed0/full] done in " in log
    assert "{" not in log  # no raw dict
    *lines, last = log.splitlines()
    assert set(lines) <= set(printed.splitlines())  # --no-progress: still printed
    assert last.startswith("finished in ")  # (the CLI prints where the report is)
    run_recipe(recipe, out, resume=True, progress=False)
    log = (out / "run.log").read_text()
    assert "medistill resuming graph_relation" in log
    assert "[stage 1/2 seed0/teacher] trained already (resume)" in log
    from medistill.pipelines import RECIPES

    again = RECIPES["graph_relation"][1](recipe, out, resume=True, progress=False)
    again.announce()  # finished stages count as done before the pipeline reaches them
    assert again.tracker.done == {"seed0/teacher": 2, "seed0/full": 2}


def test_run_log_says_how_a_run_ended(tmp_path, monkeypatch, single_thread):
    from medistill.engine.trainer import Trainer

    def interrupt(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_recipe(_recipe("graph_relation", tmp_path), out, progress=False)
    lines = (out / "run.log").read_text().splitlines()
    assert lines[-2].startswith("[stage 1/2 seed0/teacher] 2 epochs") and lines[-1] == \
        "interrupted"


@SLOW
def test_the_demo_trains_its_plan(tmp_path, single_thread):
    recipe = _demo(*TINY_DEMO)
    run_recipe(recipe, tmp_path / "out", progress=False)
    _check_plan(recipe, tmp_path / "out")
    log = (tmp_path / "out" / "run.log").read_text()
    assert "[stage 3/5 seed0/x2/kd] epoch 1/1  loss " in log and "(pixel " in log


# ----------------------------------------------------------------------------- --dry-run
def _cli(*args: str):
    from typer.testing import CliRunner

    from medistill.cli import app

    return CliRunner().invoke(app, list(args))


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "d"
    res = _cli("demo", "--dry-run", "--out", str(out), "--set", "seeds=[0, 1]")
    assert res.exit_code == 0, res.output
    assert "nothing was written" in res.output
    assert "10 training stages, 300 epochs; seeds [0, 1]" in res.output
    assert "seed1/x4/kd_aux_distill" in res.output
    assert not out.exists()


def test_dry_run_finds_bad_data_and_an_existing_run(tmp_path):
    from medistill.errors import MedistillError

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "resolution_kd.yaml"
    out = tmp_path / "r"
    res = _cli("run", str(recipe), "--dry-run", "--out", str(out),
               "--set", f"data.root={tmp_path / 'nowhere'}")
    assert isinstance(res.exception, MedistillError) and "labels.csv" in str(res.exception)
    assert not out.exists()
    out.mkdir()
    (out / "recipe.json").write_text("{}")
    (out / ".medistill-run").write_text("{}")
    res = _cli("demo", "--dry-run", "--out", str(out))
    assert "already has a run; pass --resume" in str(res.exception)
    assert sorted(p.name for p in out.iterdir()) == [".medistill-run", "recipe.json"]


@SLOW
def test_only_the_main_process_prints_and_logs(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-m", "medistill.cli", "run", "src/medistill/recipes/demo.yaml",
         "--out", str(tmp_path / "o"), "--nproc", "2", "--no-progress",
         "--set", f"data.root={demo_data_root()}", "--set", "teacher_factor=4",
         "--set", "student_factors=[2]", "--set", "runs=[baseline]", "--set", "aux_data=[]",
         "--set", "train.epochs=1",
         "--set", "stages.teacher.epochs=1", "--set", "eval.n_resamples=20",
         "--set", "eval.latency=false"],
        capture_output=True, text=True, timeout=900, cwd=root)
    assert res.returncode == 0, res.stderr
    lines = [x for x in res.stdout.splitlines() if x.startswith("[stage ")]
    log = [x for x in (tmp_path / "o" / "run.log").read_text().splitlines()
           if x.startswith("[stage ")]
    assert lines == log and len(lines) == 2 * 3  # start, one epoch, done; per stage, once
    assert res.stdout.count("medistill starting resolution_kd") == 1
