"""Atomic checkpoint writing and strict, clearly-failing, weights-only loading.

Model files are shared between labs, and unpickling an arbitrary ``.pt`` runs whatever code
its pickle names. So every file is read with ``torch.load(weights_only=True)``, which only
rebuilds tensors and plain data, and medistill only ever writes such files: :func:`save_checkpoint`
refuses (before writing) any value that is not a tensor, ``torch.Size``/``dtype``/``device``
or plain JSON-like data (dict, list, tuple, str, int, float, bool, None).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medistill.errors import CheckpointError, MedistillError, OutputError
from medistill.models.registry import MODELS
from medistill.plugins import import_user_modules, load_entry_points
from medistill.tasks.base import migrate

MODEL_FORMAT = "medistill-model/1"


def atomic_write_bytes(path: str | Path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a file in the way, read-only, out of space: one line naming it
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, MedistillError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


_SCALARS = (str, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming the first value of ``obj`` that a weights-only
    load would refuse (exact types: a numpy float or a ``Path`` is not plain data)."""
    kind = type(obj)
    if kind in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise CheckpointError(f"{where}: key {k!r} is a {type(k).__name__}, "
                                      "not a str or int")
            check_plain(v, f"{where}.{k}")
    elif kind in (list, tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif kind not in _SCALARS and kind not in (torch.Tensor, nn.Parameter):
        raise CheckpointError(
            f"{where} is a {kind.__module__}.{kind.__qualname__}; medistill files hold only "
            "tensors and plain data (dict, list, str, int, float, bool, None)")


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path`` and only writes what
    :func:`load_checkpoint` reads back weights-only (checked before anything is written)."""
    check_plain(obj, Path(path).name)
    return atomic_write_bytes(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`, weights-only: a pickle that names any
    other Python object (code to run, e.g. ``os.system``) is refused without running it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise CheckpointError(
                f"{path} is not a medistill model file: it holds Python objects other than "
                "tensors and plain data (refused unread; it may run code)") from None
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001  (zip/storage errors of many kinds)
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a medistill model file")
    return obj


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def check_state(own: dict[str, torch.Tensor], state: dict[str, Any], source: str) -> None:
    """Raise a one-line :class:`CheckpointError` on any missing/unexpected/mis-shaped key."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(
                f"shape mismatch at {k}: checkpoint {tuple(state[k].shape)} vs model "
                f"{tuple(own[k].shape)}"
            )
        raise CheckpointError(f"{source} does not match the model: {'; '.join(parts)}")


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, failing with a one-line error on ANY mismatch.

    (The resolution-distillation authors load the teacher non-strictly, so mismatches pass
    silently; here they stop the run.)
    """
    check_state(module.state_dict(), state, source)
    module.load_state_dict(state, strict=True)


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
    from medistill.models import create_model

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
