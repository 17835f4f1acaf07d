"""Instance graph distillation (IGD; Liu et al., 2024, arXiv:2401.06370; its "IGD" subsection).

An instance graph has one node per ground-truth instance, the mean embedding of its pixels
(the "instance central feature", eq. 2), and an edge between every pair of nodes, their cosine
similarity. Background (id 0) is not an instance.

- node term: the mean over instances of the squared Euclidean distance between the
  teacher's and the student's node of that instance;
- edge term: the squared difference of the teacher's and student's cosine-similarity
  matrices summed and divided by N^2 (N nodes);
- inter-image (:func:`inter_image_igd`): edges between the current image's nodes and the
  nodes of the memory-bank images only (cross-image edges; the intra-image ones are in the
  intra-image term): ``sum((cos(S, B) - cos(T, B))^2) / (N M)``.

Images without instances contribute nothing (the loss is 0 when no image of the batch has one).
"""

from __future__ import annotations

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
            node_terms.append(((s - t) ** 2).sum(1).mean())
            edge_terms.append(((cosine_matrix(s, s) - cosine_matrix(t, t)) ** 2).sum() / n**2)
        zero = student.new_zeros(())
        if not node_terms:
            return zero, zero
        return torch.stack(node_terms).mean(), torch.stack(edge_terms).mean()


def inter_image_igd(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                    bank_nodes: torch.Tensor) -> torch.Tensor:
    """Cross-image IGD of a batch against ``(M, C)`` teacher nodes of the memory-bank images."""
    if bank_nodes.numel() == 0:
        return student.new_zeros(())
    terms = []
    for s_map, t_map, lab in zip(student, teacher, labels, strict=True):
        s, t = instance_nodes(s_map, lab), instance_nodes(t_map, lab)
        if s.shape[0] == 0:
            continue
        diff = cosine_matrix(s, bank_nodes) - cosine_matrix(t, bank_nodes)
        terms.append((diff**2).sum() / (s.shape[0] * bank_nodes.shape[0]))
    return torch.stack(terms).mean() if terms else student.new_zeros(())
