"""The recipes that ship with the package, and finding a recipe by path or by name.

``./recipes/*.yaml`` in the source tree are the recipes' one copy; ``src/medistill/recipes/``
holds a link to each (and the demo recipe itself), so an installed medistill ships them all
and ``medistill run resolution_kd`` works from any folder."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medistill.errors import RecipeError


def packaged_recipes() -> dict[str, Path]:
    """Name (file stem) -> path of every packaged recipe, sorted by name."""
    folder = Path(str(resources.files("medistill") / "recipes"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def recipe_summary(path: Path) -> dict[str, Any]:
    """``method`` and ``title`` of a recipe file (not validated: listing must not need data)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    raw = raw if isinstance(raw, dict) else {}
    return {"name": path.stem, "method": str(raw.get("method", "?")),
            "title": " ".join(str(raw.get("title", "")).split()), "path": path}


def find_recipe(recipe: str | Path) -> Path:
    """``recipe`` itself if it is a file, else the packaged recipe of that name (``demo``,
    ``hlfd_glas``, with or without ``.yaml``); neither: a one-line error listing the names."""
    path = Path(recipe)
    if path.is_file():
        return path
    known = packaged_recipes()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent == Path(".") and name in known:
        return known[name]
    raise RecipeError(f"recipe not found: {recipe} (not a file, nor a packaged recipe: "
                      f"{', '.join(known)}; see medistill recipes)")
