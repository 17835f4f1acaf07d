"""Model files: :func:`save_model` / :func:`load_model` (weights + what rebuilds and feeds the
model), on top of the atomic, weights-only file format of :mod:`medistill.files` (re-exported
here under its old names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medistill.errors import CheckpointError, MedistillError
from medistill.files import (  # noqa: F401  (the old import paths keep working)
    MODEL_FORMAT,
    atomic_write_bytes,
    atomic_write_text,
    check_plain,
    check_state,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
)
from medistill.models import create_model
from medistill.models.registry import MODELS
from medistill.plugins import import_user_modules, load_entry_points
from medistill.tasks.base import migrate


def save_model(model: nn.Module, meta: dict[str, Any], path: str | Path) -> Path:
    """A deployable model file: weights + everything needed to rebuild and feed it.

    A model registered by a recipe's ``imports:`` entry records that entry under ``imports``
    (see :mod:`medistill.plugins`), so that :func:`load_model` can import it again."""
    spec = meta.get("model")
    origin = MODELS.origin(spec["name"]) if isinstance(spec, dict) and "name" in spec else None
    if origin is not None and "imports" not in meta:
        meta = {**meta, "imports": [origin]}
    return save_checkpoint({"format": MODEL_FORMAT, **meta, "state_dict": model.state_dict()}, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model, meta)`` (eval mode).

    The ``medistill.plugins`` entry points and the user modules the file records under
    ``imports`` are imported first (this runs their code; see :mod:`medistill.plugins`)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != MODEL_FORMAT:
        raise CheckpointError(
            f"{path} is not a medistill model file (format {ckpt.get('format')!r}); "
            "use a run's best.pt or model.pt"
        )
    load_entry_points()
    if "imports" in ckpt:
        try:
            import_user_modules(ckpt["imports"], Path(path).parent, str(path))
        except MedistillError as e:
            raise CheckpointError(str(e)) from None
    spec, classes = ckpt.get("model"), ckpt.get("classes")
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
            and isinstance(spec.get("kwargs", {}), dict) and isinstance(classes, list)
            and isinstance(ckpt.get("state_dict"), dict)):
        raise CheckpointError(f"{path} is not a medistill model file (no model, classes or "
                              "state_dict)")
    try:
        model = create_model(spec["name"], num_classes=len(classes), **spec.get("kwargs", {}))
    except MedistillError as e:
        hint = ("" if spec["name"] in MODELS else " (a model of your own code: install it as a "
                "medistill.plugins entry point, or train from a recipe that names its module "
                "under imports:, which the model file then records)")
        raise CheckpointError(f"{path}: cannot rebuild its model: {e}{hint}") from None
    load_state_strict(model, ckpt["state_dict"], str(path))
    bad = next((k for k, v in ckpt["state_dict"].items()
                if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()),
               None)
    if bad is not None:
        raise CheckpointError(f"{path}: weights are not finite (NaN or inf in {bad}); the run "
                              "that wrote it diverged")
    model.eval()
    # the model card, migrated to the current card_version when the file is older
    meta = {**{k: ckpt[k] for k in ("format", "imports") if k in ckpt}, **migrate(ckpt)}
    return model, meta
