"""The data section of instance-segmentation recipes, and turning it into items and datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from medistill.config import StrictModel, SubsampleConfig
from medistill.data.instance import InstanceAugment, scan_instance_mask_folders
from medistill.data.scan import verify_pairs
from medistill.data.segmentation import SegItem, read_seg_manifest, scan_seg_folders
from medistill.errors import DataError


class InstanceSplits(StrictModel):
    """Split values (in the data) of each role; ``val: []`` = no validation set (the epoch
    with the lowest training loss is kept)."""

    train: list[str] = ["train"]
    val: list[str] = []
    test: list[str] = ["test"]

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def _listify(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class InstanceDataConfig(StrictModel):
    """Where an instance dataset lives (paths relative to ``root``) and how it is cropped.

    Layouts: ``csv`` (a manifest with a name and a split column; MoNuSeg's ``splits.csv``),
    ``folders`` (``<root>/<split>/<images>/*`` + ``<root>/<split>/<labels>/<stem><suffix>``),
    ``mask_folders`` (Data Science Bowl 2018: ``<root>/<split>/<id>/images|masks``).
    """

    format: Literal["csv", "folders", "mask_folders"] = "csv"
    root: str
    splits: InstanceSplits = InstanceSplits()
    scale: float = Field(1.0, gt=0, le=4, description="resize factor applied first")
    crop_size: int = Field(128, ge=16, description="training crop side (px, after scale)")
    crops_per_image: int = Field(8, ge=1, description="training crops per image and epoch")
    # csv layout
    csv: str = "splits.csv"
    name_column: str = "name"
    split_column: str = "split"
    image_pattern: str = "images/{name}.png"
    label_pattern: str = "labels/{name}.png"
    # folders layout
    images: str = "images"
    labels: str = "labels"
    label_suffix: str = ".png"
    subsample: SubsampleConfig = SubsampleConfig()


class InstanceAugmentConfig(StrictModel):
    enabled: bool = True
    flip: bool = True
    rotate90: bool = True
    brightness: float = Field(0.1, ge=0, lt=1)
    contrast: float = Field(0.1, ge=0, lt=1)


def make_instance_augment(cfg: InstanceAugmentConfig) -> InstanceAugment | None:
    if not cfg.enabled:
        return None
    return InstanceAugment(cfg.flip, cfg.rotate90, cfg.brightness, cfg.contrast)


def load_instance_split(cfg: InstanceDataConfig, role: str) -> list[SegItem]:
    """The items of a role (train / val / test; [] for an empty role) or of a split value;
    a role limited to ``cfg.subsample`` (seeded); every image / label map checked
    (:func:`~medistill.data.scan.verify_pairs`)."""
    items = _instance_items(cfg, role)
    items = [items[i] for i in cfg.subsample.pick(role, items)]
    verify_pairs(items, f"{cfg.root}: {role}")
    return items


def _instance_items(cfg: InstanceDataConfig, role: str) -> list[SegItem]:
    values = list(getattr(cfg.splits, role)) if role in ("train", "val", "test") else [role]
    if not values:
        return []
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"data.root: folder not found: {root}")
    if cfg.format == "csv":
        return read_seg_manifest(root / cfg.csv, values, root=root, name_column=cfg.name_column,
                                 image_pattern=cfg.image_pattern, mask_pattern=cfg.label_pattern,
                                 split_column=cfg.split_column)
    if cfg.format == "folders":
        return [item for v in values
                for item in scan_seg_folders(root, v, cfg.images, cfg.labels, cfg.label_suffix)]
    return [item for v in values for item in scan_instance_mask_folders(root, v)]
