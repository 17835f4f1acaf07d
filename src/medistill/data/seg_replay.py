"""A segmentation training set that replays stored frozen-teacher outputs (FKD, "Fast
Knowledge Distillation", Shen & Xing, ECCV 2022, applied to paired image/mask augmentation).

In segmentation distillation teacher and student see the SAME augmented image, and the mask
is transformed with it (:class:`~medistill.data.segmentation.SegAugment`: crop, rotation,
flips, 90-degree turns; colour jitter on the image only). A
:class:`~medistill.engine.teacher_cache.TeacherReplay` stores the teacher's outputs for K
augmentation draws per image; each epoch :class:`SegReplayDataset` serves, for every sample,
one of its K draws: the image and mask made with exactly that draw's parameters (by the same
code as the online dataset, :meth:`SegmentationDataset.augmented`) and the stored teacher
outputs of that draw (``teacher_outputs``), so the frozen teacher never runs in training.

Any dataset with the same two methods is served alike: ``sample_params(index, rng)`` (one
draw of the parameters, as its ``__getitem__`` draws them) and ``augmented(index, params)``
(the item under those parameters): :class:`~medistill.data.segmentation.SegmentationDataset`
and its :class:`~medistill.data.weak.WeakSegDataset` (HLFD, MIL fusion KD) and the random
crops of :class:`~medistill.data.instance.InstanceDataset` (graph relation KD).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def stack_seg_params(params: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """``sample_params`` dicts -> one tensor per key, typed by the first dict's value: bool
    (flips), int64 (``rot``, crop offsets), float64 (the rest): :func:`seg_params` gives back
    the very same Python values."""
    out = {}
    for key, first in params[0].items():
        dtype = (torch.bool if isinstance(first, bool | np.bool_) else torch.int64
                 if isinstance(first, int | np.integer) else torch.float64)
        out[key] = torch.tensor([p[key] for p in params], dtype=dtype)
    return out


def seg_params(params: Mapping[str, torch.Tensor], row: int = 0) -> dict[str, Any]:
    """Row ``row`` of stacked parameters as the dict :meth:`SegmentationDataset.augmented`
    takes."""
    return {k: v[row].item() for k, v in params.items()}


class SegReplayDataset(Dataset):
    """``source`` (an augmented :class:`SegmentationDataset`, or any dataset with
    ``augmented(index, params)``, see the module doc) with its augmentation drawn from the
    ``replay``'s K stored draws per sample, and the teacher's stored outputs of each draw in
    the item (``teacher_outputs``: output name -> tensor)."""

    def __init__(self, source: Any, replay: Any) -> None:
        self.source, self.replay = source, replay
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        idx = torch.tensor([index])
        draw = self.replay.draws(self.epoch)[idx]
        item = self.source.augmented(index, seg_params(self.replay.params_at(idx, draw)))
        item["teacher_outputs"] = {k: v[0] for k, v in self.replay.outputs(idx, draw).items()}
        return item
