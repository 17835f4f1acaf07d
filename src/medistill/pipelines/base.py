"""What every recipe pipeline shares: per-stage training settings, the output folder's life
cycle (refuse to overwrite, ``recipe.json``, ``results.json`` + report at the end) and training
one run with the trainer (skipped when its ``train_done.json`` exists, so ``--resume`` picks up
where a run stopped). Under DDP every rank trains; rank 0 writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medistill.config import StrictModel, TrainConfig, merge_train
from medistill.engine.checkpoint import atomic_write_text
from medistill.engine.distributed import barrier, is_main
from medistill.engine.trainer import Trainer
from medistill.errors import RecipeError


class StagedRecipe(StrictModel):
    """A recipe with one ``train`` section and per-stage overrides in ``stages``."""

    train: TrainConfig = TrainConfig()
    stages: dict[str, dict[str, Any]] = {}

    def stage_train(self, stage: str, seed: int) -> TrainConfig:
        cfg = merge_train(self.train, self.stages.get(stage), f"stages.{stage}")
        return cfg.model_copy(update={"seed": seed})


class Pipeline:
    """Base of the recipe pipelines: ``run()`` trains, evaluates and reports."""

    #: whether ``medistill run --nproc N`` may run it (every rank trains, rank 0 reports)
    supports_ddp = False

    def __init__(self, recipe: Any, out_dir: str | Path, resume: bool = False,
                 progress: bool = True) -> None:
        self.r = recipe
        self.out = Path(out_dir)
        self.resume = resume
        self.progress = progress

    def start(self) -> None:
        """Refuse an output folder that already has a run (unless resuming), then record the
        recipe. Call after the data has been read, so bad data leaves nothing behind."""
        if (self.out / "recipe.json").exists() and not self.resume:
            raise RecipeError(f"{self.out} already has a run; pass --resume or another --out")
        barrier()  # every rank has checked before rank 0 writes
        if is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "recipe.json", self.r.model_dump_json(indent=2))

    def fit(self, run: str, method: Any, train_set: Any, val_set: Any, cfg: TrainConfig,
            meta: dict[str, Any], num_classes: int | None) -> Path:
        """Train ``method`` into ``<out>/<run>/`` (unless done already); its ``best.pt``."""
        run_dir = self.out / run
        if (run_dir / "train_done.json").is_file():
            return run_dir / "best.pt"
        cfg = cfg.model_copy(update={"progress": cfg.progress and self.progress})
        fit = Trainer(method, train_set, val_set, cfg, run_dir, meta, num_classes, run).fit(
            resume=self.resume)
        if is_main():
            atomic_write_text(run_dir / "train_done.json", json.dumps(
                {k: v for k, v in fit.items() if k != "history"}, indent=2))
        barrier()
        return run_dir / "best.pt"

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
        from medistill.reports import write_report

        if is_main():
            atomic_write_text(self.out / "results.json", json.dumps(results, indent=2))
            write_report(self.out, results)
        barrier()
        return results
