"""The strict, clearly-failing, weights-only checkpoint format.

Model files are shared between labs, and unpickling an arbitrary ``.pt`` runs whatever code
its pickle names. So every file is read with ``torch.load(weights_only=True)``, which only
rebuilds tensors and plain data, and medistill only ever writes such files: :func:`save_checkpoint`
refuses (before writing) any value that is not a tensor, ``torch.Size``/``dtype``/``device``
or plain JSON-like data (dict, list, tuple, str, int, float, bool, None).

This module depends only on :mod:`medistill.errors` and :mod:`medistill.output` (atomic file
writing), so every layer can read and write weights (e.g. :mod:`medistill.models.pretrained`);
rebuilding a model from a model file is :func:`medistill.engine.checkpoint.load_model`.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medistill.errors import CheckpointError
from medistill.output import (  # noqa: F401  (its old import path)
    atomic_write_bytes,
    atomic_write_text,
)

MODEL_FORMAT = "medistill-model/1"


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
