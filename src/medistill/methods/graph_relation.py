"""Graph relation distillation for instance segmentation (Liu et al., 2024,
arXiv:2401.06370): instance graph distillation (IGD) and affinity graph distillation (AGD),
intra-image and inter-image against a memory bank of teacher embeddings.

The networks predict per-pixel embeddings, L2-normalised (16 channels), and a foreground
logit (:class:`~medistill.models.resunet.EmbeddingResUNet`). Supervision
(:class:`InstanceEmbedding`, the teacher and the student without KD):

    L_sup = affinity_weight * sum_c mean_p (aff_c(E) - same_instance_c)^2
          + foreground_weight * BCE(foreground logit, labels > 0)

with the affinities of :func:`medistill.losses.affinity` at offsets {1, 3, 5, 9, 27} per axis
(c: the 10 affinity channels in 2-D, summed as in the authors' code; p: the valid, inside-the-
image positions). Distillation (:class:`GraphRelationKD`), the paper's total loss with its
terms named after the paper's subsections (the paper's equation numbers could not be checked
here, so they are not quoted); B = images in the batch, K = ``bank_sample``:

    L = L_sup + agd_weight * L_AGD + node_weight * L_node + edge_weight * L_edge
              + inter_agd_weight * L_AGD^inter + inter_igd_weight * L_IGD^inter

- ``L_AGD`` = sum_c mean_p (aff_c(S) - aff_c(T))^2 (:class:`~medistill.losses.AffinityGraphKD`;
  default weight 10, the authors' config);
- ``L_node`` = mean over instances of ||n_S - n_T||_2, nodes = ground-truth instance means;
  ``L_edge`` = sum((cos(n_S) - cos(n_T))^2) / N^2 (:class:`~medistill.losses.InstanceGraphKD`;
  both averaged over the images with instances; weights 0.1 / 0.1, the authors' config);
- ``L_AGD^inter`` = (B / K) sum_{j, i} mean_{p, q} ((s_jp . b_iq - t_jp . b_iq)^2) over the
  7 x 7 / stride 7 average-pooled (ceil mode, not re-normalised) student / teacher maps of
  batch image j and the pooled teacher map of each of the K bank images i
  (:func:`~medistill.losses.inter_image_agd`; weight 1, the authors' ``CI_affinity_weight``);
- ``L_IGD^inter`` = (1 / K) sum_{j, i} 2 sum((cos(S_j, B_i) - cos(T_j, B_i))^2) / (N_j M_i),
  cross-image edges only (:func:`~medistill.losses.inter_image_igd`; weight 1, the authors'
  ``CI_edge_weight``; their ``CI_node_weight`` is 0 and the term is left out).

The (B / K) and (1 / K) factors are the authors' ``/ contrast_size * batch_size`` applied to
a loss summed over the pairs (AGD) or averaged over the batch (IGD). K is ``bank_sample``
even while the bank holds fewer maps, as in the authors' code. The teacher is frozen; after
each step the batch's teacher maps are pushed into the FIFO
:class:`~medistill.methods.memory_bank.MemoryBank` of ``bank_size`` (32) entries, AFTER
sampling, so an image is never compared with itself (the authors push first, so the current
batch can be drawn). With ``kd.teacher_replay`` the teacher's embeddings come with the batch
(``teacher_outputs``, stored by :meth:`GraphRelationKD.teacher_forward` for K augmented crops),
and the terms and the bank entries are derived from them as from the online ones.
:meth:`deployable` is the student.
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
    pooled_nodes,
)
from medistill.losses.affinity import DEFAULT_OFFSETS
from medistill.methods.base import Method, freeze, register_method, weighted_loss
from medistill.methods.memory_bank import MemoryBank
from medistill.models.resunet import EmbeddingResUNet
from medistill.postprocess import decode_embeddings

INTRA_TERMS = ("agd", "igd")
INTER_TERMS = ("inter_agd", "inter_igd")
KD_TERMS = INTRA_TERMS + INTER_TERMS
#: run name -> distillation terms
PRESETS: dict[str, tuple[str, ...]] = {"intra": INTRA_TERMS, "full": KD_TERMS}


@register_method("instance_embedding")
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
        from medistill.engine.distributed import global_batch
        emb, fg, labels = global_batch(emb, fg, batch["labels"])  # DDP: the loss of all ranks
        return weighted_loss(*self.supervised(emb, fg, labels))

    def deployable(self) -> EmbeddingResUNet:
        return self.model

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deployable()(batch["image"]), batch["labels"]

    @torch.no_grad()
    def sample_overlays(self, batch: dict) -> tuple[np.ndarray, str]:
        """The images with every true and every decoded instance outlined (TensorBoard)."""
        from medistill.engine.samples import mask_samples

        out, labels = self.predict(batch)
        pred = np.stack([decode_embeddings(o, self.offsets, **self.postprocess)
                         for o in out.cpu()])
        return mask_samples(batch["image"], pred, labels.cpu().numpy())

    @torch.no_grad()
    def validation_metrics(self, loader, device: torch.device,
                           num_classes: int | None = None) -> dict[str, float]:
        """The final evaluation's AJI / PQ on the validation images (the instance task's one
        routine: predicted at the training scale, scored at the ORIGINAL size)."""
        from medistill.tasks.instance import validation_scores

        return validation_scores(self.deployable(), loader.dataset, self.offsets,
                                 self.postprocess, device)


@register_method("graph_relation_kd")
class GraphRelationKD(InstanceEmbedding):
    """A student embedding network distilled from a frozen teacher with the chosen ``terms``
    (any of ``agd``, ``igd``, ``inter_agd``, ``inter_igd``; presets ``intra``, ``full``).

    With an inter-image term, the memory bank (its entries, write pointer, fill count and
    sampling RNG state) is part of :meth:`trainable_state`, so training checkpoints carry it
    and a resumed run continues exactly. Under DDP the teacher maps of every rank are gathered
    (:func:`~medistill.engine.distributed.global_batch`) before the loss and the push, so every
    rank enqueues the whole global batch in the single-process order and draws the same
    samples (same seed): each rank's bank equals the single-process bank.
    """

    frozen_prefixes = ("teacher",)
    BANK_PREFIX = "bank."

    def __init__(self, teacher: EmbeddingResUNet, student: EmbeddingResUNet,
                 terms: Sequence[str] = KD_TERMS, offsets: Sequence[int] = DEFAULT_OFFSETS,
                 agd_weight: float = 10.0, node_weight: float = 0.1, edge_weight: float = 0.1,
                 inter_agd_weight: float = 1.0, inter_igd_weight: float = 1.0,
                 bank_size: int = 32, bank_sample: int = 12, pool: int = 7,
                 affinity_weight: float = 1.0, foreground_weight: float = 1.0,
                 postprocess: dict | None = None, bank_seed: int | None = None) -> None:
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
        self.uses_bank = any(term in self.terms for term in INTER_TERMS)
        seed = torch.initial_seed() if bank_seed is None else bank_seed
        self.bank = MemoryBank(bank_size, seed)
        self.bank_sample = int(bank_sample)
        self.pool = int(pool)

    # -- the bank in checkpoints ------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = super().trainable_state()
        if self.uses_bank:
            state.update(self.bank.state(self.BANK_PREFIX))
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        if self.uses_bank:  # first, so that the key / shape check below sees the same bank
            self.bank.load_state(state, self.BANK_PREFIX, source)
        super().load_trainable_state(state, source)

    # -- training ---------------------------------------------------------------------------
    def _bank_entries(self, t: torch.Tensor, labels: torch.Tensor
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """What the bank keeps of each teacher map: its pooled nodes (inter-image AGD) and its
        instance nodes (inter-image IGD). The teacher is frozen, so this equals storing the
        maps and masks and deriving both when sampled, as the authors do, at a fraction of the
        memory and checkpoint size."""
        pooled = pooled_nodes(t, self.pool)
        return [(p, instance_nodes(e, lab)) for p, e, lab in zip(pooled, t, labels, strict=True)]

    def _inter(self, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
               out: dict[str, torch.Tensor]) -> None:
        entries = [tuple(x.to(s.device) for x in e) for e in self.bank.sample(self.bank_sample)]
        if "inter_agd" in self.terms:
            out["inter_agd"] = inter_image_agd(s, t, [p for p, _ in entries], self.pool,
                                               self.bank_sample)
        if "inter_igd" in self.terms:
            out["inter_igd"] = inter_image_igd(s, t, labels, [n for _, n in entries],
                                               self.bank_sample)

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen teacher's L2-normalised embedding map (what a teacher replay stores)."""
        return {"embedding": self.teacher.embed(x)[0]}

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One step; the teacher's embeddings are the batch's ``teacher_outputs`` when it
        carries them (``kd.teacher_replay``), else computed. Every term AND the memory bank's
        entries are derived from them, so a replayed step pushes what the online one does."""
        x, labels = batch["image"], batch["labels"]
        stored = batch.get("teacher_outputs")
        t = (stored if stored is not None else self.teacher_forward(x))["embedding"]
        s, fg = self.model.embed(x)
        # DDP: every rank computes the loss (and pushes the bank entries) of the global batch,
        # so each rank's memory bank equals the single-process bank
        from medistill.engine.distributed import global_batch
        s, fg, t, labels = global_batch(s, fg, t, labels)
        out, terms = self.supervised(s, fg, labels)
        if "agd" in self.terms:
            out["agd"] = self.agd(s, t)
            terms["agd"] = self.weights["agd"] * out["agd"]
        if "igd" in self.terms:
            out["igd_node"], out["igd_edge"] = self.igd(s, t, labels)
            terms["igd_node"] = self.weights["node"] * out["igd_node"]
            terms["igd_edge"] = self.weights["edge"] * out["igd_edge"]
        if self.uses_bank:
            self._inter(s, t, labels, out)
            for term in INTER_TERMS:
                if term in out:
                    terms[term] = self.weights[term] * out[term]
            with torch.no_grad():
                self.bank.push(self._bank_entries(t, labels))
        return weighted_loss(out, terms)
