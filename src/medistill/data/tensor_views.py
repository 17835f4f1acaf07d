"""Pre-decoded views served a whole batch at a time (no per-sample Python work per epoch).

:class:`TensorViewDataset` decodes and degrades every image of a
:class:`~medistill.data.PairedViewDataset` once (Lanczos, PIL) into one ``uint8`` tensor per
view, then builds each training batch with a few tensor operations: gather the batch's rows,
augment them with per-sample parameters (:func:`~medistill.data.transforms.augment_batch`) and
normalise. The DataLoader calls :meth:`TensorViewDataset.__getitems__` with the batch's indices
and its ``collate_fn`` passes the finished batch through.

The augmentation parameters of sample ``i`` in epoch ``e`` are those of the per-sample dataset
(``Augment.sample_params(default_rng([seed, e, i]))``, drawn when the epoch is set), or, with a
:class:`~medistill.engine.teacher_cache.TeacherReplay` attached, one of its K stored draws: the
batch then carries the teacher's stored outputs for exactly that draw (``teacher_outputs``) and
no teacher view (FKD, Shen & Xing, ECCV 2022). A replay filled lazily also marks the pairs not
stored yet (``teacher_missing``, ``teacher_store``, see
:meth:`~medistill.engine.teacher_cache.TeacherReplay.serve`) and carries the teacher view of
those rows only, for the training step to run the teacher on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from medistill.data.datasets import PairedViewDataset
from medistill.data.transforms import augment_batch, stack_params
from medistill.errors import DataError


def _pass_through(batch: Any) -> Any:
    return batch


def decode_views(source: PairedViewDataset, names: Sequence[str],
                 indices: Sequence[int] | None = None, store: bool = False
                 ) -> dict[str, torch.Tensor]:
    """The ``uint8`` (N, C, H, W) tensor of each named view of ``source`` (all samples, or
    ``indices``); one PIL decode + resize per image and view not in ``source``'s view cache
    (added to it with ``store``)."""
    rows = range(len(source)) if indices is None else indices
    out = {}
    for name in names:
        arrays = [source.view_array(int(i), name, store=store) for i in rows]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"view {name!r}: images of different sizes {sorted(shapes)[:2]} "
                            "cannot be batched; set data.image_size")
        out[name] = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return out


class TensorViewDataset(Dataset):
    """The views of ``source`` as in-memory ``uint8`` tensors, batched with per-sample
    augmentation (same samples, labels, normalisation, augmentation and seed as ``source``).

    Args:
        source: the per-sample dataset (its ``augment`` must be an :class:`Augment` or None;
            ``independent_views`` is not supported).
        replay: serve stored teacher outputs for one of K stored augmentation draws per sample
            and epoch; ``teacher_view`` is then not decoded or served, unless
        keep_teacher_view: the replay is filled lazily: ``teacher_view`` is served for the
            rows whose outputs are not stored yet, read from ``source`` (and kept in its view
            cache, as online KD does) when first needed; ``source`` is let go once every
            output is stored.
        teacher_view: the name of the view the replayed teacher saw.
    """

    collate_fn = staticmethod(_pass_through)

    def __init__(self, source: PairedViewDataset, replay: Any = None,
                 teacher_view: str = "teacher", keep_teacher_view: bool = False) -> None:
        if source.independent_views:
            raise DataError("TensorViewDataset: independent views are not supported")
        self.samples, self.augment, self.seed = source.samples, source.augment, source.seed
        self.mean, self.std = source.mean, source.std
        self.replay, self.teacher_view = replay, teacher_view
        names = [n for n in source.views if replay is None or n != teacher_view]
        self.teacher_source = source if replay is not None and keep_teacher_view else None
        self.views = decode_views(source, names)
        self.labels_t = torch.tensor([s.label for s in source.samples], dtype=torch.int64)
        self.epoch = 0
        self._params: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return self.labels_t.numpy()

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._params = epoch, None
        if self.teacher_source is not None and self.replay.filled:
            self.teacher_source = None  # pure replay from now on
            self.replay.flush()

    def epoch_params(self) -> dict[str, torch.Tensor] | None:
        """This epoch's parameters of every sample, as :class:`PairedViewDataset` draws them."""
        if self.augment is None:
            return None
        if self._params is None:
            self._params = stack_params([
                self.augment.sample_params(np.random.default_rng([self.seed, self.epoch, i]))
                for i in range(len(self))])
        return self._params

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        if "teacher_missing" in batch:
            raise DataError(f"TensorViewDataset: sample {index}'s teacher outputs are not "
                            "stored yet (a lazily filled replay serves whole batches only)")
        return {"views": {k: v[0] for k, v in batch["views"].items()},
                "label": int(batch["label"][0]), "index": index,
                **({"teacher_outputs": {k: v[0] for k, v in batch["teacher_outputs"].items()}}
                   if "teacher_outputs" in batch else {})}

    def __getitems__(self, indices: Sequence[int]) -> dict:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        batch: dict[str, Any] = {"label": self.labels_t[idx], "index": idx}
        if self.replay is not None:
            draws = self.replay.draws(self.epoch)[idx]
            params = self.replay.params_at(idx, draws)
            batch.update(self.replay.serve(idx, draws))
        else:
            all_params = self.epoch_params()
            params = None if all_params is None else {k: v[idx] for k, v in all_params.items()}
        batch["views"] = {name: augment_batch(u8.index_select(0, idx), params, self.mean,
                                              self.std) for name, u8 in self.views.items()}
        if "teacher_missing" in batch:
            batch["views"][self.teacher_view] = self._missing_teacher_view(
                idx, batch["teacher_missing"], params)
        return batch

    def _missing_teacher_view(self, idx: torch.Tensor, missing: torch.Tensor,
                              params: dict[str, torch.Tensor]) -> torch.Tensor:
        """The augmented teacher view of the rows ``missing``."""
        if self.teacher_source is None or get_worker_info() is not None:
            raise DataError(
                "teacher replay: outputs not stored yet for a batch "
                + ("served by a DataLoader worker (a lazy fill needs train.num_workers: 0)"
                   if self.teacher_source is not None
                   else "of a dataset without the teacher view (fill the replay first)"))
        rows = missing.nonzero().flatten()
        u8 = decode_views(self.teacher_source, [self.teacher_view], idx[rows].tolist(),
                          store=True)[self.teacher_view]
        return augment_batch(u8, {k: v[rows] for k, v in params.items()}, self.mean, self.std)
