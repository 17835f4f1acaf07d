"""``kd.teacher_replay`` for the segmentation recipes: the frozen teacher run once per stored
augmentation draw instead of every step (FKD, Shen & Xing, ECCV 2022; see
:mod:`medistill.data.seg_replay` and :class:`~medistill.engine.teacher_cache.TeacherReplay`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medistill.data.seg_replay import SegReplayDataset, seg_params, stack_seg_params
from medistill.data.segmentation import SegmentationDataset
from medistill.engine.teacher_cache import TeacherReplay, fingerprint, shared_per_node
from medistill.errors import RecipeError
from medistill.pipelines.resolution import ReplayConfig

__all__ = ["ReplayConfig", "seg_replay_dataset", "sample_files"]


def sample_files(source: SegmentationDataset, extra: Iterable[str | Path] = ()) -> list[Path]:
    """The image and mask files behind ``source`` (for the fingerprint), plus ``extra`` (the
    volumes NIfTI slices were cut from, which have no file of their own)."""
    files = [Path(p) for it in source.items for p in (it.image, it.mask) if p is not None]
    return files + [Path(p) for p in extra]


def seg_replay_dataset(teacher: nn.Module,
                       forward: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
                       source: SegmentationDataset, cfg: ReplayConfig,
                       directory: str | Path | None, files: Iterable[str | Path],
                       batch_size: int = 8, previous: TeacherReplay | None = None,
                       device: torch.device | str = "cpu", **settings: Any) -> SegReplayDataset:
    """The training set of a segmentation KD run with replayed teacher outputs: a
    :class:`TeacherReplay` of ``cfg.draws`` draws per image of ``source``'s augmentation,
    filled with ``forward`` (the teacher's taps) on ``device``, served by a
    :class:`SegReplayDataset`. The fingerprint covers the teacher, the ``files``, the draws,
    augmentation, seed, dtype and ``settings`` (taps, image size, normalisation);
    ``previous`` is reused when it has the same one. ``directory`` (disk storage) is filled
    once per node under DDP."""
    if source.augment is None:
        raise RecipeError("kd.teacher_replay needs an augmented training set")
    key = fingerprint(teacher, files, draws=cfg.draws, augment=source.augment,
                      seed=source.seed, dtype=cfg.dtype, **settings)

    def build() -> TeacherReplay:
        return TeacherReplay(source.augment, len(source), cfg.draws, source.seed, key,
                             directory, cfg.dtype, stack=stack_seg_params)

    def fill(rep: TeacherReplay) -> None:
        def views(idx: torch.Tensor) -> Callable[[int], torch.Tensor]:
            def draw(k: int) -> torch.Tensor:
                params = rep.params_at(idx, k)
                return torch.stack([source.augmented(int(i), seg_params(params, j))["image"]
                                    for j, i in enumerate(idx)]).to(device)
            return draw

        rep.fill_from(forward, views, batch_size)

    if previous is not None and previous.cache.key == key and previous.filled:
        replay = previous
    elif directory is not None:
        replay = shared_per_node(build, fill)
    else:
        replay = build()
        fill(replay)
    return SegReplayDataset(source, replay)
