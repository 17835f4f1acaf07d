"""Recipe schemas (pydantic, strict) and YAML loading with ``--set key=value`` overrides.

Every recipe is YAML with a ``method:`` key that picks its schema. Unknown keys and wrong types
are rejected with a one-line error naming the key; so are, before anything runs, devices this
machine does not have (``train.device: cuda:1`` on a CPU build), unknown model names and model
``kwargs`` the model does not take, and bad keys in any ``stages`` override.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from medistill.errors import CheckpointError, RecipeError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TrainConfig(StrictModel):
    """Optimisation settings of one training stage."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    schedule: Literal["cosine", "step", "none"] = "cosine"
    step_size: int = Field(30, ge=1)
    gamma: float = Field(0.1, gt=0)
    max_grad_norm: float | None = None
    diag_every: int = Field(50, ge=0, description="gradient share of every loss term every N "
                            "steps and at the first (steps.csv); 0: off")
    select_metric: Literal[
        "accuracy", "macro_f1", "macro_precision", "macro_recall", "ovr_accuracy",
        "dice", "iou",  # segmentation methods' validation scores
        "pixel_f1", "pixel_f1_pos", "pixel_f1_positive", "image_auc",  # weakly supervised

        "aji", "pq",  # instance segmentation methods' validation scores
    ] = "macro_f1"
    seed: int = 0
    device: str = "cpu"
    num_workers: int = Field(0, ge=0)
    pin_memory: bool = False
    channels_last: bool = Field(False, description="NHWC memory format (faster convs on CPU)")
    amp: Literal["none", "bf16", "fp16"] = Field(
        "none", description="autocast dtype (bf16/fp16 only where the device has fast units)")
    max_loss_factor: float | None = Field(
        1e4, gt=1, description="stop when a step's loss exceeds this times the first step's "
        "(at least 1); None: never")
    progress: bool = Field(True, description="progress bars (the epoch lines always print)")
    tensorboard: bool = True
    tb_samples: int = Field(4, ge=0, le=16, description="TensorBoard pictures of the first N "
                            "validation items (prediction vs truth); 0: off")
    tb_samples_every: int = Field(5, ge=1, description="draw them at epoch 1, every N epochs "
                                  "and the last")
    mlflow: bool = Field(False, description="log to MLflow (needs the mlflow package; "
                         "MLFLOW_TRACKING_URI says where)")
    mlflow_experiment: str | None = Field(None, description="MLflow experiment (medistill)")

    @field_validator("device")
    @classmethod
    def _device_exists(cls, v: str) -> str:
        check_device(v)
        return v


def check_device(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is ``auto`` or a device this machine has."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name!r} is not a device (cpu, cuda, cuda:N, mps or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name!r}: CUDA is not available here (a CPU-only PyTorch build "
                             "or no visible GPU); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name!r}: only {count} CUDA device(s) visible "
                             f"(cuda:0-cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name!r}: MPS is not available here; use cpu")


class SplitNames(StrictModel):
    train: str = "train"
    val: str = "val"
    test: str = "test"


class SubsampleConfig(StrictModel):
    """At most this many items of a role (train / val / test) for quick runs: a seeded subset,
    stratified by class where the items have labels (``data.subsample.train: 64``)."""

    train: int | None = Field(None, ge=1)
    val: int | None = Field(None, ge=1)
    test: int | None = Field(None, ge=1)
    seed: int = 0

    def pick(self, role: str, items: list[Any], labels: list[int] | None = None) -> list[int]:
        """Indices of the items of ``role`` to keep (all when ``role`` has no limit)."""
        from medistill.data.subsample import subsample_indices

        limit = getattr(self, role) if role in ("train", "val", "test") else None
        return subsample_indices(len(items), limit, self.seed, labels)


class DataConfig(StrictModel):
    """Where a dataset lives and in which layout (see :mod:`medistill.data.records`)."""

    format: Literal["folders", "csv", "images"] = "csv"
    root: str
    csv: str = "labels.csv"
    path_column: str = "path"
    path_template: str | None = Field(None, description="e.g. images/{name}.jpg (from columns)")
    label_column: str = "label"
    split_column: str = "split"
    classes: list[str] | None = None
    splits: SplitNames = SplitNames()
    image_size: int | None = Field(None, ge=1, description="centre crop/pad originals first")
    source_mpp: float | None = Field(None, gt=0, description="microns per pixel of the files")
    subsample: SubsampleConfig = SubsampleConfig()


class ModelConfig(StrictModel):
    """A registered model and the keyword arguments of its factory (checked against its
    signature when the recipe is read), optionally started from the weights in
    ``init_checkpoint`` (a medistill model file or a PyTorch state dict; torchvision / timm
    ResNet names are mapped onto ours; see :mod:`medistill.models.pretrained`)."""

    name: str = "small_resnet"
    kwargs: dict[str, Any] = {}
    init_checkpoint: str | None = Field(None, description="initial weights (read weights-only)")
    init_strict: bool = Field(True, description="false: load only the keys that match")

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: Any) -> dict[str, Any]:
        """Without initial weights the section dumps as before (``recipe.json`` and the model
        files of existing recipes are unchanged, and their runs still resume)."""
        data = handler(self)
        if self.init_checkpoint is None:
            data.pop("init_checkpoint", None)
        if self.init_strict:
            data.pop("init_strict", None)
        return data

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from medistill.models import MODELS
        from medistill.plugins import load_entry_points

        load_entry_points()
        if v not in MODELS:
            raise ValueError(f"unknown model {v!r}; choose one of: {', '.join(MODELS.names())}")
        return v

    @model_validator(mode="after")
    def _kwargs_fit(self) -> ModelConfig:
        import inspect

        from medistill.models import MODELS

        try:
            inspect.signature(MODELS.get(self.name)).bind(num_classes=2, **self.kwargs)
        except TypeError as e:
            raise ValueError(f"kwargs of model {self.name!r}: {e}") from None
        return self


class AugmentConfig(StrictModel):
    enabled: bool = True
    flip: bool = True
    rotate90: bool = True
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)
    saturation: float = Field(0.1, ge=0, lt=1)
    hue: float = Field(0.02, ge=0, le=0.5)


class EvalConfig(StrictModel):
    split: str = "test"
    n_resamples: int = Field(10_000, ge=0)
    ci_seed: int = 0
    latency: bool = True
    latency_repeats: int = Field(20, ge=1)
    threads: int | None = None


def format_validation_error(err: ValidationError, source: str) -> str:
    """The first problem of a pydantic error as one line naming the key."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    msg = msg.removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict.

    A number indexes a list (``aux_data.0.root=...``); the index one past the end appends
    (``aux_data.1={format: csv, root: x}``). A key into a value that is neither a section nor
    a list, or an index out of range, is a one-line error naming the key."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise RecipeError(f"--set {key}: empty key part")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise RecipeError(f"--set {item!r}: invalid YAML value: {problem}") from None
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "the recipe"
            if isinstance(node, list):
                if not re.fullmatch(r"\d+", part):
                    raise RecipeError(f"--set {key}: {where} is a list; index it by number "
                                      f"({where}.0.{'.'.join(parts[depth:])})")
                index = int(part)
                if index > len(node):
                    raise RecipeError(f"--set {key}: index {index} out of range ({where} has "
                                      f"{len(node)} item(s); {len(node)} appends one)")
                if index == len(node):
                    node.append(value if last else {})
                elif last:
                    node[index] = value
                node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise RecipeError(f"--set {key}: {where} is not a section or a list")
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a dict; errors name the file (and the line of a YAML syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text (UTF-8 YAML) file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping")
    return raw


def validate(schema: type[BaseModel], raw: dict[str, Any], source: str) -> Any:
    """``raw`` validated by ``schema``; errors are one line naming ``source`` and the key.

    A recipe's per-stage overrides (``stages.<stage>``, merged into ``train`` by its
    ``stage_train``) are checked here too, not when that stage starts (after the earlier
    stages have trained)."""
    try:
        cfg = schema.model_validate(raw)
        for stage in getattr(cfg, "stages", None) or {}:
            if hasattr(cfg, "stage_train"):
                cfg.stage_train(stage, cfg.train.seed)
        return cfg
    except ValidationError as e:
        raise RecipeError(format_validation_error(e, source)) from None
    except RecipeError as e:  # raised by a nested check (e.g. a stage override)
        raise RecipeError(f"{source}: {e}") from None


def merge_train(base: TrainConfig, override: dict[str, Any] | None, key: str) -> TrainConfig:
    """``base`` with the keys of a per-stage override replaced (validated, errors name ``key``)."""
    merged = {**base.model_dump(), **(override or {})}
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as e:
        raise RecipeError(format_validation_error(e, key)) from None


def model_sections(node: BaseModel, prefix: str = "") -> list[tuple[str, ModelConfig]]:
    """``(key, ModelConfig)`` of every model section of a recipe (nested sections too)."""
    found = []
    for name in type(node).model_fields:
        value = getattr(node, name)
        if isinstance(value, ModelConfig):
            found.append((prefix + name, value))
        elif isinstance(value, BaseModel):
            found += model_sections(value, f"{prefix}{name}.")
    return found


def build_models_once(recipe: BaseModel) -> None:
    """Build every model a recipe names once, so a kwarg value the model rejects, or an
    ``init_checkpoint`` that cannot be read or whose key names do not fit, stops the run
    before its output folder exists (not when that model's stage starts)."""
    from medistill.models import create_model
    from medistill.models.pretrained import check_initial_weights

    for key, spec in model_sections(recipe):
        try:
            model = create_model(spec.name, 2, **spec.kwargs)
            if spec.init_checkpoint:
                check_initial_weights(model, spec.init_checkpoint, spec.init_strict, spec.name)
        except (RecipeError, CheckpointError) as e:
            raise RecipeError(f"{key}: {e}") from None
