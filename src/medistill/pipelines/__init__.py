"""Recipes: YAML in, trained models, results and a report out.

A recipe's ``method:`` picks its schema and pipeline in :data:`RECIPES`; a new one is added with
``@register_recipe("my_method", MyRecipe)`` on its :class:`~medistill.pipelines.base.Pipeline`
class (from a module the recipe names under ``imports:``, see :mod:`medistill.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from medistill.config import apply_overrides, build_models_once, read_yaml, validate
from medistill.errors import RecipeError, one_line
from medistill.output import remove_stale_tmp
from medistill.pipelines.graph_relation import GraphRelationPipeline, GraphRelationRecipe
from medistill.pipelines.mil_fusion import MILFusionPipeline, MILFusionRecipe
from medistill.pipelines.more_from_less import MoreFromLessPipeline, MoreFromLessRecipe
from medistill.pipelines.plan import Plan
from medistill.pipelines.resolution import ResolutionPipeline, ResolutionRecipe
from medistill.pipelines.segmentation import HLFDRecipe, SegmentationPipeline
from medistill.plugins import import_user_modules, load_entry_points

#: method name -> (recipe schema, pipeline); add to it with :func:`register_recipe`
RECIPES: dict[str, tuple[type, type]] = {}


def register_recipe(method: str, schema: type[BaseModel]) -> Callable[[type], type]:
    """Register a pipeline class for recipes with ``method: <method>``.

    ``schema`` is the recipe's pydantic model (e.g. a :class:`~medistill.pipelines.base.
    StagedRecipe` subclass with ``method: Literal["<method>"]``); the pipeline is built as
    ``pipeline(recipe, out_dir, resume=..., progress=...)`` and its ``run()`` returns the
    results (see :class:`~medistill.pipelines.base.Pipeline`)."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"recipe {method!r}: the schema must be a pydantic model class")

    def decorator(pipeline: type) -> type:
        if method in RECIPES:
            raise ValueError(f"recipe {method!r} is registered twice")
        if not callable(getattr(pipeline, "run", None)):
            raise TypeError(f"recipe {method!r}: {pipeline!r} has no run() method")
        RECIPES[method] = (schema, pipeline)
        return pipeline

    return decorator


for _method, _schema, _pipeline in (
        ("resolution_kd", ResolutionRecipe, ResolutionPipeline),
        ("more_from_less", MoreFromLessRecipe, MoreFromLessPipeline),
        ("hlfd", HLFDRecipe, SegmentationPipeline),
        ("mil_fusion", MILFusionRecipe, MILFusionPipeline),
        ("graph_relation", GraphRelationRecipe, GraphRelationPipeline)):
    register_recipe(_method, _schema)(_pipeline)


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                substitutions: dict[str, str] | None = None) -> Any:
    """Read, override and validate a recipe; errors name the file and key.

    The ``medistill.plugins`` entry points and the recipe's ``imports:`` (modules or ``.py``
    paths relative to the recipe, see :mod:`medistill.plugins`) are imported first, so the
    models, methods and recipes they register validate."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    if substitutions:
        raw = _substitute(raw, substitutions)
    load_entry_points()
    if "imports" in raw:
        import_user_modules(raw.pop("imports"), Path(path).parent, str(path))
    method = raw.get("method")
    if method not in RECIPES:
        raise RecipeError(
            f"{path}: method: unknown or missing method {method!r}; choose one of: "
            + ", ".join(sorted(RECIPES))
        )
    return validate(RECIPES[method][0], raw, str(path))


def run_recipe(recipe: Any, out_dir: str | Path, resume: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """Run a validated recipe into ``out_dir``.

    Before the pipeline reads its data, every model the recipe names is built once (a kwarg
    value a model rejects stops here, not when that model's stage starts); a reopened run
    folder loses the temporary files of writes a killed earlier process left behind. The plan
    is printed first; ``run.log`` in ``out_dir`` gets every line, and how the run ended."""
    build_models_once(recipe)
    if (Path(out_dir) / "recipe.json").is_file():  # a run folder (never a foreign one)
        remove_stale_tmp(out_dir)
    pipeline = RECIPES[recipe.method][1](recipe, out_dir, resume=resume, progress=progress)
    tracker = getattr(pipeline, "tracker", None)  # a user pipeline need only have run()
    if tracker is None:
        return pipeline.run()
    pipeline.announce()
    try:
        return pipeline.run()
    except BaseException as e:  # the log says how the run ended (the CLI prints it)
        tracker.say("interrupted" if isinstance(e, KeyboardInterrupt)
                    else f"error: {one_line(e)}", echo=False)
        raise
    finally:
        tracker.close_bar()


def dry_run(recipe: Any, out_dir: str | Path, resume: bool = False) -> Plan:
    """Everything :func:`run_recipe` checks before it writes (models built once, the output
    folder, the data read and scanned), and the plan; nothing is written."""
    build_models_once(recipe)
    pipeline = RECIPES[recipe.method][1](recipe, out_dir, resume=resume, progress=False)
    pipeline.preflight()
    return pipeline.plan


def demo_recipe_path() -> Path:
    return Path(str(resources.files("medistill") / "recipes" / "demo.yaml"))


def demo_data_root() -> Path:
    return Path(str(resources.files("medistill") / "data" / "demo" / "ebhi_seg_demo"))


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        for key, value in values.items():
            node = node.replace("{" + key + "}", value)
    return node
