"""A first-in-first-out memory bank for inter-image graph distillation (Liu et al., 2024), whose
whole state (contents, write pointer, fill count, sampling RNG) can be checkpointed.

The authors' bank is a ring buffer with a glitch: it writes slot ``pointer`` and advances the
pointer until the bank is full; the next write then goes to the LAST slot and resets the
pointer to 0, after which writing resumes at slot 0. So every cycle of ``size + 1`` writes
puts two consecutive maps in the last slot (the first of them is overwritten by the very next
push, within the same batch unless it was the batch's last image), and because the same
pointer doubles as the fill count, right after each wrap only ``min(contrast_size, pointer)``
maps are sampled (none at all when the wrap falls on the last image of a batch) until the
pointer has climbed back to ``contrast_size``. Here the write pointer and the fill count are
separate: once ``size`` entries are stored, each new entry evicts the OLDEST one, and sampling
always draws from every stored entry.

An entry is a tuple of detached tensors (the method stores what it needs of a teacher map).
Sampling uses the bank's own ``torch.Generator`` (seeded with ``seed``), so it does not depend
on, or disturb, other users of the global RNG. :meth:`state` / :meth:`load_state` turn the
bank into a flat dict of tensors and back (how :class:`~medistill.methods.GraphRelationKD`
puts it into training checkpoints, so that a resumed run continues with the same bank).

Under DDP every rank keeps a bank, and :class:`~medistill.methods.GraphRelationKD` pushes the
entries of the GLOBAL batch (the teacher maps all-gathered from every rank in the
single-process order, :func:`~medistill.engine.distributed.global_batch`); with the same seed
every rank's bank (contents, pointer, count, generator) then equals the single-process bank
step for step (tested in ``tests/test_distributed_recipes.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from medistill.errors import CheckpointError


class MemoryBank:
    """Up to ``size`` entries (tuples of tensors) in a ring buffer, oldest evicted first."""

    def __init__(self, size: int = 32, seed: int = 0) -> None:
        if size < 1:
            raise ValueError(f"memory bank size must be >= 1, got {size}")
        self.size = int(size)
        self.slots: list[tuple[torch.Tensor, ...] | None] = [None] * self.size
        self.pointer = 0  # the slot the next entry is written to
        self.count = 0  # the number of filled slots
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return self.count

    @property
    def entries(self) -> list[tuple[torch.Tensor, ...]]:
        """The stored entries, oldest first."""
        start = (self.pointer - self.count) % self.size
        return [self.slots[(start + i) % self.size] for i in range(self.count)]  # type: ignore[misc]

    def push(self, entries: Sequence[tuple[torch.Tensor, ...]]) -> None:
        """Store each entry (detached copies), evicting the oldest once full."""
        for entry in entries:
            self.slots[self.pointer] = tuple(x.detach().clone() for x in entry)
            self.pointer = (self.pointer + 1) % self.size
            self.count = min(self.count + 1, self.size)

    def sample(self, k: int) -> list[tuple[torch.Tensor, ...]]:
        """Up to ``k`` distinct entries drawn uniformly without replacement."""
        if self.count == 0 or k <= 0:
            return []
        idx = torch.randperm(self.count, generator=self.generator)[: min(k, self.count)]
        entries = self.entries
        return [entries[i] for i in idx.tolist()]

    # -- checkpointing ----------------------------------------------------------------------
    def state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """``{prefix + "pointer" | "count" | "rng" | "slot{i}.{j}": tensor}``."""
        out = {f"{prefix}pointer": torch.tensor(self.pointer),
               f"{prefix}count": torch.tensor(self.count),
               f"{prefix}rng": self.generator.get_state()}
        for i, entry in enumerate(self.slots):
            for j, x in enumerate(entry or ()):
                out[f"{prefix}slot{i}.{j}"] = x
        return out

    def load_state(self, state: Mapping[str, torch.Tensor], prefix: str = "",
                   source: str = "checkpoint") -> None:
        """Restore what :meth:`state` returned (one-line :class:`CheckpointError` if it does
        not fit this bank)."""
        try:
            pointer, count = int(state[f"{prefix}pointer"]), int(state[f"{prefix}count"])
            rng = state[f"{prefix}rng"]
        except KeyError as e:
            raise CheckpointError(f"{source}: memory bank state lacks {e.args[0]!r}") from None
        if not (0 <= pointer < self.size and 0 <= count <= self.size):
            raise CheckpointError(f"{source}: memory bank pointer {pointer} / count {count} "
                                  f"do not fit a bank of size {self.size}")
        slots: list[tuple[torch.Tensor, ...] | None] = [None] * self.size
        for i in range(self.size):
            parts, j = [], 0
            while f"{prefix}slot{i}.{j}" in state:
                parts.append(state[f"{prefix}slot{i}.{j}"].clone())
                j += 1
            slots[i] = tuple(parts) if parts else None
        filled = sum(s is not None for s in slots)
        if filled != count:
            raise CheckpointError(f"{source}: memory bank has {filled} stored entries but "
                                  f"count {count}")
        self.slots, self.pointer, self.count = slots, pointer, count
        self.generator.set_state(rng.clone())
