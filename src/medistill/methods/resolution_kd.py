"""Resolution-based distillation (DiPalma et al., 2021).

A frozen teacher sees the high-resolution view, the student the low-resolution view of the same
(identically augmented) image. Total loss (eq. 1) = ``soft_weight * L_soft`` (eq. 2, KL at
temperature T times T^2) + ``pixel_weight * L_pixel`` (eq. 3, MSE between the final
convolutional maps, the teacher's resized to the student's size by max-pooling and by bicubic
interpolation, averaged). Labels are not used unless ``label_weight > 0``, so the same method
distils on unlabeled auxiliary data (section 3.3). The label cross-entropy is the mean over the
labelled images (label >= 0) of the whole batch; under DDP of the global batch (every rank's
logits and labels gathered, :func:`~medistill.engine.distributed.global_batch`), not a mean of
per-rank means, which would weight an image by how few labelled images its rank holds.

When the two final maps differ in channels, a learnable 1x1 convolution (FitNets) projects the
student map to the teacher's channels; it is a parameter of this distiller, so it is trained
and checkpointed with the student (and dropped at export).

With ``teacher_cache`` set (a :class:`~medistill.engine.teacher_cache.TeacherCache`; only valid
when the teacher's view is not augmented), the teacher runs once per sample, not once per epoch.
With augmentation, a :class:`~medistill.engine.teacher_cache.TeacherReplay` stores its outputs
for K augmentation draws per sample and the batches carry the stored outputs of the draw their
student view was augmented with (``batch["teacher_outputs"]``); filled lazily, the step runs
the teacher on the rows not stored yet (``batch["teacher_missing"]``). After
:meth:`ResolutionKD.use_targets` a replay stores the pixel loss's targets (the teacher map
already resized to the student map's size, one per resize method) rather than the teacher's
map where they are smaller: 2 x 256 x 1 x 1 instead of 256 x 4 x 4 values per draw for a 112 px
teacher and a 28 px student.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medistill.errors import RecipeError
from medistill.losses import ResizedFeatureMSE, SoftTargetKL
from medistill.methods.base import Method, freeze, register_method, weighted_loss
from medistill.models.base import Classifier


@register_method("resolution_kd")
class ResolutionKD(Method):
    frozen_prefixes = ("teacher",)

    def __init__(
        self,
        teacher: Classifier,
        student: Classifier,
        teacher_view: str = "teacher",
        student_view: str = "student",
        temperature: float = 4.0,
        soft_weight: float = 1.0,
        pixel_weight: float = 1.0,
        resize: Sequence[str] = ("maxpool", "bicubic"),
        label_weight: float = 0.0,
    ) -> None:
        super().__init__()
        t_classes, s_classes = teacher.head.out_features, student.head.out_features
        if t_classes != s_classes:
            raise RecipeError(
                f"teacher predicts {t_classes} classes but the student {s_classes}: "
                "they must be trained on the same classes"
            )
        self.teacher = freeze(teacher)
        self.student = student
        if student.feature_channels == teacher.feature_channels:
            self.projection: nn.Module = nn.Identity()
        else:
            self.projection = nn.Conv2d(student.feature_channels, teacher.feature_channels, 1)
        self.soft = SoftTargetKL(temperature)
        self.pixel = ResizedFeatureMSE(resize)
        self.views = (teacher_view, student_view)
        self.weights = (soft_weight, pixel_weight, label_weight)
        self.teacher_cache = None
        self.target_size: tuple[int, int] | None = None

    @torch.no_grad()
    def use_targets(self, student_inputs: Sequence[torch.Tensor],
                    teacher_input: torch.Tensor) -> dict[str, Any]:
        """Make :meth:`teacher_forward` return the pixel loss's targets at the student map's
        size (:meth:`ResizedFeatureMSE.targets`, one map per resize method; none when
        ``pixel_weight`` is 0) instead of the teacher's final map, when they are smaller and
        the same for every student input: what a teacher replay then stores. The sizes come
        from one forward of the teacher on ``teacher_input`` and of the student on each of
        ``student_inputs`` (one view per student resolution the replay is to serve, e.g. every
        student factor of a recipe; (C, H, W) each). Returns what the stored outputs depend on
        (target size or None, resize methods), for the replay's fingerprint. The loss is the
        same bit for bit (the same resize, done before instead of in the step); with float16
        storage the targets are rounded instead of the map."""

        def map_size(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
            training = model.training
            model.eval()
            out = model(x[None])[0]
            model.train(training)
            return tuple(out.shape[-2:])

        sizes = {map_size(self.student, x) for x in student_inputs}
        th, tw = map_size(self.teacher, teacher_input)
        methods = list(self.pixel.resize) if self.weights[1] else []
        size = next(iter(sizes)) if len(sizes) == 1 else None
        small = size is not None and len(methods) * size[0] * size[1] < th * tw
        self.target_size = size if small else None
        return {"size": self.target_size, "resize": methods}

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen teacher on its view: ``{"features": final map, "logits": logits}`` (what
        the caches store), or after :meth:`use_targets` ``{"logits", "target_<resize>"...}``."""
        t_map, t_logits = self.teacher(x)
        if self.target_size is None:
            return {"features": t_map, "logits": t_logits}
        out = {"logits": t_logits}
        if self.weights[1]:
            targets = self.pixel.targets(t_map, self.target_size)
            out.update(zip([f"target_{m}" for m in self.pixel.resize], targets, strict=True))
        return out

    def teacher_outputs(self, batch: dict) -> tuple[torch.Tensor | list[torch.Tensor],
                                                    torch.Tensor]:
        """The frozen teacher's (final map or its pixel-loss targets, logits): replayed when the
        batch carries them (``teacher_outputs``, see
        :class:`~medistill.engine.teacher_cache.TeacherReplay`; rows marked ``teacher_missing``
        are computed by ``teacher_store`` with the teacher on the batch's teacher view of those
        rows), from the cache when there is one, else computed."""
        out = batch.get("teacher_outputs")
        missing = batch.get("teacher_missing")
        if missing is not None:  # a lazily filled replay: the teacher on the rows not stored
            out = batch["teacher_store"](missing, self.teacher_forward,
                                         batch["views"][self.views[0]], out)
        elif out is None:
            x = batch["views"][self.views[0]]
            cache = self.teacher_cache
            out = (self.teacher_forward(x) if cache is None
                   else cache.get_or_compute(batch["index"], lambda: self.teacher_forward(x)))
        if "features" in out:
            return out["features"], out["logits"]
        targets = [out[f"target_{m}"] for m in self.pixel.resize] if self.weights[1] else []
        return targets, out["logits"]

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        student_view = self.views[1]
        soft_w, pixel_w, label_w = self.weights
        t_map, t_logits = self.teacher_outputs(batch)
        s_map, s_logits = self.student(batch["views"][student_view])
        out = {"soft": self.soft(s_logits, t_logits)}
        out["pixel"] = self.pixel(self.projection(s_map), t_map) if pixel_w else s_map.new_zeros(())
        terms = {"soft": soft_w * out["soft"]}
        if pixel_w:
            terms["pixel"] = pixel_w * out["pixel"]
        if label_w:
            # DDP: the mean over the labelled images of the GLOBAL batch (ranks can hold
            # different numbers of them); soft and pixel are per-image means over equal shards
            from medistill.engine.distributed import global_batch

            logits, labels = global_batch(s_logits, batch["label"])
            known = labels >= 0
            if known.any():
                out["ce"] = F.cross_entropy(logits[known], labels[known])
                terms["ce"] = label_w * out["ce"]
        return weighted_loss(out, terms)

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student(batch["views"][self.views[1]])[1], batch["label"]

    def sample_input(self, batch: dict) -> torch.Tensor:
        return batch["views"][self.views[1]]

    def deployable(self) -> Classifier:
        return self.student
