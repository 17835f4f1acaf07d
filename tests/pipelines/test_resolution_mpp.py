"""The resolution recipe records the model input's microns per pixel in every model file
(``data.source_mpp x view factor``), so ``predict-wsi`` needs no ``--mpp``."""

from __future__ import annotations

import pytest

from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe
from medistill.pipelines.resolution import ResolutionPipeline


@pytest.mark.parametrize("source_mpp, expected", [("0.5", 4.0), (None, None)])
def test_model_meta_records_mpp(tmp_path, source_mpp, expected) -> None:
    overrides = ["teacher_factor=2", "student_factors=[4]", "runs=[baseline]"]
    if source_mpp:
        overrides.append(f"data.source_mpp={source_mpp}")
    recipe = load_recipe(demo_recipe_path(), overrides, {"demo_data": str(demo_data_root())})
    pipe = ResolutionPipeline(recipe, tmp_path / "run", progress=False)
    pipe.classes, pipe.norm = ["a", "b"], {"mean": [0.5] * 3, "std": [0.2] * 3}
    teacher = pipe._meta(recipe.teacher, recipe.teacher_factor)
    student = pipe._meta(recipe.student, recipe.teacher_factor * 4)
    assert student["mpp"] == expected
    assert teacher["mpp"] == (None if expected is None else 1.0)
