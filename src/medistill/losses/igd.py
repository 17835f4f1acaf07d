"""Instance graph distillation (IGD; Liu et al., 2024, arXiv:2401.06370; its "IGD" subsection).

An instance graph has one node per ground-truth instance, the mean embedding of its pixels
(the "instance central feature", eq. 2), and an edge between every pair of nodes, their cosine
similarity. Background (id 0) is not an instance. Our embeddings are L2-normalised per pixel
before the means (the authors average the raw network output).

- node term: the mean over instances of the Euclidean distance ``||n_T - n_S||_2`` between
  the teacher's and the student's node (the authors' code, ``mean(norm(x_T - x_S, dim=1))``;
  the paper's equation could not be checked here; before, the squared distance was used);
- edge term: the squared difference of the teacher's and student's cosine-similarity
  matrices summed and divided by N^2 (N nodes), as in the authors' code;
- inter-image (:func:`inter_image_igd`): edges between the current image's nodes and the
  nodes of each sampled memory-bank image only (cross-image edges; the intra-image ones are
  in the intra-image term). As in the authors' code the masked ``(N + M) x (N + M)`` matrix
  counts the cross block in both directions and is divided by ``N M``, per (batch image, bank
  image) pair, and the pairs are summed and divided by ``contrast_size`` K (their loss is
  averaged over the batch, then scaled by ``batch_size / contrast_size``):
  ``L = (1 / K) sum_{j, i} 2 sum((cos(S_j, B_i) - cos(T_j, B_i))^2) / (N_j M_i)``.
  Defect in the authors' loop not copied: it concatenates every bank image's nodes onto the
  current image's, so the k-th bank image is compared with the current image AND the k - 1
  bank images before it, whose teacher-teacher edges are identical for both networks (0
  error) but enlarge the divisor. Their inter-image node term (weight 0 in their configs)
  compares the same current-image nodes as the intra-image term, diluted by bank nodes
  whose distance is 0; it is left out.

Images without instances contribute nothing (the loss is 0 when no image of the batch has one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def instance_nodes(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean embedding of every instance of ONE image: ``(C, H, W)``, ``(H, W)`` ids ->
    ``(K, C)`` in increasing id order (ids > 0 present in ``labels``)."""
    ids, inverse = torch.unique(labels.reshape(-1), return_inverse=True)
    c = embeddings.shape[0]
    flat = embeddings.reshape(c, -1).T  # (HW, C)
    sums = flat.new_zeros((len(ids), c)).index_add_(0, inverse, flat)
    counts = torch.bincount(inverse, minlength=len(ids)).to(flat.dtype).clamp_min(1)
    nodes = sums / counts[:, None]
    return nodes[ids > 0]


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


class InstanceGraphKD(nn.Module):
    """Intra-image IGD. ``forward`` returns ``(node_loss, edge_loss)`` averaged over the images
    of the batch that contain at least one instance."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        node_terms, edge_terms = [], []
        for s_map, t_map, lab in zip(student, teacher, labels, strict=True):
            s, t = instance_nodes(s_map, lab), instance_nodes(t_map, lab)
            n = s.shape[0]
            if n == 0:
                continue
            node_terms.append(torch.linalg.vector_norm(s - t, dim=1).mean())
            edge_terms.append(((cosine_matrix(s, s) - cosine_matrix(t, t)) ** 2).sum() / n**2)
        zero = student.new_zeros(())
        if not node_terms:
            return zero, zero
        return torch.stack(node_terms).mean(), torch.stack(edge_terms).mean()


def inter_image_igd(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                    bank_nodes: Sequence[torch.Tensor], contrast_size: int | None = None
                    ) -> torch.Tensor:
    """Cross-image IGD of a batch against the teacher nodes ``(M_i, C)`` of each sampled
    memory-bank image (see the module doc); ``K = contrast_size`` (default: the number of
    bank images given); 0 when there is nothing to compare."""
    bank = [b for b in bank_nodes if b.shape[0] > 0]
    k = len(bank_nodes) if contrast_size is None else int(contrast_size)
    total = student.new_zeros(())
    if not bank or k == 0:
        return total
    for s_map, t_map, lab in zip(student, teacher, labels, strict=True):
        s, t = instance_nodes(s_map, lab), instance_nodes(t_map, lab)
        if s.shape[0] == 0:
            continue
        for b in bank:
            diff = cosine_matrix(s, b) - cosine_matrix(t, b)
            total = total + 2 * (diff**2).sum() / (s.shape[0] * b.shape[0])
    return total / k
