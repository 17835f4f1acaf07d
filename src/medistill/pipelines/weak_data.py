"""The data section of weakly supervised segmentation recipes: which images are positive /
negative, the splits, and loading them as :class:`~medistill.data.weak.WeakSegDataset` items.

``setup`` fills in the layout of a known dataset (every key can still be set explicitly):

- ``glas``: GlaS; positive = malignant (``label`` 1), target = their glands; negative = benign
  (``label`` 0), empty target. GlaS has no validation split: ``val_fraction`` of the official
  ``train`` images (seeded, stratified by label; ``val_group_column: patient_id`` holds out
  whole patients instead) select epochs and decide role reversal; ``testA`` + ``testB`` are the
  test set. (GlaS patients occur in both official train and test splits; the split is by image
  as the challenge's is.)
- ``ebhi_seg``: EBHI-Seg; positive = ``adenocarcinoma``, negative = ``normal`` (their gland
  masks are NOT the target: a normal image's target is empty); the dataset's own case-level
  train / val / test split; masks read as binary (non-zero = 1).
- ``custom``: set everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medistill.config import StrictModel, SubsampleConfig
from medistill.data.scan import verify_pairs
from medistill.data.segmentation import SegItem, read_seg_manifest
from medistill.data.weak import assign_labels, cap_per_class, column_by_image, split_off
from medistill.pipelines.seg_data import SegSplits

SETUPS: dict[str, dict[str, Any]] = {
    "glas": {"name_column": "name", "image_pattern": "images/{name}.jpg",
             "mask_pattern": "masks/{name}.png", "label_column": "label",
             "positive": ["1"], "negative": ["0"], "mask_mode": "index",
             "splits": {"train": ["train"], "val": [], "test": ["testA", "testB"]}},
    "ebhi_seg": {"image_column": "path", "mask_column": "mask_path", "label_column": "label",
                 "positive": ["adenocarcinoma"], "negative": ["normal"], "mask_mode": "binary",
                 "splits": {"train": ["train"], "val": ["val"], "test": ["test"]}},
}


class WeakDataConfig(StrictModel):
    setup: Literal["glas", "ebhi_seg", "custom"] = "custom"
    root: str
    csv: str = "labels.csv"
    image_column: str | None = None
    mask_column: str | None = None
    name_column: str = "name"
    image_pattern: str = "images/{name}.png"
    mask_pattern: str = "masks/{name}.png"
    split_column: str = "split"
    mask_mode: Literal["index", "binary"] = "index"
    label_column: str = "label"
    positive: list[str] = Field(["1"], min_length=1, description="label values = tumour")
    negative: list[str] = Field(["0"], min_length=1, description="label values = no tumour")
    classes: list[str] = Field(["background", "tumour"], min_length=2, max_length=2)
    splits: SegSplits = SegSplits()
    val_fraction: float = Field(0.2, gt=0, lt=1, description="used when splits.val is empty")
    val_seed: int = 0
    val_group_column: str | None = None
    image_size: int = Field(96, ge=16)
    max_train_per_class: int | None = Field(None, ge=1, description="seeded subset per label")
    max_val_per_class: int | None = Field(None, ge=1, description="val subset per label")
    sample_seed: int = 0
    subsample: SubsampleConfig = SubsampleConfig()

    @model_validator(mode="before")
    @classmethod
    def _setup_defaults(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("setup") in SETUPS:
            preset = SETUPS[raw["setup"]]
            merged = {**preset, **raw}
            if isinstance(raw.get("splits"), dict):  # a partial splits override keeps the rest
                merged["splits"] = {**preset["splits"], **raw["splits"]}
            return merged
        return raw


def load_weak_split(cfg: WeakDataConfig, role: str) -> tuple[list[SegItem], list[int]]:
    """(items, labels) of ``train``, ``val`` or ``test``; val carved from train if empty."""
    if role in ("train", "val") and not cfg.splits.val:
        train = _read(cfg, cfg.splits.train)
        groups = None
        if cfg.val_group_column:
            by_image = _column(cfg, cfg.val_group_column)
            groups = [by_image[item.image] for item in train[0]]  # type: ignore[index]
        kept, held = split_off(*train, cfg.val_fraction, cfg.val_seed, groups)
        items, labels = kept if role == "train" else held
    else:
        items, labels = _read(cfg, getattr(cfg.splits, role))
    cap = {"train": cfg.max_train_per_class, "val": cfg.max_val_per_class}.get(role)
    items, labels = cap_per_class(items, labels, cap, cfg.sample_seed)  # test: never capped
    keep = cfg.subsample.pick(role, items, labels)  # quick runs: any role, stratified
    items, labels = [items[i] for i in keep], [labels[i] for i in keep]
    verify_pairs(items, f"{cfg.root}: {role}", len(cfg.classes), cfg.mask_mode)
    return items, labels


def _column(cfg: WeakDataConfig, column: str) -> dict[Path, str]:
    root = Path(cfg.root)
    return column_by_image(root / cfg.csv, root, cfg.image_column, cfg.name_column,
                           cfg.image_pattern, column)


def _read(cfg: WeakDataConfig, values: list[str]) -> tuple[list[SegItem], list[int]]:
    root = Path(cfg.root)
    items = read_seg_manifest(
        root / cfg.csv, values, root=root, image_column=cfg.image_column,
        mask_column=cfg.mask_column, name_column=cfg.name_column,
        image_pattern=cfg.image_pattern, mask_pattern=cfg.mask_pattern,
        split_column=cfg.split_column)
    return assign_labels(items, _column(cfg, cfg.label_column), cfg.positive, cfg.negative,
                         str(root / cfg.csv))
