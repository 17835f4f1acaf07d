"""Running an exported model (ONNX or TorchScript + its JSON sidecar) on a folder of images."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medistill.data import list_images, load_image
from medistill.data.datasets import center_crop_or_pad
from medistill.data.transforms import to_tensor
from medistill.data.views import view_from_spec
from medistill.engine.checkpoint import atomic_write_text
from medistill.errors import CheckpointError, DataError, MedistillError
from medistill.output import check_output_file

#: version tag of the sidecar JSON written next to every exported model
EXPORT_SCHEMA = "medistill-export/1"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def sidecar_path(model_file: str | Path) -> Path:
    """The JSON sidecar of an exported model: ``model.onnx`` -> ``model.onnx.json``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


def read_sidecar(model_file: str | Path) -> dict[str, Any]:
    """Read and check the sidecar of an exported model (one-line :class:`CheckpointError`)."""
    path = sidecar_path(model_file)
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: an exported model needs the sidecar written by `medistill export`"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(info, dict) or info.get("schema") != EXPORT_SCHEMA:
        found = info.get("schema") if isinstance(info, dict) else None
        raise CheckpointError(f"{path} is not a medistill export sidecar (schema {found!r})")
    missing = [k for k in ("format", "classes", "view", "normalization", "input_size")
               if k not in info]
    if missing:
        raise CheckpointError(f"{path}: missing key {missing[0]!r}")
    return info


def ort_session(model: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session (``threads`` defaults to torch's thread count)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MedistillError(
            "ONNX models need onnxruntime: pip install 'medistill[export]'"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class ExportedModel:
    """An exported model as a function: normalised (N, 3, H, W) float32 array -> logits (N, K).

    Args:
        path: the ``.onnx`` or TorchScript file.
        fmt: ``"onnx"`` or ``"torchscript"``.
        threads: CPU threads (default: torch's current thread count).
    """

    def __init__(self, path: str | Path, fmt: str, threads: int | None = None) -> None:
        self.path = Path(path)
        self.format = fmt
        if not self.path.is_file():
            raise CheckpointError(f"exported model not found: {self.path}")
        try:
            if fmt == "onnx":
                self._session = ort_session(self.path, threads)
                self._input = self._session.get_inputs()[0].name
            elif fmt == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._module = torch.jit.load(str(self.path), map_location="cpu").eval()
                self._threads = threads
            else:
                raise CheckpointError(
                    f"{self.path}: unknown export format {fmt!r} (onnx or torchscript)"
                )
        except MedistillError:
            raise
        except Exception as e:  # noqa: BLE001  (onnxruntime / TorchScript parse errors)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot load {fmt} model {self.path}: {first}") from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.format == "onnx":
            return np.asarray(self._session.run(None, {self._input: x})[0])
        threads = torch.get_num_threads()
        if self._threads:
            torch.set_num_threads(self._threads)
        try:
            with torch.no_grad():
                return self._module(torch.from_numpy(x)).numpy()
        finally:
            torch.set_num_threads(threads)


def load_exported(
    model_file: str | Path, threads: int | None = None
) -> tuple[ExportedModel, dict[str, Any]]:
    """Load an exported model and its sidecar; returns ``(model, sidecar)``."""
    info = read_sidecar(model_file)
    return ExportedModel(model_file, info["format"], threads), info


class Preprocess:
    """Original RGB ``uint8`` image -> the normalised (3, H, W) float32 model input.

    Exactly what evaluation feeds the PyTorch model (``PairedViewDataset`` without
    augmentation): optional centre crop/pad to ``image_size``, the view (e.g. the Lanczos
    ``ResolutionView`` degradation), [0, 1] scaling and per-channel normalisation.
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self.view = view_from_spec(info["view"])
        self.image_size = info.get("image_size")
        norm = info["normalization"]
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.image_size:
            image = center_crop_or_pad(image, self.image_size)
        return ((to_tensor(self.view(image)) - self.mean) / self.std).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def probability_columns(classes: Sequence[str]) -> list[str]:
    return [f"prob_{c}" for c in classes]


def predict_folder(
    model_file: str | Path,
    folder: str | Path,
    out_csv: str | Path,
    batch_size: int = 32,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Classify every image below ``folder`` with an exported model; write a CSV.

    The CSV (written atomically) has columns ``path`` (relative to ``folder``), ``prediction``
    (class name), ``prob_<class>`` for every class and ``error``, one row per image in sorted
    path order. An image that cannot be read (or gives the wrong input size for the model)
    does not stop the batch: its row has an empty prediction and the reason in ``error``.
    Images are batched ``batch_size`` at a time (consecutive images of the same size only, when
    the model takes any size). Returns the rows as dicts (probabilities as floats; ``error``
    only in the rows of failed images).

    Raises:
        DataError: the folder is missing or holds no images.
        CheckpointError: the model file or its sidecar is missing or invalid.
        OutputError: ``out_csv`` cannot be written (checked before any image is read).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    check_output_file(out_csv)
    folder = Path(folder)
    paths = list_images(folder)
    if not paths:
        raise DataError(f"no images found under {folder}")
    model, info = load_exported(model_file, threads)
    classes = list(info["classes"])
    columns = probability_columns(classes)
    preprocess = Preprocess(info)
    fixed = None if info.get("dynamic_size") else tuple(info["input_size"])

    rows: list[dict[str, Any]] = []
    batch: list[np.ndarray] = []
    names: list[str] = []

    def flush() -> None:
        logits = model(np.stack(batch))
        if logits.shape != (len(batch), len(classes)):
            raise CheckpointError(
                f"{model_file}: model returned shape {tuple(logits.shape)}, expected "
                f"({len(batch)}, {len(classes)})"
            )
        for name, p in zip(names, softmax(logits), strict=True):
            rows.append({"path": name, "prediction": classes[int(p.argmax())],
                         **{c: float(v) for c, v in zip(columns, p, strict=True)}})
        batch.clear()
        names.clear()

    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            x = preprocess(load_image(path))
            if fixed is not None and x.shape[1:] != fixed:
                raise DataError(
                    f"{path}: gives a {x.shape[1]}x{x.shape[2]} model input, the exported model "
                    f"takes {fixed[0]}x{fixed[1]}"
                )
        except DataError as e:
            if batch:
                flush()  # keep the rows in path order
            rows.append({"path": name, "prediction": "", "error": str(e)})
            continue
        if batch and (len(batch) >= batch_size or x.shape != batch[0].shape):
            flush()
        batch.append(x)
        names.append(name)
    if batch:
        flush()

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "prediction", *columns, "error"])
    for row in rows:
        probs = [f"{row[c]:.6g}" if c in row else "" for c in columns]
        writer.writerow([row["path"], row["prediction"], *probs, row.get("error", "")])
    atomic_write_text(out_csv, buffer.getvalue())
    return rows
