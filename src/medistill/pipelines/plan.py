"""What a recipe will train, known before anything runs: its stages, runs, seeds and epochs.

:func:`plan_recipe` lists the training stages of a validated recipe in the order its pipeline
trains them (each stage is one :class:`~medistill.engine.Trainer` run, named by its folder
under ``--out``, e.g. ``seed0/x4/kd``). It is shown as a banner when ``medistill run`` /
``demo`` starts, numbers the stages of the per-epoch lines (``[stage 3/5 seed0/x4/kd]``), sums
the epochs for the overall ETA, and is what ``--dry-run`` prints.

The pipelines' loops and these lists must agree; ``tests/pipelines/test_plan.py`` runs the
pipelines and checks that the folders they trained are the planned stages. A pipeline without
a planner here (e.g. one added by a plugin) gets an empty plan: its stages are still counted
as they start, without a total.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlannedStage:
    """One training stage: ``name`` (its folder), ``stage`` (the key of the recipe's ``stages``
    overrides), its seed and epochs; ``optional``: the pipeline may stop before it (the
    ``ikd`` rounds after a round without a role swap)."""

    name: str
    stage: str
    seed: int
    epochs: int
    optional: bool = False


@dataclass(frozen=True)
class Plan:
    """The stages of a recipe, and what the banner says of it."""

    method: str
    title: str
    seeds: list[int]
    runs: list[str]
    stages: list[PlannedStage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def epochs_of(self) -> list[tuple[str, int]]:
        """``(name, epochs)`` per stage, for :class:`~medistill.engine.logging.RunProgress`."""
        return [(s.name, s.epochs) for s in self.stages]

    def banner(self, out: str | None = None, max_lines: int = 12) -> str:
        """A few lines: the method, title and folder, the totals, then one line per stage
        (only the first seed's when there are more than ``max_lines`` stages)."""
        head = f"{self.method}: {self.title}" + (f" -> {out}" if out else "")
        if not self.stages:
            return head + "\n  stages: not known in advance (counted as they start)"
        n_opt = sum(s.optional for s in self.stages)
        upto = f" (up to; {n_opt} may be skipped)" if n_opt else ""
        lines = [head, f"  {len(self.stages)} training stages, {self.total_epochs} epochs{upto}; "
                       f"seeds {self.seeds}; runs {', '.join(self.runs)}"]
        shown = self.stages
        if len(shown) > max_lines:
            shown = [s for s in self.stages if s.seed == self.seeds[0]][:max_lines]
        width = max(len(s.name) for s in shown)
        for i, s in enumerate(shown, start=1):
            opt = "  (may be skipped)" if s.optional else ""
            ep = "epoch " if s.epochs == 1 else "epochs"
            lines.append(f"  {i:>3}  {s.name:<{width}}  {s.stage:<10} {s.epochs:>4} {ep}{opt}")
        if len(shown) < len(self.stages):
            lines.append(f"  ... and {len(self.stages) - len(shown)} more stages for the other "
                         f"seeds {self.seeds[1:]} (the same per seed)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _stage(recipe: Any, name: str, stage: str, seed: int, optional: bool = False
           ) -> PlannedStage:
    return PlannedStage(name, stage, seed, recipe.stage_train(stage, seed).epochs, optional)


def _teacher_note(recipe: Any) -> list[str]:
    ckpt = getattr(recipe, "teacher_checkpoint", None)
    return [f"teacher_checkpoint {ckpt}: no teacher is trained"] if ckpt else []


# ----------------------------------------------------------------------------- per method
def _resolution(r: Any) -> list[PlannedStage]:
    out = []
    for seed in r.seeds:
        if not r.teacher_checkpoint:
            out.append(_stage(r, f"seed{seed}/teacher", "teacher", seed))
        for rel in r.student_factors:
            base = f"seed{seed}/x{rel:g}"
            for run in ("baseline", "kd"):
                if run in r.runs:
                    out.append(_stage(r, f"{base}/{run}", run, seed))
            if "kd_aux" in r.runs:
                out += [_stage(r, f"{base}/kd_aux_distill", "kd_aux", seed),
                        _stage(r, f"{base}/kd_aux", "finetune", seed)]
    return out


def _more_from_less(r: Any) -> list[PlannedStage]:
    from medistill.pipelines.more_from_less import level_name

    tasks = ["main"] + (["transfer"] if r.transfer is not None else [])
    out = []
    for seed in r.seeds:
        for level in r.levels:
            base = f"seed{seed}/{level_name(level)}"
            for loss in r.losses:
                for pair in r.pairs:
                    run = f"{base}/{loss}_{pair}"
                    out.append(_stage(r, f"{run}/ssl", "ssl", seed))
                    out += [_stage(r, f"{run}/probe_{t}", "probe", seed) for t in tasks]
            if r.supervised:
                out.append(_stage(r, f"{base}/supervised", "supervised", seed))
                out += [_stage(r, f"{base}/supervised/probe_{t}", "probe", seed)
                        for t in tasks if t != "main"]
    return out


def _teacher_then_runs(r: Any) -> list[PlannedStage]:
    """HLFD and graph relation: a teacher per seed (none with ``teacher_checkpoint``; one
    from the first seed with ``shared_teacher``), then every run."""
    out = []
    for seed in r.seeds:
        shared = getattr(r, "shared_teacher", False) and seed != r.seeds[0]
        if not r.teacher_checkpoint and not shared:
            out.append(_stage(r, f"seed{seed}/teacher", "teacher", seed))
        out += [_stage(r, f"seed{seed}/{run}", run, seed) for run in r.runs]
    return out


def _mil_fusion(r: Any) -> list[PlannedStage]:
    """The MIL teacher, round 1 (shared by both runs: the same teacher and fresh student),
    then rounds 2.. of each run; ``ikd`` may stop early (``fusion.patience``)."""
    out = []
    for seed in r.seeds:
        out.append(_stage(r, f"seed{seed}/mil_teacher", "teacher", seed))
        if r.runs:
            out.append(_stage(r, f"seed{seed}/kd_round1", "round", seed))
        for run in r.runs:
            out += [_stage(r, f"seed{seed}/{run}/round{k}", "round", seed, run == "ikd")
                    for k in range(2, r.fusion.rounds + 1)]
    return out


#: method name -> the function listing its stages
PLANNERS: dict[str, Callable[[Any], list[PlannedStage]]] = {
    "resolution_kd": _resolution,
    "more_from_less": _more_from_less,
    "hlfd": _teacher_then_runs,
    "graph_relation": _teacher_then_runs,
    "mil_fusion": _mil_fusion,
}


def plan_recipe(recipe: Any) -> Plan:
    """The :class:`Plan` of a validated recipe (empty stages for a method without planner)."""
    method = str(getattr(recipe, "method", "?"))
    runs = [str(x) for x in getattr(recipe, "runs", [])]
    if method == "more_from_less":
        runs = [f"{loss}_{pair}" for loss in recipe.losses for pair in recipe.pairs] + (
            ["supervised"] if recipe.supervised else [])
    planner = PLANNERS.get(method)
    return Plan(method=method, title=str(getattr(recipe, "title", "")),
                seeds=list(getattr(recipe, "seeds", [])), runs=runs,
                stages=planner(recipe) if planner else [], notes=_teacher_note(recipe))
