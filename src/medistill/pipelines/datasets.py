"""Turning a recipe's data section into sample lists and datasets.

Every split is scanned when it is loaded (:mod:`medistill.data.scan`): pipelines load all the
splits a run reads before they create the output folder, so a bad image anywhere (test split
included) stops the run before anything is written or trained."""

from __future__ import annotations

from pathlib import Path

from medistill.config import AugmentConfig, DataConfig
from medistill.data import (
    Augment,
    PairedViewDataset,
    ResolutionView,
    SampleList,
    read_manifest,
    scan_folders,
    scan_images,
)
from medistill.data.scan import verify_samples
from medistill.errors import DataError


def load_split(
    cfg: DataConfig, split: str, classes: list[str] | None = None, labeled: bool = True
) -> SampleList:
    """The samples of one split in the layout ``cfg.format`` describes, every image checked
    (readable; one size when ``cfg.image_size`` is None); the split's role (train / val /
    test, by ``cfg.splits``) limited to ``cfg.subsample`` (stratified by class)."""
    classes = classes if classes is not None else cfg.classes
    if cfg.format == "folders":
        found = scan_folders(cfg.root, split, classes, labeled)
    elif cfg.format == "csv":
        found = read_manifest(
            Path(cfg.root) / cfg.csv, split, classes, labeled,
            cfg.path_column, cfg.label_column, cfg.split_column, cfg.path_template,
        )
    elif labeled:
        raise DataError(f"{cfg.root}: the 'images' layout has no labels; use it as auxiliary data")
    else:
        found = scan_images(cfg.root, split)
    roles = [role for role, value in cfg.splits.model_dump().items() if value == split]
    if roles:
        keep = cfg.subsample.pick(roles[0], found.samples, [s.label for s in found.samples])
        found = SampleList([found.samples[i] for i in keep], found.classes)
    verify_samples(found.samples, f"{cfg.root}: split {split!r}", same_size=cfg.image_size is None,
                   key=f"image_size in the data section of {cfg.root}")
    return found


def load_labeled(cfg: DataConfig) -> tuple[SampleList, SampleList]:
    """(train, val) of a labelled dataset, with the class list fixed by the train split."""
    train = load_split(cfg, cfg.splits.train)
    val = load_split(cfg, cfg.splits.val, train.classes)
    return train, val


def make_augment(cfg: AugmentConfig) -> Augment | None:
    if not cfg.enabled:
        return None
    return Augment(cfg.flip, cfg.rotate90, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)


def make_dataset(
    samples: SampleList,
    views: dict[str, ResolutionView],
    data: DataConfig,
    normalization: dict[str, list[float]],
    augment: Augment | None = None,
    seed: int = 0,
) -> PairedViewDataset:
    """A :class:`PairedViewDataset` of the named views."""
    return PairedViewDataset(
        samples.samples,
        views,
        mean=normalization["mean"],
        std=normalization["std"],
        augment=augment,
        image_size=data.image_size,
        seed=seed,
    )
