"""Weakly supervised segmentation: MIL teacher + iterative fusion KD with role reversal
(He, Li, Zemp, 2024, arXiv:2407.10274), end to end (``method: mil_fusion``).

For every seed: a MIL segmenter trained from image labels only (``mil_teacher``, see
:class:`~medistill.methods.MILTraining`), then the runs listed in ``runs``:

- ``fusion_kd``: fusion KD without role reversal: ``fusion.rounds`` rounds, the teacher stays
  the MIL teacher, the result is the last round's student;
- ``ikd``: the full method: the same rounds with dynamic role reversal decided on the
  VALIDATION split (:mod:`medistill.pipelines.role_reversal`).

Round 1 is identical for both (same teacher, same fresh student, same seed), so it is trained
once (``seed<k>/kd_round1``). Every model is evaluated on the test split (the authors' pixel F1
per image = the F1 of the image's own class, IoU likewise, F1 over positive / negative images,
our tumour-class F1, image AUC from the max pixel score; bootstrap 95% CIs). Each
round's models are also scored on the test split for the report only; no decision reads it.
``results.json`` and ``report.html`` / ``report.md`` (per-round table, overlays) are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medistill.config import ModelConfig, StrictModel, TrainConfig
from medistill.data.segmentation import seg_channel_stats
from medistill.data.weak import WeakSegDataset
from medistill.engine.checkpoint import atomic_write_text, load_model
from medistill.errors import DataError
from medistill.losses import AgreementWeightedBCE, FusionKDLoss, MILDiceLoss, MILPoolingLoss
from medistill.methods import FusionKD, MILTraining
from medistill.methods.mil_fusion import MILLoss
from medistill.models.mil_segmenter import MILSegmenter
from medistill.pipelines.base import Pipeline, StagedRecipe
from medistill.pipelines.evaluate_weak import SigmaAt, evaluate_weak, weak_scores
from medistill.pipelines.overlays import weak_overlays
from medistill.pipelines.role_reversal import IterativeFusion
from medistill.pipelines.seg_data import SegAugmentConfig, make_seg_augment
from medistill.pipelines.seg_replay import (
    ReplayConfig,
    check_replay_augment,
    replay_train_set,
    sample_files,
)
from medistill.pipelines.weak_data import WeakDataConfig, load_weak_split
from medistill.reports.weak_segmentation import weak_sections
from medistill.tasks import WeakSegmentationCard

Run = Literal["fusion_kd", "ikd"]
STUDENT_SEED = 10_000  # offset of the round-1 student's initialisation seed
Score = Literal["pixel_f1", "pixel_f1_pos", "pixel_f1_positive", "iou", "image_auc"]


class MILConfig(StrictModel):
    """The MIL teacher's objective (:mod:`medistill.losses.mil_pooling`). Defaults: the
    authors' code (the paper names no loss): ``dice``, summed, no class balance."""

    objective: Literal["dice", "pooled_bce"] = Field(
        "dice", description="dice: per-image Dice to the image label as a full mask (authors'); "
                            "pooled_bce: BCE of the pooled map score (LSE / gmean / top-k)")
    reduction: Literal["sum", "mean"] = Field(
        "sum", description="dice: sum over images and maps (authors') or mean")
    smooth: float = Field(1.0, ge=0, description="dice: smoothing term (authors': 1)")
    pooling: Literal["lse", "gmean", "topk"] = Field("lse", description="pooled_bce only")
    r: float = Field(4.0, gt=0, description="LSE sharpness")
    q: float = Field(4.0, gt=0, description="generalised-mean exponent")
    topk: float = Field(0.1, gt=0, le=1, description="top-k fraction of pixels")
    balance: bool = Field(False, description="weight positive images by n_neg / n_pos (ours; "
                                             "the authors' code has none)")


class FusionConfig(StrictModel):
    rounds: int = Field(3, ge=1)
    patience: int = Field(1, ge=1, description="rounds in a row without a swap before stopping")
    min_delta: float = Field(0.0, ge=0, description="student must beat the teacher by more")
    compare_metric: Score = "pixel_f1"
    dice_weight: float = Field(1.0, ge=0)
    bce_weight: float = Field(1.0, ge=0)
    wce_weight: float = Field(1.0, ge=0, description="lambda of the weighted CE regulariser")
    wce_gamma: float = Field(1.0, ge=0, description="agreement weight (1 - |t - s|)^gamma")
    mil_weight: float = Field(0.0, ge=0, description="image-label MIL loss (as mil.*) on the "
                                                     "student; summed Dice scales with batch")
    teacher_replay: ReplayConfig | None = Field(
        None, description="each round's frozen teacher's fused map stored for K augmentations "
        "per image and replayed (FKD); None: the teacher runs every step")


class WeakEvalConfig(StrictModel):
    threshold: float = Field(0.5, gt=0, lt=1)
    sigma: float = Field(3.0, ge=0, description="Gaussian smoothing before the threshold, 0 = off")
    sigma_at: SigmaAt = Field("input", description="sigma in model-input pixels (authors') or "
                                                   "original pixels")
    n_resamples: int = Field(10_000, ge=0)
    ci_seed: int = 0
    overlays: int = Field(4, ge=0, description="test images in the overlay figure")


class MILFusionRecipe(StagedRecipe):
    method: Literal["mil_fusion"] = "mil_fusion"
    title: str = "Weakly supervised segmentation: MIL + iterative fusion KD"
    data: WeakDataConfig
    model: ModelConfig = ModelConfig(name="mil_segmenter")
    runs: list[Run] = Field(["fusion_kd", "ikd"])
    seeds: list[int] = Field([0], min_length=1)
    augment: SegAugmentConfig = SegAugmentConfig()
    train: TrainConfig = TrainConfig(select_metric="pixel_f1", batch_size=16, epochs=30)
    stages: dict[Literal["teacher", "round"], dict[str, Any]] = {}
    mil: MILConfig = MILConfig()
    fusion: FusionConfig = FusionConfig()
    eval: WeakEvalConfig = WeakEvalConfig()

    @model_validator(mode="after")
    def _replay_needs_augmentation(self) -> MILFusionRecipe:
        check_replay_augment(self.fusion.teacher_replay, self.augment.enabled,
                             "fusion.teacher_replay")
        return self


class MILFusionPipeline(Pipeline):
    supports_ddp = True  # every rank trains; rank 0 evaluates and reports

    def __init__(self, recipe: MILFusionRecipe, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        super().__init__(recipe, out_dir, resume, progress)
        self._val_cache: dict[Path, float] = {}
        self._test_cache: dict[Path, float] = {}

    # -- data -------------------------------------------------------------------------------
    def _load_data(self) -> None:
        d = self.r.data
        self.split = {role: load_weak_split(d, role) for role in ("train", "val", "test")}
        for role, (_, labels) in self.split.items():
            if role != "test" and len(set(labels)) < 2:
                raise DataError(f"data: the {role} split needs positive and negative images "
                                f"(labels {d.positive} / {d.negative}); it has {len(labels)} "
                                f"images, {sum(labels)} positive")
        probe = self._dataset("train", augment=False, norm=((0.5,) * 3, (0.25,) * 3))
        mean, std = seg_channel_stats(probe)
        self.norm = {"mean": list(mean), "std": list(std)}
        self.val_set = self._dataset("val", augment=False)
        self.test_set = self._dataset("test", augment=False)
        self.train_set = self._dataset("train", augment=True)  # one image cache for all runs

    def _dataset(self, role: str, augment: bool, seed: int = 0,
                 norm: tuple | None = None) -> WeakSegDataset:
        d = self.r.data
        items, labels = self.split[role]
        mean, std = norm or (self.norm["mean"], self.norm["std"])
        aug = make_seg_augment(self.r.augment) if augment else None
        return WeakSegDataset(items, labels, 2, d.image_size, mean, std, aug, d.mask_mode, seed)

    def _meta(self) -> dict[str, Any]:
        data = self.r.data.model_dump(exclude={"root"})
        e = self.r.eval
        return WeakSegmentationCard(
            model=self.r.model.model_dump(), classes=list(self.r.data.classes),
            normalization=self.norm, image_size=self.r.data.image_size, threshold=e.threshold,
            sigma=e.sigma, sigma_at=e.sigma_at, data=data).model_dump()

    # -- models and training ----------------------------------------------------------------
    def _model(self, seed: int) -> MILSegmenter:
        return self.build_model(self.r.model, 2, seed, MILSegmenter,
                                "a MIL segmenter (use mil_segmenter)")

    def _mil_loss(self) -> MILLoss:
        m, labels = self.r.mil, self.split["train"][1]
        pos = sum(labels)
        weight = (len(labels) - pos) / pos if m.balance else 1.0
        if m.objective == "dice":
            return MILDiceLoss(m.smooth, m.reduction, weight)
        return MILPoolingLoss(m.pooling, m.r, m.q, m.topk, weight)

    def _train(self, name: str, method, cfg: TrainConfig) -> Path:
        self.train_set.seed = cfg.seed  # augmentation depends on (seed, epoch, index) only
        return self.fit(name, method, self._replay_set(method, cfg, name), self.val_set, cfg,
                        self._meta(), 2)

    def _replay_set(self, method, cfg: TrainConfig, name: str = "") -> Any:
        """``fusion.teacher_replay``: the round's frozen teacher's fused map for ``draws``
        augmentations per image, filled at the start of the round (the teacher changes from
        round to round only by role reversal; a round with the previous round's teacher reuses
        its fill); the MIL teacher's training (no teacher) is unchanged."""
        d = self.r.data
        return replay_train_set(self, name, method, self.train_set,
                                self.r.fusion.teacher_replay, cfg,
                                lambda: sample_files(self.train_set), image_size=d.image_size,
                                normalization=self.norm, mask_mode=d.mask_mode)

    def _train_teacher(self, seed: int) -> Path:
        e = self.r.eval
        method = MILTraining(self._model(seed), self._mil_loss(), e.threshold, e.sigma,
                             e.sigma_at)
        return self._train(f"seed{seed}/mil_teacher", method, self.r.stage_train("teacher", seed))

    def _round_trainer(self, seed: int, run: Run):
        f, e = self.r.fusion, self.r.eval

        def train_round(r: int, teacher: Path, init: Path | None) -> Path:
            name = f"seed{seed}/kd_round1" if r == 1 else f"seed{seed}/{run}/round{r}"
            # a fresh student is initialised from its own seed, not the teacher's weights
            student = self._model(seed + STUDENT_SEED) if init is None else load_model(init)[0]
            method = FusionKD(load_model(teacher)[0], student,
                              FusionKDLoss(f.dice_weight, f.bce_weight),
                              AgreementWeightedBCE(f.wce_gamma), f.wce_weight, self._mil_loss(),
                              f.mil_weight, e.threshold, e.sigma, e.sigma_at)
            return self._train(name, method, self.r.stage_train("round", seed))

        return train_round

    # -- scoring ----------------------------------------------------------------------------
    def val_score(self, path: Path) -> float:
        """The role-reversal comparison score of a model file, on the VALIDATION split."""
        if path not in self._val_cache:
            e = self.r.eval
            self._val_cache[path] = self.main_value(lambda: weak_scores(  # the same on every rank
                load_model(path)[0], self.val_set, e.threshold, e.sigma,
                sigma_at=e.sigma_at)[self.r.fusion.compare_metric])
        return self._val_cache[path]

    def _test_f1(self, path: Path) -> float:
        """Test pixel F1 (the authors') of a model file: for the per-round table only."""
        if path not in self._test_cache:
            e = self.r.eval
            scores = weak_scores(load_model(path)[0], self.test_set, e.threshold, e.sigma,
                                 sigma_at=e.sigma_at)
            self._test_cache[path] = scores["pixel_f1"]
        return self._test_cache[path]

    def _evaluate(self, name: str, role: str, seed: int, path: Path) -> dict[str, Any]:
        from medistill.metrics import profile_model

        def evaluate() -> dict[str, Any]:
            e = self.r.eval
            model, _ = load_model(path)
            res = evaluate_weak(model, self.test_set, e.threshold, e.sigma, e.n_resamples,
                                e.ci_seed, e.sigma_at)
            size = self.r.data.image_size
            return {"name": name, "role": role, "seed": seed, "split": "test",
                    "model": self.r.model.name, **res,
                    "efficiency": profile_model(model, (3, size, size), latency=False),
                    "model_path": str(path)}

        return self.cached_record(name, evaluate)

    # -- everything -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r = self.r
        self._load_data()
        self.start()
        runs, rounds, overlay_models = [], [], {}
        f = r.fusion
        for seed in r.seeds:
            teacher = self.teacher(seed, self._train_teacher)
            runs.append(self._evaluate(f"seed{seed}/mil_teacher", "mil_teacher", seed, teacher))
            models = {"mil_teacher": teacher}
            for run in r.runs:
                loop = IterativeFusion(self._round_trainer(seed, run), self.val_score,
                                       f.rounds, f.patience, f.min_delta, reverse=run == "ikd")
                final, records = loop.run(teacher)
                for rec in records if self.is_main else []:  # rank 0 evaluates
                    rounds.append({"seed": seed, "run": run, **rec.as_dict(),
                                   "teacher_test_f1": self._test_f1(Path(rec.teacher)),
                                   "student_test_f1": self._test_f1(Path(rec.student))})
                runs.append(self._evaluate(f"seed{seed}/{run}", run, seed, final))
                models[run] = final
            if seed == r.seeds[0]:
                overlay_models = models
        if not self.is_main:  # training is over; rank 0 reports
            return self.finish({})
        atomic_write_text(self.out / "rounds.json", json.dumps(rounds, indent=2))
        figures = []
        if r.eval.overlays:
            figures = weak_overlays(self.out, overlay_models, self.test_set, r.eval)
        results = {
            "task": "segmentation",
            "title": r.title,
            "summary": _summary(r),
            "classes": list(r.data.classes),
            "runs": [{k: v for k, v in run.items() if k != "cases"} for run in runs],
            "sections": weak_sections(runs, rounds, r, figures),
            "notes": self._notes(),
            "config": json.loads(r.model_dump_json()),
        }
        return self.finish(results)

    def _notes(self) -> list[str]:
        r, s = self.r, self.split
        counts = ", ".join(f"{role} {len(lab)} ({sum(lab)} positive)" for role, (_, lab) in
                           s.items())
        m, f, e = r.mil, r.fusion, r.eval
        return [
            f"Setup {r.data.setup}: positive labels {r.data.positive}, negative "
            f"{r.data.negative}; images {counts}; inputs resized to {r.data.image_size} px. "
            "Training reads image labels only; masks are used for validation and test.",
            _mil_note(m),
            f"Fusion KD: every student map -> teacher fused map ({f.dice_weight} x soft Dice + "
            f"{f.bce_weight} x soft BCE) + {f.wce_weight} x agreement-weighted BCE to the "
            f"teacher's soft map (weights (1 - |t - s|)^{f.wce_gamma}); up to {f.rounds} rounds; "
            f"role reversal when the student's validation {f.compare_metric} beats the "
            f"teacher's by more than {f.min_delta}; patience {f.patience}.",
            f"Evaluation: probability maps resized to the original image size, Gaussian "
            f"smoothing sigma {e.sigma} px of the {_SIGMA_AT[e.sigma_at]} (the authors': 3 px "
            f"of the model input; 0 = off), threshold {e.threshold}. Pixel F1 (the authors'): "
            "per image the F1 of its own class, tumour on a tumour image, background on a "
            "normal one (a small false positive costs a little, not all), averaged over "
            "images; IoU likewise. Also: F1 over positive / negative images, and ours, the "
            "tumour-class F1 on every image (1 on a normal image only if nothing is "
            "predicted, else 0). Image AUC from the maximum smoothed pixel probability.",
        ]


_SIGMA_AT = {"input": "model input", "original": "original image"}


def _mil_note(m: MILConfig) -> str:
    balance = " (positive images weighted n_neg / n_pos)" if m.balance else ""
    if m.objective == "dice":
        return (f"MIL teacher (the authors' objective): the image label expanded to a full mask "
                f"(all ones on a tumour image, all zeros on a normal one); every side map and "
                f"the fused map trained with a per-image Dice loss (smooth {m.smooth}) against "
                f"it, {m.reduction} over images and maps{balance}.")
    return (f"MIL teacher: {m.pooling} pooling of the pixel scores of every side map and the "
            f"fused map, BCE against the image label{balance}.")


def _summary(r: MILFusionRecipe) -> str:
    return (f"MIL teacher ({r.model.name}, {r.model.kwargs or 'defaults'}) and "
            f"{', '.join(r.runs)} on {r.data.setup}; seeds {r.seeds}. Test metrics are means "
            f"over images with 95% bootstrap CIs ({r.eval.n_resamples} resamples).")

