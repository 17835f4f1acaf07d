"""Failing fast and in one line: bad data found before any folder exists, output locations
checked first, recipe / model-file problems named, DataLoader-worker errors unwrapped."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import random_image, write_png
from torch.utils.data import DataLoader, Dataset

from medistill.config import DataConfig
from medistill.engine import save_model
from medistill.engine.checkpoint import MODEL_FORMAT, atomic_write_bytes
from medistill.errors import DataError, OutputError, RecipeError, one_line
from medistill.models import create_model
from medistill.output import remove_stale_tmp
from medistill.pipelines import load_recipe, run_recipe
from medistill.pipelines.resolution import ResolutionRecipe


def medistill(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medistill.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def _with_test_split(tiny) -> Path:
    """The tiny dataset plus a 2-image test split; returns the path of the bad test image."""
    rows = list(csv.DictReader(tiny.csv.open()))
    for i, cls in enumerate(tiny.classes):
        rel = f"test/{cls}/img{i}.png"
        write_png(tiny.root / rel, random_image(100 + i))
        rows.append({"path": rel, "label": cls, "split": "test"})
    with tiny.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    bad = tiny.root / rows[-1]["path"]
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    return bad


def test_a_bad_test_image_stops_the_run_before_any_folder_exists(tiny_dataset, tmp_path):
    bad = _with_test_split(tiny_dataset)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"method: resolution_kd\ndata: {{root: {tiny_dataset.root}}}\n"
                      "runs: [baseline]\nstudent_factors: [2]\ntrain: {epochs: 1}\n")
    out = tmp_path / "o"
    res = medistill("run", str(recipe), "--out", str(out), "--no-progress")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read image ")
    assert str(bad) in lines[0]
    assert not out.exists()


def _six_commands(tmp_path: Path, blocker: Path) -> dict[str, list[str]]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: resolution_kd\ndata: {root: nowhere}\n")
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    under = str(blocker / "sub")
    return {
        "run": ["run", str(recipe), "--out", under],
        "demo": ["demo", "--out", under],
        "evaluate": ["evaluate", str(model), "--data", "nowhere", "--out", under],
        "export": ["export", str(model), "--out", str(blocker / "m.onnx")],
        "predict": ["predict", str(model), "--images", str(tmp_path), "--out",
                    str(blocker / "p.csv")],
        "predict-wsi": ["predict-wsi", "slide.svs", "--model", str(model), "--out", under],
    }


@pytest.mark.parametrize("command", ["run", "demo", "evaluate", "export", "predict",
                                     "predict-wsi"])
def test_an_output_under_a_file_is_one_line_naming_it(command, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    res = medistill(*_six_commands(tmp_path, blocker)[command])
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: --out ") and f"{blocker} is a file" in res.stderr
    assert blocker.read_text() == "not a folder"


def test_an_out_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = medistill("demo", "--out", str(blocker))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: --out {blocker}: exists and is not a folder"


def test_a_read_only_output_folder(tmp_path, monkeypatch, capsys):
    """A read-only location (emulated: root may write anywhere, so CI could not chmod its way
    there) is refused in one line before anything is created."""
    from medistill import cli, output

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(output.os, "access",
                        lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    monkeypatch.setattr(sys, "argv", ["medistill", "demo", "--out", str(ro / "o")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "read-only or no permission" in err and not (ro / "o").exists()


def test_out_of_space_is_one_line_naming_the_file_and_leaves_no_temp(tmp_path):
    def full_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "run" / "last.pt"
    with pytest.raises(OutputError) as err:
        atomic_write_bytes(target, full_disk)
    assert str(err.value) == f"cannot write {target}: No space left on device"
    assert list(target.parent.iterdir()) == []
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write .*afile/x.json"):
        atomic_write_bytes(blocker / "x.json", lambda f: f.write(b"{}"))


def test_cuda_device_on_a_machine_without_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: resolution_kd\ndata: {root: x}\n")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    res = medistill("run", str(recipe), "--set", f"train.device=cuda:{n}", "--out",
                    str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert f"r.yaml: train.device: 'cuda:{n}'" in res.stderr
    assert not (tmp_path / "o").exists()


def test_recipe_problems_are_found_when_it_is_read(tmp_path):
    recipe = tmp_path / "r.yaml"
    base = "method: resolution_kd\ndata: {root: x}\n"
    cases = {
        "stages:\n  kd: {lrr: 1}\n": "r.yaml: stages.kd: lrr: unknown key",
        "stages:\n  kd: {device: nonsense}\n": "r.yaml: stages.kd: device: 'nonsense' is not",
        "student: {name: resnet99}\n": "r.yaml: student.name: unknown model 'resnet99'",
        "teacher: {name: small_resnet, kwargs: {widht: 3}}\n":
            "r.yaml: teacher: kwargs of model 'small_resnet': got an unexpected keyword",
    }
    for extra, message in cases.items():
        recipe.write_text(base + extra)
        with pytest.raises(RecipeError) as err:
            load_recipe(recipe)
        assert str(err.value).startswith(f"{tmp_path}/{message}"), str(err.value)
    recipe.write_text(base + "train:\n  epochs: [1\n  lr: 2\n")
    with pytest.raises(RecipeError, match=r"r.yaml:5:5: invalid YAML: expected ','"):
        load_recipe(recipe)
    recipe.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RecipeError, match=r"r.yaml: not a text \(UTF-8 YAML\) file"):
        load_recipe(recipe)
    recipe.write_text("\ufeff" + base)  # a BOM from a Windows editor is fine
    assert load_recipe(recipe).method == "resolution_kd"
    with pytest.raises(RecipeError, match=r"--set 'train.lr=\[1': invalid YAML value"):
        load_recipe(recipe, ["train.lr=[1"])


def test_bad_kwarg_values_are_one_line_naming_the_model():
    with pytest.raises(RecipeError, match=r"^model 'small_resnet' \(in_channels='three'\): "):
        create_model("small_resnet", 2, in_channels="three")
    with pytest.raises(RecipeError, match=r"^model 'small_resnet' \(groups=0\): "):
        create_model("small_resnet", 2, groups=0)


META = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": ["a", "b"],
        "view": {"factor": 8, "upsample": False},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def test_broken_model_files_are_one_line_errors(tmp_path):
    model = create_model("small_resnet", 2)
    torch.save({"format": MODEL_FORMAT, "classes": ["a", "b"],
                "state_dict": model.state_dict()}, tmp_path / "nokey.pt")
    save_model(model, {**META, "model": {"name": "small_resnet", "kwargs": {"widht": 2}}},
               tmp_path / "kwargs.pt")
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    save_model(model, META, tmp_path / "nan.pt")
    expect = {"nokey.pt": "is not a medistill model file (no model, classes or state_dict)",
              "kwargs.pt": "cannot rebuild its model: model 'small_resnet' (widht=2)",
              "nan.pt": "weights are not finite (NaN or inf in head.weight)"}
    for name, message in expect.items():
        res = medistill("evaluate", str(tmp_path / name), "--data", str(tmp_path))
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith(f"error: {tmp_path / name}"), res.stderr
        assert message in res.stderr


class _Broken(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise DataError(f"cannot read image /data/img{i}.png: truncated")


def test_an_error_in_a_dataloader_worker_is_one_line():
    with pytest.raises(DataError) as err:
        next(iter(DataLoader(_Broken(), batch_size=1, num_workers=1)))
    assert "Traceback" in str(err.value)  # what torch hands back
    assert one_line(err.value) == "cannot read image /data/img0.png: truncated"
    assert one_line(FileNotFoundError(2, "No such file", "/x/y")) == "/x/y: No such file"


def test_stale_temporary_files_are_removed_when_the_folder_is_reopened(tmp_path):
    out = tmp_path / "o"
    (out / "seed0" / "teacher").mkdir(parents=True)
    stale = [out / ".recipe.json.k2j4_x.tmp", out / "seed0" / "teacher" / ".last.pt.abc123.tmp"]
    for p in stale:
        p.write_bytes(b"half")
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    fresh = out / ".last.pt.zzz999.tmp"  # another live process's write in progress
    fresh.write_bytes(b"now")
    keep = out / ".hidden.tmp"  # not named like ours
    keep.write_bytes(b"x")
    os.utime(keep, (0, 0))
    foreign = tmp_path / "foreign"  # not a run folder: left alone
    foreign.mkdir()
    (foreign / ".notes.abc123.tmp").write_bytes(b"x")
    os.utime(foreign / ".notes.abc123.tmp", (0, 0))
    recipe = ResolutionRecipe(data=DataConfig(root=str(tmp_path / "no_data")), runs=["baseline"])
    for folder in (foreign, out):  # no recipe.json: not (yet) a run folder
        with pytest.raises(DataError, match="CSV manifest not found"):  # the run then stops
            run_recipe(recipe, folder, resume=True, progress=False)
    assert all(p.exists() for p in stale)
    (out / "recipe.json").write_text("{}")
    with pytest.raises(DataError, match="CSV manifest not found"):
        run_recipe(recipe, out, resume=True, progress=False)
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and keep.exists() and (foreign / ".notes.abc123.tmp").exists()
    assert remove_stale_tmp(tmp_path / "nowhere") == []


def test_student_factors_finer_than_the_original_are_refused_on_load(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: resolution_kd\ndata: {root: x}\nteacher_factor: 2\n"
                      "student_factors: [2, 0.25]\n")
    with pytest.raises(RecipeError, match=r"student_factors: teacher_factor x 0.25 < 1"):
        load_recipe(recipe)


def test_every_model_is_built_before_the_folder_is_created(tmp_path):
    recipe = ResolutionRecipe(data=DataConfig(root=str(tmp_path)),
                              student={"name": "small_resnet", "kwargs": {"groups": 0}})
    out = tmp_path / "o"
    with pytest.raises(RecipeError, match=r"^student: model 'small_resnet' \(groups=0\)"):
        run_recipe(recipe, out, progress=False)
    assert not out.exists()


def test_non_finite_outputs_are_not_evaluated(single_thread):
    from medistill.data import SampleList, read_manifest
    from medistill.errors import CheckpointError
    from medistill.pipelines import demo_data_root
    from medistill.pipelines.evaluate import evaluate_classifier

    samples = read_manifest(demo_data_root() / "labels.csv", "test").samples[:3]
    model = create_model("small_resnet", 4)
    with torch.no_grad():
        model.head.weight.fill_(3e38)  # finite weights, infinite logits
    meta = {**META, "classes": list("abcd")}
    with pytest.raises(CheckpointError, match=r"outputs are not finite for 3 of 3 images"):
        evaluate_classifier(model.eval(), meta, SampleList(samples, list("abcd")),
                            n_resamples=10, latency=False)


def test_predict_wsi_checks_its_output_folder_before_the_slide(tmp_path):
    from medistill.deploy import predict_wsi

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=r"afile is a file, not a folder"):
        predict_wsi(tmp_path / "missing.svs", tmp_path / "m.pt", blocker / "out", mpp=4.0)
