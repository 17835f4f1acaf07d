"""The "More From Less" recipe (Farndale, Insall & Yuan, 2023), end to end.

For every seed and every sparsity level (``k`` px, or ``"nuclei"`` for nuclear masks), and for
every loss (VICReg, SimCLR) and pair type:

``asymmetric``  branch a sees the DENSE view (the image at ``input_size``), branch b the SPARSE
                view (section 2.1, Fig. 1);
``symmetric``   both branches see the sparse view, augmented independently;

a joint-embedding model is trained self-supervised (labels unused) on ``ssl_splits``; its
sparse-branch encoder is then frozen and a linear probe (dense + softmax, Adam 1e-3; section
2.2) is fitted on the labelled training split and evaluated on ``eval.split``. ``supervised``
trains the same encoder with a softmax head on the sparse view (the paper's baseline). With
``transfer`` data every encoder is also linearly probed on that second task. Table 1 of the
report lays the accuracies out as the paper does (rows: sparsity; columns: asymmetric,
symmetric, supervised); :mod:`medistill.pipelines.ssl_analysis` adds CKA heatmaps and Grad-CAM
overlays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medistill.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    StrictModel,
    TrainConfig,
)
from medistill.data import PairedViewDataset, SampleList, SparseView, SSLAugment, channel_stats
from medistill.data.views import view_from_spec
from medistill.engine.checkpoint import load_model
from medistill.engine.trainer import seed_everything
from medistill.errors import RecipeError
from medistill.methods import FeatureDataset, JointEmbedding, LinearProbe, Supervised
from medistill.pipelines.base import Pipeline, StagedRecipe
from medistill.pipelines.datasets import load_labeled, load_split
from medistill.pipelines.evaluate import run_record
from medistill.tasks import ClassificationCard

Level = int | Literal["nuclei"]
Stage = Literal["ssl", "probe", "supervised"]


class SSLLossConfig(StrictModel):
    expander_width: int = Field(8192, ge=1, description="8192 in the paper")
    expander_layers: int = Field(3, ge=1)
    sim_weight: float = Field(25.0, ge=0)
    var_weight: float = Field(25.0, ge=0)
    cov_weight: float = Field(1.0, ge=0)
    eps: float = Field(1e-4, gt=0)
    temperature: float = Field(0.5, gt=0)


class SSLAugmentConfig(StrictModel):
    """Table S1 (see :class:`~medistill.data.SSLAugment` for the meaning of each field)."""

    enabled: bool = True
    flip: bool = True
    crop_scale: tuple[float, float] = (0.75, 1.0)
    p_crop: float = Field(1.0, ge=0, le=1)
    p_noise: float = Field(0.3, ge=0, le=1)
    noise_std: float = Field(0.05, ge=0)
    p_rotate: float = Field(0.4, ge=0, le=1)
    p_solarize: float = Field(0.3, ge=0, le=1)
    p_jitter: float = Field(1.0, ge=0, le=1)
    brightness: float = Field(0.2, ge=0, lt=1)
    contrast: float = Field(0.2, ge=0, lt=1)
    saturation: float = Field(0.2, ge=0, lt=1)
    hue: float = Field(0.05, ge=0, le=0.5)

    def build(self) -> SSLAugment | None:
        if not self.enabled:
            return None
        return SSLAugment(**self.model_dump(exclude={"enabled"}))


class AnalysisConfig(StrictModel):
    enabled: bool = True
    level: Level | None = Field(None, description="sparsity level analysed (default: sparsest)")
    cka_images: int = Field(256, ge=2)
    gradcam_layer: str = "layer3"
    gradcam_images: int = Field(6, ge=1)


class MoreFromLessRecipe(StagedRecipe):
    method: Literal["more_from_less"] = "more_from_less"
    title: str = "More From Less: self-supervised distillation into sparse inputs"
    data: DataConfig
    ssl_splits: list[str] = Field(["train"], min_length=1,
                                  description="splits whose images train the SSL stage")
    transfer: DataConfig | None = Field(None, description="a second labelled task")
    encoder: ModelConfig = ModelConfig()
    input_size: int = Field(224, ge=8, description="both branches' input size (px)")
    levels: list[Level] = Field([14, 7], min_length=1,
                                description="sparse views: k px (down and back up) or nuclei")
    losses: list[Literal["vicreg", "simclr"]] = Field(["vicreg"], min_length=1)
    pairs: list[Literal["asymmetric", "symmetric"]] = ["asymmetric", "symmetric"]
    shared_weights: bool = True
    supervised: bool = True
    ssl: SSLLossConfig = SSLLossConfig()
    augment: SSLAugmentConfig = SSLAugmentConfig()
    seeds: list[int] = Field([0], min_length=1)
    train: TrainConfig = TrainConfig()
    stages: dict[Stage, dict[str, Any]] = {}
    eval: EvalConfig = EvalConfig()
    analysis: AnalysisConfig = AnalysisConfig()


def level_name(level: Level) -> str:
    return "nuclei" if level == "nuclei" else f"{level}px"


class MoreFromLessPipeline(Pipeline):
    supports_ddp = True  # every rank trains; rank 0 evaluates and reports

    def __init__(self, recipe: MoreFromLessRecipe, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        super().__init__(recipe, out_dir, resume, progress)
        self.cache: dict = {}  # degraded views, shared by every run's datasets
        if not recipe.pairs and not recipe.supervised:
            raise RecipeError("pairs is empty and supervised is false: nothing to run")

    # -- data -------------------------------------------------------------------------------
    def _load_data(self) -> None:
        r = self.r
        self.train, self.val = load_labeled(r.data)
        self.classes = self.train.classes
        self.test = load_split(r.data, r.eval.split, self.classes)
        ssl = [s for split in r.ssl_splits
               for s in load_split(r.data, split, labeled=False).samples]
        self.ssl_samples = SampleList(ssl, [])
        mean, std = channel_stats(self.train.samples)
        self.norm = {"mean": list(mean), "std": list(std)}
        self.tasks: dict[str, tuple[SampleList, SampleList, SampleList]] = {
            "main": (self.train, self.val, self.test)}
        if r.transfer is not None:
            t_train, t_val = load_labeled(r.transfer)
            self.tasks["transfer"] = (t_train, t_val, load_split(
                r.transfer, r.transfer.splits.test, t_train.classes))

    def view_spec(self, level: Level) -> dict[str, Any]:
        if level == "nuclei":
            return {"kind": "nuclei"}
        return {"kind": "sparse", "k": int(level), "size": self.r.input_size}

    def dataset(self, samples: SampleList, views: dict[str, Any], augment=None,
                seed: int = 0, data: DataConfig | None = None) -> PairedViewDataset:
        return PairedViewDataset(samples.samples, views, self.norm["mean"], self.norm["std"],
                                 augment=augment, independent_views=True,
                                 image_size=(data or self.r.data).image_size, seed=seed,
                                 cache=self.cache)

    def meta(self, level: Level, classes: list[str], data: DataConfig) -> dict[str, Any]:
        return ClassificationCard(model=self.r.encoder.model_dump(), classes=classes,
                                  view=self.view_spec(level), normalization=self.norm,
                                  image_size=data.image_size).model_dump()

    # -- training stages ----------------------------------------------------------------------
    def _encoder(self, seed: int, n_classes: int):
        return self.build_model(self.r.encoder, n_classes, seed)

    def _ssl(self, run: str, level: Level, loss: str, pair: str, seed: int) -> Path:
        r = self.r
        sparse = view_from_spec(self.view_spec(level))
        if pair == "asymmetric":
            dense = SparseView(r.input_size, size=r.input_size)
            views, names = {"dense": dense, "sparse": sparse}, ("dense", "sparse")
        else:
            views, names = {"sparse_a": sparse, "sparse": sparse}, ("sparse_a", "sparse")
        k = len(self.classes)
        enc_a = self._encoder(seed, k)
        enc_b = None if r.shared_weights else self._encoder(seed + 10_000, k)
        s = r.ssl
        method = JointEmbedding(
            enc_a, enc_b, shared=r.shared_weights, view_a=names[0], view_b=names[1], loss=loss,
            expander_width=s.expander_width, expander_layers=s.expander_layers,
            sim_weight=s.sim_weight, var_weight=s.var_weight, cov_weight=s.cov_weight,
            eps=s.eps, temperature=s.temperature)
        cfg = r.stage_train("ssl", seed)
        train_set = self.dataset(self.ssl_samples, views, r.augment.build(), cfg.seed)
        return self.fit(run, method, train_set, None, cfg, self.meta(level, self.classes,
                                                                     r.data), k)

    def _probe(self, run: str, encoder_path: Path, level: Level, task: str,
               seed: int) -> Path:
        """Linear probe of a frozen encoder on ``task``'s train split (features computed
        once, without augmentation), selected on its val split."""
        if (self.out / run / "train_done.json").is_file():
            return self.out / run / "best.pt"
        train, val, _ = self.tasks[task]
        data = self.r.data if task == "main" else self.r.transfer
        encoder, _ = load_model(encoder_path)
        cfg = self.r.stage_train("probe", seed)
        view = {"input": view_from_spec(self.view_spec(level))}
        feats = [FeatureDataset.extract(encoder, self.dataset(s, view, data=data), "input",
                                        batch_size=cfg.batch_size, device=cfg.device)
                 for s in (train, val)]
        seed_everything(seed)
        probe = LinearProbe(encoder, len(train.classes), view="input")
        return self.fit(run, probe, feats[0], feats[1], cfg,
                         self.meta(level, train.classes, data), len(train.classes))

    def _supervised(self, run: str, level: Level, seed: int) -> Path:
        cfg = self.r.stage_train("supervised", seed)
        view = {"input": view_from_spec(self.view_spec(level))}
        method = Supervised(self._encoder(seed, len(self.classes)))
        return self.fit(run, method, self.dataset(self.train, view, self.r.augment.build(),
                                                   cfg.seed),
                         self.dataset(self.val, view), cfg,
                         self.meta(level, self.classes, self.r.data), len(self.classes))

    def _record(self, run: str, model_path: Path, task: str, **fields: Any) -> dict[str, Any]:
        split = self.r.eval.split if task == "main" else \
            f"transfer/{self.r.transfer.splits.test}"
        return self.cached_record(run, lambda: run_record(
            model_path, self.tasks[task][2], self.r.eval, name=run, split=split, task=task,
            **fields))

    def _evaluate_encoder(self, base: str, encoder_path: Path, level: Level, seed: int,
                          role: str, **fields: Any) -> list[dict[str, Any]]:
        records = []
        for task in self.tasks:
            if task == "main" and role == "supervised":
                run, path = base, encoder_path  # evaluated as trained
            else:
                run = f"{base}/probe_{task}"
                path = self._probe(run, encoder_path, level, task, seed)
            records.append(self._record(run, path, task, seed=seed, level=level_name(level),
                                        role=f"{role} {level_name(level)}"
                                        + ("" if task == "main" else " (transfer)"),
                                        **fields))
        return records

    def probe_dense_views(self) -> list[dict[str, Any]]:
        """The teacher side of every trained asymmetric encoder: the same frozen encoder
        linearly probed on the DENSE view (the image at ``input_size``) of the main task, in
        ``<run>/probe_main_dense``. With shared weights the dense branch is the teacher of
        the sparse one, so ``dense - sparse`` on the same test images is the gap there is to
        distil (issue #13: no gap, nothing to distil). Call after :meth:`run`; runs whose SSL
        stage is not finished are skipped."""
        r = self.r
        if not hasattr(self, "tasks"):
            self._load_data()
        dense = r.input_size  # k = input_size: down to input_size and "back" = the dense view
        records = []
        for seed in r.seeds:
            for level in r.levels:
                for loss in r.losses:
                    run = f"seed{seed}/{level_name(level)}/{loss}_asymmetric"
                    path = self.out / run / "ssl" / "best.pt"
                    if "asymmetric" not in r.pairs or not (path.parent /
                                                           "train_done.json").is_file():
                        continue
                    probe = self._probe(f"{run}/probe_main_dense", path, dense, "main", seed)
                    records.append(self._record(
                        f"{run}/probe_main_dense", probe, "main", seed=seed,
                        level=level_name(level), role=f"{loss} asymmetric, dense view",
                        loss=loss, pair="asymmetric_dense", view="dense"))
        return records

    # -- everything -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from medistill.pipelines.ssl_analysis import analyse, table_sections

        r = self.r
        self._load_data()
        self.start()
        runs: list[dict[str, Any]] = []
        for seed in r.seeds:
            for level in r.levels:
                base = f"seed{seed}/{level_name(level)}"
                for loss in r.losses:
                    for pair in r.pairs:
                        run = f"{base}/{loss}_{pair}"
                        path = self._ssl(f"{run}/ssl", level, loss, pair, seed)
                        runs += self._evaluate_encoder(run, path, level, seed,
                                                       f"{loss} {pair}", loss=loss, pair=pair)
                if r.supervised:
                    path = self._supervised(f"{base}/supervised", level, seed)
                    runs += self._evaluate_encoder(f"{base}/supervised", path, level, seed,
                                                   "supervised", pair="supervised")
        if not self.is_main:  # training is over; rank 0 reports
            return self.finish({})
        sections = table_sections(runs, r)
        if r.analysis.enabled:
            sections += analyse(self, runs)
        results = {
            "title": r.title,
            "summary": _summary(r),
            "classes": self.classes,
            "runs": runs,
            "sections": sections,
            "notes": _notes(r, len(self.ssl_samples.samples), len(self.train.samples),
                            len(self.test.samples)),
            "config": json.loads(r.model_dump_json()),
        }
        return self.finish(results)


def _summary(r: MoreFromLessRecipe) -> str:
    return (
        f"Encoder {r.encoder.name} ({'shared' if r.shared_weights else 'independent'} weights) "
        f"trained with {', '.join(r.losses)} on {', '.join(r.pairs) or 'no'} pairs at sparsity "
        f"levels {', '.join(level_name(v) for v in r.levels)} (input {r.input_size} px)"
        + (", plus a supervised baseline" if r.supervised else "")
        + f". Seeds {r.seeds}. Linear-probe metrics on '{r.eval.split}' with 95% bootstrap CIs "
        f"({r.eval.n_resamples} resamples)."
    )


def _notes(r: MoreFromLessRecipe, n_ssl: int, n_train: int, n_test: int) -> list[str]:
    return [
        f"{n_ssl} images (labels unused) for self-supervised training, {n_train} labelled "
        f"images for the linear probes and the supervised baseline, {n_test} test images.",
        "Sparse view k px: the original downsampled to k px (Lanczos) and resized back to "
        f"{r.input_size} px (bilinear); dense view: the original resized to {r.input_size} px.",
        "Augmentations (Table S1), drawn independently for each branch: flips, crop 75-100 %, "
        "Gaussian noise (p 0.3), 90-degree rotation (p 0.4), solarize (p 0.3), colour jitter.",
        "Linear probe: frozen encoder, global-average-pooled final features, one dense layer "
        "with softmax (Adam), best epoch on the validation split.",
        "GFLOPs = 2 x multiply-adds of one forward pass; latency = median CPU time per image.",
    ]
