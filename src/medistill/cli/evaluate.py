"""``medistill evaluate``: score model files on a split, paired when there are several."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medistill.cli.app import DEVICE_HELP, app, check_device_option
from medistill.cli.tables import (
    INSTANCE_COLUMNS,
    SEGMENTATION_COLUMNS,
    WEAK_COLUMNS,
    Column,
    print_paired,
    print_table,
)
from medistill.output import check_output_dir

#: model file names that say nothing of the run (the folder names it)
GENERIC_NAMES = {"best", "last", "model"}


def run_name(path: Path) -> str:
    """A model file's run name: its folder below the run folder it is in (``seed0/x8/kd`` for
    ``runs/rkd/seed0/x8/kd/best.pt``); outside a run folder, the folder of a ``best.pt`` /
    ``last.pt`` / ``model.pt``, else the file's stem."""
    from medistill.pipelines.base import RUN_MARKER

    full = path.resolve()
    for root in full.parents[1:]:
        if (root / RUN_MARKER).is_file():
            return full.parent.relative_to(root).as_posix()
    if full.stem in GENERIC_NAMES and full.parent.name:
        return full.parent.name
    return full.stem


def run_names(paths: list[Path]) -> list[str]:
    """:func:`run_name` of each, or every path as given where two names would be the same."""
    names = [run_name(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def _where(data: Path, split: str, n: int) -> str:
    return f"data: {data}  split: {split}  ({n} {'image' if n == 1 else 'images'})"


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
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Evaluate a trained classifier or segmenter on a split of any supported dataset.

    Segmentation model files remember their data layout; --data gives the root, --split a
    role (train / val / test) or a split value of the data (e.g. testA). Runs are named by
    their folder in the run (seed0/x8/kd); latency is measured on the CPU.
    """
    from medistill.config import DataConfig, validate
    from medistill.engine import load_model
    from medistill.errors import DataError
    from medistill.pipelines.datasets import load_split
    from medistill.pipelines.evaluate import evaluate_classifier
    from medistill.tasks import task_name

    check_device_option(device)
    if out:
        check_output_dir(out)
    checkpoint = checkpoints[0]
    model, meta = load_model(checkpoint)
    task = task_name(meta)
    if task != "classification" and len(checkpoints) > 1:
        raise DataError(f"{checkpoints[1]}: only classifiers can be evaluated several at once")
    if task == "instance":
        _evaluate_instances(checkpoint, model, meta, data, split, n_resamples, out, device)
        return
    if meta.get("weak"):
        _evaluate_weak(checkpoint, model, meta, data, split, n_resamples, out, device)
        return
    if meta.get("task") == "segmentation":
        _evaluate_segmenter(checkpoint, model, meta, data, split, n_resamples, out, device)
        return
    cfg = validate(DataConfig, {"format": layout, "root": str(data), "csv": csv,
                                "image_size": meta.get("image_size")}, "--data")
    samples = load_split(cfg, split, meta["classes"])
    names = run_names(checkpoints)
    records = []
    for number, path in enumerate(checkpoints):
        if number:
            model, other = load_model(path)
            if other.get("task", "classification") != "classification" or other.get("weak") \
                    or other.get("classes") != meta["classes"]:
                raise DataError(f"{path}: not a classifier of the classes of {checkpoint} "
                                f"({', '.join(meta['classes'])}); cannot compare")
            meta = other
        res = evaluate_classifier(model, meta, samples, n_resamples=n_resamples, device=device)
        factor = meta["view"]["factor"]
        records.append({
            "name": names[number], "model_file": str(path),
            "role": "reference" if number == 0 else "compared", "factor": factor,
            "magnification": "1x" if factor == 1 else f"1/{factor:g}x", "seed": 0,
            "data": str(data), "split": split,
            **{k: res[k] for k in ("metrics", "confusion_matrix", "input_size", "efficiency",
                                   "predictions", "labels")}})
    typer.echo(_where(data, split, len(samples.samples)))
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
        write_report(out, {"title": f"Evaluation of {', '.join(names)}",
                           "summary": _where(data, split, len(samples.samples)),
                           "classes": meta["classes"], "runs": records})
        typer.echo(f"report: {out / 'report.html'}")


def _evaluate_weak(checkpoint: Path, model: Any, meta: dict[str, Any], data: Path,
                   split: str, n_resamples: int, out: Path | None, device: str) -> None:
    """A weakly supervised (mil_fusion) model on a role of its data setup (train/val/test)."""
    from medistill.config import validate
    from medistill.data.weak import WeakSegDataset
    from medistill.pipelines.evaluate_weak import evaluate_weak
    from medistill.pipelines.weak_data import WeakDataConfig, load_weak_split

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"--split: a weakly supervised model takes train, val or "
                                 f"test (its data setup's roles), got {split!r}")
    cfg = validate(WeakDataConfig, _data_section(meta, data), f"{checkpoint} data")
    items, labels = load_weak_split(cfg, split)
    norm = meta["normalization"]
    dataset = WeakSegDataset(items, labels, 2, meta["image_size"], norm["mean"], norm["std"],
                             mask_mode=cfg.mask_mode)
    # model files from before sigma_at existed were smoothed in original pixels
    res = evaluate_weak(model, dataset, meta["threshold"], meta.get("sigma", 0.0), n_resamples,
                        sigma_at=meta.get("sigma_at", "original"), device=device)
    _show_one(_record(checkpoint, data, split, res), len(items), WEAK_COLUMNS, out)


def _evaluate_segmenter(checkpoint: Path, model: Any, meta: dict[str, Any], data: Path,
                        split: str, n_resamples: int, out: Path | None, device: str) -> None:
    from medistill.config import validate
    from medistill.pipelines.evaluate_segmentation import evaluate_segmenter
    from medistill.pipelines.seg_data import SegDataConfig, load_seg_split

    cfg = validate(SegDataConfig, _data_section(meta, data), f"{checkpoint} data")
    items = load_seg_split(cfg, split)
    res = evaluate_segmenter(model, meta, items, n_resamples=n_resamples, device=device)
    record = _record(checkpoint, data, split, res, model=meta["model"]["name"])
    _show_one(record, len(items), SEGMENTATION_COLUMNS, out, report={
        "task": "segmentation", "classes": meta["classes"],
        "runs": [{k: v for k, v in record.items() if k != "cases"}]})


def _evaluate_instances(checkpoint: Path, model: Any, meta: dict[str, Any], data: Path,
                        split: str, n_resamples: int, out: Path | None, device: str) -> None:
    """An instance (embedding) model on a role of its data (train / val / test)."""
    from medistill.config import validate
    from medistill.errors import CheckpointError
    from medistill.pipelines.evaluate_instances import evaluate_instance_model
    from medistill.pipelines.instance_data import InstanceDataConfig, load_instance_split

    if not meta.get("data"):
        raise CheckpointError(f"{checkpoint}: an instance model file from before its card "
                              "recorded the data layout; evaluate it with its recipe")
    cfg = validate(InstanceDataConfig, _data_section(meta, data), f"{checkpoint} data")
    items = load_instance_split(cfg, split)
    res = evaluate_instance_model(model, meta, items, n_resamples=n_resamples, device=device)
    _show_one(_record(checkpoint, data, split, res, model=meta["model"]["name"]), len(items),
              INSTANCE_COLUMNS, out)


def _record(checkpoint: Path, data: Path, split: str, res: dict[str, Any],
            **extra: Any) -> dict[str, Any]:
    """The record of one evaluated model file (``eval.json``, the table row)."""
    return {"name": run_name(checkpoint), "model_file": str(checkpoint), "role": "evaluated",
            "seed": 0, "data": str(data), "split": split, **extra, **res}


def _show_one(record: dict[str, Any], n: int, columns: list[Column], out: Path | None,
              report: dict[str, Any] | None = None) -> None:
    """Print where and what was evaluated; with ``out``, write ``eval.json`` (and, given its
    ``report`` fields, ``report.html``)."""
    where = _where(Path(record["data"]), record["split"], n)
    typer.echo(where)
    print_table([record], columns)
    if not out:
        return
    from medistill.engine.checkpoint import atomic_write_text

    atomic_write_text(out / "eval.json", json.dumps(record, indent=2))
    if report is None:
        typer.echo(f"eval: {out / 'eval.json'}")
        return
    from medistill.reports import write_report

    write_report(out, {"title": f"Evaluation of {record['name']}", "summary": where, **report})
    typer.echo(f"report: {out / 'report.html'}")


def _data_section(meta: dict[str, Any], root: Path) -> dict[str, Any]:
    """The data section a model file remembers, at ``root`` and with the whole split (a quick
    run's ``subsample`` is not applied to what is evaluated later)."""
    return {**{k: v for k, v in meta["data"].items() if k != "subsample"}, "root": str(root)}
