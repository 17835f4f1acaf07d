"""What a run tells while it trains: readable epoch lines with a stage counter and ETAs, a log
file, ``log.csv``, TensorBoard and (optionally) MLflow.

- :class:`RunProgress`: one per run (a recipe's stages share it). Numbers the stages
  (``[stage 3/5 seed0/x4/kd]``), estimates the time left in the stage and in the whole run,
  prints every line (main rank only) and appends it to ``run.log``, and draws an overall
  progress bar over all planned epochs (on a terminal, unless progress bars are off).
- :func:`epoch_line`: one line per epoch instead of a raw dict, e.g. ``[stage 3/5 seed0/x4/kd]
  epoch 4/30  loss 0.412 (soft 0.30, pixel 0.11)  val macro_f1 0.731 acc 0.745  best
  0.745@3  12.3 s  ETA 5m10s, run 14m``.
- :class:`RunLogger`: per training stage; ``log.csv`` (one row per epoch), TensorBoard under
  ``tb/`` with grouped tags (:func:`tb_tag`; per-step loss terms and gradient shares from
  :mod:`medistill.engine.diagnostics`, per-epoch means, validation scores, hyperparameters,
  pictures of a few fixed validation items every few epochs: :meth:`RunLogger.log_samples`) and
  MLflow (``train.mlflow: true``). Both packages are optional and imported only when asked for;
  when one is asked for but not installed a one-line warning says so (once per process) and
  training goes on.

Nothing here touches a random number stream or the model: training is bit-identical with
every logger on or off (tested).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medistill.engine.checkpoint import atomic_write_text

LOG_FILE = "run.log"
#: short names of validation metrics in the epoch line
SHORT = {"accuracy": "acc", "macro_f1": "f1", "macro_precision": "prec", "macro_recall": "rec",
         "ovr_accuracy": "ovr_acc"}
_warned: set[str] = set()


def warn_once(message: str, say: Callable[[str], None] | None = None) -> None:
    """``warning: <message>`` on stderr (and to ``say``), once per process and message."""
    if message in _warned:
        return
    _warned.add(message)
    print(f"warning: {message}", file=sys.stderr, flush=True)
    if say is not None:
        say(f"warning: {message}", echo=False)


def duration(seconds: float) -> str:
    """``42s``, ``4m10s``, ``2h05m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RunProgress:
    """Stage counter, ETAs and the log file of one run.

    ``stages``: ``(name, epochs)`` of every planned stage, in order (see
    :meth:`medistill.pipelines.plan.Plan.epochs_of`); a stage that is not planned is counted
    when it begins (the total is then unknown and not shown). ``log_path``: every line is
    appended there (kept until the folder exists, or until :meth:`attach` names the file).
    ``echo``: print the lines (the main rank does; set it False elsewhere).

    ETAs: the time left in a stage is its mean epoch time so far x its epochs left; the rest of
    the run adds the mean epoch time over every epoch timed so far x the epochs of the stages
    still to come (an estimate: a 28 px student's epoch is cheaper than a 112 px teacher's).
    """

    def __init__(self, stages: Sequence[tuple[str, int]] = (), log_path: str | Path | None = None,
                 echo: bool = True) -> None:
        self.planned = bool(stages)
        self.names = [n for n, _ in stages]
        self.epochs = dict(stages)
        self.done: dict[str, int] = {}
        self.log_path = Path(log_path) if log_path else None
        self.echo = echo
        self.pending: list[str] = []  # lines said before the log's folder existed
        self._seconds = 0.0
        self._timed = 0
        self._stage: dict[str, float] = {}  # name -> seconds of its epochs timed so far
        self._stage_timed: dict[str, int] = {}
        self.bar: Any = None

    # -- the overall progress bar -----------------------------------------------------------
    def open_bar(self, disable: bool | None = None) -> None:
        """An overall bar over every planned epoch, with the run's ETA (tqdm; ``disable``
        None: shown on a terminal only). Nothing without a plan."""
        if not self.planned or self.bar is not None:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=sum(self.epochs.values()), desc="run", unit="epoch",
                        disable=disable, position=0, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                   "epochs [{elapsed}{postfix}]")

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _update_bar(self, name: str | None = None) -> None:
        if self.bar is None:
            return
        self.bar.n = sum(min(d, self.epochs.get(n, d)) for n, d in self.done.items())
        run_eta = self.eta(name)[1] if name else None
        self.bar.set_postfix_str(f"ETA {duration(run_eta)}" if run_eta is not None else "",
                                 refresh=False)
        self.bar.refresh()

    # -- output -----------------------------------------------------------------------------
    def say(self, line: str, echo: bool = True) -> None:
        """Print ``line`` (if ``echo``; below any progress bar) and append it to the log."""
        if self.echo and echo:
            from tqdm.auto import tqdm

            tqdm.write(line)
        self.pending.append(line)
        self._flush()

    def attach(self, log_path: str | Path) -> None:
        """Append to ``log_path`` from now on, starting with the lines said so far."""
        self.log_path = Path(log_path)
        self._flush()

    def _flush(self) -> None:
        if self.pending and self.log_path is not None and self.log_path.parent.is_dir():
            with self.log_path.open("a", encoding="utf-8") as f:
                f.writelines(x + "\n" for x in self.pending)
            self.pending = []

    # -- counting ---------------------------------------------------------------------------
    def label(self, name: str) -> str:
        """``stage 3/5 seed0/x4/kd`` (``stage 3 name`` when the total is unknown)."""
        if name not in self.names:
            self.names.append(name)
        i = self.names.index(name) + 1
        return f"stage {i}/{len(self.names)} {name}" if self.planned else f"stage {i} {name}"

    def begin(self, name: str, epochs: int, done: int = 0) -> None:
        """Stage ``name`` of ``epochs`` epochs starts with ``done`` of them finished."""
        self.label(name)
        self.epochs[name] = epochs
        self.done[name] = done
        self._update_bar()

    def skip(self, name: str) -> None:
        """Stage ``name`` finished in an earlier session (``--resume``)."""
        self.done[name] = self.epochs.get(name, 0)
        self._update_bar()

    def epoch_done(self, name: str, epoch: int, seconds: float) -> None:
        self.done[name] = epoch
        self._seconds += seconds
        self._timed += 1
        self._stage[name] = self._stage.get(name, 0.0) + seconds
        self._stage_timed[name] = self._stage_timed.get(name, 0) + 1
        self._update_bar(name)

    def eta(self, name: str) -> tuple[float | None, float | None]:
        """Seconds left in stage ``name`` and in the whole run (None: nothing timed yet; the
        run's is None when the stages are not planned)."""
        if not self._stage_timed.get(name):
            return None, None
        left = self.epochs.get(name, 0) - self.done.get(name, 0)
        stage = self._stage[name] / self._stage_timed[name] * max(0, left)
        if not self.planned:
            return stage, None
        later = sum(max(0, e - self.done.get(n, 0)) for n, e in self.epochs.items() if n != name)
        return stage, stage + self._seconds / self._timed * later


# --------------------------------------------------------------------------- epoch lines
def _num(v: float) -> str:
    return f"{v:.4g}"


def epoch_line(label: str, epoch: int, epochs: int, row: Mapping[str, float],
               select: str, best: float, best_epoch: int, seconds: float,
               eta: tuple[float | None, float | None] = (None, None)) -> str:
    """One readable line for an epoch's ``row`` of ``log.csv`` (see the module docstring).

    The loss is followed by its weighted terms (``train_term/<name>``, which sum to it); then
    two validation scores, the selection metric ``select`` (``val_<name>``) first; ``best``
    is the best selection score so far (without validation: the lowest training loss)."""
    parts = [f"[{label}] epoch {epoch}/{epochs}"]
    loss = f"loss {_num(row['train_loss'])}" if "train_loss" in row else ""
    terms = [(k[len("train_term/"):], v) for k, v in row.items() if k.startswith("train_term/")]
    if len(terms) > 1:
        loss += " (" + ", ".join(f"{n} {v:.3g}" for n, v in terms) + ")"
    parts.append(loss)
    val = sorted((k for k in row if k.startswith("val_")), key=lambda k: k != select)
    if val:
        parts.append("val " + " ".join(f"{SHORT.get(k[4:], k[4:])} {row[k]:.3f}"
                                       for k in val[:2]))
        parts.append(f"best {best:.3f}@{best_epoch}")
    else:
        parts.append(f"best loss {_num(-best)}@{best_epoch}")
    parts.append(f"{seconds:.1f} s")
    stage_eta, run_eta = eta
    more = run_eta is not None and stage_eta is not None and run_eta > stage_eta
    if stage_eta is not None and epoch < epochs:
        parts.append(f"ETA {duration(stage_eta)}" + (f", run {duration(run_eta)}" if more
                                                     else ""))
    elif more:
        parts.append(f"ETA run {duration(run_eta)}")
    return "  ".join(p for p in parts if p)


# ------------------------------------------------------------------------ tags, hparams
def tb_tag(key: str) -> str:
    """The TensorBoard (and MLflow) name of a ``log.csv`` or ``steps.csv`` column.

    Per step (``steps.csv``): ``loss`` -> ``train/loss``, ``term_<t>`` -> ``train/<t>``,
    ``grad_norm`` -> ``grad/norm``, ``norm_<t>`` / ``share_<t>`` / ``cos_<t>`` ->
    ``grad/norm_<t>`` ... Per epoch (``log.csv``): ``train_loss`` -> ``epoch/loss``,
    ``train_term/<t>`` -> ``epoch/<t>``, other ``train_<k>`` (unweighted values) ->
    ``epoch/unweighted_<k>``, ``val_<m>`` -> ``val/<m>``, ``lr`` -> ``opt/lr``,
    ``images_per_s`` -> ``speed/images_per_s``."""
    from medistill.engine.diagnostics import COS, NORM, SHARE, VALUE

    if key == "loss":
        return "train/loss"
    if key.startswith(VALUE):
        return "train/" + key[len(VALUE):]
    if key == "grad_norm":
        return "grad/norm"
    if key.startswith((NORM, SHARE, COS)):
        return "grad/" + key
    if key == "train_loss":
        return "epoch/loss"
    if key.startswith("train_term/"):
        return "epoch/" + key[len("train_term/"):]
    if key.startswith("train_"):
        return "epoch/unweighted_" + key[len("train_"):]
    if key.startswith("val_"):
        return "val/" + key[4:]
    return {"lr": "opt/lr", "images_per_s": "speed/images_per_s"}.get(key, "other/" + key)


def flat_hparams(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}, "runs": ["kd"]}`` -> ``{"train.lr": 0.001, "runs": "['kd']"}``:
    scalars kept, lists and None as text (what TensorBoard's hparams and MLflow take)."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flat_hparams(v, f"{prefix}{k}."))
        return out
    value = node if isinstance(node, bool | int | float | str) else str(node)
    return {prefix[:-1]: value}


class RunLogger:
    """``log.csv``, TensorBoard (``tensorboard``) and MLflow (``mlflow``) of one training
    stage; see the module docstring. ``name``: the MLflow run name; ``hparams``: flat
    hyperparameters (:func:`flat_hparams`); ``say``: where warnings also go (the run log)."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True, mlflow: bool = False,
                 name: str = "train", hparams: Mapping[str, Any] | None = None,
                 experiment: str | None = None, say: Callable[..., None] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.csv_path = self.out_dir / "log.csv"
        self.hparams = dict(hparams or {})
        self._ml = self._mlflow(name, experiment, say) if mlflow else None
        self._tb = self._tensorboard(say) if tensorboard else None

    def _tensorboard(self, say: Callable[..., None] | None) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError:  # tensorboard is an optional extra
            warn_once("train.tensorboard is true but the tensorboard package is not installed: "
                      "no TensorBoard logs (pip install tensorboard, or set "
                      "train.tensorboard: false)", say)
            return None
        tb = SummaryWriter(str(self.out_dir / "tb"))
        if self.hparams:  # one hparams record in the same event file as the scalars
            for summary in hparams(self.hparams, {"hparam/best_score": 0.0}):
                tb.file_writer.add_summary(summary)
            tb.add_text("hparams", "\n".join(f"    {k}: {v}" for k, v in self.hparams.items()))
        return tb

    def _mlflow(self, name: str, experiment: str | None,
                say: Callable[..., None] | None) -> Any:
        try:
            import mlflow
        except ImportError:
            warn_once("train.mlflow is true but the mlflow package is not installed: no MLflow "
                      "logs (pip install mlflow, or set train.mlflow: false)", say)
            return None
        try:
            mlflow.set_experiment(experiment or "medistill")
            mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None)
            mlflow.set_tags({"medistill.folder": str(self.out_dir)})
            if self.hparams:
                mlflow.log_params({k: str(v)[:500] for k, v in self.hparams.items()})
        except Exception as e:  # a tracking store that refuses: stop before training
            from medistill.errors import TrainingError, one_line

            raise TrainingError(f"train.mlflow: MLflow cannot start a run ({one_line(e)}); "
                                "check MLFLOW_TRACKING_URI or set train.mlflow: false") from None
        return mlflow

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._ml is not None:
            self._ml.log_metrics(dict(values), step=step)

    def write_history(self, history: list[dict[str, float]]) -> None:
        """Rewrite the CSV from the full history (keeps it exact after a resume)."""
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in keys]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.csv_path, text.getvalue())

    def log_epoch(self, history: list[dict[str, float]]) -> None:
        """The CSV, and the last row's scalars (:func:`tb_tag` names, x = epoch)."""
        self.write_history(history)
        row = history[-1]
        self._scalars({tb_tag(k): v for k, v in row.items() if k != "epoch"}, int(row["epoch"]))

    def log_steps(self, rows: list[dict[str, float]]) -> None:
        """Per-step rows of ``steps.csv`` (every loss term; gradient shares on diagnostic
        steps) as scalars named by :func:`tb_tag`, x = the step over the run."""
        for row in rows:
            self._scalars({tb_tag(k): v for k, v in row.items() if k not in ("epoch", "step")},
                          int(row["step"]))

    @property
    def images(self) -> bool:
        """Whether :meth:`log_samples` writes anything (TensorBoard is on and installed)."""
        return self._tb is not None

    def log_samples(self, tag: str, image: np.ndarray, caption: str, step: int) -> None:
        """An (H, W, 3) uint8 picture of validation samples (image ``tag``, x = epoch) and its
        caption (text ``tag``), from a method's
        :meth:`~medistill.methods.base.Method.sample_overlays`."""
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")
            self._tb.add_text(tag, caption, step)
            self._tb.flush()

    def log_best(self, score: float, epoch: int) -> None:
        """The selection score of the best epoch (the hparams record's metric)."""
        self._scalars({"hparam/best_score": score}, epoch)

    def close(self, finished: bool = True) -> None:
        """Close the loggers; the MLflow run ends ``FINISHED``, or ``FAILED`` when training
        stopped early (an error or Ctrl-C)."""
        if self._tb is not None:
            self._tb.close()
        if self._ml is not None:
            self._ml.end_run(status="FINISHED" if finished else "FAILED")

