"""The ``medistill`` command line: run, evaluate, profile, demo."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from medistill.errors import MedistillError, one_line
from medistill.output import check_output_dir, check_output_file

app = typer.Typer(
    help="Knowledge distillation for medical and histopathology imaging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from medistill import __version__

        typer.echo(f"medistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the medistill version and exit.")] = False,
) -> None:
    """Knowledge distillation for medical and histopathology imaging."""


def _fmt_ci(m: dict[str, float]) -> str:
    return f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})"


def _eff(r: dict[str, Any], key: str, default: float = float("nan")) -> float:
    return r.get("efficiency", {}).get(key, default)


#: a results-table column: (header, width (negative = left-aligned), cell of a run record)
Column = tuple[str, int, Callable[[dict[str, Any]], str]]

_NAME: Column = ("run", -22, lambda r: r["name"])
_GFLOPS: Column = ("GFLOPs", 8, lambda r: f"{_eff(r, 'gflops'):.3f}")
_MS: Column = ("ms", 7, lambda r: f"{_eff(r, 'latency_ms'):.1f}")

CLASSIFICATION_COLUMNS: list[Column] = [
    ("run", -28, lambda r: r["name"]),
    ("mag", 7, lambda r: r.get("magnification", "")),
    ("input", 9, lambda r: "x".join(str(s) for s in r.get("input_size", []))),
    ("accuracy (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["accuracy"])),
    ("macro F1 (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["macro_f1"])),
    ("GFLOPs", 8, lambda r: f"{_eff(r, 'gflops'):.4f}"),
    ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.2f}M"),
]
SEGMENTATION_COLUMNS: list[Column] = [
    _NAME,
    ("cases", 5, lambda r: str(r.get("n", 0))),
    ("DSC (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["dice"])),
    ("RVD (95% CI)", 24, lambda r: _fmt_ci(r["metrics"]["rvd"])),
    ("VOE", 6, lambda r: f"{r['metrics']['voe']['value']:.3f}"),
    ("HD95", 7, lambda r: f"{r['metrics'].get('hd95', {}).get('value', float('nan')):.2f}"),
    _GFLOPS,
    ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.2f}M"),
    _MS,
]
WEAK_COLUMNS: list[Column] = [
    _NAME,
    ("images", 6, lambda r: str(r.get("n", 0))),
    ("pixel F1 (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["pixel_f1"])),
    ("F1 positives (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["pixel_f1_pos"])),
    ("tumour F1, all", 14, lambda r: f"{r['metrics']['pixel_f1_positive']['value']:.3f}"),
    ("image AUC", 9, lambda r: f"{r['metrics']['image_auc']['value']:.3f}"),
]
INSTANCE_COLUMNS: list[Column] = [
    _NAME,
    ("images", 6, lambda r: str(r.get("n", 0))),
    ("AJI (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["aji"])),
    ("PQ (95% CI)", 22, lambda r: _fmt_ci(r["metrics"]["pq"])),
    ("VOI s/m", 11, lambda r: f"{r['metrics']['voi_split']['value']:>5.2f}/"
                              f"{r['metrics']['voi_merge']['value']:<5.2f}"),
    _GFLOPS,
    ("params", 9, lambda r: f"{_eff(r, 'params', 0) / 1e6:.3f}M"),
    _MS,
]


def print_table(runs: list[dict[str, Any]], columns: list[Column] = CLASSIFICATION_COLUMNS
                ) -> None:
    """A plain-text results table on stdout (classification columns by default)."""
    def fit(text: str, width: int) -> str:
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

    header = " ".join(fit(h, w) for h, w, _ in columns)
    typer.echo(header)
    typer.echo("-" * len(header))
    for r in runs:
        typer.echo(" ".join(fit(cell(r), w) for _, w, cell in columns))


def _print_runs(runs: list[dict[str, Any]]) -> None:
    metrics = runs[0].get("metrics", {}) if runs else {}
    if "pixel_f1" in metrics:
        print_table(runs, WEAK_COLUMNS)
    elif "aji" in metrics:
        print_table(runs, INSTANCE_COLUMNS)
    elif "dice" in metrics:
        print_table(runs, SEGMENTATION_COLUMNS)
    else:
        print_table(runs)


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


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.sub=value")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/<recipe>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    nproc: Annotated[int, typer.Option(
        help="Data-parallel processes (DDP: gloo on CPU, nccl on GPU); batch_size is global.",
        min=1)] = 1,
) -> None:
    """Train and evaluate everything a recipe describes, and write its report.

    Under ``torchrun`` the process group comes from its environment; ``--nproc N`` starts N
    processes itself.
    """
    from medistill.engine.distributed import init_from_env, is_main, launch
    from medistill.errors import RecipeError
    from medistill.pipelines import RECIPES, load_recipe, run_recipe

    cfg = load_recipe(recipe, set_ or [])  # validated here, before any process starts
    out = check_output_dir(out or Path("runs") / recipe.stem)
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
    _print_runs(results["runs"])
    print_paired(results.get("comparisons", []), results.get("comparison_summary", []))
    typer.echo(f"report: {out / 'report.html'}")


def _run_worker(recipe: str, overrides: list[str], out: str, resume: bool,
                progress: bool) -> None:
    """One process of ``medistill run --nproc N``."""
    from medistill.engine.distributed import is_main
    from medistill.pipelines import load_recipe, run_recipe

    run_recipe(load_recipe(recipe, overrides), out, resume=resume,
               progress=progress and is_main())


def print_paired(comparisons: list[dict[str, Any]], summaries: list[dict[str, Any]] = ()
                 ) -> None:
    """The paired differences (model minus reference on the same images) and their verdicts."""
    from medistill.metrics.paired import verdict
    from medistill.pipelines.resolution import ROLE_NAMES

    if not comparisons:
        return
    n = comparisons[0]["n_resamples"]
    typer.echo(f"\npaired on the same {comparisons[0]['n']} images ({n} bootstrap resamples):")
    for c in comparisons:
        acc, f1 = c["metrics"]["accuracy"], c["metrics"]["macro_f1"]
        typer.echo(f"  {c['name']}: accuracy {100 * acc['model']:.1f}% vs "
                   f"{100 * acc['reference']:.1f}% ({c['reference']}); macro F1 "
                   f"{100 * f1['value']:+.1f} points [{100 * f1['low']:+.1f}, "
                   f"{100 * f1['high']:+.1f}]")
        model, ref = (ROLE_NAMES.get(c[k], c[k]) for k in ("model", "reference"))
        typer.echo(f"  -> {verdict(acc, model, ref)}")
    for s in summaries:
        o = s["accuracy"]
        if o["n_seeds"] > 1:
            typer.echo(f"  over {o['n_seeds']} seeds ({s['model']} - {s['reference']}, factor "
                       f"{s['factor']:g}): accuracy {100 * o['mean']:+.1f} ± "
                       f"{100 * o['sd']:.1f} points; > 0 in {o['n_positive']}, CI above 0 in "
                       f"{o['n_ci_above_zero']}")


@app.command()
def evaluate(
    checkpoints: Annotated[list[Path], typer.Argument(
        help="Model files (a run's best.pt). Several classifiers: each is also compared with "
             "the first, paired on the same images.")],
    data: Annotated[Path, typer.Option(help="Dataset root folder.")],
    layout: Annotated[str, typer.Option(help="'csv' or 'folders'.")] = "csv",
    csv: Annotated[str, typer.Option(help="Manifest name (csv layout).")] = "labels.csv",
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    n_resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 10_000,
    out: Annotated[Path | None, typer.Option(help="Write eval.json + report here.")] = None,
) -> None:
    """Evaluate a trained classifier or segmenter on a split of any supported dataset.

    Segmentation model files remember their data layout; --data gives the root, --split a
    role (train / val / test) or a split value of the data (e.g. testA).
    """
    from medistill.config import DataConfig, validate
    from medistill.engine import load_model
    from medistill.errors import DataError
    from medistill.pipelines.datasets import load_split
    from medistill.pipelines.evaluate import evaluate_classifier

    if out:
        check_output_dir(out)
    checkpoint = checkpoints[0]
    model, meta = load_model(checkpoint)
    if (meta.get("weak") or meta.get("task") == "segmentation") and len(checkpoints) > 1:
        raise DataError(f"{checkpoints[1]}: only classifiers can be evaluated several at once")
    if meta.get("weak"):
        _evaluate_weak(checkpoint, model, meta, data, split, n_resamples, out)
        return
    if meta.get("task") == "segmentation":
        _evaluate_segmenter(checkpoint, model, meta, data, split, n_resamples, out)
        return
    cfg = validate(DataConfig, {"format": layout, "root": str(data), "csv": csv,
                                "image_size": meta.get("image_size")}, "--data")
    samples = load_split(cfg, split, meta["classes"])
    records = []
    for number, path in enumerate(checkpoints):
        if number:
            model, other = load_model(path)
            if other.get("task", "classification") != "classification" or other.get("weak") \
                    or other.get("classes") != meta["classes"]:
                raise DataError(f"{path}: not a classifier of the classes of {checkpoint} "
                                f"({', '.join(meta['classes'])}); cannot compare")
            meta = other
        res = evaluate_classifier(model, meta, samples, n_resamples=n_resamples)
        factor = meta["view"]["factor"]
        records.append({
            "name": path.stem if len(checkpoints) == 1 else str(path),
            "role": "reference" if number == 0 else "compared", "factor": factor,
            "magnification": "1x" if factor == 1 else f"1/{factor:g}x", "seed": 0,
            "split": split, **{k: res[k] for k in ("metrics", "confusion_matrix",
                                                    "input_size", "efficiency", "predictions",
                                                    "labels")}})
    print_table(records)
    comparisons = []
    if len(records) > 1:
        from medistill.metrics.paired import paired_bootstrap

        ref = records[0]
        comparisons = [{"name": r["name"], "model": r["name"], "reference": ref["name"],
                        **paired_bootstrap(ref["labels"], r["predictions"], ref["predictions"],
                                           len(meta["classes"]), n_resamples=n_resamples)}
                       for r in records[1:]]
        print_paired(comparisons)
    if out:
        from medistill.engine.checkpoint import atomic_write_text
        from medistill.reports import write_report

        body = records[0] if len(records) == 1 else {"runs": records,
                                                     "comparisons": comparisons}
        atomic_write_text(out / "eval.json", json.dumps(body, indent=2))
        write_report(out, {"title": f"Evaluation of {', '.join(map(str, checkpoints))}",
                           "classes": meta["classes"], "runs": records})
        typer.echo(f"report: {out / 'report.html'}")


def _evaluate_weak(checkpoint: Path, model: Any, meta: dict[str, Any], data: Path,
                   split: str, n_resamples: int, out: Path | None) -> None:
    """A weakly supervised (mil_fusion) model on a role of its data setup (train/val/test)."""
    from medistill.config import validate
    from medistill.data.weak import WeakSegDataset
    from medistill.pipelines.evaluate_weak import evaluate_weak
    from medistill.pipelines.weak_data import WeakDataConfig, load_weak_split

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"--split: a weakly supervised model takes train, val or "
                                 f"test (its data setup's roles), got {split!r}")
    cfg = validate(WeakDataConfig, {**meta["data"], "root": str(data)}, f"{checkpoint} data")
    items, labels = load_weak_split(cfg, split)
    norm = meta["normalization"]
    dataset = WeakSegDataset(items, labels, 2, meta["image_size"], norm["mean"], norm["std"],
                             mask_mode=cfg.mask_mode)
    # model files from before sigma_at existed were smoothed in original pixels
    res = evaluate_weak(model, dataset, meta["threshold"], meta.get("sigma", 0.0), n_resamples,
                        sigma_at=meta.get("sigma_at", "original"))
    record = {"name": checkpoint.stem, "role": "evaluated", "seed": 0, "split": split, **res}
    print_table([record], WEAK_COLUMNS)
    if out:
        from medistill.engine.checkpoint import atomic_write_text

        atomic_write_text(out / "eval.json", json.dumps(record, indent=2))
        typer.echo(f"eval: {out / 'eval.json'}")


def _evaluate_segmenter(checkpoint: Path, model: Any, meta: dict[str, Any], data: Path,
                        split: str, n_resamples: int, out: Path | None) -> None:
    from medistill.config import validate
    from medistill.pipelines.evaluate_segmentation import evaluate_segmenter
    from medistill.pipelines.seg_data import SegDataConfig, load_seg_split

    cfg = validate(SegDataConfig, {**meta["data"], "root": str(data)}, f"{checkpoint} data")
    res = evaluate_segmenter(model, meta, load_seg_split(cfg, split), n_resamples=n_resamples)
    record = {"name": checkpoint.stem, "role": "evaluated", "seed": 0, "split": split,
              "model": meta["model"]["name"], **res}
    print_table([record], SEGMENTATION_COLUMNS)
    if out:
        from medistill.engine.checkpoint import atomic_write_text
        from medistill.reports import write_report

        atomic_write_text(out / "eval.json", json.dumps(record, indent=2))
        write_report(out, {"task": "segmentation", "title": f"Evaluation of {checkpoint}",
                           "classes": meta["classes"],
                           "runs": [{k: v for k, v in record.items() if k != "cases"}]})
        typer.echo(f"report: {out / 'report.html'}")


@app.command()
def profile(
    model: Annotated[str, typer.Option(help="Registered model name.")] = "small_resnet",
    size: Annotated[int, typer.Option(help="Square input size in pixels.")] = 224,
    num_classes: Annotated[int, typer.Option(help="Number of classes.")] = 2,
    checkpoint: Annotated[Path | None, typer.Option(help="Profile a model file.")] = None,
    repeats: Annotated[int, typer.Option(help="Latency repeats.")] = 20,
    threads: Annotated[int | None, typer.Option(help="CPU threads for latency.")] = None,
) -> None:
    """GFLOPs, parameters and CPU latency of a model at an input size."""
    from medistill.metrics import profile_model

    if checkpoint:
        from medistill.engine import load_model

        net, _ = load_model(checkpoint)
    else:
        from medistill.models import create_model

        net = create_model(model, num_classes)
    p = profile_model(net, (3, size, size), repeats=repeats, threads=threads)
    typer.echo(f"model: {checkpoint or model}  input: 3x{size}x{size}")
    typer.echo(f"params: {p['params']:,}  GFLOPs: {p['gflops']:.4f}  "
               f"latency: {p['latency_ms']:.2f} ms/image (CPU, batch 1)")


@app.command()
def models() -> None:
    """List the registered models."""
    from medistill.models import list_models

    for name in list_models():
        typer.echo(name)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted demo.")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key=value")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Teacher + baseline and distilled students on the embedded EBHI-Seg subset."""
    from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe

    check_output_dir(out)
    cfg = load_recipe(demo_recipe_path(), set_ or [], {"demo_data": str(demo_data_root())})
    with _resume_hint(_resume_command("demo", set_=set_, out=out, progress=progress)):
        results = run_recipe(cfg, out, resume=resume, progress=progress)
    _print_runs(results["runs"])
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


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A model file (a run's best.pt).")],
    format_: Annotated[str, typer.Option("--format", help="'onnx' or 'torchscript'.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="Exported file (default: next to the checkpoint, .onnx or .torchscript.pt).")] = None,
    input_size: Annotated[str | None, typer.Option(
        help="Model input size after downsampling, 'H' or 'HxW' (or 'H W'); only needed "
             "when the model file has no image_size.")] = None,
    atol: Annotated[float, typer.Option(help="Largest accepted logit difference.")] = 1e-3,
) -> None:
    """Export a model file to ONNX or TorchScript (logits out), checked against PyTorch."""
    from medistill.deploy import export_model
    from medistill.errors import CheckpointError

    size = None
    if input_size is not None:
        import re

        match = re.fullmatch(r"\s*(\d+)\s*(?:[xX,\s]\s*(\d+))?\s*", input_size)
        if not match:
            raise CheckpointError(f"--input-size must be 'H' or 'HxW', got {input_size!r}")
        size = tuple(int(g) for g in match.groups() if g is not None)
    if out is None:
        fmt = format_.lower()
        out = checkpoint.with_name(
            checkpoint.stem + (".onnx" if fmt == "onnx" else ".torchscript.pt"))
    check_output_file(out)
    res = export_model(checkpoint, out, format_, input_size=size, atol=atol)
    h, w = res["input_size"]
    typer.echo(f"exported: {res['path']} ({res['format']}, input 3x{h}x{w}, logits out)")
    typer.echo(f"max abs difference vs PyTorch: {res['max_abs_diff']:.3g}")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="An exported model (.onnx or TorchScript .pt).")],
    images: Annotated[Path, typer.Option(help="Folder of images (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Predictions CSV.")] = Path("predictions.csv"),
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
) -> None:
    """Classify every image in a folder with an exported model; write a CSV."""
    from collections import Counter

    from medistill.deploy import predict_folder

    rows = predict_folder(model, images, out, batch_size=batch_size)
    counts = Counter(r["prediction"] for r in rows if not r.get("error"))
    failed = [r for r in rows if r.get("error")]
    typer.echo(f"{len(rows) - len(failed)} images: "
               + ", ".join(f"{c} {n}" for c, n in sorted(counts.items())))
    if failed:
        typer.echo(f"{len(failed)} unreadable image(s) skipped (see the 'error' column), e.g. "
                   f"{failed[0]['path']}: {failed[0]['error']}", err=True)
    typer.echo(f"predictions: {out}")
    if failed:
        raise typer.Exit(1)


@app.command("predict-wsi")
def predict_wsi_command(
    slide: Annotated[Path, typer.Argument(help="A whole-slide image OpenSlide reads (.svs, ...).")],
    model: Annotated[Path, typer.Option(
        help="A model file (a run's best.pt) or an exported model (.onnx / TorchScript .pt).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    mpp: Annotated[float | None, typer.Option(
        help="Process at this many microns per pixel (the resolution the model expects).")] = None,
    magnification: Annotated[float | None, typer.Option(
        help="Or at this objective magnification (e.g. 5 for 5x).")] = None,
    tile_px: Annotated[int | None, typer.Option(
        min=1, help="Tile side in pixels (default: the model's input size).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = 64,
    tissue_threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Keep tiles with at least this tissue fraction.")] = 0.5,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Classify every tissue tile of a whole slide; write heatmap, overlay, tiles.csv, summary."""
    from medistill.deploy import predict_wsi
    from medistill.errors import DataError

    if mpp is not None and magnification is not None:
        raise DataError("give --mpp or --magnification, not both")
    check_output_dir(out)
    s = predict_wsi(slide, model, out, mpp=mpp, magnification=magnification, tile_px=tile_px,
                    batch_size=batch_size, tissue_threshold=tissue_threshold, progress=progress)
    where = f"{s['mpp']:.4g} mpp" if s["mpp"] else f"downsample {s['downsample']:.4g}"
    typer.echo(f"resolution: {where} (level {s['level']}, Lanczos x{s['resample_factor']:.4g}); "
               f"{s['resolution_rule']}")
    rate = s["tiles_per_second"] or 0.0
    typer.echo(f"tiles: {s['n_tiles_tissue']} tissue of {s['n_tiles_total']} "
               f"({s['tile_px']} px); {s['seconds']:.1f} s, {rate:.1f} tiles/s")
    typer.echo("classes: " + ", ".join(f"{c} {n}" for c, n in s["class_counts"].items()))
    for path in s["files"].values():
        typer.echo(f"wrote: {path}")


def main() -> None:
    try:
        app()
    except (MedistillError, OSError) as e:  # bad input or an output location: one line
        typer.echo(f"error: {one_line(e)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
