"""Bring your own code (issue #14): a recipe's ``imports:``, ``medistill.plugins`` entry points,
model files that remember their imports, and user methods / recipes by decorator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from byo_fixtures import clean_registries, forget_user_code, tiny_recipe_text, write_user_model

from medistill import plugins
from medistill.engine import load_model, save_model
from medistill.engine.checkpoint import load_checkpoint
from medistill.errors import CheckpointError, RecipeError
from medistill.methods import METHODS
from medistill.models import MODELS, build_model, list_models
from medistill.pipelines import RECIPES, demo_data_root, load_recipe, run_recipe

__all__ = ["clean_registries"]  # the fixture, used by name

META = {"classes": ["a", "b"], "view": {"factor": 1, "upsample": False},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def recipe_file(folder: Path, text: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(text)
    return path


def test_imports_register_a_user_model_before_the_recipe_is_validated(tmp_path,
                                                                      clean_registries):
    write_user_model(tmp_path / "code")
    bare = recipe_file(tmp_path, tiny_recipe_text().replace("imports: [user_model.py]\n", ""))
    with pytest.raises(RecipeError, match="unknown model 'user_tiny_net'"):
        load_recipe(bare)
    # the path is relative to the recipe, not to the working directory
    cfg = load_recipe(recipe_file(tmp_path, tiny_recipe_text(imports="[code/user_model.py]")))
    assert cfg.teacher.name == "user_tiny_net" and "user_tiny_net" in list_models()
    assert MODELS.origin("user_tiny_net") == str((tmp_path / "code" / "user_model.py").resolve())
    assert MODELS.origin("small_resnet") is None
    # kwargs are checked against the user's factory too
    with pytest.raises(RecipeError, match="student: kwargs of model 'user_tiny_net'"):
        load_recipe(recipe_file(tmp_path, tiny_recipe_text(imports="[code/user_model.py]")
                                .replace("width: 4", "depth: 4")))
    # importing the same file again (a second recipe, a model file) runs it once: no
    # "registered twice"
    again = load_recipe(recipe_file(tmp_path, tiny_recipe_text(imports="[code/user_model.py]")))
    assert again.student.kwargs == {"width": 4}


@pytest.mark.parametrize("imports, message", [
    ("[missing.py]", "imports: .*missing.py: file not found"),
    ("[no_such_module_byo]", "imports: no_such_module_byo: cannot import it: "
                             "ModuleNotFoundError"),
    ("[raises.py]", "imports: .*raises.py: importing it failed: ZeroDivisionError"),
    ("user_model.py", "imports: expected a list of module names or .py paths"),
])
def test_bad_imports_are_one_line_errors_naming_the_recipe(tmp_path, clean_registries,
                                                            imports, message):
    (tmp_path / "raises.py").write_text("x = 1 / 0\n")
    path = recipe_file(tmp_path, tiny_recipe_text(imports=imports))
    with pytest.raises(RecipeError, match=message) as err:
        load_recipe(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_module_name_import_works_like_a_path(tmp_path, clean_registries, monkeypatch):
    write_user_model(tmp_path / "pkg_root")
    (tmp_path / "pkg_root" / "byo_lab_models.py").write_text(
        (tmp_path / "pkg_root" / "user_model.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path / "pkg_root"))
    cfg = load_recipe(recipe_file(tmp_path, tiny_recipe_text(imports="[byo_lab_models]")))
    assert cfg.student.name == "user_tiny_net"
    assert MODELS.origin("user_tiny_net") == "byo_lab_models"


def test_a_model_file_remembers_its_import_and_loading_imports_it_again(tmp_path,
                                                                        clean_registries):
    write_user_model(tmp_path)
    cfg = load_recipe(recipe_file(tmp_path, tiny_recipe_text()))
    torch.manual_seed(0)
    model = build_model(cfg.student, 2)
    path = save_model(model, {**META, "model": cfg.student.model_dump()}, tmp_path / "m.pt")
    assert load_checkpoint(path)["imports"] == [str((tmp_path / "user_model.py").resolve())]
    builtin = save_model(build_model(cfg.teacher.model_copy(update={"name": "small_resnet",
                                                                      "kwargs": {}}), 2),
                         {**META, "model": {"name": "small_resnet", "kwargs": {}}},
                         tmp_path / "b.pt")
    assert "imports" not in load_checkpoint(builtin)  # built-in models' files are unchanged

    forget_user_code()  # as in a new process (evaluate, export, predict-wsi)
    assert "user_tiny_net" not in MODELS
    again, meta = load_model(path)
    assert "user_tiny_net" in MODELS and meta["imports"] == load_checkpoint(path)["imports"]
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(again(x)[1], model.eval()(x)[1])

    forget_user_code()  # a file saved without its imports (e.g. from the Python API)
    bare = load_checkpoint(path)
    del bare["imports"]
    torch.save(bare, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="unknown model 'user_tiny_net'.*under imports:"):
        load_model(tmp_path / "bare.pt")

    (tmp_path / "user_model.py").unlink()  # the user's code is gone: one line, naming both
    with pytest.raises(CheckpointError, match=f"{path}: imports: .*user_model.py: file not "
                                              "found"):
        load_model(path)


def test_entry_point_plugins_are_loaded_once(tmp_path, clean_registries, monkeypatch):
    site = tmp_path / "site"
    write_user_model(site, name="ep_tiny_net")
    (site / "byo_ep_plugin.py").write_text(
        "CALLS = []\n\n\ndef register():\n    import user_model  # noqa: F401\n"
        "    CALLS.append(1)\n")
    dist = site / "byo_ep_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: byo-ep-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[medistill.plugins]\nbyo = byo_ep_plugin:register\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    assert "ep_tiny_net" in list_models()  # the entry point ran (its function was called)
    assert MODELS.origin("ep_tiny_net") is None  # installed: nothing to record in model files
    list_models()
    assert sys.modules["byo_ep_plugin"].CALLS == [1]

    (dist / "entry_points.txt").write_text("[medistill.plugins]\nbroken = byo_no_such:x\n")
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.raises(RecipeError, match="plugin 'broken' .*medistill.plugins.* failed to "
                                          "load: ModuleNotFoundError"):
        list_models()


USER_RECIPE = '''
from typing import Literal

import torch

from medistill.methods import Method, register_method
from medistill.pipelines import register_recipe
from medistill.pipelines.base import StagedRecipe


@register_method("byo_constant")
class Constant(Method):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch):
        return {"loss": self.w * 2}


class ConstantRecipe(StagedRecipe):
    method: Literal["byo_constant"] = "byo_constant"
    value: float = 1.0


@register_recipe("byo_constant", ConstantRecipe)
class ConstantPipeline:
    def __init__(self, recipe, out_dir, resume=False, progress=True):
        self.recipe = recipe

    def run(self):
        loss = Constant().training_step({})["loss"]
        return {"runs": [], "value": self.recipe.value, "loss": float(loss.detach())}
'''


def test_a_user_method_and_recipe_register_by_decorator(tmp_path, clean_registries):
    (tmp_path / "byo_recipe.py").write_text(USER_RECIPE)
    path = recipe_file(tmp_path, "method: byo_constant\nimports: [byo_recipe.py]\nvalue: 3\n")
    cfg = load_recipe(path)
    assert "byo_constant" in METHODS and "byo_constant" in RECIPES
    assert run_recipe(cfg, tmp_path / "out") == {"runs": [], "value": 3.0, "loss": 2.0}
    with pytest.raises(RecipeError, match="value: Input should be a valid number"):
        load_recipe(path, ["value=abc"])
    from medistill.methods import register_method
    from medistill.pipelines import register_recipe

    with pytest.raises(ValueError, match="recipe 'hlfd' is registered twice"):
        register_recipe("hlfd", RECIPES["hlfd"][0])(RECIPES["hlfd"][1])
    with pytest.raises(TypeError, match="not a Method subclass"):
        register_method("byo_not_a_method")(int)


def medistill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medistill.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_a_user_model_in_its_own_file_runs_evaluates_exports_and_predicts_by_cli(tmp_path):
    """Each command is a new process: evaluate and export import the user's file because the
    model file recorded it (the recipe is not given to them)."""
    write_user_model(tmp_path / "code")
    recipe = recipe_file(tmp_path, tiny_recipe_text(imports="[code/user_model.py]"))
    res = medistill("run", str(recipe), "--out", str(tmp_path / "run"), "--no-progress",
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    best = tmp_path / "run" / "seed0" / "x2" / "kd" / "best.pt"
    assert best.is_file(), sorted(p.name for p in (tmp_path / "run").rglob("*.pt"))
    assert load_checkpoint(best)["model"]["name"] == "user_tiny_net"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = medistill("evaluate", str(best), "--data", str(demo_data_root()), "--split", "val",
                    "--n-resamples", "50", cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert "28x28" in res.stdout  # the student's view: 224 / (4 x 2)
    onnx = tmp_path / "student.onnx"
    res = medistill("export", str(best), "--out", str(onnx), "--input-size", "28",
                    cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    res = medistill("predict", str(onnx), "--images", str(demo_data_root() / "train"), "--out",
                    str(tmp_path / "pred.csv"), cwd=elsewhere)
    assert res.returncode == 0, res.stderr
    assert len((tmp_path / "pred.csv").read_text().splitlines()) > 10
