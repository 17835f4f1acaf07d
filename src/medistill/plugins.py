"""Bring your own code: a recipe's ``imports:`` and the ``medistill.plugins`` entry points.

A recipe may list Python modules to import BEFORE it is validated, so that a model, method or
recipe they register (``@register_model``, ``@register_method``, ``@register_recipe``) is known
when its name is checked::

    imports: [my_models.py, my_lab.segmenters]   # a .py path (relative to the recipe) or a module
    teacher: {name: my_resnet}

A ``.py`` path is imported from that file (its folder is on ``sys.path`` while it is imported,
so it can import modules next to it); a module name is imported as Python would (installed or
on ``PYTHONPATH``). A model file trained from such a model records the entry that registered it
(made absolute) under ``imports``, and loading the file (``evaluate``, ``export``, ``predict``,
``predict-wsi``) imports it again first.

Importing runs the module's code: these are the user's own modules, named by the user in a
recipe (or recorded in a model file the user trained from one). Load only model files whose
recorded ``imports`` you trust, as you would only ``import`` code you trust; the weights
themselves are still read weights-only (:mod:`medistill.engine.checkpoint`).

Installed packages can instead declare an entry point in the group ``medistill.plugins``
(``[project.entry-points."medistill.plugins"] my_lab = "my_lab.medistill_models"``): every such
entry point is loaded once per process, before a recipe or a model file is read; a loaded
object that is a function is called with no arguments.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Sequence
from hashlib import sha1
from pathlib import Path
from types import ModuleType

from medistill.errors import RecipeError
from medistill.registry import registering_from

#: the entry-point group of installed plugins
ENTRY_POINT_GROUP = "medistill.plugins"

#: absolute .py path -> its module (a file is executed once per process)
_FILES: dict[str, ModuleType] = {}
_entry_points_loaded = False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def resolve_import(entry: str, base: Path | None) -> str:
    """A ``.py`` entry as an absolute path (relative to ``base``); a module name as it is."""
    if entry.endswith(".py"):
        path = Path(entry).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return str(path.resolve())
    return entry


def _import_file(path: str, where: str) -> ModuleType:
    if path in _FILES:
        return _FILES[path]
    file = Path(path)
    if not file.is_file():
        raise RecipeError(f"{where}: {path}: file not found")
    name = f"medistill_user.{file.stem}_{sha1(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise RecipeError(f"{where}: {path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001  (the user's code may raise anything)
        sys.modules.pop(name, None)
        raise RecipeError(f"{where}: {path}: importing it failed: {_first_line(e)}") from None
    finally:
        sys.path.remove(str(file.parent))
    _FILES[path] = module
    return module


def import_user_modules(entries: object, base: Path | None, where: str) -> list[str]:
    """Import every entry of ``imports:`` (a list of ``.py`` paths or module names); the
    entries as recorded (paths made absolute). Each is imported once per process; names it
    registers are labelled with it (:func:`medistill.registry.registering_from`).

    Errors are one line naming ``where`` (the recipe or model file) and the entry."""
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not all(
            isinstance(e, str) and e.strip() for e in entries):
        raise RecipeError(f"{where}: imports: expected a list of module names or .py paths, "
                          f"got {entries!r}")
    done = []
    for entry in entries:
        resolved = resolve_import(entry.strip(), base)
        with registering_from(resolved):
            if resolved.endswith(".py"):
                _import_file(resolved, f"{where}: imports")
            else:
                try:
                    importlib.import_module(resolved)
                except Exception as e:  # noqa: BLE001
                    raise RecipeError(f"{where}: imports: {resolved}: cannot import it: "
                                      f"{_first_line(e)}") from None
        done.append(resolved)
    return done


def load_entry_points() -> None:
    """Load every ``medistill.plugins`` entry point (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if inspect.isfunction(obj):
                obj()
        except Exception as e:  # noqa: BLE001
            raise RecipeError(f"plugin {ep.name!r} ({ep.value}, entry point group "
                              f"{ENTRY_POINT_GROUP}) failed to load: {_first_line(e)}") from None
