"""The resolution-distillation recipe (DiPalma et al., 2021), end to end.

For every seed: a teacher at ``teacher_factor`` (supervised, high resolution); then for every
student factor (relative to the teacher) the runs listed in ``runs``:

``baseline``  supervised student at the low resolution;
``kd``        student distilled from the teacher on the labelled training images (soft + pixel
              loss, labels unused; section 3.3);
``kd_aux``    student distilled on unlabeled auxiliary data, then its linear head fine-tuned
              on the labelled set with the backbone frozen (section 3.4).

Each run is evaluated on ``eval.split`` (metrics with bootstrap CIs, GFLOPs, params, latency);
``results.json``, ``report.html`` and ``report.md`` are written to the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medistill.config import (
    AugmentConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    StrictModel,
    TrainConfig,
)
from medistill.data import ResolutionView, SampleList, channel_stats
from medistill.engine.checkpoint import load_model
from medistill.engine.distributed import device_for_rank, is_distributed, world_size
from medistill.engine.teacher_cache import TeacherCache, fingerprint, replay_dataset
from medistill.engine.trainer import resolve_device
from medistill.errors import DataError, RecipeError
from medistill.methods import ResolutionKD, Supervised
from medistill.metrics.paired import compare_runs, verdict
from medistill.pipelines.base import Pipeline, StagedRecipe
from medistill.pipelines.datasets import load_labeled, load_split, make_augment, make_dataset
from medistill.pipelines.evaluate import run_record
from medistill.tasks import ClassificationCard

Stage = Literal["teacher", "baseline", "kd", "kd_aux", "finetune"]


class AuxDataConfig(DataConfig):
    """An auxiliary dataset whose labels (if any) are ignored."""

    use_splits: list[str] = ["train"]


class ReplayConfig(StrictModel):
    """Teacher outputs for ``draws`` stored augmentations per image, replayed every epoch."""

    draws: int = Field(8, ge=1, description="augmentations per image (8: each flip/rotation)")
    storage: Literal["memory", "disk"] = "memory"
    dtype: Literal["float16", "float32"] = Field(
        "float16", description="float32: every replayed step equals the online step exactly")


class ResolutionReplayConfig(ReplayConfig):
    """:class:`ReplayConfig` with the choice of when the resolution teacher's outputs are
    computed."""

    fill: Literal["auto", "lazy", "upfront"] = Field(
        "auto", description="lazy: each (image, draw) the first time an epoch draws it, inside "
        "the training step (fewer teacher passes than draws in a short run, never more than "
        "online KD); upfront: every draw before training, in batches (cheaper per image: "
        "faster for long runs); auto: upfront when one process trains at least 2 x draws "
        "epochs, else lazy")

    def resolved_fill(self, epochs: int, processes: int = 1) -> Literal["lazy", "upfront"]:
        """``fill`` for a run of ``epochs`` epochs on ``processes`` DDP processes (``auto``
        resolved). Measured on the CPU (benchmarks/RESULTS.md): a lazily computed teacher row
        costs ~1.2x an upfront one (small chunks inside the step), so lazy wins while it
        computes clearly fewer pairs -- 8 draws: 2.6 passes of 8 in 3 epochs (1.16x
        torchdistill, upfront 0.54x) -- and upfront from about 2 x draws epochs -- 7.5 of 8
        passes in 20 epochs (upfront 2.22x, lazy 1.94x). Under DDP lazy: its pairs are computed
        by every rank in parallel, the upfront fill by one rank per node (disk) or all of it by
        every rank (memory)."""
        if self.fill != "auto":
            return self.fill
        return "upfront" if processes == 1 and epochs >= 2 * self.draws else "lazy"


class KDConfig(StrictModel):
    temperature: float = Field(4.0, gt=0)
    soft_weight: float = Field(1.0, ge=0)
    pixel_weight: float = Field(1.0, ge=0)
    resize: list[Literal["maxpool", "bicubic", "bilinear", "avgpool"]] = ["maxpool", "bicubic"]
    label_weight: float = Field(0.0, ge=0, description="optional CE on labels (paper: 0)")
    cache_teacher: Literal["none", "memory", "disk"] = Field(
        "none", description="teacher outputs computed once (needs augment.enabled: false)")
    teacher_replay: ResolutionReplayConfig | None = Field(
        None, description="augmented KD with teacher outputs stored for K augmentations per "
        "image and replayed (FKD); None: the teacher runs every step")


class ResolutionRecipe(StagedRecipe):
    method: Literal["resolution_kd"] = "resolution_kd"
    title: str = "Resolution-based distillation"
    data: DataConfig
    aux_data: list[AuxDataConfig] = []
    teacher: ModelConfig = ModelConfig()
    student: ModelConfig = ModelConfig()
    teacher_checkpoint: str | None = None
    teacher_factor: float = Field(1.0, ge=1)
    student_factors: list[float] = Field([2.0, 4.0, 8.0, 16.0], min_length=1)
    teacher_mpp: float | None = Field(None, gt=0, description="instead of teacher_factor")
    student_mpps: list[float] | None = Field(None, description="instead of student_factors")
    upsample_student: bool = Field(False, description="resize student views back up")
    runs: list[Literal["baseline", "kd", "kd_aux"]] = ["baseline", "kd", "kd_aux"]
    aux_keep_eval_images: bool = Field(
        False, description="keep validation/test images in the aux pool (default: dropped)")
    seeds: list[int] = Field([0], min_length=1)
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    stages: dict[Stage, dict[str, Any]] = {}
    kd: KDConfig = KDConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _cache_needs_fixed_views(self) -> ResolutionRecipe:
        if self.kd.cache_teacher != "none" and self.augment.enabled:
            raise ValueError("kd.cache_teacher needs augment.enabled: false (a cached teacher "
                             "output is only valid if the teacher sees the same input every "
                             "epoch)")
        if self.kd.teacher_replay is not None and (not self.augment.enabled
                                                   or self.kd.cache_teacher != "none"):
            raise ValueError("kd.teacher_replay needs augment.enabled: true and "
                             "kd.cache_teacher: none (without augmentation use "
                             "kd.cache_teacher)")
        return self

    @model_validator(mode="after")
    def _mpp_to_factors(self) -> ResolutionRecipe:
        """Resolutions given in microns per pixel become factors (needs data.source_mpp)."""
        if self.teacher_mpp is None and self.student_mpps is None:
            return self
        src = self.data.source_mpp
        if src is None:
            raise ValueError("teacher_mpp/student_mpps need data.source_mpp")
        if self.teacher_mpp is not None:
            self.teacher_factor = self.teacher_mpp / src
        if self.student_mpps is not None:
            self.student_factors = [m / src / self.teacher_factor for m in self.student_mpps]
        if self.teacher_factor < 1 or min(self.student_factors) <= 0:
            raise ValueError("resolutions must not be finer than data.source_mpp")
        return self

    @model_validator(mode="after")
    def _students_coarser(self) -> ResolutionRecipe:
        """Every student view is a downsampling of the original (teacher_factor x factor >= 1),
        checked now rather than when the first student starts (after the teacher trained)."""
        bad = [f for f in self.student_factors if not self.teacher_factor * f >= 1]
        if bad:
            raise ValueError(f"student_factors: teacher_factor x {bad[0]:g} < 1 (student views "
                             "can only be coarser than the original images)")
        return self



def _without(aux: list, *held_out: SampleList) -> tuple[list, int]:
    """``aux`` minus the images of ``held_out`` (same file), and how many were dropped.

    The validation split selects the distilled student's epoch and the test split measures it;
    distilling on their images (even unlabeled) would tune the student on them (issue #12).
    """
    seen = {Path(s.path).resolve() for split in held_out for s in split.samples}
    kept = [s for s in aux if Path(s.path).resolve() not in seen]
    return kept, len(aux) - len(kept)


def _magnification(factor: float) -> str:
    return "1x" if factor == 1 else f"1/{factor:g}x"


class ResolutionPipeline(Pipeline):
    supports_ddp = True  # every rank trains; rank 0 evaluates and reports

    def __init__(self, recipe: ResolutionRecipe, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        super().__init__(recipe, out_dir, resume, progress)
        if "kd_aux" in recipe.runs and not recipe.aux_data:
            raise RecipeError("runs: 'kd_aux' needs at least one aux_data dataset")

    # -- data -------------------------------------------------------------------------------
    def _load_data(self) -> None:
        r = self.r
        self.train_samples, self.val_samples = load_labeled(r.data)
        self.classes = self.train_samples.classes
        self.test_samples = load_split(r.data, r.eval.split, self.classes)
        mean, std = channel_stats(self.train_samples.samples)
        self.norm = {"mean": list(mean), "std": list(std)}
        aux: list = []
        for number, cfg in enumerate(r.aux_data if "kd_aux" in r.runs else []):
            try:  # only a kd_aux run reads the auxiliary data (a default root may not exist)
                for split in cfg.use_splits:
                    aux += load_split(cfg, split, labeled=False).samples
            except DataError as e:
                raise DataError(f"aux_data.{number} (root {cfg.root}): {e}") from None
        self.aux_dropped = 0
        if not r.aux_keep_eval_images:
            aux, self.aux_dropped = _without(aux, self.val_samples, self.test_samples)
            if r.aux_data and not aux and "kd_aux" in r.runs:
                raise RecipeError("aux_data: every auxiliary image is a validation or test "
                                  "image (dropped from the pool); add other images or set "
                                  "aux_keep_eval_images: true")
        self.aux_samples = SampleList(aux, [])

    def _meta(self, spec: ModelConfig, factor: float, upsample: bool = False) -> dict[str, Any]:
        mpp = self.r.data.source_mpp
        return ClassificationCard(
            model=spec.model_dump(), classes=self.classes,
            view={"factor": factor, "upsample": upsample}, normalization=self.norm,
            image_size=self.r.data.image_size,
            # microns per pixel of the model's input tiles (predict-wsi needs no --mpp then)
            mpp=mpp * factor if mpp else None).model_dump()

    # -- one run ----------------------------------------------------------------------------
    def _train(self, name: str, method, views: dict[str, ResolutionView], samples: SampleList,
               cfg: TrainConfig, meta: dict) -> Path:
        aug = make_augment(self.r.augment)
        train_set = make_dataset(samples, views, self.r.data, self.norm, aug, cfg.seed)
        val_view = {name_: views[name_] for name_ in views if name_ in ("input", "student")}
        val_set = make_dataset(self.val_samples, val_view, self.r.data, self.norm)
        if isinstance(method, ResolutionKD) and self.r.kd.cache_teacher != "none":
            method.teacher_cache = self._teacher_cache(method, samples, views["teacher"],
                                                       train_set, cfg)
        replay = self.r.kd.teacher_replay
        if (isinstance(method, ResolutionKD) and replay is not None
                and not (self.out / name / "train_done.json").is_file()):
            # a lazy fill runs the teacher in the training step (its device and autocast);
            # the upfront fill before training on the same device, in float32
            fill = replay.resolved_fill(cfg.epochs, world_size())
            device = resolve_device(device_for_rank(cfg.device))
            computed = (device.type, cfg.amp if fill == "lazy" else "none")
            targets = self._replay_targets(method, samples, views)
            forward = method.teacher_forward
            if fill == "upfront":
                method.teacher.to(device)
                forward = lambda x: method.teacher_forward(x.to(device))  # noqa: E731
            train_set = replay_dataset(  # the previous run's replay is reused if it fits
                method.teacher, forward, train_set, "teacher", replay.draws,
                self.out / "teacher_replay" if replay.storage == "disk" else None,
                replay.dtype, cfg.batch_size, getattr(self, "_last_replay", None), fill,
                view=views["teacher"], normalization=self.norm,
                image_size=self.r.data.image_size, computed_on=computed, targets=targets)
            self._last_replay = train_set.replay
        return self.fit(name, method, train_set, val_set, cfg, meta, len(self.classes))

    def _replay_targets(self, method: ResolutionKD, samples: SampleList,
                        views: dict[str, ResolutionView]) -> dict[str, Any]:
        """What a teacher replay stores (returned for its fingerprint): the pixel loss's targets
        at the student map's size (:meth:`ResolutionKD.use_targets`) when smaller than the
        teacher's map and the same for every student factor of the recipe (this run's view is
        one of them), so that one replay still serves every factor's KD run of a seed;
        otherwise the teacher's map."""
        r = self.r
        students = {f"x{rel:g}": self._student_view(rel) for rel in r.student_factors}
        first = SampleList(samples.samples[:1], samples.classes)
        x = make_dataset(first, {"teacher": views["teacher"], **students}, r.data, self.norm)[0]
        return method.use_targets([x["views"][n] for n in students], x["views"]["teacher"])

    def _teacher_cache(self, method: ResolutionKD, samples: SampleList, view: ResolutionView,
                       train_set: Any, cfg: TrainConfig) -> TeacherCache:
        """The teacher's outputs, filled during the first epoch; under DDP a disk cache is
        filled before training by local rank 0 and read by the node's other ranks."""
        from medistill.engine.teacher_cache import fill_cache, shared_per_node

        key = fingerprint(method.teacher, [s.path for s in samples.samples], view=view,
                          normalization=self.norm, image_size=self.r.data.image_size)
        where = self.out / "teacher_cache" if self.r.kd.cache_teacher == "disk" else None
        if where is None or not is_distributed():
            return TeacherCache(len(samples.samples), key, where)
        device = resolve_device(device_for_rank(cfg.device))
        method.teacher.to(device)
        return shared_per_node(lambda: TeacherCache(len(samples.samples), key, where),
                               lambda c: fill_cache(c, train_set, "teacher",
                                                    method.teacher_forward, cfg.batch_size,
                                                    device))

    def _evaluate(self, name: str, role: str, factor: float, seed: int,
                  model_path: Path) -> dict[str, Any]:
        return self.cached_record(name, lambda: run_record(
            model_path, self.test_samples, self.r.eval, name=name, role=role, factor=factor,
            magnification=_magnification(factor), seed=seed))

    def _check_teacher_file(self) -> None:
        """A ``teacher_checkpoint`` is a classifier of the data's classes at ``teacher_factor``
        (needs the data: called after it is read, before any folder)."""
        r = self.r
        meta = self.check_teacher_checkpoint("classification", self.classes)
        if meta is not None and meta["view"]["factor"] != r.teacher_factor:
            raise RecipeError(
                f"teacher_checkpoint {r.teacher_checkpoint} was trained at factor "
                f"{meta['view']['factor']}, the recipe says teacher_factor={r.teacher_factor}")

    def _train_teacher(self, seed: int) -> Path:
        r = self.r
        model = self.build_model(r.teacher, len(self.classes), seed)
        view = ResolutionView(r.teacher_factor)
        return self._train(f"seed{seed}/teacher", Supervised(model), {"input": view},
                           self.train_samples, r.stage_train("teacher", seed),
                           self._meta(r.teacher, r.teacher_factor))

    def _student(self, seed: int) -> Any:
        return self.build_model(self.r.student, len(self.classes), seed)

    def _student_view(self, rel: float) -> ResolutionView:
        """The students' view at ``rel`` x the teacher's factor."""
        return ResolutionView(self.r.teacher_factor * rel, upsample=self.r.upsample_student)

    def _train_baseline(self, seed: int, rel: float) -> Path:
        """The student at ``rel`` trained alone on the labels (no teacher needed)."""
        r = self.r
        factor = r.teacher_factor * rel
        return self._train(f"seed{seed}/x{rel:g}/baseline", Supervised(self._student(seed)),
                           {"input": self._student_view(rel)}, self.train_samples,
                           r.stage_train("baseline", seed),
                           self._meta(r.student, factor, r.upsample_student))

    def _kd(self, teacher_path: Path, seed: int) -> ResolutionKD:
        teacher, _ = load_model(teacher_path)
        k = self.r.kd
        return ResolutionKD(teacher, self._student(seed), temperature=k.temperature,
                            soft_weight=k.soft_weight, pixel_weight=k.pixel_weight,
                            resize=k.resize, label_weight=k.label_weight)

    # -- everything -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r = self.r
        self._load_data()
        self._check_teacher_file()  # against the data, before any folder
        self.start()
        runs = []
        for seed in r.seeds:
            teacher_path = self.teacher(seed, self._train_teacher)
            runs.append(self._evaluate(f"seed{seed}/teacher", "teacher", r.teacher_factor, seed,
                                       teacher_path))
            for rel in r.student_factors:
                factor = r.teacher_factor * rel
                base = f"seed{seed}/x{rel:g}"
                meta = self._meta(r.student, factor, r.upsample_student)
                view = self._student_view(rel)
                pair = {"teacher": ResolutionView(r.teacher_factor), "student": view}
                if "baseline" in r.runs:
                    path = self._train_baseline(seed, rel)
                    runs.append(self._evaluate(f"{base}/baseline", "baseline", factor, seed, path))
                if "kd" in r.runs:
                    path = self._train(f"{base}/kd", self._kd(teacher_path, seed), pair,
                                       self.train_samples, r.stage_train("kd", seed), meta)
                    runs.append(self._evaluate(f"{base}/kd", "kd", factor, seed, path))
                if "kd_aux" in r.runs:
                    path = self._train(f"{base}/kd_aux_distill", self._kd(teacher_path, seed),
                                       pair, self.aux_samples, r.stage_train("kd_aux", seed), meta)
                    student, _ = load_model(path)
                    student.reset_head()
                    path = self._train(f"{base}/kd_aux", Supervised(student, head_only=True),
                                       {"input": view}, self.train_samples,
                                       r.stage_train("finetune", seed), meta)
                    runs.append(self._evaluate(f"{base}/kd_aux", "kd_aux", factor, seed, path))
        comparisons, summaries = compare_runs(runs, len(self.classes),
                                              n_resamples=r.eval.n_resamples, seed=r.eval.ci_seed)
        results = {
            "title": r.title,
            "summary": _summary(r),
            "classes": self.classes,
            "runs": runs,
            "comparisons": comparisons,
            "comparison_summary": summaries,
            "sections": [comparison_section(comparisons, summaries)] if comparisons else [],
            "notes": _notes(r, len(self.train_samples.samples), len(self.aux_samples.samples),
                            len(self.test_samples.samples), self.aux_dropped),
            "config": json.loads(r.model_dump_json()),
        }
        return self.finish(results)


#: how the comparison verdicts name the runs
ROLE_NAMES = {"kd": "KD", "kd_aux": "KD+aux", "baseline": "the baseline"}


def _points(m: dict[str, float]) -> str:
    return f"{100 * m['value']:+.1f} [{100 * m['low']:+.1f}, {100 * m['high']:+.1f}]"


def comparison_rows(comparisons: list[dict[str, Any]], summaries: list[dict[str, Any]]
                    ) -> list[list[str]]:
    """Rows of the "minus baseline, paired" table: one per seed, then one over seeds per
    (factor, model) (mean ± sd of the differences; how many seeds are > 0 / have a CI above 0)."""
    rows = []
    for c in comparisons:
        acc, f1 = c["metrics"]["accuracy"], c["metrics"]["macro_f1"]
        rows.append([f"{c['model']} - {c['reference']}", str(c["seed"]), f"{c['factor']:g}",
                     _points(acc), _points(f1), verdict(acc, ROLE_NAMES.get(c["model"], c["model"]),
                                                        f"the {c['reference']}")])
    for s in summaries:
        if s["accuracy"]["n_seeds"] < 2:
            continue
        cells = []
        for m in ("accuracy", "macro_f1"):
            o = s[m]
            sd = f" ± {100 * o['sd']:.1f}" if o["sd"] is not None else ""
            cells.append(f"{100 * o['mean']:+.1f}{sd}")
        o = s["accuracy"]
        rows.append([f"{s['model']} - {s['reference']}", f"mean of {o['n_seeds']}",
                     f"{s['factor']:g}", *cells,
                     f"accuracy: {o['n_positive']}/{o['n_seeds']} seeds > 0, "
                     f"{o['n_ci_above_zero']}/{o['n_seeds']} with the CI above 0"])
    return rows


COMPARISON_HEADERS = ["comparison", "seed", "factor", "Δ accuracy, points [95% CI]",
                      "Δ macro F1, points [95% CI]", "verdict (accuracy)"]


def comparison_section(comparisons: list[dict[str, Any]], summaries: list[dict[str, Any]]
                       ) -> dict[str, Any]:
    """The report section: KD minus baseline, paired over the same test images."""
    n = comparisons[0]["n_resamples"]
    return {
        "title": "KD minus baseline, paired, 95% CI",
        "text": ("Difference of each student and the baseline of the same seed and factor, "
                 f"bootstrapped over the same test images ({n} resamples; percentage points). "
                 "A verdict says 'beats' only when the whole interval is above 0. The 'mean' "
                 "rows (several seeds) are the mean ± sample sd of the per-seed differences."),
        "table": {"headers": COMPARISON_HEADERS, "rows": comparison_rows(comparisons,
                                                                          summaries)},
    }


def _summary(r: ResolutionRecipe) -> str:
    return (
        f"Teacher {r.teacher.name} at {_magnification(r.teacher_factor)} of the original "
        f"resolution; students {r.student.name} at "
        + ", ".join(_magnification(r.teacher_factor * f) for f in r.student_factors)
        + f". Runs per factor: {', '.join(r.runs)}. Seeds: {r.seeds}. Metrics on the "
        f"'{r.eval.split}' split with 95% bootstrap CIs ({r.eval.n_resamples} resamples)."
    )


def _notes(r: ResolutionRecipe, n_train: int, n_aux: int, n_test: int,
           n_dropped: int = 0) -> list[str]:
    dropped = (f" ({n_dropped} validation/test images left out of the pool)" if n_dropped
               else "")
    notes = [
        f"{n_train} labelled training images, {n_test} evaluation images"
        + (f", {n_aux} unlabeled auxiliary images{dropped}." if n_aux else "."),
        "Low-resolution views are made from the original image with a Lanczos filter "
        "(no composed downsamplings).",
        f"KD loss = {r.kd.soft_weight} x soft KL (T={r.kd.temperature}, x T^2) + "
        f"{r.kd.pixel_weight} x feature MSE (teacher map resized by {' + '.join(r.kd.resize)})"
        + (f" + {r.kd.label_weight} x CE." if r.kd.label_weight else "; labels unused."),
        "GFLOPs = 2 x multiply-adds of one forward pass (torch.utils.flop_counter); "
        "latency = median CPU wall time per image at batch size 1.",
        "The best epoch on the validation split (metric: "
        f"{r.train.select_metric}) is evaluated.",
    ]
    return notes
