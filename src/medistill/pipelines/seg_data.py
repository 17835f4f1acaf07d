"""The data section of segmentation recipes, and turning it into items and datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from medistill.config import StrictModel, SubsampleConfig
from medistill.data.scan import verify_pairs
from medistill.data.segmentation import (
    SegAugment,
    SegItem,
    nifti_items,
    read_seg_manifest,
    scan_seg_folders,
)
from medistill.errors import DataError


class SegSplits(StrictModel):
    """Split values (in the data) that make up each role; a single value or a list."""

    train: list[str] = ["train"]
    val: list[str] = ["val"]
    test: list[str] = ["test"]

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class VolumeConfig(StrictModel):
    image: str
    mask: str
    split: str = "train"


class SegDataConfig(StrictModel):
    """Where a segmentation dataset lives and in which layout (paths relative to ``root``)."""

    format: Literal["csv", "folders", "nifti"] = "csv"
    root: str
    classes: list[str] = Field(["background", "foreground"], min_length=2,
                               description="class names, index 0 = background")
    mask_mode: Literal["index", "binary"] = "index"
    image_size: int | None = Field(128, ge=8, description="resize every pair to this square")
    splits: SegSplits = SegSplits()
    # csv layout
    csv: str = "labels.csv"
    image_column: str | None = None
    mask_column: str | None = None
    name_column: str = "name"
    image_pattern: str = "images/{name}.png"
    mask_pattern: str = "masks/{name}.png"
    split_column: str | None = "split"
    group_column: str | None = None
    group_splits: dict[str, list[str]] | None = Field(
        None, description="split value -> group values (e.g. case ids)")
    # nifti layout
    volumes: list[VolumeConfig] = []
    window: str | list[float] = "kits"
    slice_axis: int = Field(2, ge=0, le=2)
    label_map: dict[int, int] | None = None
    target_slices_only: bool = False
    subsample: SubsampleConfig = SubsampleConfig()

    @field_validator("group_splits", mode="before")
    @classmethod
    def _str_groups(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: [str(g) for g in (g_ if isinstance(g_, list) else [g_])]
                    for k, g_ in v.items()}
        return v


class SegAugmentConfig(StrictModel):
    enabled: bool = True
    flip: bool = True
    rotate90: bool = True
    rotate_degrees: float = Field(15.0, ge=0, le=180)
    crop_scale: float = Field(0.7, gt=0, le=1, description="smallest crop area fraction")
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)


def make_seg_augment(cfg: SegAugmentConfig) -> SegAugment | None:
    if not cfg.enabled:
        return None
    return SegAugment(cfg.flip, cfg.rotate90, cfg.rotate_degrees, cfg.crop_scale,
                      cfg.brightness, cfg.contrast)


def load_seg_split(cfg: SegDataConfig, split: str) -> list[SegItem]:
    """The items of ``split``: a role (train / val / test, mapped by ``cfg.splits``) or a
    split value of the data itself, a role limited to ``cfg.subsample`` (seeded); every pair
    checked (:func:`verify_pairs`)."""
    items = _seg_items(cfg, split)
    items = [items[i] for i in cfg.subsample.pick(split, items)]
    verify_pairs(items, f"{cfg.root}: split {split!r}", len(cfg.classes), cfg.mask_mode,
                 same_size=cfg.image_size is None)
    return items


def _seg_items(cfg: SegDataConfig, split: str) -> list[SegItem]:
    values = list(getattr(cfg.splits, split)) if split in ("train", "val", "test") else [split]
    root = Path(cfg.root)
    if cfg.format == "csv":
        return read_seg_manifest(
            root / cfg.csv, values, root=root, image_column=cfg.image_column,
            mask_column=cfg.mask_column, name_column=cfg.name_column,
            image_pattern=cfg.image_pattern, mask_pattern=cfg.mask_pattern,
            split_column=cfg.split_column, group_column=cfg.group_column,
            group_splits=cfg.group_splits)
    if cfg.format == "folders":
        return [item for v in values for item in scan_seg_folders(root, v)]
    vols = [(root / v.image, root / v.mask) for v in cfg.volumes if v.split in values]
    if not vols:
        raise DataError(f"data.volumes: no volume in split(s) {', '.join(values)}")
    return nifti_items(vols, cfg.window, cfg.slice_axis, cfg.label_map, cfg.target_slices_only)
