"""Supervised classification (teacher, baselines) and linear-head fine-tuning.

Fine-tuning with ``head_only=True`` follows DiPalma et al. (2021), section 3.4: after
distillation every weight is frozen except the fully connected layer, which is trained with
cross-entropy on the labelled set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medistill.methods.base import Method, freeze, register_method
from medistill.models.base import Classifier


@register_method("supervised")
class Supervised(Method):
    def __init__(self, model: Classifier, view: str = "input", head_only: bool = False) -> None:
        super().__init__()
        self.model = model
        self.view = view
        self.head_only = head_only
        if head_only:
            freeze(model)
            for p in model.head.parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> Supervised:
        super().train(mode)
        if self.head_only:  # frozen backbone: normalisation layers stay in eval mode
            self.model.eval()
            self.model.head.train(mode)
        return self

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        _, logits = self.model(batch["views"][self.view])
        return {"loss": F.cross_entropy(logits, batch["label"])}

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(batch["views"][self.view])[1], batch["label"]

    def sample_input(self, batch: dict) -> torch.Tensor:
        return batch["views"][self.view]

    def deployable(self) -> Classifier:
        return self.model
