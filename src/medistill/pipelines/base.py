"""What every recipe pipeline shares: per-stage training settings, the output folder's life
cycle (refuse to overwrite, ``recipe.json``, ``results.json`` + report at the end) and training
one run with the trainer (skipped when its ``train_done.json`` exists, so ``--resume`` picks up
where a run stopped), plus the stages every recipe is built from (:class:`Pipeline`):
``build_model`` (a fresh model initialised from a seed), ``fit`` (train into
``<out>/<run>/``), ``evaluate_record`` (evaluate a saved model once, cached in
``<run>/eval.json``) and ``teacher`` (the recipe's ``teacher_checkpoint``, checked by
``check_teacher_checkpoint`` before any folder exists, or a trained one). Under DDP every
rank trains; rank 0 evaluates and writes (the other ranks get empty evaluation records and skip
the report: ``run()`` returns ``self.finish({})`` on them once training is over).

Output folders: medistill writes only into a folder it created, marked by a ``.medistill-run``
file written when the run starts; an existing non-empty folder without it is refused. Under DDP
every rank must see that marker (several nodes: ``--out`` on a shared file system, since the
ranks load rank 0's checkpoints), checked right after it is written (:func:`check_shared_folder`).

Resume: the recipe must be the one saved in ``recipe.json``, except for the keys of
:data:`RESUME_MAY_CHANGE`, which cannot change finished work: which ``runs`` and ``seeds`` to
run and report (each run trains and is evaluated on its own), and how training is shown and fed
(``progress``, ``tensorboard``, ``tb_samples(_every)``, ``mlflow``, ``mlflow_experiment``,
``diag_every``, ``num_workers``, ``pin_memory`` of ``train`` and of every stage; data order and
augmentation depend only on seeds and epochs). Everything else is refused naming the keys -- e.g.
more ``train.epochs`` (the finished cosine schedule would train them at lr 0) or another
``eval.n_resamples`` (finished runs keep their cached ``eval.json``, so the report would mix two
settings).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from torch import nn

from medistill.config import StrictModel, TrainConfig, merge_train
from medistill.engine.checkpoint import atomic_write_text, load_model
from medistill.engine.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_object,
    is_distributed,
    is_main,
    world_size,
)
from medistill.engine.logging import LOG_FILE, RunProgress, duration, flat_hparams
from medistill.engine.trainer import Trainer, seed_everything
from medistill.errors import OutputError, RecipeError
from medistill.models import build_model
from medistill.pipelines.evaluate import read_history
from medistill.pipelines.plan import plan_recipe
from medistill.reports import write_report


class StagedRecipe(StrictModel):
    """A recipe with one ``train`` section and per-stage overrides in ``stages``."""

    train: TrainConfig = TrainConfig()
    stages: dict[str, dict[str, Any]] = {}

    def stage_train(self, stage: str, seed: int) -> TrainConfig:
        cfg = merge_train(self.train, self.stages.get(stage), f"stages.{stage}")
        return cfg.model_copy(update={"seed": seed})


#: the file that marks a folder as a medistill run (see the module docstring)
RUN_MARKER = ".medistill-run"
#: recipe keys a resumed run may change (top-level names, or the last part of a ``train.*`` /
#: ``stages.<stage>.*`` key)
RESUME_MAY_CHANGE = {"runs", "seeds"}
RESUME_MAY_CHANGE_TRAIN = {"progress", "tensorboard", "num_workers", "pin_memory", "diag_every",
                           "mlflow", "mlflow_experiment", "tb_samples", "tb_samples_every"}


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _may_change(key: str) -> bool:
    parts = key.split(".")
    if parts[0] in RESUME_MAY_CHANGE:
        return True
    return parts[0] in ("train", "stages") and parts[-1] in RESUME_MAY_CHANGE_TRAIN


def recipe_changes(saved: dict[str, Any], recipe: BaseModel) -> list[str]:
    """The dotted keys where ``recipe`` differs from a saved ``recipe.json`` and that a resumed
    run may not change."""
    old, new = _flat(saved), _flat(json.loads(recipe.model_dump_json()))
    return sorted(k for k in set(old) | set(new)
                  if old.get(k, "<unset>") != new.get(k, "<unset>") and not _may_change(k))


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse a folder that is not a medistill run, or (unless resuming) already has one."""
    if out.exists() and not out.is_dir():
        raise RecipeError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RUN_MARKER).is_file():
        raise RecipeError(f"--out {out} is not empty and is not a medistill run folder (no "
                          f"{RUN_MARKER}); medistill writes only into folders it created: "
                          "choose another --out")
    if (out / "recipe.json").exists() and not resume:
        raise RecipeError(f"{out} already has a run; pass --resume or another --out")


#: seconds a rank waits to see rank 0's new marker before :func:`check_shared_folder` refuses
#: the folder (an NFS client may show another node's new file only once its cached view of the
#: folder expires: ``acdirmax``, 60 s by default)
SHARED_WAIT = 60.0


def check_shared_folder(out: Path, wait: float = SHARED_WAIT) -> None:
    """Under DDP, after rank 0 has marked ``out``: every rank sees the marker (within
    ``wait`` seconds), else every rank raises the same one-line :class:`OutputError`.
    Several nodes need ``--out`` on a file system they all reach (the ranks load rank 0's
    checkpoints, e.g. a trained teacher): without this check a node-local folder failed only
    after the teacher's training, with ``checkpoint not found`` on the other nodes."""
    if not is_distributed():
        return
    barrier()  # rank 0 has written the marker
    marker, deadline = out / RUN_MARKER, time.monotonic() + wait
    while not marker.is_file() and time.monotonic() < deadline:
        time.sleep(1.0)
    blind = all_reduce_sum([float(not marker.is_file())])[0]
    if blind:
        raise OutputError(f"--out {out}: {int(blind)} of {world_size()} processes do not see "
                          "rank 0's files in it; on several nodes it must be a folder on a "
                          "file system every node reaches")


class Pipeline:
    """Base of the recipe pipelines: ``run()`` trains, evaluates and reports."""

    #: whether ``medistill run --nproc N`` / torchrun may run it (every rank trains, rank 0
    #: evaluates and reports); the packaged pipelines all do, a plugin opts in
    supports_ddp = False

    def __init__(self, recipe: Any, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        self.r = recipe
        self.out = Path(out_dir)
        self.resume = resume
        self.progress = progress
        #: the stages this recipe trains, and the stage counter / ETAs / ``run.log`` of the run
        self.plan = plan_recipe(recipe)
        self.tracker = RunProgress(self.plan.epochs_of(), echo=is_main())

    def announce(self) -> None:
        """Print the plan (main rank; it goes to ``run.log`` once the folder exists) and open
        the overall progress bar (unless progress bars are off)."""
        self._started = time.perf_counter()
        if self.resume:  # stages finished earlier count as done (some skip without fit())
            for stage in self.plan.stages:
                if (self.out / stage.name / "train_done.json").is_file():
                    self.tracker.skip(stage.name)
        if is_main():
            verb = "resuming" if self.resume else "starting"
            self.tracker.say(f"medistill {verb} {self.plan.banner(str(self.out))}")
            train = getattr(self.r, "train", None)
            if self.progress and (train is None or train.progress):
                self.tracker.open_bar()

    def preflight(self) -> None:
        """What :meth:`run` checks before it creates the output folder, without creating it
        (``--dry-run``): the folder (and, resuming, the saved recipe), a teacher checkpoint
        where the pipeline checks one, and the data (read and scanned)."""
        self.check_folder()
        for name in ("_check_teacher_checkpoint", "_load_data"):
            check = getattr(self, name, None)
            if check is not None:
                check()

    def check_folder(self) -> None:
        """Refuse an output folder that is not a medistill run, that already has a run (unless
        resuming) or whose run had another recipe."""
        check_out_dir(self.out, self.resume)
        saved = self.out / "recipe.json"
        if self.resume and saved.is_file():
            try:
                old = json.loads(saved.read_text())
            except (OSError, ValueError) as e:
                raise RecipeError(f"{saved}: cannot read the saved recipe: {e}") from None
            changed = recipe_changes(old if isinstance(old, dict) else {}, self.r)
            if changed:
                more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
                raise RecipeError(
                    f"--resume: the recipe differs from {saved} at {', '.join(changed[:5])}"
                    f"{more}; resume with the same settings or start another --out")

    def start(self) -> None:
        """:meth:`check_folder`, then mark the folder, record the recipe and open ``run.log``.
        Call after the data has been read, so bad data leaves nothing behind."""
        self.check_folder()
        saved = self.out / "recipe.json"
        barrier()  # every rank has checked before rank 0 writes
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            if not (self.out / RUN_MARKER).is_file():
                atomic_write_text(self.out / RUN_MARKER, json.dumps(
                    {"format": "medistill-run/1", "method": getattr(self.r, "method", None)}))
            atomic_write_text(saved, self.r.model_dump_json(indent=2))
            self.tracker.attach(self.out / LOG_FILE)
        check_shared_folder(self.out)

    # -- the shared stages ------------------------------------------------------------------
    def build_model(self, spec: Any, num_classes: int, seed: int, kind: type | None = None,
                    what: str = "") -> nn.Module:
        """A fresh model of ``spec`` (a :class:`~medistill.config.ModelConfig`) whose
        initialisation depends on ``seed`` only, not on the order of the runs; with ``kind``,
        a one-line :class:`RecipeError` (``model <name> is not <what>``) for another model."""
        seed_everything(seed)
        model = build_model(spec, num_classes)
        if kind is not None and not isinstance(model, kind):
            raise RecipeError(f"model {spec.name!r} is not {what}")
        return model

    def check_teacher_checkpoint(self, task: str, classes: list[str] | None = None
                                 ) -> dict[str, Any] | None:
        """The card of the recipe's ``teacher_checkpoint`` (None without one), after checking
        that it is a model of ``task`` (and of ``classes`` when given): a one-line
        :class:`RecipeError` naming the file otherwise. Call it before any folder is made."""
        path = getattr(self.r, "teacher_checkpoint", None)
        if not path:
            return None
        _, meta = load_model(path)
        got = meta.get("task", "classification")  # files before cards had no task
        if got != task or (classes is not None and meta["classes"] != classes):
            need = f"a {task} model" + (f" of the classes {classes}" if classes else "")
            raise RecipeError(f"teacher_checkpoint {path}: a {got} model of the classes "
                              f"{meta.get('classes')}, the recipe needs {need}")
        return meta

    def teacher(self, seed: int, train: Callable[[int], Path]) -> Path:
        """The teacher stage: the recipe's ``teacher_checkpoint`` when it has one (see
        :meth:`check_teacher_checkpoint`), else ``train(seed)`` (a trained teacher's
        ``best.pt``, e.g. from :meth:`fit`)."""
        path = getattr(self.r, "teacher_checkpoint", None)
        return Path(path) if path else train(seed)

    def student_runs(self, seed: int, teacher_path: Path,
                     models: dict[str, Path]) -> list[dict[str, Any]]:
        """The student stage of the segmentation-style recipes: each of the recipe's ``runs``
        for ``seed``, built by the pipeline's ``_student_method(run, teacher_path, seed)``,
        trained by its ``_train`` into ``seed<seed>/<run>`` and evaluated by its ``_evaluate``;
        the records, in order (each model file added to ``models`` by run name)."""
        r: Any = self.r
        p: Any = self  # the hooks are the recipe pipeline's own
        records = []
        for run in r.runs:
            name = f"seed{seed}/{run}"
            path = p._train(name, p._student_method(run, teacher_path, seed),
                            r.stage_train(run, seed), p._meta(r.student))
            records.append(p._evaluate(name, run, seed, path))
            models[run] = path
        return records

    def evaluate_record(self, run: str, model_path: Path,
                        evaluate: Callable[[nn.Module, dict[str, Any]], dict[str, Any]]
                        ) -> dict[str, Any]:
        """The evaluation stage: ``evaluate(model, card)`` of the model file, with its
        training ``history`` (``log.csv``) and ``model_path``; once per run
        (:meth:`cached_record`)."""
        def record() -> dict[str, Any]:
            model, meta = load_model(model_path)
            return {**evaluate(model, meta),
                    "history": read_history(model_path.parent / "log.csv"),
                    "model_path": str(model_path)}

        return self.cached_record(run, record)

    def fit(self, run: str, method: Any, train_set: Any, val_set: Any, cfg: TrainConfig,
            meta: dict[str, Any], num_classes: int | None) -> Path:
        """Train ``method`` into ``<out>/<run>/`` (unless done already); its ``best.pt``."""
        run_dir = self.out / run
        if (run_dir / "train_done.json").is_file():
            if is_main():
                self.tracker.skip(run)
                self.tracker.say(f"[{self.tracker.label(run)}] trained already (resume)")
            return run_dir / "best.pt"
        cfg = cfg.model_copy(update={"progress": cfg.progress and self.progress})
        fit = Trainer(method, train_set, val_set, cfg, run_dir, meta, num_classes, run,
                      progress=self.tracker, hparams=self.hparams()).fit(resume=self.resume)
        if is_main():
            atomic_write_text(run_dir / "train_done.json", json.dumps(
                {k: v for k, v in fit.items() if k != "history"}, indent=2))
        barrier()
        return run_dir / "best.pt"

    @property
    def is_main(self) -> bool:
        """Whether this process evaluates and reports (rank 0; always with one process)."""
        return is_main()

    def main_value(self, compute: Any) -> Any:
        """``compute()`` on rank 0, its value on every rank (e.g. a validation score that
        decides what every rank trains next)."""
        return broadcast_object(compute() if is_main() else None)

    def hparams(self) -> dict[str, Any]:
        """The recipe's settings other than ``train`` / ``stages`` (the trainer logs the
        stage's own training settings), flat, for TensorBoard / MLflow."""
        recipe = json.loads(self.r.model_dump_json())
        return flat_hparams({k: v for k, v in recipe.items() if k not in ("train", "stages")})

    def cached_record(self, run: str, evaluate: Any) -> dict[str, Any]:
        """``evaluate()`` once per run: its record is kept in ``<run>/eval.json`` and reused
        on ``--resume``. Ranks other than 0 get an empty record."""
        if not is_main():
            return {}
        done = self.out / run / "eval.json"
        if done.is_file() and self.resume:
            return json.loads(done.read_text())
        record = evaluate()
        atomic_write_text(done, json.dumps(record, indent=2))
        return record

    def finish(self, results: dict[str, Any]) -> dict[str, Any]:
        """Write ``results.json`` and the report (rank 0)."""
        self.tracker.close_bar()
        if is_main():
            atomic_write_text(self.out / "results.json", json.dumps(results, indent=2))
            write_report(self.out, results)
            took = time.perf_counter() - getattr(self, "_started", time.perf_counter())
            self.tracker.say(f"finished in {duration(took)}: results.json, report.html and "
                             f"report.md in {self.out}", echo=False)
        barrier()
        return results
