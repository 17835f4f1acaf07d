"""The one trainer every method uses.

Adam or SGD, cosine or step schedule, gradient accumulation, a checkpoint written atomically
every epoch, exact resume, seeds, progress bars, one readable line per epoch (also in
``run.log``), CSV + TensorBoard (+ MLflow) logs and best-on-validation selection. Methods plug
in through :class:`medistill.engine.method.Method`.

Exact resume: all randomness of an epoch is derived from ``(seed, epoch)`` (shuffling) and
``(seed, epoch, index)`` (augmentation, see :class:`~medistill.data.PairedViewDataset`), and the
model/optimizer/scheduler states are restored, so an interrupted and resumed run on CPU ends
with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medistill.config import TrainConfig
from medistill.engine import distributed as dist_
from medistill.engine.checkpoint import load_checkpoint, save_checkpoint, save_model
from medistill.engine.diagnostics import StepMonitor
from medistill.engine.logging import (
    LOG_FILE,
    RunLogger,
    RunProgress,
    duration,
    epoch_line,
    flat_hparams,
)
from medistill.engine.method import Method
from medistill.errors import CheckpointError, TrainingError

TRAINER_FORMAT = "medistill-trainer/1"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor of a (nested) batch to ``device``; images (4-D floating tensors)
    optionally to the channels-last memory format."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.dim() == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device, channels_last) for v in batch)
    return batch


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@torch.no_grad()
def predict_loader(
    predict: Callable[[dict], tuple[torch.Tensor, torch.Tensor]],
    loader: DataLoader,
    device: torch.device,
    progress: bool = False,
    desc: str = "eval",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``predict`` over a loader; returns (logits (N, K), labels (N,)) as numpy."""
    logits, labels = [], []
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        out, y = predict(to_device(batch, device))
        logits.append(out.float().cpu())
        labels.append(y.cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


class Trainer:
    """Fits a :class:`Method` on a training set, selecting the best epoch on a validation set.

    Files written to ``out_dir``: ``last.pt`` (full training state, every epoch), ``best.pt``
    (the deployable model of the best validation epoch, with ``model_meta``), ``log.csv``,
    ``steps.csv`` (every loss term per step, gradient shares every ``diag_every`` steps: see
    :mod:`medistill.engine.diagnostics`), ``tb/`` (TensorBoard) and ``train_done.json`` once
    training has finished.

    ``progress``: the run's :class:`~medistill.engine.logging.RunProgress` (stage counter,
    ETAs, log file), shared by a recipe's stages; by default one of its own that appends to
    ``<out_dir>/run.log``. The epoch lines are printed (main rank) whatever
    ``config.progress`` says (that switches the progress bars). ``hparams``: extra flat
    hyperparameters for TensorBoard / MLflow (the training settings are always logged).
    """

    def __init__(
        self,
        method: Method,
        train_set: Dataset,
        val_set: Dataset | None,
        config: TrainConfig,
        out_dir: str | Path,
        model_meta: dict[str, Any] | None = None,
        num_classes: int | None = None,
        desc: str = "train",
        progress: RunProgress | None = None,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.train_set = train_set
        self.val_set = val_set
        self.cfg = config
        self.out_dir = Path(out_dir)
        self.model_meta = model_meta or {}
        self.num_classes = num_classes
        self.desc = desc
        self.device = resolve_device(dist_.device_for_rank(config.device))
        self.monitor: StepMonitor | None = None
        self.progress = progress
        self.hparams = {"run": desc, **(hparams or {}),
                        **flat_hparams(config.model_dump(), "train.")}

    # -- construction -----------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.method.parameters() if p.requires_grad]
        if not params:
            raise TrainingError(f"{self.desc}: nothing to train (all parameters are frozen)")
        c = self.cfg
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True
        )

    def _scheduler(self, opt: torch.optim.Optimizer):
        c = self.cfg
        if c.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, c.epochs))
        if c.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    def _loader(self, dataset: Dataset, shuffle: bool, epoch: int = 0,
                shard: bool = False) -> DataLoader:
        """Batches of ``dataset``; ``shard``: this process's share of every global batch.

        A dataset with ``__getitems__`` and a ``collate_fn`` (e.g.
        :class:`~medistill.data.tensor_views.TensorViewDataset`) makes each batch in one call,
        without per-sample items or collation."""
        world = dist_.world_size() if shard else 1
        if self.cfg.batch_size % world:
            raise TrainingError(f"{self.desc}: batch_size {self.cfg.batch_size} (the global "
                                f"batch) does not divide among {world} processes")
        sampler = dist_.EpochSampler(len(dataset), self.cfg.seed * 100_003 + epoch, shuffle,
                                     dist_.rank() if shard else 0, world)
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size // world,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.cfg.pin_memory and self.device.type == "cuda",
            drop_last=False,
            # a dataset that builds whole batches (``__getitems__``) passes them through
            collate_fn=getattr(dataset, "collate_fn", None),
        )

    # -- evaluation -------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation scores, computed by rank 0 and shared with every rank."""
        if self.val_set is None:
            return {}
        scores = self._validate() if dist_.is_main() else None
        return dist_.broadcast_object(scores)

    def _validate(self) -> dict[str, float]:
        self.method.eval()
        loader = self._loader(self.val_set, shuffle=False)
        scores = self.method.validation_metrics(loader, self.device, self.num_classes)
        return {f"val_{name}": float(v) for name, v in scores.items()}

    def _selection_score(self, row: dict[str, float], select: str) -> float:
        """The epoch's score for best-model selection (higher is better).

        Without a validation set the training loss selects (lower is better); with one, the
        method must produce ``select_metric``: a missing name is an error, never a silent
        fall-back to the training loss."""
        if self.val_set is None:
            return -row["train_loss"]
        if select not in row:
            produced = ", ".join(k[4:] for k in row if k.startswith("val_")) or "nothing"
            raise TrainingError(
                f"{self.desc}: train.select_metric {select[4:]!r} is not a validation metric "
                f"of this method (it produces: {produced})"
            )
        return row[select]

    # -- training ---------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (continuing from ``last.pt`` if ``resume``)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(self.cfg.seed)
        self.method.to(self.device)
        if dist_.is_distributed():  # global-batch statistics (before the optimizer sees them)
            dist_.GlobalBatchNorm.convert(self.method)
        if self.cfg.channels_last:
            self.method.to(memory_format=torch.channels_last)
        opt = self._optimizer()
        sched = self._scheduler(opt)
        state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "history": []}
        last = self.out_dir / "last.pt"
        if resume and last.is_file():
            state = self._restore(last, opt, sched)
        self.ddp = None
        if dist_.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            # parameters a method leaves unused (e.g. an encoder's classification head during
            # self-supervised training) must not stall the gradient reduction
            self.ddp = DistributedDataParallel(self.method, find_unused_parameters=True)
        main = dist_.is_main()
        tracker = self.progress or RunProgress([(self.desc, self.cfg.epochs)],
                                               self.out_dir / LOG_FILE)
        label = tracker.label(self.desc) if self.progress else self.desc
        started = time.perf_counter()
        logger = None
        if main:
            tracker.begin(self.desc, self.cfg.epochs, state["epoch"])
            tracker.say(f"[{label}] {self._start_line(state['epoch'])}")
            logger = RunLogger(self.out_dir, tensorboard=self.cfg.tensorboard,
                               mlflow=self.cfg.mlflow, name=self.desc, hparams=self.hparams,
                               experiment=self.cfg.mlflow_experiment, say=tracker.say)
        self.monitor = StepMonitor(self.method, self.out_dir, self.cfg.diag_every, state["epoch"],
                                   gradients=self.ddp is None) if main else None
        select = f"val_{self.cfg.select_metric}"
        finished = False
        try:
            for epoch in range(state["epoch"] + 1, self.cfg.epochs + 1):
                epoch_start = time.perf_counter()
                row = {"epoch": epoch, **self._train_epoch(epoch, opt, sched)}
                row.update(self.validate())
                state["history"].append(row)
                score = self._selection_score(row, select)
                if score > state["best"] or epoch == 1:
                    state.update(best=score, best_epoch=epoch)
                    if main:
                        save_model(self.method.deployable(), self.model_meta,
                                   self.out_dir / "best.pt")
                state["epoch"] = epoch
                if main:
                    self.monitor.write(logger)
                    self._save(last, opt, sched, state)
                    logger.log_epoch(state["history"])
                    self._log_samples(logger, epoch)
                dist_.barrier()  # every rank sees the files of this epoch
                if main:
                    seconds = time.perf_counter() - epoch_start
                    tracker.epoch_done(self.desc, epoch, seconds)
                    tracker.say(epoch_line(label, epoch, self.cfg.epochs, row, select,
                                           state["best"], state["best_epoch"], seconds,
                                           tracker.eta(self.desc)))
            if main:
                logger.log_best(state["best"], state["best_epoch"])
                best = (f"best val {self.cfg.select_metric} {state['best']:.4g}"
                        if self.val_set is not None else f"lowest loss {-state['best']:.4g}")
                tracker.say(f"[{label}] done in {duration(time.perf_counter() - started)}: "
                            f"{best} at epoch {state['best_epoch']}")
            finished = True
        finally:
            if logger is not None:
                self.monitor.write()  # also the steps of an epoch cut short (kept for a look)
                logger.close(finished)
        return {"best_epoch": state["best_epoch"], "best_score": state["best"],
                "select_metric": select, "history": state["history"]}

    @torch.no_grad()
    def _log_samples(self, logger: RunLogger, epoch: int) -> None:
        """TensorBoard pictures of the first ``tb_samples`` validation items (always the same
        ones), drawn by the method (:meth:`~medistill.methods.base.Method.sample_overlays`:
        the trainer knows no task), at epoch 1, every ``tb_samples_every`` epochs and the last.
        An eval-mode forward of a few items: no random stream or weight is touched."""
        c = self.cfg
        if (not c.tb_samples or self.val_set is None or not logger.images
                or not (epoch == 1 or epoch % c.tb_samples_every == 0 or epoch == c.epochs)):
            return
        # at most one validation batch: items that validation batches together collate here
        n = min(c.tb_samples, c.batch_size, len(self.val_set))  # type: ignore[arg-type]
        loader = DataLoader(self.val_set, batch_size=n, sampler=list(range(n)),
                            collate_fn=getattr(self.val_set, "collate_fn", None))
        self.method.eval()
        drawn = self.method.sample_overlays(to_device(next(iter(loader)), self.device))
        if drawn is not None:
            logger.log_samples("samples/val", *drawn, epoch)

    def _start_line(self, done: int) -> str:
        c = self.cfg
        try:
            n = len(self.train_set)  # type: ignore[arg-type]
            steps = f"{n} training items, batch {c.batch_size} ({math.ceil(n / c.batch_size)} " \
                    "steps/epoch)"
        except TypeError:
            steps = f"batch {c.batch_size}"
        resumed = f"; resumed after epoch {done}" if done else ""
        epochs = f"{c.epochs} epoch" + ("s" if c.epochs != 1 else "")
        return (f"{epochs}, {steps}, {c.optimizer} lr {c.lr:g} {c.schedule}, "
                f"{self.device.type}{resumed}")

    def _train_epoch(self, epoch: int, opt, sched) -> dict[str, float]:
        self.method.train()
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        loader = self._loader(self.train_set, shuffle=True, epoch=epoch, shard=True)
        step_fn = self.ddp if self.ddp is not None else self.method.training_step
        accum = self.cfg.grad_accum
        amp = self.cfg.amp
        autocast = torch.autocast(self.device.type, dtype=AMP_DTYPES.get(amp),
                                  enabled=amp != "none")
        scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        sums: dict[str, float] = {}
        n_batches = 0
        start = time.perf_counter()
        n_images = 0
        opt.zero_grad(set_to_none=True)
        bar = tqdm(loader, desc=f"{self.desc} {epoch}/{self.cfg.epochs}",
                   disable=None if self.cfg.progress else True,  # None: off when not a TTY
                   leave=False, mininterval=2.0)
        for step, batch in enumerate(bar, start=1):
            batch = to_device(batch, self.device, self.cfg.channels_last)
            with autocast:
                out = step_fn(batch)
            loss = out["loss"]
            finite = bool(torch.isfinite(loss))
            exploded = finite and self._exploded(float(loss.detach()))
            if dist_.is_distributed():  # every rank stops together
                flags = dist_.all_reduce_sum([0.0 if finite else 1.0, float(exploded)])
                finite, exploded = flags[0] == 0, flags[1] > 0
            if not finite or exploded:
                parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items())
                what = "is not finite" if not finite else (
                    f"exploded (over {self.cfg.max_loss_factor:g} x the first step's "
                    f"{self._loss_ref:.4g}; train.max_loss_factor)")
                raise TrainingError(
                    f"{self.desc}: loss {what} at epoch {epoch}, step {step} ({parts}); "
                    "try a lower learning rate"
                )
            if self.monitor is not None:
                self.monitor.step(epoch, (epoch - 1) * len(loader) + step, out, scaler)
            scaler.scale(loss / accum).backward()
            if step % accum == 0 or step == len(loader):
                if self.cfg.max_grad_norm:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in self.method.parameters() if p.requires_grad],
                        self.cfg.max_grad_norm,
                    )
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            n_batches += 1
            n_images += len(batch["index"])
            bar.set_postfix(loss=f"{sums['loss'] / n_batches:.4f}")
        elapsed = time.perf_counter() - start
        keys = sorted(sums)
        totals = dist_.all_reduce_sum([sums[k] for k in keys] + [n_batches, n_images])
        sums = dict(zip(keys, totals[:-2], strict=True))
        n_batches, n_images = int(totals[-2]), int(totals[-1])
        row = {f"train_{k}": v / max(1, n_batches) for k, v in sums.items()}
        row["lr"] = opt.param_groups[0]["lr"]  # the rate this epoch trained with
        sched.step()
        row["images_per_s"] = n_images / max(elapsed, 1e-9)
        return row

    def _exploded(self, loss: float) -> bool:
        """Whether ``loss`` is over ``max_loss_factor`` x the first step's loss of this
        session (at least 1, so a near-zero first loss does not make every later one look
        huge): a diverging run (e.g. lr 1e6, loss 1e14) stops instead of finishing with
        reports that look normal."""
        factor = self.cfg.max_loss_factor
        if not factor:
            return False
        if getattr(self, "_loss_ref", None) is None:
            self._loss_ref = max(abs(loss), 1.0)
            return False
        return abs(loss) > factor * self._loss_ref

    # -- checkpointing ----------------------------------------------------------------------
    def _save(self, path: Path, opt, sched, state: dict) -> None:
        save_checkpoint(
            {
                "format": TRAINER_FORMAT,
                "method": self.method.trainable_state(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "state": state,
                "rng": rng_state(),
            },
            path,
        )

    def _restore(self, path: Path, opt, sched) -> dict:
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != TRAINER_FORMAT:
            raise CheckpointError(f"{path} is not a medistill training checkpoint")
        self.method.load_trainable_state(ckpt["method"], str(path))
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        return ckpt["state"]


def rng_state() -> dict[str, Any]:
    """The torch, numpy and python RNG states as tensors and plain data (weights-only
    loadable: numpy's key array becomes an int64 tensor, python's state tuple lists)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": list(internal),
                   "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
