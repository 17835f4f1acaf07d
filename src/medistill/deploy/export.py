"""Exporting a medistill model file to ONNX or TorchScript, with a parity check against PyTorch.

The exported graph takes the NORMALISED (N, 3, H, W) float32 input and returns the class
LOGITS (N, K) only (apply a softmax for probabilities); for segmentation model files the
per-pixel logits (N, K, H, W). The batch axis is dynamic; for models
trained on images of varying size (no ``image_size`` in the model file) H and W are dynamic
too. ONNX export uses PyTorch's TorchScript-based exporter (``dynamo=False``), which needs
``onnx`` but not ``onnxscript``; the parity check runs the file with onnxruntime.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medistill.data.views import view_input_size
from medistill.deploy.predict import (
    EXPORT_SCHEMA,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportedModel,
    sidecar_path,
)
from medistill.engine.checkpoint import atomic_write_text, load_model
from medistill.errors import CheckpointError, MedistillError
from medistill.tasks import (
    CLASSIFICATION,
    IDENTITY_VIEW,
    INSTANCE,
    card_from_meta,
    get_task,
    task_name,
)

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17
PARITY_SEED = 0
PARITY_BATCH = 2


#: what the exported graph returns, per task (now each task's own; kept for old imports)
OUTPUT_KINDS = {None: CLASSIFICATION.output_kind, "instance": INSTANCE.output_kind}
INSTANCE_KEYS = INSTANCE.export_keys


class LogitsOnly(nn.Module):
    """Wrap a classifier returning ``(features, logits)`` so that it returns the logits
    (a segmenter already returns its (N, K, H, W) logits and passes through)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[1] if isinstance(out, tuple) else out


def _size_pair(size: int | Sequence[int], source: str) -> tuple[int, int]:
    values = [size] if isinstance(size, int) else list(size)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in values):
        raise CheckpointError(f"{source}: input size must be H or (H, W) positive ints, got {size}")
    return int(values[0]), int(values[1])


def export_input_size(
    meta: dict[str, Any], input_size: int | Sequence[int] | None, source: str
) -> tuple[tuple[int, int], bool]:
    """The exported graph's (H, W) input size and whether H/W are dynamic.

    With ``image_size`` in the model file the input is ``image_size / factor`` (or
    ``image_size`` for upsampled views) and fixed; ``input_size`` must then agree if given.
    Without it the model saw images of their native size, so H/W stay dynamic and
    ``input_size`` (required) is the nominal size used for the parity check and the sidecar.
    """
    image_size = meta.get("image_size")
    if image_size:
        s = int(image_size)
        derived = view_input_size(meta["view"], (s, s))
        if input_size is not None and _size_pair(input_size, source) != tuple(derived):
            h, w = _size_pair(input_size, source)
            raise CheckpointError(
                f"{source}: the model takes {derived[0]}x{derived[1]} inputs (image_size "
                f"{image_size}, view {meta['view']}), not the requested {h}x{w}"
            )
        return (int(derived[0]), int(derived[1])), False
    if input_size is None:
        raise CheckpointError(
            f"{source} has no image_size: give the model's input size (--input-size H W)"
        )
    return _size_pair(input_size, source), True


def _write_onnx(net: nn.Module, example: torch.Tensor, path: Path, dynamic_size: bool) -> None:
    try:
        import onnx  # noqa: F401  (the TorchScript-based exporter needs it)
    except ImportError:
        raise MedistillError("ONNX export needs onnx: pip install 'medistill[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    torch.onnx.export(
        net, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"}}, do_constant_folding=True,
    )


def _write_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(net, (example,), check_trace=False)
    torch.jit.save(traced, str(path))


def _exported_logits(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Logits of the exported file at ``path`` (onnxruntime or ``torch.jit.load``)."""
    return ExportedModel(path, fmt)(x)


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays and other stragglers in a model file's meta, for the sidecar."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def export_model(
    model_path: str | Path,
    out_path: str | Path,
    format: str = "onnx",
    input_size: int | Sequence[int] | None = None,
    atol: float = 1e-3,
) -> dict[str, Any]:
    """Export a model file (``save_model``'s format) to ONNX or TorchScript.

    Writes ``out_path`` and its sidecar ``<out_path>.json`` (classes, view, normalisation,
    image and input size) atomically, after checking that the exported model's logits match
    PyTorch's on a seeded random batch of 2 to within ``atol`` (max absolute difference).

    Args:
        model_path: a model file (a run's ``best.pt``).
        out_path: the exported file.
        format: ``"onnx"`` or ``"torchscript"``.
        input_size: the graph's (H, W) input size, i.e. AFTER the view's downsampling; only
            needed when the model file has no ``image_size``.
        atol: the largest accepted logit difference.

    Returns:
        ``{"path", "format", "max_abs_diff", "input_size"}``.

    Raises:
        CheckpointError: unreadable model file, bad size or format, export failure, or a parity
            difference above ``atol`` (nothing is written then).
    """
    fmt = str(format).lower()
    if fmt not in EXPORT_FORMATS:
        raise CheckpointError(f"unknown export format {format!r}; choose onnx or torchscript")
    model_path, out = Path(model_path), Path(out_path)
    model, meta = load_model(model_path)
    if out.resolve() == model_path.resolve():
        raise CheckpointError(f"{out}: the export would overwrite the model file itself")
    size, dynamic_size = export_input_size(meta, input_size, str(model_path))
    net = LogitsOnly(model).eval()
    generator = torch.Generator().manual_seed(PARITY_SEED)
    example = torch.randn(PARITY_BATCH, 3, *size, generator=generator)
    with torch.no_grad():
        reference = net(example).numpy()

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    sidecar = sidecar_path(out)
    sidecar_written = False
    try:
        try:
            with warnings.catch_warnings():
                # the TorchScript-based tools are deprecated in torch >= 2.9 but still work;
                # tracer warnings come from shape checks (GroupNorm's batch size) only
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                if fmt == "onnx":
                    _write_onnx(net, example, tmp, dynamic_size)
                else:
                    _write_torchscript(net, example, tmp)
        except MedistillError:
            raise
        except Exception as e:  # noqa: BLE001  (exporter errors of many kinds)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot export {model_path} to {fmt}: {first}") from None

        got = _exported_logits(tmp, fmt, example.numpy())
        if got.shape != reference.shape:
            raise CheckpointError(
                f"{out}: exported {fmt} model returns shape {tuple(got.shape)}, PyTorch "
                f"{tuple(reference.shape)}; nothing written"
            )
        diff = float(np.abs(got.astype(np.float64) - reference.astype(np.float64)).max())
        if not diff <= atol:  # also catches NaN
            raise CheckpointError(
                f"{out}: exported {fmt} model differs from PyTorch by {diff:.3g} (max abs logit "
                f"difference, atol {atol:g}); nothing written"
            )

        card = card_from_meta(meta, str(model_path))
        task = get_task(task_name(meta))
        info = {
            "schema": EXPORT_SCHEMA,
            "format": fmt,
            "source": str(model_path),
            "task": card.task,
            "card_version": card.card_version,
            "model": card.model,
            "classes": list(card.classes),
            # instance (embedding) models are trained on the image as it is: no view
            "view": getattr(card, "view", IDENTITY_VIEW),
            "normalization": card.normalization,
            "image_size": card.image_size,
            "mpp": card.mpp,  # the model input's microns per pixel, when recorded
            "input_size": list(size),
            "dynamic_size": dynamic_size,
            # the graph's input / output names and what the output holds
            **task.export_signature(),
            # what decoding the output needs (thresholds; an instance model's offsets, ...)
            **{k: getattr(card, k) for k in task.export_keys},
            "max_abs_diff": diff,
            "torch_version": torch.__version__,
            **({"opset": ONNX_OPSET} if fmt == "onnx" else {}),
        }
        _fsync(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        atomic_write_text(sidecar, json.dumps(info, indent=2, default=_jsonable) + "\n")
        sidecar_written = True
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if sidecar_written:
            sidecar.unlink(missing_ok=True)
        raise
    return {"path": str(out), "format": fmt, "max_abs_diff": diff, "input_size": size}
