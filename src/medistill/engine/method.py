"""The one small interface through which every method plugs into the trainer.

It lives in the engine because the trainer drives it (:class:`~medistill.engine.trainer.Trainer`
and :mod:`~medistill.engine.diagnostics` read a step's output through :func:`loss_terms`); the
methods (:mod:`medistill.methods`) implement it and import it from here (or, as before, from
:mod:`medistill.methods.base`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from medistill.engine.checkpoint import check_state
from medistill.tasks.classification import validation_scores

#: key prefix, in a training step's output, of one weighted term of the loss
TERM_PREFIX = "term/"


class Method(nn.Module):
    """A training objective around one deployable model.

    Subclasses implement:
        ``training_step(batch) -> dict``: the scalar ``"loss"`` to minimise plus any named
            components to log (tensors or floats). A loss made of several terms is built with
            :func:`weighted_loss`: each WEIGHTED term (a tensor with its graph) is stored as
            ``"term/<name>"`` and ``"loss"`` is their sum, so the trainer can log every term
            and measure its share of the gradient (:mod:`medistill.engine.diagnostics`). The
            other keys (e.g. the unweighted components) are only logged; a loss without
            ``term/`` keys counts as the single term ``loss``;
        ``predict(batch) -> (logits, labels)``: evaluation outputs of the deployable model;
        ``deployable() -> nn.Module``: the model that is evaluated, checkpointed and exported.

    ``validation_metrics`` turns a validation loader into named scores (higher is better for the
    one the trainer selects on); the default is classification (accuracy, macro F1, ...) from
    ``predict``, scored by the classification task's one metric path
    (:func:`medistill.tasks.classification.validation_scores`, as the final evaluation).
    Segmentation methods override it.

    Frozen modules (a teacher) should be registered under a name listed in
    ``frozen_prefixes``: they are kept in eval mode and left out of training checkpoints.
    """

    frozen_prefixes: tuple[str, ...] = ()

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """The training step (so that ``DistributedDataParallel(method)(batch)`` works)."""
        return self.training_step(batch)

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def deployable(self) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def validation_metrics(
        self, loader, device: torch.device, num_classes: int | None = None
    ) -> dict[str, float]:
        from medistill.engine.trainer import predict_loader  # the trainer imports this module

        logits, labels = predict_loader(self.predict, loader, device)
        return validation_scores(logits, labels, num_classes or logits.shape[1])

    def sample_input(self, batch: dict) -> torch.Tensor | None:
        """The (N, C, H, W) images ``predict`` classifies, for the TensorBoard samples of
        :meth:`sample_overlays`; None (the default): the method draws no samples."""
        return None

    @torch.no_grad()
    def sample_overlays(self, batch: dict) -> tuple[np.ndarray, str] | None:
        """A picture of a batch of fixed validation items and its caption, which the trainer
        logs to TensorBoard every ``train.tb_samples_every`` epochs; None: nothing to show.

        The default is classification (:func:`medistill.engine.samples.class_samples`: each
        image framed green or red, predicted and true class in the caption) for a method that
        says which images it classifies (:meth:`sample_input`). Segmentation methods override
        it; the trainer itself knows no task."""
        from medistill.engine.samples import class_samples  # draws with reports' contours

        images = self.sample_input(batch)
        if images is None:
            return None
        logits, labels = self.predict(batch)
        return class_samples(images, logits, labels)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for name, module in self.named_children():
            if name in self.frozen_prefixes:
                module.eval()
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The state dict without the frozen modules."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if k.split(".", 1)[0] not in self.frozen_prefixes
        }

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        check_state(self.trainable_state(), state, source)
        self.load_state_dict(state, strict=False)


def weighted_loss(out: dict, terms: Mapping[str, torch.Tensor]) -> dict:
    """Store the weighted ``terms`` in ``out`` as ``term/<name>`` and set ``out["loss"]`` to
    their sum, added in the given order (so ``a + b + c`` gives the same bits as written out).
    Returns ``out``."""
    if not terms:
        raise ValueError("weighted_loss needs at least one term")
    for name, value in terms.items():
        out[TERM_PREFIX + name] = value
    out["loss"] = functools.reduce(operator.add, terms.values())
    return out


def loss_terms(out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weighted terms of a training step's output (``{"loss": loss}`` if it has none)."""
    terms = {k[len(TERM_PREFIX):]: v for k, v in out.items() if k.startswith(TERM_PREFIX)}
    return terms or {"loss": out["loss"]}
