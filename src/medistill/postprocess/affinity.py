"""Affinities (and a foreground map) -> an instance map.

Two post-processings of the affinity layout of :func:`medistill.losses.affinity` (channels:
every offset along the rows, then every offset along the columns; values near 1 = same
instance):

- :func:`mutex_watershed` (Wolf et al., 2018) with the optional ``mwatershed`` package
  (``pip install medistill[instance]``), in its standard form: nearest-neighbour edges
  (the smallest offset) are attractive with weight ``a``, longer-range edges repulsive with
  weight ``1 - a``, processed greedily by weight. Edges between a foreground and a background
  pixel are made repulsive (otherwise instances merge with each other through the
  background).
- :func:`seeded_watershed`, pure scikit-image (no compiled extra): a boundary map
  ``1 - min`` of the short-range affinities of a pixel (offsets <= ``max_offset``, both
  axes, to the neighbours on both sides: one cut edge makes a boundary), seeds = connected
  components of confident interior (foreground with boundary < ``seed_threshold``), then a
  watershed of the boundary map inside the foreground.

Both keep background pixels (foreground probability <= ``fg_threshold``) at 0 and drop
instances smaller than ``min_size`` pixels; ids are renumbered 1..n.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from medistill.errors import RecipeError

if TYPE_CHECKING:
    import torch

POSTPROCESSORS = ("auto", "mutex", "watershed")


def has_mutex_watershed() -> bool:
    try:
        import mwatershed  # noqa: F401
    except ImportError:
        return False
    return True


def _offset_vectors(offsets: Sequence[int], ndim: int = 2) -> list[list[int]]:
    vecs = []
    for axis in range(ndim):
        for d in offsets:
            v = [0] * ndim
            v[axis] = int(d)
            vecs.append(v)
    return vecs


def _finish(labels: np.ndarray, foreground: np.ndarray, min_size: int) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    labels = np.where(foreground, labels, 0).astype(np.int64)
    if min_size > 1 and labels.any():
        counts = np.bincount(labels.ravel())
        small = counts < min_size
        small[0] = False
        labels[small[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def mutex_watershed(affinities: np.ndarray, offsets: Sequence[int], foreground: np.ndarray,
                    min_size: int = 10) -> np.ndarray:
    """Mutex watershed of ``(n_axes * len(offsets), H, W)`` affinities (needs ``mwatershed``)."""
    try:
        import mwatershed
    except ImportError:
        raise RecipeError("post-processing 'mutex' needs the mwatershed package: "
                          "pip install 'medistill[instance]' (or use 'watershed')") from None
    vectors = _offset_vectors(offsets, affinities.ndim - 1)
    aff = np.asarray(affinities, dtype=np.float64)
    nearest = min(int(d) for d in offsets)
    fg = np.asarray(foreground, dtype=bool)
    weights = np.empty_like(aff)
    for c, vec in enumerate(vectors):
        axis, d = next((i, v) for i, v in enumerate(vec) if v)
        weights[c] = aff[c] if d == nearest else aff[c] - 1.0
        n = fg.shape[axis]
        if d >= n:
            continue
        here, there = fg.take(range(n - d), axis), fg.take(range(d, n), axis)
        idx = [slice(None)] * fg.ndim
        idx[axis] = slice(0, n - d)
        view = weights[c][tuple(idx)]
        view[here != there] = -1.0  # foreground-background: a mutex, never merged
        view[~here & ~there] = 1.0  # background-background: merged (zeroed afterwards)
    labels = mwatershed.agglom(np.ascontiguousarray(weights), vectors)
    return _finish(labels, fg, min_size)


def boundary_map(affinities: np.ndarray, offsets: Sequence[int], max_offset: int = 1
                 ) -> np.ndarray:
    """``1 - min`` short-range affinity per pixel, over the neighbours on both sides."""
    n_axes = affinities.ndim - 1
    k = len(offsets)
    parts = []
    for axis in range(n_axes):
        for j, d in enumerate(offsets):
            if d > max_offset:
                continue
            a = affinities[axis * k + j]
            back = np.zeros_like(a)  # affinity from the neighbour at -d (same edge)
            src = [slice(None)] * n_axes
            dst = [slice(None)] * n_axes
            src[axis], dst[axis] = slice(0, a.shape[axis] - d), slice(d, None)
            back[tuple(dst)] = a[tuple(src)]
            valid_fwd = np.zeros(a.shape, bool)
            valid_fwd[tuple(src)] = True
            valid_back = np.zeros(a.shape, bool)
            valid_back[tuple(dst)] = True
            parts.append(np.where(valid_fwd, a, np.where(valid_back, back, 1.0)))
            parts.append(np.where(valid_back, back, np.where(valid_fwd, a, 1.0)))
    if not parts:
        raise RecipeError(f"no affinity offset <= {max_offset} among {list(offsets)}")
    return 1.0 - np.clip(np.min(parts, axis=0), 0.0, 1.0)


def seeded_watershed(affinities: np.ndarray, offsets: Sequence[int], foreground: np.ndarray,
                     seed_threshold: float = 0.3, max_offset: int = 1, min_size: int = 10
                     ) -> np.ndarray:
    """Watershed of the boundary map from confident-interior seeds (pure scikit-image)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    boundary = boundary_map(affinities, offsets, max_offset)
    interior = foreground & (boundary < seed_threshold)
    seeds, _ = ndimage.label(interior)
    labels = watershed(boundary, seeds, mask=foreground)
    return _finish(labels, foreground, min_size)


def affinities_to_instances(affinities: np.ndarray, offsets: Sequence[int],
                            foreground_prob: np.ndarray, method: str = "auto",
                            fg_threshold: float = 0.5, min_size: int = 10,
                            seed_threshold: float = 0.3) -> np.ndarray:
    """An ``(H, W)`` int32 instance map; ``method``: ``mutex``, ``watershed`` or ``auto``
    (mutex watershed when ``mwatershed`` is installed, else the seeded watershed)."""
    if method not in POSTPROCESSORS:
        raise RecipeError(f"post-processing {method!r}: choose one of {', '.join(POSTPROCESSORS)}")
    fg = np.asarray(foreground_prob) > fg_threshold
    if method == "mutex" or (method == "auto" and has_mutex_watershed()):
        return mutex_watershed(affinities, offsets, fg, min_size)
    return seeded_watershed(affinities, offsets, fg, seed_threshold, 1, min_size)


def decode_embeddings(output: torch.Tensor, offsets: Sequence[int], method: str = "auto",
                      fg_threshold: float = 0.5, min_size: int = 10,
                      seed_threshold: float = 0.3) -> np.ndarray:
    """One image's network output ``(E + 1, H, W)`` (unit embeddings, foreground logit) ->
    instance map: affinities of the embeddings (:func:`medistill.losses.affinity`), then
    :func:`affinities_to_instances`."""
    import torch

    from medistill.losses.affinity import affinity

    with torch.no_grad():
        aff, _ = affinity(output[None, :-1].float(), offsets)
        fg = torch.sigmoid(output[-1].float())
    return affinities_to_instances(aff[0].cpu().numpy(), offsets, fg.cpu().numpy(), method,
                                   fg_threshold, min_size, seed_threshold)
