"""``medistill run`` and ``medistill demo``: train what a recipe describes."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from medistill.cli.app import app
from medistill.cli.tables import print_paired, print_runs
from medistill.output import check_output_dir

if TYPE_CHECKING:
    from pydantic import BaseModel

DRY_RUN_HELP = ("Check the recipe, the output folder and the data, print the plan (stages, "
                "seeds, epochs) and exit; nothing is written.")


def _dry_run(cfg: BaseModel, out: Path, resume: bool) -> None:
    """``--dry-run``: every check a run makes before it writes, then the plan."""
    from medistill.pipelines import dry_run

    plan = dry_run(cfg, out, resume=resume)
    typer.echo(f"dry run: the recipe, --out and the data are fine; nothing was written\n"
               f"{plan.banner(str(out))}")


@contextmanager
def _resume_hint(command: list[str]) -> Iterator[None]:
    """Ctrl-C: no traceback, one line with the command that resumes the run, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        from medistill.engine.distributed import is_main

        if is_main():
            typer.echo(f"interrupted; resume with: {shlex.join(command)}", err=True)
        raise typer.Exit(130) from None


def _resume_command(name: str, *args: str, set_: list[str] | None, out: Path,
                    progress: bool) -> list[str]:
    sets = [x for s in set_ or [] for x in ("--set", s)]
    return ["medistill", name, *args, "--out", str(out), *sets,
            *([] if progress else ["--no-progress"]), "--resume"]


_PRINT_CONFIG_HELP = "Print the resolved, validated recipe (YAML) and exit; nothing is written."


def _substitutions() -> dict[str, str]:
    """Placeholders recipes may use: ``{demo_data}``, the embedded demo dataset."""
    from medistill.pipelines import demo_data_root

    return {"demo_data": str(demo_data_root())}


def _print_config(cfg: BaseModel) -> None:
    """The recipe after ``--set``, defaults filled in and validated, as YAML on stdout."""
    import yaml

    resolved = cfg.model_dump(mode="json")
    first = {k: resolved[k] for k in ("method", "title") if k in resolved}
    typer.echo(yaml.safe_dump({**first, **resolved}, sort_keys=False).rstrip())


@app.command()
def recipes() -> None:
    """List the packaged recipes (name, method, title); run one with: medistill run NAME."""
    from medistill.pipelines.catalog import packaged_recipes, recipe_summary

    rows = [recipe_summary(path) for path in packaged_recipes().values()]
    width = max(len(r["name"]) for r in rows)
    method = max(len(r["method"]) for r in rows)
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['method']:<{method}}  {r['title']}")


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(
        help="Recipe YAML, or the name of a packaged recipe (see medistill recipes).")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override: key.sub=value (lists by index: aux_data.0.root=...)")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help=_PRINT_CONFIG_HELP)] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<recipe>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    nproc: Annotated[int, typer.Option(
        help="Data-parallel processes (DDP: gloo on CPU, nccl on GPU); batch_size is global.",
        min=1)] = 1,
    dry_run: Annotated[bool, typer.Option(help=DRY_RUN_HELP)] = False,
) -> None:
    """Train and evaluate everything a recipe describes, and write its report.

    Under ``torchrun`` the process group comes from its environment; ``--nproc N`` starts N
    processes itself.
    """
    from medistill.engine.distributed import init_from_env, is_main, launch
    from medistill.errors import RecipeError
    from medistill.pipelines import RECIPES, load_recipe, run_recipe
    from medistill.pipelines.catalog import find_recipe

    recipe = find_recipe(recipe)
    cfg = load_recipe(recipe, set_ or [], _substitutions())  # validated before any process
    if print_config:
        return _print_config(cfg)
    out = check_output_dir(out or Path("runs") / recipe.stem)
    if dry_run:
        return _dry_run(cfg, out, resume)
    if nproc > 1 or init_from_env():
        if not getattr(RECIPES[cfg.method][1], "supports_ddp", False):
            raise RecipeError(f"{recipe}: method {cfg.method!r} does not support multi-process "
                              "training yet; run it with one process")
    hint = _resume_command("run", str(recipe), *(["--nproc", str(nproc)] if nproc > 1 else []),
                           set_=set_, out=out, progress=progress)
    if nproc > 1:
        from torch.multiprocessing import ProcessRaisedException

        try:
            with _resume_hint(hint):
                launch(_run_worker, nproc, str(recipe), list(set_ or []), str(out), resume,
                       progress)
        except ProcessRaisedException as e:
            last = str(e).strip().splitlines()[-1]
            raise RecipeError(f"a training process failed: {last}") from None
        results = json.loads((out / "results.json").read_text())
    else:
        with _resume_hint(hint):
            results = run_recipe(cfg, out, resume=resume, progress=progress and is_main())
        if not is_main():
            return
    print_runs(results["runs"])
    print_paired(results.get("comparisons", []), results.get("comparison_summary", []))
    typer.echo(f"report: {out / 'report.html'}")


def _run_worker(recipe: str, overrides: list[str], out: str, resume: bool,
                progress: bool) -> None:
    """One process of ``medistill run --nproc N``."""
    from medistill.engine.distributed import is_main
    from medistill.pipelines import load_recipe, run_recipe

    run_recipe(load_recipe(recipe, overrides, _substitutions()), out, resume=resume,
               progress=progress and is_main())



@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted demo.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key=value")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help=_PRINT_CONFIG_HELP)] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    dry_run: Annotated[bool, typer.Option(help=DRY_RUN_HELP)] = False,
) -> None:
    """Teacher + baseline and distilled students on the embedded EBHI-Seg subset."""
    from medistill.pipelines import demo_recipe_path, load_recipe, run_recipe

    cfg = load_recipe(demo_recipe_path(), set_ or [], _substitutions())
    if print_config:
        return _print_config(cfg)
    check_output_dir(out)
    if dry_run:
        return _dry_run(cfg, out, resume)
    with _resume_hint(_resume_command("demo", set_=set_, out=out, progress=progress)):
        results = run_recipe(cfg, out, resume=resume, progress=progress)
    print_runs(results["runs"])
    for seed in dict.fromkeys(r["seed"] for r in results["runs"]):
        acc = {r["role"]: r for r in results["runs"] if r["seed"] == seed}
        if "teacher" in acc and "baseline" in acc:
            t, b = acc["teacher"], acc["baseline"]
            gap = t["metrics"]["accuracy"]["value"] - b["metrics"]["accuracy"]["value"]
            typer.echo(f"\nseed {seed}: teacher {100 * t['metrics']['accuracy']['value']:.1f}% "
                       f"at {'x'.join(map(str, t['input_size']))} px, baseline student "
                       f"{100 * b['metrics']['accuracy']['value']:.1f}% at "
                       f"{'x'.join(map(str, b['input_size']))} px: a {100 * gap:.1f}-point "
                       "gap to distil")
    print_paired(results.get("comparisons", []), results.get("comparison_summary", []))
    typer.echo(f"report: {out / 'report.html'}")

