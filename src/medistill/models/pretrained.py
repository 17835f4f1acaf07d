"""Initial weights from a local file (a model section's ``init_checkpoint:``).

The file is read weights-only (:func:`medistill.engine.checkpoint.load_checkpoint`) and may be

- a medistill model file (its ``state_dict``), or
- a plain PyTorch state dict (``torch.save(model.state_dict(), "x.pth")``), or a dict holding
  one under ``state_dict`` or ``model`` (as many training scripts save); a ``module.`` prefix
  on every key (a ``DistributedDataParallel`` model) is dropped.

Standard ResNet layouts: torchvision's and timm's ResNets name the stem ``conv1`` / ``bn1`` and
the classifier ``fc``; ours (``small_resnet``, ``resnet18/34/50``, the encoder of
``resnet18_unet*`` and of ``mil_segmenter``'s backbone) call them ``stem.0`` / ``stem.1`` and
``head``, with the same ``layer1.0.conv1`` ... names inside. :func:`map_resnet_keys` renames
them. torchvision and timm shortcut convolutions (``downsample.0``) have no bias and MONAI's
have one: it is set to zero, which computes exactly the same function.

Loading is strict by default: any missing, unexpected or mis-shaped key stops with one line
listing them. With ``init_strict: false`` only the keys whose name and shape match are loaded
(e.g. an ImageNet backbone under a new head), the others are reported in a warning; a file of
which no key matches is still an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medistill.errors import CheckpointError
from medistill.files import MODEL_FORMAT, load_checkpoint

#: torchvision / timm ResNet name prefix -> ours
RESNET_RENAMES = (("conv1.", "stem.0."), ("bn1.", "stem.1."), ("fc.", "head."))
#: keys shown per kind in an error or warning
SHOWN = 3


@dataclass
class InitReport:
    """What :func:`load_initial_weights` loaded and left out."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: ``(key, shape in the file, shape in the model)``
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        def some(keys: list[str]) -> str:
            more = f", +{len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
            return ", ".join(keys[:SHOWN]) + more

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({some(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({some(self.unexpected)})")
        if self.mismatched:
            shown = [f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatches ({some(shown)})")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a medistill model file or a plain PyTorch weights file."""
    ckpt: dict[str, Any] = load_checkpoint(path)
    if ckpt.get("format") == MODEL_FORMAT or not all(torch.is_tensor(v) for v in ckpt.values()):
        state = next((ckpt[k] for k in ("state_dict", "model") if isinstance(ckpt.get(k), dict)),
                     None)
        if state is None:
            raise CheckpointError(f"{path}: no state dict in it (expected a dict of tensors, or "
                                  "one under 'state_dict' or 'model')")
    else:
        state = ckpt
    bad = next((k for k, v in state.items() if not torch.is_tensor(v)), None)
    if bad is not None or not state:
        raise CheckpointError(f"{path}: not a state dict ("
                              + (f"{bad!r} is not a tensor)" if bad is not None else "empty)"))
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def resnet_prefix(own: dict[str, torch.Tensor]) -> str | None:
    """Where a ResNet with our names sits in a model's state dict (``""``, ``"backbone."``)."""
    found = [k[: -len("stem.0.weight")] for k in own if k.endswith("stem.0.weight")
             and k[: -len("stem.0.weight")] + "layer1.0.conv1.weight" in own]
    return min(found, key=len) if found else None


def map_resnet_keys(state: dict[str, torch.Tensor],
                    own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with torchvision / timm ResNet names renamed to ours (see the module
    docstring); unchanged unless it has that layout (``conv1.weight`` and ``layer1.0...``) and
    the model a ResNet of ours."""
    prefix = resnet_prefix(own)
    if (prefix is None or "conv1.weight" not in state or "conv1.weight" in own
            or not any(k.startswith("layer1.0.") for k in state)):
        return state
    mapped = {}
    for key, value in state.items():
        for old, new in RESNET_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        mapped[prefix + key] = value
    for key, value in own.items():  # bias-free shortcut convs: a zero bias is the same function
        if (key.endswith("downsample.0.bias") and key not in mapped
                and key[: -len("bias")] + "weight" in mapped):
            mapped[key] = torch.zeros_like(value)
    return mapped


def compare(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> InitReport:
    report = InitReport(missing=[k for k in own if k not in state],
                        unexpected=[k for k in state if k not in own])
    for key, value in state.items():
        if key in own:
            if tuple(value.shape) == tuple(own[key].shape):
                report.loaded.append(key)
            else:
                report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
    return report


def _checked(model: nn.Module, path: str | Path, strict: bool, name: str,
             shapes: bool) -> tuple[dict[str, torch.Tensor], InitReport]:
    own = model.state_dict()
    state = map_resnet_keys(read_state_dict(path), own)
    report = compare(own, state)
    bad = report.missing or report.unexpected or (shapes and report.mismatched)
    if strict and bad:
        raise CheckpointError(f"init_checkpoint {path} does not match model {name!r}: "
                              f"{report.summary()}; set init_strict: false to load only the "
                              "matching keys")
    if not (report.loaded or (not shapes and report.mismatched)):
        raise CheckpointError(f"init_checkpoint {path}: no key matches model {name!r} "
                              f"({report.summary()})")
    return state, report


def check_initial_weights(model: nn.Module, path: str | Path, strict: bool = True,
                          name: str = "model") -> InitReport:
    """Before a run: the file reads and its key NAMES fit ``model`` (as
    :func:`load_initial_weights` would judge them); nothing is loaded. Shapes are checked when
    the model is built, as the head's depends on the number of classes in the data."""
    return _checked(model, path, strict, name, shapes=False)[1]


def load_initial_weights(model: nn.Module, path: str | Path, strict: bool = True,
                         name: str = "model") -> InitReport:
    """Load ``path`` (see the module docstring) into ``model`` in place; what was loaded.

    Raises:
        CheckpointError: unreadable file; when ``strict``, any key mismatch (one line listing
            them); otherwise, no key that matches.
    """
    own = model.state_dict()
    state, report = _checked(model, path, strict, name, shapes=True)
    model.load_state_dict({k: state[k] for k in report.loaded}, strict=False)
    if not report.exact:
        warnings.warn(f"init_checkpoint {path}: loaded {len(report.loaded)} of {len(own)} "
                      f"tensors of model {name!r}; not loaded: {report.summary()}", stacklevel=2)
    return report
