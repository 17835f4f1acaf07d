"""A FIFO memory bank of teacher embedding maps and their instance masks (inter-image graph
distillation, Liu et al., 2024).

The authors' bank overwrites only its LAST slot once it is full, so all but one stored map
freeze forever; here the bank is a proper first-in-first-out queue: once ``size`` maps are
stored, each new map evicts the OLDEST one. Entries are detached copies; the bank is not part
of training checkpoints (a resumed run starts with an empty bank and refills it within
``size / batch_size`` steps).
"""

from __future__ import annotations

from collections import deque

import torch


class MemoryBank:
    """``size`` most recent ``(embedding (C, H, W), labels (H, W))`` pairs, oldest first."""

    def __init__(self, size: int = 32) -> None:
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}")
        self.size = int(size)
        self.entries: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=self.size)

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Store every image of a batch ``(N, C, H, W)``, ``(N, H, W)`` (oldest evicted)."""
        for e, lab in zip(embeddings.detach(), labels.detach(), strict=True):
            self.entries.append((e.clone(), lab.clone()))

    def sample(self, k: int, generator: torch.Generator | None = None
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Up to ``k`` distinct entries drawn uniformly without replacement."""
        n = len(self.entries)
        if n == 0 or k <= 0:
            return []
        idx = torch.randperm(n, generator=generator)[: min(k, n)].tolist()
        return [self.entries[i] for i in idx]
