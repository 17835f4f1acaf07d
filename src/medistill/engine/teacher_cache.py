"""Frozen-teacher outputs computed once and reused every epoch.

When the teacher is frozen and its input view is deterministic (no augmentation), its logits and
feature maps are the same every epoch: :class:`TeacherCache` keeps them per sample index, in
memory or on disk (memory-mapped ``.npy`` files), and a distillation method asks it instead of
running the teacher again (``get_or_compute``).

The cache is tied to a *fingerprint* of everything that determines the outputs: the teacher's
weights, the sample files (path, size, modification time), the view and the normalisation, and
the code that computes them: the torch and medistill versions and the source files of the
teacher's classes and of medistill's views and augmentation (:func:`fingerprint`).
A disk cache lives in ``<directory>/<fingerprint>/``; a different fingerprint (another teacher
checkpoint, changed data, view or code) opens a new, empty cache and the
stale ones beside it are deleted, so a stale output is never served.

Under DDP a disk cache is shared by the processes of a node (:func:`shared_per_node`): local
rank 0 fills it for every sample while the others wait at a barrier, then they open the same
files and only read. On several nodes each node has its own ``node<i>/`` folder (so two nodes
never write the same files of the shared output folder). A memory cache is per process.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from medistill.data.tensor_views import TensorViewDataset, decode_views
from medistill.data.transforms import augment_batch, stack_params
from medistill.errors import TrainingError

_DTYPES = {"float32": np.float32, "float16": np.float16}
_T = TypeVar("_T")


def shared_per_node(build: Callable[[], _T], fill: Callable[[_T], Any]) -> _T:
    """``build()`` a disk cache and ``fill`` it, once per node: under DDP local rank 0 builds
    and fills while every other rank waits at a barrier, then builds its own handle on the
    filled files (reading only). Single process: build and fill."""
    from medistill.engine.distributed import barrier, is_distributed, local_rank

    if not is_distributed():
        obj = build()
        fill(obj)
        return obj
    if local_rank() == 0:
        obj = build()
        fill(obj)
    barrier()  # the node's cache is complete on disk
    if local_rank() != 0:
        obj = build()
    return obj


@torch.no_grad()
def fill_cache(cache: TeacherCache, dataset: Any, view: str,
               forward: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
               batch_size: int, device: torch.device | str = "cpu") -> None:
    """Store ``forward`` (the frozen teacher) on ``view`` of every sample of ``dataset`` (a
    dataset without augmentation: the cached outputs must be those of every epoch)."""
    from torch.utils.data import DataLoader

    from medistill.engine.trainer import to_device

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=getattr(dataset, "collate_fn", None))
    for batch in loader:
        x = to_device(batch["views"][view], torch.device(device))
        cache.get_or_compute(batch["index"], lambda x=x: forward(x))
    cache.flush()


#: medistill modules whose code shapes what a teacher sees (their source enters the fingerprint)
_VIEW_CODE = ("medistill.data.views", "medistill.data.transforms", "medistill.data.tensor_views",
              "medistill.data.io")


def code_digest(teacher: nn.Module) -> str:
    """A digest of the code behind a teacher's outputs: torch and medistill versions, the source
    files of every module class inside ``teacher`` and of medistill's view/augmentation modules.
    An edited model or augmentation file changes it, so a disk cache is never served stale
    across a code change (a change in a compiled extension is covered by its version only)."""
    import medistill

    modules = {type(m).__module__ for m in teacher.modules()} | set(_VIEW_CODE)
    files = {getattr(sys.modules.get(name) or importlib.import_module(name), "__file__", None)
             or name for name in modules}
    h = hashlib.sha256(f"{torch.__version__}|{medistill.__version__}".encode())
    for f in sorted(files):
        h.update(f.encode())
        try:
            h.update(Path(f).read_bytes())
        except OSError:  # a module without a readable source: its name stands for it
            pass
    return h.hexdigest()


def fingerprint(teacher: nn.Module, sample_paths: Iterable[str | Path], **settings: Any) -> str:
    """A hex digest of the teacher's weights, the sample files, the code behind the outputs
    (:func:`code_digest`) and any other ``settings`` (view, normalisation, image size: anything
    JSON-serialisable via ``repr``)."""
    h = hashlib.sha256(code_digest(teacher).encode())
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
            from medistill.engine.distributed import node_index

            node = node_index()  # several nodes: one cache per node (see shared_per_node)
            if node is not None:
                directory = Path(directory) / f"node{node}"
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

    def allocate(self, outputs: Mapping[str, torch.Tensor]) -> None:
        """Make the (empty) arrays for outputs like ``outputs`` (one or more example rows),
        storing nothing: a disk cache filled by several processes exists before any of them
        writes a row (see :func:`replay_dataset`)."""
        if not self.arrays:
            self._allocate(outputs)

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
        idx = self._rows(indices)
        if self.arrays and self.filled[idx].all():
            self.hits += len(idx)
            return self.read(idx, indices.device)
        self.misses += len(idx)
        return self.put(idx, compute())

    def _rows(self, indices: torch.Tensor | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices.detach().cpu() if torch.is_tensor(indices) else indices,
                         dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.size):
            raise TrainingError(f"teacher cache of {self.size} samples got index {idx.max()}")
        return idx

    def missing(self, indices: torch.Tensor | np.ndarray) -> np.ndarray:
        """A bool mask: which of ``indices`` are not stored yet."""
        idx = self._rows(indices)
        return ~self.filled[idx] if self.arrays else np.ones(len(idx), dtype=bool)

    def read(self, indices: torch.Tensor | np.ndarray, device: torch.device | str = "cpu"
             ) -> dict[str, torch.Tensor]:
        """The stored rows ``indices`` (float32; rows not stored yet are zeros or stale)."""
        idx = torch.from_numpy(self._rows(indices))
        return {name: _gather_float(a, idx).to(device) for name, a in self.arrays.items()}

    def put(self, indices: torch.Tensor | np.ndarray, outputs: Mapping[str, torch.Tensor]
            ) -> dict[str, torch.Tensor]:
        """Store ``outputs`` (one row per index) and return them as later reads serve them
        (rounded through float16 with ``dtype="float16"``)."""
        idx = self._rows(indices)
        outputs = dict(outputs)
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


def _gather_float(array: np.ndarray, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of a stored (memory or memory-mapped) array as a new float32 tensor: one
    torch gather on the array's buffer, then the conversion (numpy's fancy indexing of a
    memory map plus ``astype`` is ~20x slower: 0.6 vs 0.03 ms for 32 rows of 256x4x4 fp16)."""
    return torch.from_numpy(array).index_select(0, idx).float()


#: rows per teacher call of a lazy replay fill (see :meth:`TeacherReplay.store`)
LAZY_CHUNK = 4

#: seeds the replay's random streams apart from the per-sample augmentation's ``[seed, epoch, i]``
_REPLAY_STREAM = 0xF4D


def dihedral_elements(flip: bool, rotate90: bool) -> list[tuple[bool, bool, int]]:
    """The distinct (hflip, vflip, rot) transforms :class:`~medistill.data.Augment` can draw:
    with flips and rotations the 8 elements of the dihedral group (a vertical flip is a
    horizontal flip and a half turn), each as likely as under the per-sample draw."""
    if flip and rotate90:
        return [(h, False, r) for h in (False, True) for r in range(4)]
    if flip:
        return [(h, v, 0) for h in (False, True) for v in (False, True)]
    if rotate90:
        return [(False, False, r) for r in range(4)]
    return [(False, False, 0)]


def replay_params(augment: Any, size: int, draws: int, seed: int,
                  stack: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] = stack_params,
                  sample: Callable[[int, np.random.Generator], dict[str, Any]] | None = None
                  ) -> dict[str, torch.Tensor]:
    """The ``draws`` stored augmentations of every sample, (size, draws) per key.

    Sample ``i`` gets the dihedral elements in a random order of its own (so K = 8 stores all 8
    exactly once, K = 16 each twice, K < 8 a random subset) and the other parameters (colour
    jitter; a segmentation augmentation's crop and angle too) freshly sampled per draw with the
    augmentation's own distribution; all from ``(seed, i)`` only. ``stack`` turns the
    per-draw dicts into tensors (:func:`~medistill.data.transforms.stack_params`, or
    :func:`~medistill.data.seg_replay.stack_seg_params` for :class:`SegAugment`). ``sample``
    (``(i, rng) -> params``) draws sample ``i``'s parameters where they depend on the sample
    (an instance crop's offsets depend on its image size); default
    ``augment.sample_params(rng)``."""
    elements = dihedral_elements(augment.flip, augment.rotate90)
    rows = []
    for i in range(size):
        rng = np.random.default_rng([_REPLAY_STREAM, seed, i])
        order = rng.permutation(len(elements))
        for k in range(draws):
            p = sample(i, rng) if sample is not None else augment.sample_params(rng)
            p["hflip"], p["vflip"], p["rot"] = elements[order[k % len(elements)]]
            rows.append(p)
    return {k: v.view(size, draws) for k, v in stack(rows).items()}


class TeacherReplay:
    """Teacher outputs for K stored augmentation draws per sample, replayed every epoch (FKD,
    "Fast Knowledge Distillation", Shen & Xing, ECCV 2022).

    Each epoch picks one draw per sample (:meth:`draws`), the student's view gets exactly that
    draw's parameters (:meth:`params_at`) and the loss uses the teacher's outputs for that draw,
    stored in a :class:`TeacherCache` of ``size x draws`` rows (memory or memory-mapped disk,
    fingerprinted by ``key``). They are stored either

    * upfront: :meth:`fill` runs the frozen teacher on each of the K augmented teacher views of
      every sample before training (K teacher passes over the data), or
    * lazily: :meth:`serve` returns the stored rows of a batch and marks the (sample, draw)
      pairs not stored yet; the training step hands the teacher and its view of those rows
      to :meth:`store` (``teacher_store`` of the batch), which runs it and keeps them. A run
      of E epochs then does at most min(E, K) teacher passes (in expectation
      ``K (1 - (1 - 1/K)^E)``, fewer than online KD's E) and is pure replay once every pair
      was drawn; the draws depend on (seed, epoch) only, so a second run on the same replay
      (the next student factor) draws the same pairs and runs no teacher.

    With ``dtype="float32"`` a replayed step equals the online step on the same augmentation
    bit for bit, in both modes (the lazy one computes exactly the online step's teacher
    outputs of the missing rows). ``stack`` and ``sample``: see
    :func:`replay_params`.
    """

    def __init__(self, augment: Any, size: int, draws: int, seed: int, key: str,
                 directory: str | Path | None = None, dtype: str = "float16",
                 stack: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] = stack_params,
                 sample: Callable[[int, np.random.Generator], dict[str, Any]] | None = None
                 ) -> None:
        if draws < 1:
            raise TrainingError(f"teacher replay needs at least 1 draw per sample, got {draws}")
        self.size, self.k, self.seed = size, draws, seed
        self.cache = TeacherCache(size * draws, key, directory, dtype)
        self.params = replay_params(augment, size, draws, seed, stack, sample)
        self.teacher_rows = 0  # rows the lazy fill ran the teacher on (padding included)
        self._epoch: tuple[int, torch.Tensor] | None = None

    @property
    def filled(self) -> bool:
        return bool(self.cache.arrays) and bool(np.all(self.cache.filled))

    def draws(self, epoch: int) -> torch.Tensor:
        """The stored draw (0 .. K-1) each sample replays in ``epoch``, from (seed, epoch)."""
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([_REPLAY_STREAM, self.seed, epoch, 1])
            self._epoch = epoch, torch.from_numpy(rng.integers(0, self.k, self.size))
        return self._epoch[1]

    def params_at(self, indices: torch.Tensor, draws: torch.Tensor | int
                  ) -> dict[str, torch.Tensor]:
        """The augmentation parameters of draw ``draws`` of samples ``indices``, (B,) per key."""
        d = torch.as_tensor(draws, dtype=torch.int64).expand(len(indices))
        return {name: v[indices, d] for name, v in self.params.items()}

    def outputs(self, indices: torch.Tensor, draws: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stored teacher outputs (float32) of those draws."""
        def missing() -> dict[str, torch.Tensor]:
            raise TrainingError("teacher replay: outputs requested before fill() stored them")

        return self.cache.get_or_compute(indices * self.k + draws, missing)

    def serve(self, indices: torch.Tensor, draws: torch.Tensor) -> dict[str, Any]:
        """The batch entries for samples ``indices`` replaying ``draws``: ``teacher_outputs``
        (float32, the stored rows), and where some pairs are not stored yet
        ``teacher_missing`` ((B,) bool) and ``teacher_store`` (:meth:`store` for these rows);
        ``teacher_outputs`` is absent while nothing at all is stored."""
        keys = (indices * self.k + draws).numpy()
        missing = self.cache.missing(keys)
        out: dict[str, Any] = {}
        if self.cache.arrays:
            out["teacher_outputs"] = self.cache.read(keys)
        if missing.any():
            out["teacher_missing"] = torch.from_numpy(missing)
            out["teacher_store"] = partial(self.store, keys)
        return out

    def store(self, keys: np.ndarray, missing: torch.Tensor,
              teacher: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], x: torch.Tensor,
              stored: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Run ``teacher`` on ``x`` (the teacher view of the rows ``missing`` of a batch whose
        cache rows are ``keys``), keep its outputs and return the whole batch's: ``stored``
        with the missing rows replaced as later epochs will read them (float16-rounded with
        ``dtype="float16"``); on ``missing``'s device. Called inside the training step, so the
        teacher runs exactly as in the online step (device, autocast).

        The teacher runs on chunks of :data:`LAZY_CHUNK` rows, the last one padded by
        repeating its last row: (1) on the CPU a batch of one takes another convolution path
        whose outputs differ in the last bits, while from 2 rows on each row's outputs do not
        depend on the batch (as the upfront fill, in batches of its own, relies on too); (2) a
        teacher batch of varying size (the missing count changes every step) fragments the
        allocator's heap: +45-60 MiB peak RSS over online KD measured, none with one shape."""
        n = len(x)
        pad = -n % LAZY_CHUNK
        self.teacher_rows += n + pad
        if pad:
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
        parts = [teacher(chunk) for chunk in x.split(LAZY_CHUNK)]
        computed = {name: torch.cat([part[name] for part in parts])[:n] for name in parts[0]}
        served = self.cache.put(keys[missing.cpu().numpy()], computed)
        if stored is None:  # nothing was stored: every row was missing
            return served
        return {name: stored[name].index_put((missing,), served[name]) for name in stored}

    def flush(self) -> None:
        self.cache.flush()

    @torch.no_grad()
    def fill(self, teacher: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
             source: Any, view: str, batch_size: int = 64) -> int:
        """Store the teacher's outputs for every draw of every sample not stored yet (a disk
        cache of an interrupted fill is completed); returns how many images went through it.

        ``source`` is the per-sample dataset (:class:`~medistill.data.PairedViewDataset`):
        its ``view`` is decoded ``batch_size`` images at a time (never all at once), augmented
        with each draw's parameters and normalised exactly as in training
        (:func:`~medistill.data.transforms.augment_batch`)."""
        def views(idx: torch.Tensor) -> Callable[[int], torch.Tensor]:
            images = decode_views(source, [view], idx.tolist())[view]
            return lambda k: augment_batch(images, self.params_at(idx, k), source.mean,
                                           source.std)

        return self.fill_from(teacher, views, batch_size)

    @torch.no_grad()
    def fill_from(self, teacher: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
                  views: Callable[[torch.Tensor], Callable[[int], torch.Tensor]],
                  batch_size: int = 64) -> int:
        """:meth:`fill` with the teacher's inputs made by ``views``: for a batch of sample
        indices it returns ``draw k -> the (B, C, H, W) teacher input of draw k`` (each
        sample's draw-``k`` parameters, :meth:`params_at`), built as in training."""
        done = np.asarray(self.cache.filled).reshape(self.size, self.k)
        todo = np.flatnonzero(~done.all(1))
        count = 0
        for start in range(0, len(todo), batch_size):
            idx = torch.from_numpy(todo[start:start + batch_size])
            view_of = views(idx)
            for k in range(self.k):
                x = view_of(k)
                self.cache.get_or_compute(idx * self.k + k, lambda x=x: teacher(x))
                count += len(idx)
        self.cache.flush()
        return count


def replay_dataset(teacher: nn.Module, forward: Callable[[torch.Tensor], Mapping[str, Any]],
                   source: Any, view_name: str, draws: int, directory: str | Path | None = None,
                   dtype: str = "float16", batch_size: int = 64,
                   previous: TeacherReplay | None = None, fill: str = "lazy",
                   **settings: Any) -> Any:
    """The training set of an augmented KD run with replayed teacher outputs: a
    :class:`TeacherReplay` for ``source`` (the per-sample dataset: its samples, augmentation and
    seed) and the :class:`~medistill.data.tensor_views.TensorViewDataset` serving it.

    ``fill="lazy"``: nothing is computed here; the dataset keeps the teacher's view
    ``view_name`` and each batch carries it for the (sample, draw) pairs not stored yet, which
    the training step runs the teacher on and stores (:meth:`TeacherReplay.serve`); the
    teacher's view is dropped once every pair is stored. ``fill="upfront"``: ``forward`` (the
    teacher on ``view_name``) fills every pair now. Under DDP a disk replay is one per node
    (:func:`shared_per_node`): filled upfront by the node's local rank 0, or lazily by all its
    ranks, each storing the pairs of its own shard into the one memory-mapped store, which
    local rank 0 creates empty first (shapes from one teacher forward; creating it in every
    rank would race) -- a pair drawn by another rank in an earlier epoch is replayed, not
    recomputed. A memory replay is filled per process.

    ``settings`` (view, normalisation, image size) enter the :func:`fingerprint` with the
    draws, augmentation, seed and dtype; ``previous`` is reused when its fingerprint is the
    same (e.g. the next student factor of the same teacher and images), also half-filled."""
    from medistill.engine.distributed import is_distributed

    if source.augment is None:
        raise TrainingError("teacher replay needs an augmented training set")
    if fill not in ("lazy", "upfront"):
        raise TrainingError(f"teacher replay fill must be 'lazy' or 'upfront', got {fill!r}")
    key = fingerprint(teacher, [s.path for s in source.samples], draws=draws,
                      augment=source.augment, seed=source.seed, dtype=dtype, **settings)
    lazy = fill == "lazy"

    def build() -> TeacherReplay:
        return TeacherReplay(source.augment, len(source), draws, source.seed, key, directory,
                             dtype)

    def fill_all(rep: TeacherReplay) -> None:
        rep.fill(forward, source, view_name, batch_size)

    def create(rep: TeacherReplay) -> None:
        """The empty shared store, its shapes from one teacher forward (sample 0, draw 0)."""
        zero = torch.zeros(1, dtype=torch.int64)
        x = augment_batch(decode_views(source, [view_name], [0])[view_name],
                          rep.params_at(zero, 0), source.mean, source.std)
        rep.cache.allocate(forward(x))
        rep.flush()

    if previous is not None and previous.cache.key == key:
        replay = previous
        if not lazy:
            fill_all(replay)  # nothing to do unless it was begun lazily
    elif directory is not None and is_distributed():  # one store per node
        replay = shared_per_node(build, create if lazy else fill_all)
    else:
        replay = build()
        if not lazy:
            fill_all(replay)
    return TensorViewDataset(source, replay, teacher_view=view_name,
                             keep_teacher_view=not replay.filled)
