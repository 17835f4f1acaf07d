"""Frozen-teacher outputs computed once and reused every epoch.

When the teacher is frozen and its input view is deterministic (no augmentation), its logits and
feature maps are the same every epoch: :class:`TeacherCache` keeps them per sample index, in
memory or on disk (memory-mapped ``.npy`` files), and a distillation method asks it instead of
running the teacher again (``get_or_compute``).

The cache is tied to a *fingerprint* of everything that determines the outputs: the teacher's
weights, the sample files (path, size, modification time), the view and the normalisation
(:func:`fingerprint`). A disk cache lives in ``<directory>/<fingerprint>/``; a different
fingerprint (another teacher checkpoint, changed data or view) opens a new, empty cache and the
stale ones beside it are deleted, so a stale output is never served.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medistill.errors import TrainingError

_DTYPES = {"float32": np.float32, "float16": np.float16}


def fingerprint(teacher: nn.Module, sample_paths: Iterable[str | Path], **settings: Any) -> str:
    """A hex digest of the teacher's weights, the sample files and any other ``settings``
    (view, normalisation, image size: anything JSON-serialisable via ``repr``)."""
    h = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for path in sample_paths:
        p = Path(path)
        stat = p.stat()
        h.update(f"{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:24]


class TeacherCache:
    """Per-sample teacher outputs (named tensors of fixed shape), filled on first use.

    Args:
        size: number of samples (indices ``0 .. size - 1``, the dataset's ``index``).
        key: the :func:`fingerprint` of teacher + data + view.
        directory: None keeps everything in memory; a folder keeps memory-mapped ``.npy``
            files in ``directory/key/`` that later runs (and resumed runs) reuse.
        dtype: ``"float32"`` (exact) or ``"float16"`` (half the memory, outputs rounded).
    """

    def __init__(self, size: int, key: str, directory: str | Path | None = None,
                 dtype: str = "float32") -> None:
        if dtype not in _DTYPES:
            raise TrainingError(f"teacher cache dtype must be one of {sorted(_DTYPES)}")
        self.size, self.key, self.dtype = size, key, _DTYPES[dtype]
        if directory is not None:
            from medistill.engine.distributed import is_distributed, rank

            if is_distributed():  # each process caches the samples it sees, in its own folder
                directory = Path(directory) / f"rank{rank()}"
        self.dir = Path(directory) / key if directory is not None else None
        self.arrays: dict[str, np.ndarray] = {}
        self.filled = np.zeros(size, dtype=bool)
        self.hits = self.misses = 0
        if self.dir is not None:
            self._open_disk(Path(directory))

    # -- disk -------------------------------------------------------------------------------
    def _open_disk(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.iterdir():  # another teacher/data/view: never served again
            if stale.is_dir() and stale.name != self.key:
                shutil.rmtree(stale, ignore_errors=True)
        meta = self.dir / "meta.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            if info.get("size") == self.size:
                self.arrays = {name: np.load(self.dir / f"{name}.npy", mmap_mode="r+")
                               for name in info["names"]}
                self.filled = np.load(self.dir / "filled.npy", mmap_mode="r+")
                return
        shutil.rmtree(self.dir, ignore_errors=True)

    def _allocate(self, outputs: Mapping[str, torch.Tensor]) -> None:
        shapes = {name: (self.size, *t.shape[1:]) for name, t in outputs.items()}
        if self.dir is None:
            self.arrays = {name: np.zeros(s, dtype=self.dtype) for name, s in shapes.items()}
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        open_memmap = np.lib.format.open_memmap
        self.arrays = {name: open_memmap(self.dir / f"{name}.npy", mode="w+", dtype=self.dtype,
                                         shape=s) for name, s in shapes.items()}
        self.filled = open_memmap(self.dir / "filled.npy", mode="w+", dtype=bool,
                                  shape=(self.size,))
        (self.dir / "meta.json").write_text(json.dumps({"size": self.size,
                                                        "names": sorted(shapes)}))

    # -- use ----------------------------------------------------------------------------------
    def get_or_compute(self, indices: torch.Tensor,
                       compute: Callable[[], Mapping[str, torch.Tensor]]) -> dict[str, Any]:
        """The outputs for the samples ``indices``: read if every one is cached, otherwise
        ``compute()`` (the teacher on the whole batch) and store them."""
        idx = indices.detach().cpu().numpy().astype(np.int64)
        if idx.min() < 0 or idx.max() >= self.size:
            raise TrainingError(f"teacher cache of {self.size} samples got index {idx.max()}")
        if self.arrays and self.filled[idx].all():
            self.hits += len(idx)
            device = indices.device
            return {name: torch.from_numpy(np.asarray(a[idx], dtype=np.float32)).to(device)
                    for name, a in self.arrays.items()}
        self.misses += len(idx)
        outputs = dict(compute())
        if not self.arrays:
            self._allocate(outputs)
        for name, tensor in outputs.items():
            self.arrays[name][idx] = tensor.detach().float().cpu().numpy().astype(self.dtype)
        self.filled[idx] = True
        if self.dtype is np.float16:  # serve what later epochs will read
            outputs = {n: t.half().to(t.dtype) for n, t in outputs.items()}
        return outputs

    def flush(self) -> None:
        for a in [*self.arrays.values(), self.filled]:
            if isinstance(a, np.memmap):
                a.flush()
