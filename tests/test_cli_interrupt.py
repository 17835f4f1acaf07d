"""``medistill run``: Ctrl-C prints the command that resumes (exit 130, no traceback), and a
folder medistill did not create is never written into."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from instance_fixtures import write_instance_dataset
from typer.testing import CliRunner

from medistill.cli import app
from medistill.pipelines import demo_data_root

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "graph_relation_monuseg.yaml"
TINY = ["data.crop_size=24", "data.crops_per_image=2",
        "data.splits={train: train, val: val, test: test}",
        "teacher.kwargs={widths: [4, 4, 8], embedding_dim: 4}",
        "student.kwargs={widths: [2, 2, 4], embedding_dim: 4}", "kd.offsets=[1, 3, 9]",
        "runs=[no_kd]", "seeds=[0]", "train.batch_size=2", "train.tensorboard=false",
        "postprocess.method=watershed", "postprocess.min_size=2", "eval.n_resamples=20",
        "eval.latency=false", "eval.overlays=0"]
CLI = [sys.executable, "-m", "medistill.cli"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_instance_dataset(tmp_path_factory.mktemp("inst") / "data",
                                  {"train": 2, "val": 1, "test": 1})


def _sets(data_root: Path, *extra: str) -> list[str]:
    return [x for s in [f"data.root={data_root}", *TINY, *extra] for x in ("--set", s)]


def test_ctrl_c_prints_the_resume_command_and_exits_130(monkeypatch, tmp_path):
    import medistill.pipelines as pipelines

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipelines, "run_recipe", interrupted)
    recipe = ROOT / "src" / "medistill" / "recipes" / "demo.yaml"
    out = tmp_path / "my run"
    res = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--no-progress",
                                   "--set", f"data.root={demo_data_root()}",
                                   "--set", "train.epochs=1"])
    assert res.exit_code == 130
    assert res.stderr.strip().splitlines() == [
        f"interrupted; resume with: medistill run {recipe} --out '{out}' "
        f"--set data.root={demo_data_root()} --set train.epochs=1 --no-progress --resume"]
    assert "Traceback" not in res.output

    res = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 130
    assert res.stderr.strip() == f"interrupted; resume with: medistill demo --out '{out}' --resume"


@pytest.mark.slow
def test_a_real_sigint_then_the_printed_command_finishes_the_run(data_root, tmp_path):
    out = tmp_path / "out"
    args = ["run", str(RECIPE), "--out", str(out), "--no-progress",
            *_sets(data_root, "train.epochs=30", "stages.no_kd={epochs: 1}")]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not (out / "seed0" / "teacher" / "last.pt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted; resume with: medistill run ") and "--resume" in last
    command = shlex.split(last.split(": ", 1)[1])
    res = subprocess.run([*CLI, *command[1:]], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert (out / "results.json").is_file()


def test_run_refuses_an_out_folder_it_did_not_create(data_root, tmp_path):
    from medistill.errors import RecipeError

    out = tmp_path / "results"
    log = out / "seed0" / "teacher" / "log.csv"
    log.parent.mkdir(parents=True)
    log.write_text("a user's own log\n")
    for resume in ([], ["--resume"]):
        res = CliRunner().invoke(app, ["run", str(RECIPE), "--out", str(out), "--no-progress",
                                       *_sets(data_root, "train.epochs=1"), *resume])
        assert isinstance(res.exception, RecipeError)  # main(): "error: ..." and exit 2
        assert str(res.exception) == (
            f"--out {out} is not empty and is not a medistill run folder (no "
            ".medistill-run); medistill writes only into folders it created: choose another "
            "--out")
    assert log.read_text() == "a user's own log\n"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "seed0", "seed0/teacher", "seed0/teacher/log.csv"]
