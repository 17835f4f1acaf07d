"""Deployment commands: profile, models, export, predict, predict-wsi."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.cli.app import DEVICE_HELP, app, check_device_option
from medistill.output import check_output_dir, check_output_file


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
    model: Annotated[Path, typer.Argument(
        help="A model file (a run's best.pt) or an exported model (.onnx / TorchScript .pt).")],
    images: Annotated[Path, typer.Option(help="Folder of images (searched recursively).")],
    out: Annotated[Path, typer.Option(help="Predictions CSV.")] = Path("predictions.csv"),
    masks: Annotated[Path | None, typer.Option(
        help="Segmentation models: folder of PNG masks (default: <out stem>_masks/).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 32,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Classify (CSV) or segment (CSV + one PNG mask per image) every image in a folder."""
    from collections import Counter

    from medistill.deploy import predict_folder
    from medistill.deploy.predict import masks_folder_for

    check_device_option(device)
    rows = predict_folder(model, images, out, batch_size=batch_size, device=device, masks=masks)
    failed = [r for r in rows if r.get("error")]
    if any("mask" in r for r in rows):  # a segmentation model
        typer.echo(f"{len(rows) - len(failed)} images segmented; masks: "
                   f"{masks or masks_folder_for(out)}")
    else:
        counts = Counter(r["prediction"] for r in rows if not r.get("error"))
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

