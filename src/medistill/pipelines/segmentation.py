"""The HLFD segmentation-distillation recipe (Gorade et al., 2023), end to end.

For every seed: a teacher (supervised, or ``teacher_checkpoint``), then the student runs listed
in ``runs``: ``no_kd`` (segmentation loss only), ``logit_kd`` (+ pixel KL on the final
output), ``at`` (+ attention transfer between paired encoder layers) and ``hlfd`` (UFD + IFD +
UPD + IPD, see :mod:`medistill.methods.hlfd`). Each model is selected on validation Dice and
evaluated on ``eval.split``: DSC, IoU, VOE, RVD, HD95 per case with 95% bootstrap CIs, per
class, params / GFLOPs / CPU latency. ``results.json``, ``report.html`` / ``report.md`` with
overlay figures (image, truth, teacher, students) are written to the output folder. With a
``no_kd`` run, :func:`paired_comparisons` adds every other model's paired per-image DSC
difference against it (teacher first: the teacher-student gap), per seed and over seeds.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from medistill.config import EvalConfig, ModelConfig, StrictModel, TrainConfig
from medistill.data.segmentation import SegItem, SegmentationDataset, seg_channel_stats
from medistill.engine.checkpoint import load_model
from medistill.errors import DataError, RecipeError
from medistill.methods import SegmentationKD, SegSupervised
from medistill.methods.hlfd import PRESETS
from medistill.metrics.paired import over_seeds, paired_by_name
from medistill.models.segmenter import Segmenter
from medistill.pipelines.base import Pipeline, StagedRecipe
from medistill.pipelines.evaluate_segmentation import evaluate_segmenter
from medistill.pipelines.overlays import write_overlays
from medistill.pipelines.resolution import ReplayConfig
from medistill.pipelines.seg_data import (
    SegAugmentConfig,
    SegDataConfig,
    load_seg_split,
    make_seg_augment,
)
from medistill.pipelines.seg_replay import check_replay_augment
from medistill.tasks import SegmentationCard

Run = Literal["no_kd", "logit_kd", "at", "hlfd"]
Stage = Literal["teacher", "no_kd", "logit_kd", "at", "hlfd"]


class HLFDConfig(StrictModel):
    temperature: float = Field(4.0, gt=0)
    p: float = Field(4.0, gt=0, description="attention-transfer exponent")
    pixel_weight: float = Field(0.1, ge=0, description="lambda")
    feature_weight: float = Field(0.9, ge=0, description="beta")
    focal_weight: float = Field(0.5, ge=0)
    dice_weight: float = Field(0.5, ge=0)
    gamma: float = Field(2.0, ge=0)
    at_reduction: Literal["sum", "mean"] = Field(
        "sum", description="attention transfer over positions: sum (the authors') or mean")
    teacher_replay: ReplayConfig | None = Field(
        None, description="the frozen teacher's taps stored for K augmentations per image and "
        "replayed (FKD); None: the teacher runs every step")


class SegEvalConfig(EvalConfig):
    threshold: float = Field(0.4, gt=0, lt=1, description="binary foreground threshold")
    hd95: bool = True
    overlays: int = Field(4, ge=0, description="test images shown in the overlay figure")


class HLFDRecipe(StagedRecipe):
    method: Literal["hlfd"] = "hlfd"
    title: str = "HLFD segmentation distillation"
    data: SegDataConfig
    teacher: ModelConfig = ModelConfig(name="unetpp")
    student: ModelConfig = ModelConfig(name="resnet18_unet")
    teacher_checkpoint: str | None = None
    runs: list[Run] = Field(["no_kd", "logit_kd", "at", "hlfd"], min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    augment: SegAugmentConfig = SegAugmentConfig()
    train: TrainConfig = TrainConfig(select_metric="dice", lr=0.01, batch_size=8, epochs=40)
    stages: dict[Stage, dict[str, Any]] = {}
    kd: HLFDConfig = HLFDConfig()
    eval: SegEvalConfig = SegEvalConfig()

    @model_validator(mode="after")
    def _replay_needs_augmentation(self) -> HLFDRecipe:
        check_replay_augment(self.kd.teacher_replay, self.augment.enabled, "kd.teacher_replay")
        return self


class SegmentationPipeline(Pipeline):
    supports_ddp = True  # every rank trains; rank 0 evaluates and reports

    def __init__(self, recipe: HLFDRecipe, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        super().__init__(recipe, out_dir, resume, progress)
        self.classes = list(recipe.data.classes)

    # -- data -------------------------------------------------------------------------------
    def _load_data(self) -> None:
        d = self.r.data
        self.train_items = load_seg_split(d, "train")
        self.val_items = load_seg_split(d, "val")
        self.test_items = load_seg_split(d, self.r.eval.split)
        probe = SegmentationDataset(self.train_items, len(self.classes), d.image_size,
                                    mask_mode=d.mask_mode)
        mean, std = seg_channel_stats(probe)
        self.norm = {"mean": list(mean), "std": list(std)}

    def _dataset(self, items: list[SegItem], augment: bool, seed: int = 0) -> SegmentationDataset:
        d = self.r.data
        aug = make_seg_augment(self.r.augment) if augment else None
        return SegmentationDataset(items, len(self.classes), d.image_size, self.norm["mean"],
                                   self.norm["std"], aug, d.mask_mode, seed)

    def _meta(self, spec: ModelConfig) -> dict[str, Any]:
        data = self.r.data.model_dump(exclude={"root"})
        return SegmentationCard(model=spec.model_dump(), classes=self.classes,
                                normalization=self.norm, image_size=self.r.data.image_size,
                                threshold=self.r.eval.threshold, data=data).model_dump()

    # -- one run ----------------------------------------------------------------------------
    def _train(self, name: str, method, cfg: TrainConfig, meta: dict) -> Path:
        train_set = self._replay_set(method, self._dataset(self.train_items, True, cfg.seed),
                                     self.r.kd.teacher_replay, cfg, name)
        return self.fit(name, method, train_set, self._dataset(self.val_items, False), cfg,
                        meta, len(self.classes))

    def _replay_set(self, method, train_set: SegmentationDataset, replay: ReplayConfig | None,
                    cfg: TrainConfig, name: str = "") -> Any:
        """``kd.teacher_replay``: the teacher's taps for ``replay.draws`` augmentations per
        image, filled once (on the training device) and reused by the next run of the same
        teacher, taps and images (:func:`~medistill.pipelines.seg_replay.replay_train_set`)."""
        from medistill.pipelines.seg_replay import replay_train_set, sample_files

        d = self.r.data
        volumes = [Path(d.root) / p for v in d.volumes for p in (v.image, v.mask)]
        taps = method.teacher_taps() if isinstance(method, SegmentationKD) else ()
        return replay_train_set(self, name, method, train_set, replay, cfg,
                                lambda: sample_files(train_set, volumes), taps=taps,
                                image_size=d.image_size, normalization=self.norm,
                                mask_mode=d.mask_mode)

    def _evaluate(self, name: str, role: str, seed: int, model_path: Path) -> dict[str, Any]:
        e = self.r.eval

        def evaluate(model: Segmenter, meta: dict[str, Any]) -> dict[str, Any]:
            res = evaluate_segmenter(model, meta, self.test_items, n_resamples=e.n_resamples,
                                     ci_seed=e.ci_seed, threshold=e.threshold, hd95=e.hd95,
                                     latency=e.latency, latency_repeats=e.latency_repeats,
                                     threads=e.threads)
            res["ci_seed"] = res.pop("seed", e.ci_seed)  # the bootstrap's, not the run's
            return {"name": name, "role": role, "seed": seed, "split": e.split,
                    "model": meta["model"]["name"], **res}

        return self.evaluate_record(name, model_path, evaluate)

    def _model(self, spec: ModelConfig, seed: int) -> Segmenter:
        return self.build_model(spec, len(self.classes), seed, Segmenter,
                                "a segmentation model")

    def _check_teacher_checkpoint(self) -> None:
        self.check_teacher_checkpoint("segmentation", self.classes)

    def _train_teacher(self, seed: int) -> Path:
        r, k = self.r, self.r.kd
        method = SegSupervised(self._model(r.teacher, seed), k.focal_weight, k.dice_weight,
                               k.gamma, r.eval.threshold)
        return self._train(f"seed{seed}/teacher", method, r.stage_train("teacher", seed),
                           self._meta(r.teacher))

    def _student_method(self, run: Run, teacher_path: Path, seed: int):
        k, r = self.r.kd, self.r
        student = self._model(r.student, seed)
        if run == "no_kd":
            return SegSupervised(student, k.focal_weight, k.dice_weight, k.gamma,
                                 r.eval.threshold)
        teacher, _ = load_model(teacher_path)
        return SegmentationKD(teacher, student, PRESETS[run], k.temperature, k.p,
                              k.pixel_weight, k.feature_weight, k.focal_weight, k.dice_weight,
                              k.gamma, r.eval.threshold, k.at_reduction)

    # -- everything -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r = self.r
        if (self.out / "recipe.json").exists() and not self.resume:  # before any slow check
            raise RecipeError(f"{self.out} already has a run; pass --resume or another --out")
        self._check_teacher_checkpoint()
        self._load_data()
        self.start()
        runs, overlay_models = [], {}
        for seed in r.seeds:
            teacher_path = self.teacher(seed, self._train_teacher)
            runs.append(self._evaluate(f"seed{seed}/teacher", "teacher", seed, teacher_path))
            models = {"teacher": teacher_path}
            runs += self.student_runs(seed, teacher_path, models)
            if seed == r.seeds[0]:
                overlay_models = models
        if not self.is_main:  # training is over; rank 0 reports
            return self.finish({})
        figures = []
        if r.eval.overlays:
            figures = write_overlays(self.out, overlay_models, self.test_items[: r.eval.overlays],
                                     r.seeds[0])
        paired = None
        if "no_kd" in r.runs:
            paired = paired_comparisons(runs, "no_kd", "dice", r.eval.n_resamples,
                                        r.eval.ci_seed)
        results = {
            "task": "segmentation",
            "title": r.title,
            "summary": _summary(r, self.classes),
            "classes": self.classes,
            "runs": [{k: v for k, v in run.items() if k != "cases"} for run in runs],
            "paired": paired,
            "figures": figures,
            "notes": _notes(r, len(self.train_items), len(self.val_items), len(self.test_items)),
            "config": json.loads(r.model_dump_json()),
        }
        return self.finish(results)


def case_values(record: Mapping[str, Any], metric: str = "dice") -> dict[str, float]:
    """Case id -> the case's ``metric``, the mean over its foreground classes with a defined
    value (as :func:`~medistill.metrics.segmentation_report` averages), from an ``eval.json``
    record's ``cases``."""
    cases = record.get("cases")
    if not isinstance(cases, Mapping) or not cases:
        raise DataError(f"run {record.get('name')!r} has no per-case values ('cases')")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a case with every class undefined
        for case, per_class in cases.items():
            out[str(case)] = float(np.nanmean([float(v[metric]) for v in per_class.values()]))
    return out


def paired_comparisons(runs: Sequence[Mapping[str, Any]], reference: str = "no_kd",
                       metric: str = "dice", n_resamples: int = 10_000,
                       seed: int = 0) -> dict[str, Any] | None:
    """Every role's paired per-case ``metric`` difference against ``reference`` of the same
    seed (:func:`~medistill.metrics.paired.paired_bootstrap_per_image` over the same test
    cases), and their mean / sd over seeds (:func:`~medistill.metrics.paired.over_seeds`).

    ``runs``: evaluation records WITH their ``cases`` (``eval.json``). The teacher comes first
    (``teacher - reference``: the gap there is to distil), then the other roles in run order.
    Returns ``{"reference", "metric", "n_resamples", "per_seed": [{"role", "seed", ...}],
    "over_seeds": [{"role", ...}]}``, or None when no run has the ``reference`` role.
    """
    refs = {r["seed"]: r for r in runs if r.get("role") == reference}
    if not refs:
        return None
    roles = list(dict.fromkeys(str(r["role"]) for r in runs if r.get("role") != reference))
    roles.sort(key=lambda role: role != "teacher")  # stable: the teacher first
    per_seed: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for role in roles:
        rows = []
        for r in sorted((r for r in runs if r.get("role") == role), key=lambda r: r["seed"]):
            ref = refs.get(r["seed"])
            if ref is None:
                continue
            res = paired_by_name(case_values(r, metric), case_values(ref, metric),
                                 f"{r.get('name')} and {ref.get('name')}", n_resamples, seed)
            res["ci_seed"] = res.pop("seed")  # the bootstrap's; "seed" is the run's
            rows.append({"role": role, "seed": r["seed"], **res})
        if rows:
            per_seed += rows
            summary.append({"role": role, **over_seeds(rows, metric)})
    return {"reference": reference, "metric": metric, "n_resamples": int(n_resamples),
            "per_seed": per_seed, "over_seeds": summary}


def _summary(r: HLFDRecipe, classes: list[str]) -> str:
    return (
        f"Teacher {r.teacher.name}, students {r.student.name}: {', '.join(r.runs)}; "
        f"classes {', '.join(classes)}; seeds {r.seeds}. Metrics on the '{r.eval.split}' split, "
        f"mean over cases with 95% bootstrap CIs ({r.eval.n_resamples} resamples)."
    )


def _notes(r: HLFDRecipe, n_train: int, n_val: int, n_test: int) -> list[str]:
    k = r.kd
    return [
        f"{n_train} training, {n_val} validation and {n_test} evaluation images; inputs "
        f"resized to {r.data.image_size} px; metrics against the original-size masks "
        "(logits resized back bilinearly).",
        f"Segmentation loss {k.focal_weight} x focal (gamma {k.gamma}, mean over pixels) + "
        f"{k.dice_weight} x soft Dice (foreground classes, pooled over the batch, smooth 1). "
        f"KD: L = L_seg + {k.pixel_weight} x pixel + {k.feature_weight} x feature; HLFD: "
        "feature = 0.5 UFD + 0.5 sum of IFD terms, pixel = 0.5 UPD + 0.5 sum of IPD terms; "
        f"pixel terms are KL per pixel over the classes at T = {k.temperature} (x T^2, mean "
        f"over pixels), feature terms attention transfer (p = {k.p}, {k.at_reduction} over "
        "positions, mean over the batch).",
        f"Binary masks: foreground probability > {r.eval.threshold}; more classes: argmax. "
        "DSC, VOE and HD95 (pixels) per case, RVD = predicted / true area - 1 (signed); "
        "undefined cases (empty truth) are left out of the means.",
        "GFLOPs = 2 x multiply-adds of one forward pass (torch.utils.flop_counter); latency = "
        "median CPU wall time per image at batch size 1.",
        f"The best epoch on validation {r.train.select_metric} is evaluated.",
    ]
