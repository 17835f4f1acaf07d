"""Recipe schemas (pydantic, strict) and YAML loading with ``--set key=value`` overrides.

Every recipe is YAML with a ``method:`` key that picks its schema. Unknown keys and wrong types
are rejected with a one-line error naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medistill.errors import RecipeError


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
    progress: bool = True
    tensorboard: bool = True


class SplitNames(StrictModel):
    train: str = "train"
    val: str = "val"
    test: str = "test"


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


class ModelConfig(StrictModel):
    name: str = "small_resnet"
    kwargs: dict[str, Any] = {}


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
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise RecipeError(f"--set {key}: {p} is not a section")
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping")
    return raw


def validate(schema: type[BaseModel], raw: dict[str, Any], source: str) -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(format_validation_error(e, source)) from None


def merge_train(base: TrainConfig, override: dict[str, Any] | None, key: str) -> TrainConfig:
    """``base`` with the keys of a per-stage override replaced (validated, errors name ``key``)."""
    merged = {**base.model_dump(), **(override or {})}
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as e:
        raise RecipeError(format_validation_error(e, key)) from None
