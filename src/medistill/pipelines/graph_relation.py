"""Graph relation distillation for instance segmentation (Liu et al., 2024), end to end.

For every seed: a teacher embedding network (supervised, or ``teacher_checkpoint``; with
``shared_teacher`` one teacher from the first seed serves every seed), then the student runs
listed in ``runs``: ``no_kd`` (supervision only), ``intra`` (+ intra-image AGD and IGD) and
``full`` (+ the inter-image terms against the memory bank); see
:mod:`medistill.methods.graph_relation`. Every model is evaluated on ``eval.split`` whole
images: AJI, PQ / DQ / SQ, object F1, VOI split / merge and ARAND per image with 95%
bootstrap CIs over images, params / GFLOPs / CPU latency. ``results.json``, ``report.html`` /
``report.md`` with instance overlays, the student / teacher efficiency ratios and the fraction
of the teacher-student AJI gap each distilled student closes are written to the output folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medistill.config import EvalConfig, ModelConfig, StrictModel, TrainConfig
from medistill.data.instance import InstanceDataset, instance_channel_stats
from medistill.data.segmentation import SegItem
from medistill.engine.checkpoint import load_model
from medistill.errors import RecipeError
from medistill.methods.graph_relation import PRESETS, GraphRelationKD, InstanceEmbedding
from medistill.metrics.gap import gap_closed  # noqa: F401  (its old import path)
from medistill.metrics.paired import paired_by_name
from medistill.models.resunet import EmbeddingResUNet
from medistill.pipelines.base import Pipeline, StagedRecipe
from medistill.pipelines.evaluate_instances import evaluate_instance_model
from medistill.pipelines.instance_data import (
    InstanceAugmentConfig,
    InstanceDataConfig,
    load_instance_split,
    make_instance_augment,
)
from medistill.pipelines.overlays import write_instance_overlays
from medistill.pipelines.seg_replay import (
    ReplayConfig,
    check_replay_augment,
    replay_train_set,
    sample_files,
)
from medistill.postprocess import has_mutex_watershed
from medistill.postprocess.affinity import POSTPROCESSORS
from medistill.reports.instance import instance_sections
from medistill.tasks import InstanceCard

Run = Literal["no_kd", "intra", "full"]
Stage = Literal["teacher", "no_kd", "intra", "full"]
CLASSES = ["background", "instance"]


class GraphKDConfig(StrictModel):
    offsets: list[int] = Field([1, 3, 5, 9, 27], min_length=1)
    affinity_weight: float = Field(1.0, ge=0, description="affinity-label supervision")
    foreground_weight: float = Field(1.0, ge=0, description="foreground BCE")
    agd_weight: float = Field(10.0, ge=0, description="the authors' affinity_weight")
    node_weight: float = Field(0.1, ge=0)
    edge_weight: float = Field(0.1, ge=0)
    inter_agd_weight: float = Field(1.0, ge=0, description="the authors' CI_affinity_weight")
    inter_igd_weight: float = Field(1.0, ge=0, description="the authors' CI_edge_weight")
    bank_size: int = Field(32, ge=1, description="the authors' memory_size")
    bank_sample: int = Field(12, ge=1, description="the authors' contrast_size")
    pool: int = Field(7, ge=1, description="inter-image AGD pooling kernel = stride")
    teacher_replay: ReplayConfig | None = Field(
        None, description="the frozen teacher's embeddings stored for K augmented crops per "
        "crop index and replayed (FKD); None: the teacher runs every step")


class PostprocessConfig(StrictModel):
    method: Literal[POSTPROCESSORS] = "auto"  # type: ignore[valid-type]
    fg_threshold: float = Field(0.5, gt=0, lt=1)
    min_size: int = Field(10, ge=0, description="pixels (after scale)")
    seed_threshold: float = Field(0.3, gt=0, lt=1, description="watershed seeds")


class InstanceEvalConfig(EvalConfig):
    latency_size: int = Field(256, ge=16, description="square input of the latency/GFLOPs")
    overlays: int = Field(2, ge=0, description="test images shown in the overlay figure")


class GraphRelationRecipe(StagedRecipe):
    method: Literal["graph_relation"] = "graph_relation"
    title: str = "Graph relation distillation for instance segmentation"
    data: InstanceDataConfig
    teacher: ModelConfig = ModelConfig(name="resunet_embedding",
                                       kwargs={"widths": [32, 64, 128, 256, 512]})
    student: ModelConfig = ModelConfig(name="resunet_embedding",
                                       kwargs={"widths": [4, 8, 16, 32, 64]})
    teacher_checkpoint: str | None = None
    shared_teacher: bool = False
    runs: list[Run] = Field(["no_kd", "intra", "full"], min_length=1)
    seeds: list[int] = Field([0], min_length=1)
    augment: InstanceAugmentConfig = InstanceAugmentConfig()
    train: TrainConfig = TrainConfig(select_metric="aji", lr=1e-3, batch_size=4, epochs=50)
    stages: dict[Stage, dict[str, Any]] = {}
    kd: GraphKDConfig = GraphKDConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    eval: InstanceEvalConfig = InstanceEvalConfig()

    @model_validator(mode="after")
    def _replay_needs_augmentation(self) -> GraphRelationRecipe:
        check_replay_augment(self.kd.teacher_replay, self.augment.enabled, "kd.teacher_replay")
        return self


class GraphRelationPipeline(Pipeline):
    supports_ddp = True  # every rank trains; rank 0 evaluates and reports

    # -- data -------------------------------------------------------------------------------
    def _load_data(self) -> None:
        d = self.r.data
        self.train_items = load_instance_split(d, "train")
        self.val_items = load_instance_split(d, "val")
        self.test_items = load_instance_split(d, self.r.eval.split)
        mean, std = instance_channel_stats(InstanceDataset(self.train_items, None, d.scale))
        self.norm = {"mean": mean, "std": std}

    def _dataset(self, items: list[SegItem], train: bool, seed: int = 0) -> InstanceDataset:
        d = self.r.data
        if train:
            return InstanceDataset(items, d.crop_size, d.scale, d.crops_per_image,
                                   make_instance_augment(self.r.augment), self.norm["mean"],
                                   self.norm["std"], seed)
        return InstanceDataset(items, None, d.scale, mean=self.norm["mean"],
                               std=self.norm["std"])

    def _meta(self, spec: ModelConfig) -> dict[str, Any]:
        return InstanceCard(model=spec.model_dump(), classes=CLASSES, normalization=self.norm,
                            scale=self.r.data.scale, offsets=list(self.r.kd.offsets),
                            postprocess=self.r.postprocess.model_dump(),
                            data=self.r.data.model_dump(exclude={"root"})).model_dump()

    # -- one run ----------------------------------------------------------------------------
    def _train(self, name: str, method, cfg: TrainConfig, meta: dict) -> Path:
        val = self._dataset(self.val_items, False) if self.val_items else None
        train_set = self._replay_set(method, self._dataset(self.train_items, True, cfg.seed),
                                     cfg, name)
        return self.fit(name, method, train_set, val, cfg, meta, None)

    def _replay_set(self, method, train_set: InstanceDataset, cfg: TrainConfig,
                    name: str = "") -> Any:
        """``kd.teacher_replay``: the teacher's embeddings for ``draws`` augmented crops per
        crop index (:func:`~medistill.pipelines.seg_replay.replay_train_set`); ``train_set``
        unchanged without it or for a run without a teacher."""
        d = self.r.data
        return replay_train_set(self, name, method, train_set, self.r.kd.teacher_replay, cfg,
                                lambda: sample_files(train_set), scale=d.scale,
                                crop_size=d.crop_size, crops_per_image=d.crops_per_image,
                                normalization=self.norm)

    def _evaluate(self, name: str, role: str, seed: int, model_path: Path) -> dict[str, Any]:
        e = self.r.eval

        def evaluate(model: EmbeddingResUNet, meta: dict[str, Any]) -> dict[str, Any]:
            res = evaluate_instance_model(model, meta, self.test_items, e.n_resamples,
                                          e.ci_seed, e.latency, e.latency_size,
                                          e.latency_repeats, e.threads)
            (self.out / name).mkdir(parents=True, exist_ok=True)
            return {"name": name, "role": role, "split": e.split,
                    "model": meta["model"]["name"],
                    "widths": meta["model"].get("kwargs", {}).get("widths"), **res,
                    "seed": seed}

        return self.evaluate_record(name, model_path, evaluate)

    def _model(self, spec: ModelConfig, seed: int) -> EmbeddingResUNet:
        return self.build_model(spec, len(CLASSES), seed, EmbeddingResUNet,
                                "an embedding network (use resunet_embedding)")

    def _check_teacher_checkpoint(self) -> None:
        self.check_teacher_checkpoint("instance")

    def _kd(self) -> dict[str, Any]:
        k = self.r.kd
        return {"offsets": k.offsets, "affinity_weight": k.affinity_weight,
                "foreground_weight": k.foreground_weight,
                "postprocess": self.r.postprocess.model_dump()}

    def _train_teacher(self, seed: int) -> Path:
        r = self.r
        if r.shared_teacher:
            seed = r.seeds[0]
        method = InstanceEmbedding(self._model(r.teacher, seed), **self._kd())
        return self._train(f"seed{seed}/teacher", method, r.stage_train("teacher", seed),
                           self._meta(r.teacher))

    def _student_method(self, run: Run, teacher_path: Path, seed: int):
        k, r = self.r.kd, self.r
        student = self._model(r.student, seed)
        if run == "no_kd":
            return InstanceEmbedding(student, **self._kd())
        teacher, _ = load_model(teacher_path)
        return GraphRelationKD(teacher, student, PRESETS[run], agd_weight=k.agd_weight,
                               node_weight=k.node_weight, edge_weight=k.edge_weight,
                               inter_agd_weight=k.inter_agd_weight,
                               inter_igd_weight=k.inter_igd_weight, bank_size=k.bank_size,
                               bank_sample=k.bank_sample, pool=k.pool, **self._kd())

    # -- everything -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        r = self.r
        if (self.out / "recipe.json").exists() and not self.resume:  # before any slow check
            raise RecipeError(f"{self.out} already has a run; pass --resume or another --out")
        self._check_teacher_checkpoint()
        self._load_data()
        self.start()
        runs, overlay_models, teachers = [], {}, set()
        for seed in r.seeds:
            teacher_path = self.teacher(seed, self._train_teacher)
            if teacher_path not in teachers:  # once per distinct teacher
                teachers.add(teacher_path)
                name = ("teacher" if r.teacher_checkpoint
                        else teacher_path.parent.relative_to(self.out).as_posix())
                runs.append(self._evaluate(name, "teacher", seed, teacher_path))
            models = {"teacher": teacher_path}
            runs += self.student_runs(seed, teacher_path, models)
            if seed == r.seeds[0]:
                overlay_models = models
        if not self.is_main:  # training is over; rank 0 reports
            return self.finish({})
        figures = []
        if r.eval.overlays:
            figures = write_instance_overlays(self.out, overlay_models,
                                              self.test_items[: r.eval.overlays])
        results = {
            "task": "instance",
            "title": r.title,
            "summary": _summary(r),
            "classes": CLASSES,
            "runs": [{k: v for k, v in run.items() if k != "cases"} for run in runs],
            "figures": figures,
            "sections": instance_sections(runs),
            "notes": _notes(r, len(self.train_items), len(self.val_items), len(self.test_items)),
            "config": json.loads(r.model_dump_json()),
        }
        return self.finish(results)


def paired_differences(runs: list[dict[str, Any]], role: str, ref_role: str = "no_kd",
                       metric: str = "aji", n_resamples: int = 10_000,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Per seed, the paired per-image difference ``role - ref_role`` on ``metric``
    (:func:`~medistill.metrics.paired.paired_bootstrap_per_image` over the test images, matched
    by name), sorted by seed. A role with a single run (the shared teacher) is paired with every
    seed of the other role. Each result also has ``"train_seed"`` (its ``"seed"`` is the
    bootstrap's)."""
    by_seed: dict[str, dict[int, dict[str, Any]]] = {role: {}, ref_role: {}}
    for r in runs:
        if r["role"] in by_seed:
            by_seed[r["role"]].setdefault(r["seed"], r)
    a, b = by_seed[role], by_seed[ref_role]
    if not a or not b:
        return []
    seeds = sorted(set(a) & set(b) if len(a) > 1 and len(b) > 1 else a if len(b) == 1 else b)
    out = []
    for s in seeds:
        ra = a.get(s) or next(iter(a.values()))
        rb = b.get(s) or next(iter(b.values()))
        res = paired_by_name({c["name"]: c[metric] for c in ra["cases"]},
                             {c["name"]: c[metric] for c in rb["cases"]},
                             f"{ra['name']} and {rb['name']}", n_resamples, seed)
        out.append({**res, "train_seed": s})
    return out


def _summary(r: GraphRelationRecipe) -> str:
    return (
        f"Teacher {r.teacher.name} {r.teacher.kwargs}, students {r.student.name} "
        f"{r.student.kwargs}: {', '.join(r.runs)}; seeds {r.seeds}. Metrics on the "
        f"'{r.eval.split}' split, mean over images with 95% bootstrap CIs "
        f"({r.eval.n_resamples} resamples)."
    )


def _notes(r: GraphRelationRecipe, n_train: int, n_val: int, n_test: int) -> list[str]:
    k, d, p = r.kd, r.data, r.postprocess
    pp = p.method if p.method != "auto" else (
        "mutex" if has_mutex_watershed() else "watershed (mwatershed not installed)")
    return [
        f"{n_train} training, {n_val} validation and {n_test} evaluation images; images "
        f"rescaled by {d.scale}; training on {d.crops_per_image} random {d.crop_size} px crops "
        "per image and epoch; evaluation on whole images, predictions resized back (nearest) "
        "to the original labels.",
        f"Embeddings: L2-normalised, affinities at offsets {k.offsets} per axis (border "
        f"positions masked). Supervision: {k.affinity_weight} x affinity MSE (summed over "
        f"the affinity channels) + {k.foreground_weight} x foreground BCE. KD weights: AGD "
        f"{k.agd_weight}, IGD node {k.node_weight}, edge {k.edge_weight}; inter-image AGD "
        f"{k.inter_agd_weight} x batch / {k.bank_sample}, IGD edge {k.inter_igd_weight} / "
        f"{k.bank_sample} (sums over the sampled bank maps); FIFO memory bank of "
        f"{k.bank_size} teacher maps, {k.bank_sample} sampled per step, inter-image AGD on "
        f"{k.pool}x{k.pool}-kernel, stride-{k.pool} average-pooled maps.",
        f"Post-processing: {pp}; foreground probability > {p.fg_threshold}; instances under "
        f"{p.min_size} px dropped.",
        "AJI: aggregated Jaccard index; PQ = DQ x SQ at IoU > 0.5; F1 = object detection F1 at "
        "IoU > 0.5 (= DQ); SQ = 0 for an image without matches (HoVer-Net); VOI split = "
        "H(pred | truth), merge = H(truth | pred) in bits over the true foreground (true "
        "background ignored, the authors' convention; 'bg incl.': background counted); "
        "ARAND: adapted Rand error (lower is better for VOI and ARAND).",
        f"GFLOPs = 2 x multiply-adds of one forward pass on a {r.eval.latency_size} px input; "
        "latency = median CPU wall time per image at batch size 1.",
        "Model selection: the best validation AJI epoch, or (no validation split) the epoch "
        "with the lowest training loss.",
    ]
