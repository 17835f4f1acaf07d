"""The output folder's life cycle: medistill writes only into folders it created, and a resumed
run must have the recipe it started with (apart from keys that cannot change finished work)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medistill.errors import RecipeError
from medistill.pipelines.base import RUN_MARKER, Pipeline, StagedRecipe, recipe_changes


def recipe(**train) -> StagedRecipe:
    return StagedRecipe.model_validate({"train": {"epochs": 2, **train},
                                        "stages": {"kd": {"lr": 0.1}}})


def start(out: Path, r: StagedRecipe, resume: bool = False) -> None:
    Pipeline(r, out, resume=resume).start()


def test_a_new_or_empty_folder_is_marked_and_gets_the_recipe(tmp_path):
    for out in (tmp_path / "new" / "run", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        start(out, recipe())
        assert (out / RUN_MARKER).is_file()
        assert json.loads((out / "recipe.json").read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize("resume", [False, True])
def test_a_foreign_non_empty_folder_is_refused_and_left_untouched(tmp_path, resume):
    out = tmp_path / "mine"
    log = out / "seed0" / "teacher" / "log.csv"
    log.parent.mkdir(parents=True)
    log.write_text("my own results\n")
    with pytest.raises(RecipeError) as info:
        start(out, recipe(), resume=resume)
    message = str(info.value)
    assert str(out) in message and "not a medistill run folder" in message
    assert "\n" not in message
    assert log.read_text() == "my own results\n"
    assert sorted(p.name for p in out.iterdir()) == ["seed0"]  # nothing written


def test_a_file_as_out_is_refused(tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(RecipeError, match="is a file"):
        start(out, recipe())


def test_an_existing_run_needs_resume(tmp_path):
    start(tmp_path / "o", recipe())
    with pytest.raises(RecipeError, match="already has a run; pass --resume"):
        start(tmp_path / "o", recipe())
    start(tmp_path / "o", recipe(), resume=True)


@pytest.mark.parametrize("change, keys", [
    ({"lr": 0.5}, "train.lr"),
    ({"epochs": 4}, "train.epochs"),
    ({"epochs": 4, "lr": 0.5, "seed": 3}, "train.epochs, train.lr, train.seed"),
])
def test_resume_with_other_settings_is_refused_naming_the_keys(tmp_path, change, keys):
    out = tmp_path / "o"
    start(out, recipe())
    saved = (out / "recipe.json").read_text()
    with pytest.raises(RecipeError) as info:
        start(out, recipe(**change), resume=True)
    assert f"differs from {out / 'recipe.json'} at {keys};" in str(info.value)
    assert (out / "recipe.json").read_text() == saved  # not rewritten


def test_resume_may_change_only_keys_that_cannot_change_finished_work(tmp_path):
    out = tmp_path / "o"
    start(out, recipe())
    allowed = recipe(progress=False, num_workers=4, pin_memory=True, tensorboard=False,
                     mlflow=True, mlflow_experiment="other", diag_every=7)
    allowed.stages["kd"]["progress"] = False
    start(out, allowed, resume=True)
    assert json.loads((out / "recipe.json").read_text())["train"]["num_workers"] == 4
    changed_stage = recipe()
    changed_stage.stages["kd"]["lr"] = 0.2
    with pytest.raises(RecipeError, match=r"at stages\.kd\.lr;"):
        start(out, changed_stage, resume=True)


def test_recipe_changes_sees_added_removed_and_list_keys():
    saved = {"train": {"lr": 0.1}, "runs": ["a", "b"], "eval": {"n_resamples": 10}, "old": 1}
    now = StagedRecipe.model_validate({"train": {"lr": 0.1}})
    assert "old" in recipe_changes(saved, now)
    assert "train.epochs" in recipe_changes(saved, now)  # missing in saved, set now
    assert "runs" not in recipe_changes(saved, now)  # runs may change (each run is its own)
