"""Deployment commands: profile, models, export, predict, predict-wsi."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.cli.app import DEVICE_HELP, app, check_device_option
from medistill.output import check_output_dir, check_output_file


def checked_device(name: str) -> str:
    """``name`` resolved (``auto`` -> ``cuda`` when available, else ``cpu``) after
    :func:`medistill.config.check_device`, before any model or slide is read; a bad or absent
    device is a usage error naming ``--device``."""
    from medistill.config import check_device
    from medistill.engine.trainer import resolve_device

    try:
        check_device(name)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="'--device'") from None
    return str(resolve_device(name))


def checkpoint_input_size(meta: dict) -> tuple[int, int] | None:
    """The input size a model file's network sees (its ``image_size`` through its view),
    ``None`` when it was trained on images of any size."""
    from medistill.pipelines.evaluate import model_input_size

    image_size = meta.get("image_size")
    if not image_size:
        return None
    hw = (int(image_size), int(image_size)) if isinstance(image_size, int | float) \
        else (int(image_size[0]), int(image_size[1]))
    if not isinstance(meta.get("view"), dict):  # a segmentation model sees image_size itself
        return hw
    h, w = model_input_size(meta, hw)
    return int(h), int(w)


@app.command()
def profile(
    model: Annotated[str, typer.Option(help="Registered model name.")] = "small_resnet",
    size: Annotated[int | None, typer.Option(
        min=1, help="Square input size in pixels (default: the model file's input size with "
                    "--checkpoint, else 224).")] = None,
    num_classes: Annotated[int, typer.Option(help="Number of classes.")] = 2,
    checkpoint: Annotated[Path | None, typer.Option(help="Profile a model file.")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed latency blocks.")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forward passes first.")] = 3,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Intra-op CPU threads, pinned while timing (default 1).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps or auto.")] = "cpu",
) -> None:
    """GFLOPs, parameters and latency (median and interquartile range) of a model."""
    from medistill.metrics import profile_model

    dev = checked_device(device)
    if checkpoint:
        from medistill.engine import load_model

        net, meta = load_model(checkpoint)
        hw = (size, size) if size else checkpoint_input_size(meta)
        if hw is None:
            hw = (224, 224)
            typer.echo(f"{checkpoint} records no image_size: profiling at 224 px (--size)",
                       err=True)
    else:
        from medistill.models import create_model

        net = create_model(model, num_classes)
        hw = (size or 224, size or 224)
    net = net.to(dev)
    p = profile_model(net, (3, *hw), repeats=repeats, warmup=warmup, threads=threads)
    typer.echo(f"model: {checkpoint or model}  input: 3x{hw[0]}x{hw[1]}  device: {dev}")
    typer.echo(f"params: {p['params']:,}  GFLOPs: {p['gflops']:.4f}  latency: "
               f"{p['latency_ms']:.3g} ms/image median (IQR {p['latency_q25_ms']:.3g}-"
               f"{p['latency_q75_ms']:.3g}; batch 1, {p['latency_threads']} thread(s), "
               f"{repeats} blocks after {warmup} warm-up passes)")


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
    slides: Annotated[list[Path], typer.Argument(
        help="Whole-slide images OpenSlide reads (.svs, ...); several: one subfolder each.")],
    model: Annotated[Path, typer.Option(
        help="A model file (a run's best.pt) or an exported model (.onnx / TorchScript .pt).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    mpp: Annotated[float | None, typer.Option(
        help="Process at this many microns per pixel (default: the mpp recorded in the model "
             "file, else the slide's base mpp x the model's view factor).")] = None,
    magnification: Annotated[float | None, typer.Option(
        help="Or at this objective magnification (e.g. 5 for 5x).")] = None,
    tile_px: Annotated[int | None, typer.Option(
        min=1, help="Tile side in pixels (default: the model's input size).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per batch.")] = 64,
    tissue_threshold: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Keep tiles with at least this tissue fraction.")] = 0.5,
    readers: Annotated[int | None, typer.Option(
        min=1, help="Tile-reading threads (default: up to 4, one per CPU core).")] = None,
    device: Annotated[str, typer.Option(
        help="cpu, cuda, cuda:N, mps or auto (PyTorch model files).")] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Classify every tissue tile of whole slides; write heatmap, overlay, tiles.csv,
    tiles.geojson (QuPath) and summary.json per slide."""
    from medistill.deploy.wsi import DEFAULT_READERS, predict_slides, predict_wsi, slide_folders
    from medistill.errors import DataError

    dev = checked_device(device)
    if mpp is not None and magnification is not None:
        raise DataError("give --mpp or --magnification, not both")
    kwargs = {"mpp": mpp, "magnification": magnification, "batch_size": batch_size,
              "tissue_threshold": tissue_threshold, "progress": progress,
              "readers": readers or DEFAULT_READERS}
    if len(slides) == 1:
        check_output_dir(out)
        summaries = [predict_wsi(slides[0], model, out, tile_px=tile_px, device=dev, **kwargs)]
    else:
        for folder in slide_folders(slides, out):
            check_output_dir(folder)
        summaries = predict_slides(slides, model, out, tile_px=tile_px, device=dev, **kwargs)
    for s in summaries:
        if len(summaries) > 1:
            typer.echo(f"slide: {s['slide']}")
        where = f"{s['mpp']:.4g} mpp" if s["mpp"] else f"downsample {s['downsample']:.4g}"
        typer.echo(f"resolution: {where} (level {s['level']}, Lanczos "
                   f"x{s['resample_factor']:.4g}); {s['resolution_rule']}")
        rate = s["tiles_per_second"] or 0.0
        typer.echo(f"tiles: {s['n_tiles_tissue']} tissue of {s['n_tiles_total']} "
                   f"({s['tile_px']} px); {s['seconds']:.1f} s, {rate:.1f} tiles/s")
        typer.echo("classes: " + ", ".join(f"{c} {n}" for c, n in s["class_counts"].items()))
        for path in s["files"].values():
            typer.echo(f"wrote: {path}")
    if len(summaries) > 1:
        typer.echo(f"wrote: {out / 'slides.csv'}")
