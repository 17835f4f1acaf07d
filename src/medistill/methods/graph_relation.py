"""Graph relation distillation for instance segmentation (Liu et al., 2024,
arXiv:2401.06370): instance graph distillation (IGD) and affinity graph distillation (AGD),
intra-image and inter-image against a memory bank of teacher embeddings.

The networks predict per-pixel embeddings, L2-normalised (16 channels), and a foreground
logit (:class:`~medistill.models.resunet.EmbeddingResUNet`). Supervision
(:class:`InstanceEmbedding`, the teacher and the student without KD):

    L_sup = affinity_weight * MSE(affinity(E), same-instance labels)   (the affinity-label term)
          + foreground_weight * BCE(foreground logit, labels > 0)

with the affinities of :func:`medistill.losses.affinity` at offsets {1, 3, 5, 9, 27} per axis,
over valid (inside-the-image) positions only. Distillation (:class:`GraphRelationKD`), the
paper's total loss with its terms named after the paper's subsections (the paper's equation
numbers could not be checked here, so they are not quoted):

    L = L_sup + agd_weight * L_AGD + node_weight * L_node + edge_weight * L_edge
              + inter_agd_weight * L_AGD^inter + inter_igd_weight * L_IGD^inter

- ``L_AGD`` (AGD, intra-image): :class:`~medistill.losses.AffinityGraphKD` (weight 10);
- ``L_node``, ``L_edge`` (IGD, intra-image): :class:`~medistill.losses.InstanceGraphKD`, nodes
  = ground-truth instance means, edges = their cosine similarities / N^2 (weights 0.1 each);
- ``L_AGD^inter`` (inter-image AGD): :func:`~medistill.losses.inter_image_agd` on 7x7
  average-pooled maps against ``bank_sample`` (12) teacher maps drawn from the FIFO
  :class:`~medistill.methods.memory_bank.MemoryBank` of ``bank_size`` (32) maps;
- ``L_IGD^inter`` (inter-image IGD): :func:`~medistill.losses.inter_image_igd`, cross-image
  edges only, against the teacher nodes of the same sampled bank images.

The inter-image weights default to the intra-image ones (10 and 0.1). The teacher is frozen;
after each step the batch's teacher embeddings and instance masks are pushed into the bank
(after sampling, so an image is never compared with itself). :meth:`deployable` is the student.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medistill.errors import RecipeError
from medistill.losses import (
    AffinityGraphKD,
    AffinityLoss,
    InstanceGraphKD,
    instance_nodes,
    inter_image_agd,
    inter_image_igd,
)
from medistill.losses.affinity import DEFAULT_OFFSETS
from medistill.methods.base import Method, freeze, weighted_loss
from medistill.methods.memory_bank import MemoryBank
from medistill.models.resunet import EmbeddingResUNet

INTRA_TERMS = ("agd", "igd")
INTER_TERMS = ("inter_agd", "inter_igd")
KD_TERMS = INTRA_TERMS + INTER_TERMS
#: run name -> distillation terms
PRESETS: dict[str, tuple[str, ...]] = {"intra": INTRA_TERMS, "full": KD_TERMS}


class InstanceEmbedding(Method):
    """Supervised embedding training (affinity labels + foreground); validation = AJI / PQ."""

    def __init__(self, model: EmbeddingResUNet, offsets: Sequence[int] = DEFAULT_OFFSETS,
                 affinity_weight: float = 1.0, foreground_weight: float = 1.0,
                 postprocess: dict | None = None) -> None:
        super().__init__()
        self.model = model
        self.offsets = tuple(int(d) for d in offsets)
        self.affinity_loss = AffinityLoss(self.offsets)
        self.sup_weights = (float(affinity_weight), float(foreground_weight))
        self.postprocess = dict(postprocess or {})

    def supervised(self, emb: torch.Tensor, fg: torch.Tensor, labels: torch.Tensor
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The components ``{"affinity", "foreground"}`` and their weighted terms (L_sup)."""
        aff = self.affinity_loss(emb, labels)
        bce = F.binary_cross_entropy_with_logits(fg[:, 0], (labels > 0).to(fg.dtype))
        wa, wf = self.sup_weights
        return {"affinity": aff, "foreground": bce}, {"affinity": wa * aff, "foreground": wf * bce}

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        emb, fg = self.deployable().embed(batch["image"])
        return weighted_loss(*self.supervised(emb, fg, batch["labels"]))

    def deployable(self) -> EmbeddingResUNet:
        return self.model

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deployable()(batch["image"]), batch["labels"]

    @torch.no_grad()
    def validation_metrics(self, loader, device: torch.device,
                           num_classes: int | None = None) -> dict[str, float]:
        from medistill.engine.trainer import to_device
        from medistill.metrics.instance import aji, panoptic_quality
        from medistill.postprocess import decode_embeddings

        ajis, pqs = [], []
        for batch in loader:
            out, labels = self.predict(to_device(batch, device))
            for o, t in zip(out.cpu(), labels.cpu().numpy(), strict=True):
                pred = decode_embeddings(o, self.offsets, **self.postprocess)
                ajis.append(aji(pred, t))
                pqs.append(panoptic_quality(pred, t)["pq"])
        return {"aji": float(np.mean(ajis)), "pq": float(np.mean(pqs))}


class GraphRelationKD(InstanceEmbedding):
    """A student embedding network distilled from a frozen teacher with the chosen ``terms``
    (any of ``agd``, ``igd``, ``inter_agd``, ``inter_igd``; presets ``intra``, ``full``)."""

    frozen_prefixes = ("teacher",)

    def __init__(self, teacher: EmbeddingResUNet, student: EmbeddingResUNet,
                 terms: Sequence[str] = KD_TERMS, offsets: Sequence[int] = DEFAULT_OFFSETS,
                 agd_weight: float = 10.0, node_weight: float = 0.1, edge_weight: float = 0.1,
                 inter_agd_weight: float = 10.0, inter_igd_weight: float = 0.1,
                 bank_size: int = 32, bank_sample: int = 12, pool: int = 7,
                 affinity_weight: float = 1.0, foreground_weight: float = 1.0,
                 postprocess: dict | None = None) -> None:
        super().__init__(student, offsets, affinity_weight, foreground_weight, postprocess)
        bad = [t for t in terms if t not in KD_TERMS]
        if bad or not terms:
            raise RecipeError(f"kd terms: unknown {bad or 'empty list'}; choose from "
                              + ", ".join(KD_TERMS))
        if teacher.embedding_dim != student.embedding_dim:
            raise RecipeError(f"teacher embeddings have {teacher.embedding_dim} channels but the "
                              f"student's {student.embedding_dim}")
        self.teacher = freeze(teacher)
        self.terms = tuple(terms)
        self.agd = AffinityGraphKD(self.offsets)
        self.igd = InstanceGraphKD()
        self.weights = {"agd": float(agd_weight), "node": float(node_weight),
                        "edge": float(edge_weight), "inter_agd": float(inter_agd_weight),
                        "inter_igd": float(inter_igd_weight)}
        self.bank = MemoryBank(bank_size)
        self.bank_sample = int(bank_sample)
        self.pool = int(pool)

    def _inter(self, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
               out: dict[str, torch.Tensor]) -> None:
        entries = self.bank.sample(self.bank_sample)
        zero = s.new_zeros(())
        if "inter_agd" in self.terms:
            out["inter_agd"] = (inter_image_agd(s, t, [e for e, _ in entries], self.pool)
                                if entries else zero)
        if "inter_igd" in self.terms:
            nodes = [instance_nodes(e, lab) for e, lab in entries]
            bank_nodes = torch.cat(nodes) if nodes else s.new_zeros((0, s.shape[1]))
            out["inter_igd"] = inter_image_igd(s, t, labels, bank_nodes)

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        x, labels = batch["image"], batch["labels"]
        with torch.no_grad():
            t, _ = self.teacher.embed(x)
        s, fg = self.model.embed(x)
        out, terms = self.supervised(s, fg, labels)
        if "agd" in self.terms:
            out["agd"] = self.agd(s, t)
            terms["agd"] = self.weights["agd"] * out["agd"]
        if "igd" in self.terms:
            out["igd_node"], out["igd_edge"] = self.igd(s, t, labels)
            terms["igd_node"] = self.weights["node"] * out["igd_node"]
            terms["igd_edge"] = self.weights["edge"] * out["igd_edge"]
        if any(term in self.terms for term in INTER_TERMS):
            self._inter(s, t, labels, out)
            for term in INTER_TERMS:
                if term in out:
                    terms[term] = self.weights[term] * out[term]
            self.bank.push(t, labels)
        return weighted_loss(out, terms)
