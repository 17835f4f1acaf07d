"""``teacher_replay`` for the segmentation recipes: the frozen teacher run once per stored
augmentation draw instead of every step (FKD, Shen & Xing, ECCV 2022; see
:mod:`medistill.data.seg_replay` and :class:`~medistill.engine.teacher_cache.TeacherReplay`).

One piece serves HLFD (``kd.teacher_replay``: the teacher's taps), graph relation KD
(``kd.teacher_replay``: the teacher's embeddings, which also fill the memory bank of the
inter-image terms) and MIL fusion KD (``fusion.teacher_replay``: each round's frozen teacher's
fused map): :func:`replay_train_set` takes any method with a frozen ``teacher`` and a
``teacher_forward(x) -> {name: tensor}`` whose ``training_step`` reads the batch's
``teacher_outputs`` when present, and any training set with ``sample_params(index, rng)`` and
``augmented(index, params)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medistill.config import TrainConfig
from medistill.data.seg_replay import SegReplayDataset, seg_params, stack_seg_params
from medistill.engine.teacher_cache import TeacherReplay, fingerprint, shared_per_node
from medistill.errors import RecipeError
from medistill.pipelines.resolution import ReplayConfig

__all__ = ["ReplayConfig", "replay_train_set", "seg_replay_dataset", "sample_files"]


def sample_files(source: Any, extra: Iterable[str | Path] = ()) -> list[Path]:
    """The image and mask (label-map) files behind ``source``'s items (for the fingerprint),
    plus ``extra`` (the volumes NIfTI slices were cut from, which have no file of their own)."""
    files = [Path(p) for it in source.items for p in (it.image, it.mask) if p is not None]
    return files + [Path(p) for p in extra]


def seg_replay_dataset(teacher: nn.Module,
                       forward: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
                       source: Any, cfg: ReplayConfig,
                       directory: str | Path | None, files: Iterable[str | Path],
                       batch_size: int = 8, previous: TeacherReplay | None = None,
                       device: torch.device | str = "cpu", **settings: Any) -> SegReplayDataset:
    """The training set of a segmentation KD run with replayed teacher outputs: a
    :class:`TeacherReplay` of ``cfg.draws`` draws per item of ``source``'s augmentation
    (drawn by its ``sample_params``), filled with ``forward`` (the teacher's outputs) on
    ``device``, served by a :class:`SegReplayDataset`. The fingerprint covers the teacher, the
    ``files``, the draws, augmentation, seed, dtype and ``settings`` (taps, image size,
    normalisation); ``previous`` is reused when it has the same one. ``directory`` (disk
    storage) is filled once per node under DDP."""
    if source.augment is None:
        raise RecipeError("teacher_replay needs an augmented training set")
    key = fingerprint(teacher, files, draws=cfg.draws, augment=source.augment,
                      seed=source.seed, dtype=cfg.dtype, **settings)

    def build() -> TeacherReplay:
        return TeacherReplay(source.augment, len(source), cfg.draws, source.seed, key,
                             directory, cfg.dtype, stack=stack_seg_params,
                             sample=source.sample_params)

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


def replay_train_set(pipeline: Any, name: str, method: Any, train_set: Any,
                     replay: ReplayConfig | None, cfg: TrainConfig,
                     files: Callable[[], Iterable[str | Path]], **settings: Any) -> Any:
    """``train_set``, or (``replay`` set, ``method`` a KD method with a ``teacher_forward``,
    run ``name`` not trained yet) its :func:`seg_replay_dataset`: filled on the training
    device, stored under ``<out>/teacher_replay`` with ``storage: disk``, and reused by the
    pipeline's next run with the same fingerprint (same teacher, outputs and images).
    ``files()`` lists the sample files for the fingerprint."""
    if (replay is None or not hasattr(method, "teacher_forward")
            or (pipeline.out / name / "train_done.json").is_file()):
        return train_set
    from medistill.engine.distributed import device_for_rank
    from medistill.engine.trainer import resolve_device

    device = resolve_device(device_for_rank(cfg.device))
    method.teacher.to(device)
    out = seg_replay_dataset(
        method.teacher, method.teacher_forward, train_set, replay,
        pipeline.out / "teacher_replay" if replay.storage == "disk" else None, files(),
        cfg.batch_size, getattr(pipeline, "_last_replay", None), device,
        method=type(method).__name__, **settings)
    pipeline._last_replay = out.replay
    return out


def check_replay_augment(replay: ReplayConfig | None, augment_enabled: bool, key: str) -> None:
    """A recipe validator's check: ``key`` (a ``teacher_replay`` option) stores the teacher's
    outputs for draws of the training augmentation, so it needs one."""
    if replay is not None and not augment_enabled:
        raise ValueError(f"{key} needs augment.enabled: true (it stores the teacher's outputs "
                         "for draws of the training augmentation; without one there is "
                         "nothing to draw)")
