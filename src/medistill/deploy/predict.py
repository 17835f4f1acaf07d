"""Running a model (exported: ONNX or TorchScript + its JSON sidecar; or a run's ``best.pt``)
on a folder of images: class probabilities, or masks for segmentation models."""

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
from medistill.data.segmentation import resize_pair
from medistill.data.transforms import to_tensor
from medistill.data.views import view_from_spec, view_input_size
from medistill.engine.checkpoint import atomic_write_text, load_model
from medistill.engine.trainer import resolve_device
from medistill.errors import CheckpointError, DataError, MedistillError
from medistill.output import check_output_file
from medistill.tasks import IDENTITY_VIEW, card_from_meta
from medistill.tasks import INPUT_NAME as TASK_INPUT_NAME
from medistill.tasks import OUTPUT_NAME as TASK_OUTPUT_NAME

#: version tag of the sidecar JSON written next to every exported model
EXPORT_SCHEMA = "medistill-export/1"
#: the exported graph's input / output names (every task's; see medistill.tasks)
INPUT_NAME, OUTPUT_NAME = TASK_INPUT_NAME, TASK_OUTPUT_NAME


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


def ort_session(model: str | Path | bytes, threads: int | None = None, cuda: bool = False):
    """An onnxruntime session on the CPU, or on its CUDA provider (``threads`` defaults to
    torch's thread count)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MedistillError(
            "ONNX models need onnxruntime: pip install 'medistill[export]'"
        ) from None
    providers = ["CPUExecutionProvider"]
    if cuda:
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise MedistillError("--device cuda: this onnxruntime has no CUDA provider "
                                 "(pip install onnxruntime-gpu), or use --device cpu")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers)


class ExportedModel:
    """An exported model as a function: normalised (N, 3, H, W) float32 array -> logits (N, K).

    Args:
        path: the ``.onnx`` or TorchScript file.
        fmt: ``"onnx"`` or ``"torchscript"``.
        threads: CPU threads (default: torch's current thread count).
        device: where TorchScript runs (``cpu``, ``cuda``, ``cuda:N``, ``auto``); ONNX runs on
            onnxruntime's CUDA provider for a CUDA device (refused where it has none).
    """

    def __init__(self, path: str | Path, fmt: str, threads: int | None = None,
                 device: str = "cpu") -> None:
        self.path = Path(path)
        self.format = fmt
        self.device = resolve_device(device)
        if not self.path.is_file():
            raise CheckpointError(f"exported model not found: {self.path}")
        try:
            if fmt == "onnx":
                self._session = ort_session(self.path, threads, self.device.type == "cuda")
                self._input = self._session.get_inputs()[0].name
            elif fmt == "torchscript":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._module = torch.jit.load(str(self.path),
                                                  map_location=self.device).eval()
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
                return self._module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        finally:
            torch.set_num_threads(threads)


def load_exported(
    model_file: str | Path, threads: int | None = None, device: str = "cpu"
) -> tuple[ExportedModel, dict[str, Any]]:
    """Load an exported model and its sidecar; returns ``(model, sidecar)``."""
    info = read_sidecar(model_file)
    return ExportedModel(model_file, info["format"], threads, device), info


class TorchModel:
    """A PyTorch model file (a run's ``best.pt``) as a function like :class:`ExportedModel`:
    normalised (N, 3, H, W) float32 array -> logits ((N, K) or (N, K, H, W))."""

    def __init__(self, net: torch.nn.Module, device: str = "cpu") -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device))
        out = out[1] if isinstance(out, tuple) else out  # a classifier's (features, logits)
        return out.float().cpu().numpy()


#: model-file keys a segmentation prediction needs besides the sidecar's (thresholds, smoothing)
SEGMENTATION_KEYS = ("threshold", "sigma", "sigma_at", "weak")


def load_predictor(model_file: str | Path, threads: int | None = None, device: str = "cpu"
                   ) -> tuple[ExportedModel | TorchModel, dict[str, Any]]:
    """A model as a function of the normalised input, and what feeding it needs (the sidecar's
    keys: task, classes, view, normalization, image_size, input_size, dynamic_size).

    ``model_file``: an exported model (``.onnx``, or any file with a ``.json`` sidecar) or a
    PyTorch model file (``save_model``'s format: a run's ``best.pt``), read weights-only."""
    path = Path(model_file)
    if path.suffix.lower() == ".onnx" or sidecar_path(path).is_file():
        return load_exported(path, threads, device)
    net, meta = load_model(path)
    card = card_from_meta(meta, str(path))
    view = getattr(card, "view", IDENTITY_VIEW)
    size = card.image_size
    info = {"format": "pytorch", "task": card.task, "classes": list(card.classes),
            "view": view, "normalization": card.normalization, "image_size": size,
            "mpp": card.mpp,
            "input_size": list(view_input_size(view, (size, size))) if size else None,
            "dynamic_size": not size,
            **{k: getattr(card, k) for k in SEGMENTATION_KEYS if hasattr(card, k)}}
    return TorchModel(net, device), info


class Preprocess:
    """Original RGB ``uint8`` image -> the normalised (3, H, W) float32 model input.

    Exactly what evaluation feeds the PyTorch model: for a classifier (``PairedViewDataset``
    without augmentation) optional centre crop/pad to ``image_size``, the view (e.g. the
    Lanczos ``ResolutionView`` degradation); for a segmenter (``SegmentationDataset``) a
    bilinear resize to ``image_size``; then [0, 1] scaling and per-channel normalisation.
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self.view = view_from_spec(info["view"])
        self.image_size = info.get("image_size")
        self.segmentation = info.get("task") == "segmentation"
        norm = info["normalization"]
        self.mean = torch.tensor(norm["mean"], dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(norm["std"], dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.segmentation:
            image = resize_pair(image, image[..., 0], self.image_size)[0]
        elif self.image_size:
            image = center_crop_or_pad(image, self.image_size)
        return ((to_tensor(self.view(image)) - self.mean) / self.std).numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def probability_columns(classes: Sequence[str]) -> list[str]:
    return [f"prob_{c}" for c in classes]


def masks_folder_for(out_csv: str | Path) -> Path:
    """Where a segmentation prediction's masks go: ``preds.csv`` -> ``preds_masks/``."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.stem + "_masks")


def predict_folder(
    model_file: str | Path,
    folder: str | Path,
    out_csv: str | Path,
    batch_size: int = 32,
    threads: int | None = None,
    device: str = "cpu",
    masks: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Classify or segment every image below ``folder``; write a CSV (and masks).

    ``model_file`` is an exported model (with its sidecar) or a run's ``best.pt``. For a
    classifier the CSV (written atomically) has columns ``path`` (relative to ``folder``),
    ``prediction`` (class name), ``prob_<class>`` for every class and ``error``; for a
    segmenter (:mod:`medistill.deploy.masks`) ``path``, ``mask``, ``fraction_<class>`` and
    ``error``, and one PNG mask per image (class index per pixel, at the image's original
    size) in ``masks`` (default ``<csv stem>_masks/`` next to the CSV). One row per image in
    sorted path order. An image that cannot be read (or gives the wrong input size for the
    model) does not stop the batch: its row has an empty prediction and the reason in
    ``error``. Images are batched ``batch_size`` at a time (consecutive images of the same size
    only, when the model takes any size). Returns the rows as dicts (probabilities and
    fractions as floats; ``error`` only in the rows of failed images).

    Raises:
        DataError: the folder is missing or holds no images.
        CheckpointError: the model file or its sidecar is missing or invalid, or an instance
            model (its output needs post-processing ``predict`` does not do).
        OutputError: ``out_csv`` or the masks folder cannot be written (checked before any
            image is read).
    """
    from medistill.deploy.masks import MaskWriter

    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    check_output_file(out_csv)
    folder = Path(folder)
    paths = list_images(folder)
    if not paths:
        raise DataError(f"no images found under {folder}")
    model, info = load_predictor(model_file, threads, device)
    task = info.get("task", "classification")
    if task not in ("classification", "segmentation"):
        raise CheckpointError(f"{model_file}: a {task} model; predict takes classifiers and "
                              "segmenters (instance maps need the pipeline's post-processing)")
    classes = list(info["classes"])
    names = [path.relative_to(folder).as_posix() for path in paths]
    writer = None
    if task == "segmentation":
        writer = MaskWriter(info, masks or masks_folder_for(out_csv), names, Path(out_csv).parent)
    columns = writer.columns if writer else probability_columns(classes)
    preprocess = Preprocess(info)
    fixed = None if info.get("dynamic_size") else tuple(info["input_size"])

    rows: list[dict[str, Any]] = []
    batch: list[np.ndarray] = []
    batch_names: list[str] = []
    shapes: list[tuple[int, int]] = []

    def flush() -> None:
        logits = model(np.stack(batch))
        if writer is not None:
            rows.extend(writer.add(logits, batch_names, shapes, str(model_file)))
        elif logits.shape != (len(batch), len(classes)):
            raise CheckpointError(
                f"{model_file}: model returned shape {tuple(logits.shape)}, expected "
                f"({len(batch)}, {len(classes)})"
            )
        else:
            for name, p in zip(batch_names, softmax(logits), strict=True):
                rows.append({"path": name, "prediction": classes[int(p.argmax())],
                             **{c: float(v) for c, v in zip(columns, p, strict=True)}})
        batch.clear()
        batch_names.clear()
        shapes.clear()

    try:
        for path, name in zip(paths, names, strict=True):
            try:
                image = load_image(path)
                x = preprocess(image)
                if fixed is not None and x.shape[1:] != fixed:
                    raise DataError(
                        f"{path}: gives a {x.shape[1]}x{x.shape[2]} model input, the model "
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
            batch_names.append(name)
            shapes.append(image.shape[:2])
        if batch:
            flush()
        buffer = io.StringIO()
        out = csv.writer(buffer, lineterminator="\n")
        first = ["path", "mask"] if writer else ["path", "prediction"]
        out.writerow([*first, *columns, "error"])
        for row in rows:
            values = [f"{row[c]:.6g}" if c in row else "" for c in columns]
            out.writerow([row["path"], row.get(first[1], ""), *values, row.get("error", "")])
        if writer is not None:
            writer.commit()  # the masks folder appears whole, then the CSV
        atomic_write_text(out_csv, buffer.getvalue())
    finally:
        if writer is not None:
            writer.discard()  # a failed or interrupted prediction leaves no partial folder
    return rows
