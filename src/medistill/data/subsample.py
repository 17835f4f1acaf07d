"""Seeded, class-stratified subsets of a split, for quick runs (a recipe's ``data.subsample``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def subsample_indices(n_items: int, limit: int | None, seed: int,
                      labels: Sequence[int] | None = None) -> list[int]:
    """Sorted indices of at most ``limit`` of ``n_items`` items: a seeded random subset,
    stratified by ``labels`` where they are given.

    Every label keeps at least one item when ``limit`` allows it (a quick run's validation
    split still has every class); the rest is shared in proportion to the labels' counts
    (largest remainder). ``limit`` None or >= ``n_items``: every index."""
    if limit is None or limit >= n_items:
        return list(range(n_items))
    labels = list(labels) if labels is not None else [0] * n_items
    groups = {label: [i for i in range(n_items) if labels[i] == label]
              for label in sorted(set(labels))}
    quota = dict.fromkeys(groups, 0)
    if limit >= len(groups):
        quota = dict.fromkeys(groups, 1)
    for _ in range(limit - sum(quota.values())):  # the largest shortfall gets the next item
        label = max((g for g in groups if quota[g] < len(groups[g])),
                    key=lambda g: len(groups[g]) * limit / n_items - quota[g])
        quota[label] += 1
    rng = np.random.default_rng(seed)
    keep = [idx[i] for label, idx in groups.items()
            for i in rng.permutation(len(idx))[:quota[label]]]
    return sorted(keep)
