"""Whole-slide inference on a real (small) Aperio slide: outputs (CSV, QuPath GeoJSON, PNGs with
legends), geometry, resolution (incl. the model file's mpp), several slides, readers, errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from medistill.deploy import predict_wsi
from medistill.deploy import wsi as wsi_module
from medistill.deploy.wsi import (
    choose_level,
    model_tile_geometry,
    predict_slides,
    requested_downsample,
    slide_folders,
    tile_fractions,
)
from medistill.deploy.wsi_outputs import class_colors, heatmap_png, overlay_png, tiles_geojson
from medistill.engine import save_model
from medistill.errors import CheckpointError, DataError
from medistill.models import create_model

SLIDE = (SHARED_DATA
         / "cmu1_small_region_wsi" / "CMU-1-Small-Region.svs").resolve()
SLIDE_MPP = 0.499  # openslide.mpp-x of the slide; AppMag 20; 2220 x 2967 px, one level
CLASSES = ["tumour", "stroma", "other"]
KWARGS = {"widths": [8, 16, 32, 64], "groups": 8}  # a tiny small_resnet: fast tiles
META = {
    "model": {"name": "small_resnet", "kwargs": KWARGS},
    "classes": CLASSES,
    "view": {"factor": 1, "upsample": False},
    "normalization": {"mean": [0.7, 0.5, 0.7], "std": [0.15, 0.2, 0.15]},
    "image_size": 32,
}


class FakeSlide:
    """What ``choose_level`` / ``requested_downsample`` use of an ``OpenSlide``."""

    def __init__(self, downsamples=(1.0,), properties=None) -> None:
        self.level_downsamples = tuple(float(d) for d in downsamples)
        self.properties = properties or {}

    def get_best_level_for_downsample(self, downsample: float) -> int:  # OpenSlide's rule
        below = [i for i, d in enumerate(self.level_downsamples) if d <= downsample]
        return below[-1] if below else 0


# --------------------------------------------------------------------------- helpers, no slide
def test_choose_level_reads_the_coarsest_level_below_and_lanczos_the_rest():
    slide = FakeSlide([1, 4, 16])
    assert choose_level(slide, 6) == (1, 4.0, 1.5)
    assert choose_level(slide, 1) == (0, 1.0, 1.0)
    assert choose_level(slide, 3.99) == (1, 4.0, 1.0)  # within 2 % of a level: used as is
    assert choose_level(slide, 20) == (2, 16.0, 1.25)
    with pytest.raises(DataError, match="finer"):
        choose_level(slide, 0.5)


def test_requested_downsample_from_mpp_magnification_or_view_factor():
    slide = FakeSlide(properties={"openslide.mpp-x": "0.25", "openslide.objective-power": "40"})
    assert requested_downsample(slide, 2, mpp=1.0)[0] == pytest.approx(4.0)
    assert requested_downsample(slide, 2, magnification=10)[0] == pytest.approx(4.0)
    down, rule = requested_downsample(slide, 2)
    assert down == 2 and rule.startswith("default")
    with pytest.raises(DataError, match="not both"):
        requested_downsample(slide, 2, mpp=1.0, magnification=10)
    bare = FakeSlide(properties={"openslide.objective-power": "20"})
    for kwargs in ({}, {"mpp": 1.0}):
        with pytest.raises(DataError, match="mpp-x"):
            requested_downsample(bare, 1, name="bare.svs", **kwargs)
    assert requested_downsample(bare, 1, magnification=5)[0] == pytest.approx(4.0)
    with pytest.raises(DataError, match="objective power"):
        requested_downsample(FakeSlide(properties={"openslide.mpp-x": "0.5"}), 1,
                             magnification=5)


def test_model_tile_geometry():
    view = {"factor": 2, "upsample": False}
    assert model_tile_geometry({"view": view, "image_size": 64}) == (32, 32)
    assert model_tile_geometry({"view": {**view, "upsample": True}, "image_size": 64}) == (32, 64)
    assert model_tile_geometry({"view": view, "image_size": 64}, tile_px=48) == (48, 48)
    exported = {"view": view, "image_size": 64, "input_size": [32, 32], "dynamic_size": False}
    with pytest.raises(CheckpointError, match="takes 32x32"):
        model_tile_geometry(exported, tile_px=48)
    with pytest.raises(CheckpointError, match="tile_px"):
        model_tile_geometry({"view": view})


def test_tile_fractions_average_the_mask_under_each_tile():
    mask = np.zeros((20, 40), bool)  # a 400 x 200 px slide at 1/10
    mask[:, :10] = True  # the left quarter is tissue
    f = tile_fractions(mask, (400, 200), 50.0, (4, 8))
    assert f.shape == (4, 8)
    np.testing.assert_allclose(f[:, :2], 1.0)
    np.testing.assert_allclose(f[:, 2:], 0.0)


# --------------------------------------------------------------------------- on the real slide
@pytest.fixture(scope="module")
def slide_path() -> Path:
    pytest.importorskip("openslide")
    if not SLIDE.is_file():
        pytest.skip(f"{SLIDE} not present")
    return SLIDE


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("small_resnet", len(CLASSES), **KWARGS)
    return save_model(model, META, tmp_path_factory.mktemp("model") / "best.pt")


@pytest.fixture(scope="module")
def runs(slide_path, model_file, tmp_path_factory, single_thread) -> dict[float, Path]:
    """predict_wsi at 1 and 2 microns per pixel (32 px tiles: 64 and 128 level-0 px)."""
    root = tmp_path_factory.mktemp("wsi")
    for mpp in (1.0, 2.0):
        predict_wsi(slide_path, model_file, root / str(mpp), mpp=mpp, batch_size=128,
                    progress=False)
    return {mpp: root / str(mpp) for mpp in (1.0, 2.0)}


def read_rows(out: Path) -> list[dict[str, str]]:
    with (out / "tiles.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_outputs_and_tile_table(runs):
    out = runs[1.0]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["heatmap.png", "overlay.png", "summary.json", "tiles.csv",
                     "tiles.geojson"]  # no temp files
    s = json.loads((out / "summary.json").read_text())
    assert s["mpp"] == pytest.approx(1.0) and s["level"] == 0
    assert s["resample_factor"] == pytest.approx(1.0 / SLIDE_MPP)
    assert s["slide_size"] == [2220, 2967] and s["tile_px"] == 32
    assert s["magnification"] == pytest.approx(20 * SLIDE_MPP)
    rows = read_rows(out)
    assert len(rows) == s["n_tiles_tissue"] > 0
    assert sum(s["class_counts"].values()) == len(rows)
    assert list(rows[0])[:7] == ["x", "y", "size", "row", "col", "tissue_fraction", "prediction"]
    size = float(rows[0]["size"])
    assert size == pytest.approx(32 / SLIDE_MPP, rel=1e-4)
    for r in rows:
        x, y = int(r["x"]), int(r["y"])
        assert 0 <= x and x + size <= 2220 + 0.5 and 0 <= y and y + size <= 2967 + 0.5
        assert float(r["tissue_fraction"]) >= 0.5
        probs = [float(r[f"prob_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert r["prediction"] == CLASSES[int(np.argmax(probs))]
    # the tissue mask drops the slide's background
    assert s["n_tiles_tissue"] < 0.8 * s["n_tiles_total"]
    assert s["n_tiles_total"] == 34 * 46  # floor(2220 / 64.13) x floor(2967 / 64.13)


def test_twice_coarser_mpp_gives_about_four_times_fewer_tiles(runs):
    fine = json.loads((runs[1.0] / "summary.json").read_text())
    coarse = json.loads((runs[2.0] / "summary.json").read_text())
    assert fine["n_tiles_total"] / coarse["n_tiles_total"] == pytest.approx(4, rel=0.1)
    assert fine["n_tiles_tissue"] / coarse["n_tiles_tissue"] == pytest.approx(4, rel=0.25)


def test_tiles_are_read_where_the_table_says(slide_path, single_thread):
    """At the base resolution a tile is the slide's pixels at (x, y), in row-major order."""
    slide = wsi_module.open_slide(slide_path)
    try:
        keep = np.zeros((3, 5), bool)
        keep[0, [1, 4]] = keep[2, 2] = True
        tiles = np.concatenate(list(wsi_module._read_tiles(slide, 0, 1.0, 16, 16.0, keep, "s")))
        assert tiles.shape == (3, 16, 16, 3)
        for tile, (row, col) in zip(tiles, np.argwhere(keep), strict=True):
            expected = np.asarray(slide.read_region((col * 16, row * 16), 0, (16, 16)))[..., :3]
            np.testing.assert_array_equal(tile, expected)
    finally:
        slide.close()


@pytest.fixture(scope="module")
def pyramid(slide_path, tmp_path_factory) -> Path:
    """The slide as a 3-level generic tiled TIFF (downsamples exactly 1, 4, 16; Lanczos)."""
    tifffile = pytest.importorskip("tifffile")
    from medistill.data.transforms import lanczos_resize

    slide = wsi_module.open_slide(slide_path)
    try:
        base = np.asarray(slide.read_region((0, 0), 0, (2208, 2960)).convert("RGB"))
    finally:
        slide.close()
    path = tmp_path_factory.mktemp("pyramid") / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        for i, ds in enumerate((1, 4, 16)):
            image = base if ds == 1 else lanczos_resize(base, (2960 // ds, 2208 // ds))
            px_per_cm = 1e4 / (SLIDE_MPP * ds)
            tif.write(image, tile=(256, 256), compression="zlib", photometric="rgb",
                      resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER",
                      subfiletype=0 if i == 0 else 1)
    return path


def test_pyramid_level_choice_and_reading(pyramid, model_file, tmp_path, single_thread):
    at4 = predict_wsi(pyramid, model_file, tmp_path / "x4", mpp=4 * SLIDE_MPP, progress=False)
    assert (at4["level"], at4["level_downsample"], at4["resample_factor"]) == (1, 4.0, 1.0)
    at6 = predict_wsi(pyramid, model_file, tmp_path / "x6", mpp=6 * SLIDE_MPP, progress=False)
    assert (at6["level"], at6["level_downsample"]) == (1, 4.0)
    assert at6["resample_factor"] == pytest.approx(1.5)
    assert at6["mpp"] == pytest.approx(6 * SLIDE_MPP) and at6["n_tiles_tissue"] > 0

    # tiles read from level 1 = tiles read from level 0 and Lanczos-resampled by 4
    slide = wsi_module.open_slide(pyramid)
    try:
        keep = np.zeros((23, 17), bool)
        keep[10:13, 6:10] = True  # tissue
        tiles = [np.concatenate(list(wsi_module._read_tiles(slide, level, factor, 32, 128.0,
                                                            keep, "p"))).astype(float)
                 for level, factor in ((1, 1.0), (0, 4.0))]
    finally:
        slide.close()
    assert tiles[0].shape == tiles[1].shape == (12, 32, 32, 3)
    assert tiles[0].std() > 20  # tissue, not blank glass
    assert np.abs(tiles[0] - tiles[1]).mean() < 0.5  # grey levels (resampling edge effects)


def test_exported_model_gives_the_same_probabilities(slide_path, model_file, tmp_path,
                                                     single_thread):
    from medistill.deploy import export_model

    exported = export_model(model_file, tmp_path / "tiny.ts.pt", "torchscript")["path"]
    kw = {"mpp": 4.0, "progress": False}
    a = predict_wsi(slide_path, model_file, tmp_path / "pt", **kw)
    b = predict_wsi(slide_path, exported, tmp_path / "ts", **kw)
    assert (a["model_format"], b["model_format"]) == ("pytorch", "torchscript")
    assert a["n_tiles_tissue"] == b["n_tiles_tissue"] > 0
    pa, pb = read_rows(tmp_path / "pt"), read_rows(tmp_path / "ts")
    for ra, rb in zip(pa, pb, strict=True):
        assert (ra["x"], ra["y"]) == (rb["x"], rb["y"])
        for c in CLASSES:
            assert float(ra[f"prob_{c}"]) == pytest.approx(float(rb[f"prob_{c}"]), abs=1e-4)


def test_bad_slide_is_a_one_line_data_error(model_file, tmp_path):
    pytest.importorskip("openslide")
    missing = tmp_path / "nope.svs"
    with pytest.raises(DataError, match="nope.svs"):
        predict_wsi(missing, model_file, tmp_path / "out")
    junk = tmp_path / "junk.svs"
    junk.write_text("not a slide\n")
    with pytest.raises(DataError, match="junk.svs") as info:
        predict_wsi(junk, model_file, tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_cli_predict_wsi(slide_path, model_file, tmp_path, monkeypatch, capsys, single_thread):
    from medistill import cli

    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["medistill", "predict-wsi", str(slide_path), "--model",
                                      str(model_file), "--out", str(out), "--mpp", "4",
                                      "--no-progress"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code in (0, None)
    text = capsys.readouterr().out
    assert "tiles/s" in text and str(out / "tiles.csv") in text
    assert (out / "summary.json").is_file()

    monkeypatch.setattr(sys, "argv", ["medistill", "predict-wsi", str(tmp_path / "nope.svs"),
                                      "--model", str(model_file), "--out", str(out)])
    with pytest.raises(SystemExit) as failed:
        cli.main()
    assert failed.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: slide not found:") and "nope.svs" in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- outputs and options
def png_array(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def colour_count(image: np.ndarray, colour: np.ndarray) -> int:
    return int((image == colour).all(-1).sum())


# --------------------------------------------------------------------------- no slide needed
def test_geojson_is_a_qupath_feature_collection_of_classified_tiles() -> None:
    index = np.array([[0, 1], [2, 3]])
    probs = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]], dtype=np.float32)
    colors = class_colors(3)
    doc = json.loads(tiles_geojson(index, 64.5, np.array([0.9, 0.75]), probs, CLASSES, colors))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 2
    first = doc["features"][0]
    assert first["type"] == "Feature" and first["geometry"]["type"] == "Polygon"
    ring = first["geometry"]["coordinates"][0]
    assert ring == [[64.5, 0], [129, 0], [129, 64.5], [64.5, 64.5], [64.5, 0]]  # closed, level 0
    props = first["properties"]
    assert props["objectType"] == "detection"
    assert props["classification"] == {"name": "stroma", "color": colors[1].tolist()}
    m = props["measurements"]
    assert m["probability"] == pytest.approx(0.7) and m["P(tumour)"] == pytest.approx(0.2)
    assert (m["row"], m["col"], m["tissue_fraction"]) == (0, 1, 0.9)
    second = doc["features"][1]
    assert second["properties"]["classification"]["name"] == "tumour"
    assert second["geometry"]["coordinates"][0][2] == [258, 193.5]


def test_pngs_are_drawn_without_a_matplotlib_figure(monkeypatch) -> None:
    import matplotlib.figure

    def refuse(*args, **kwargs):
        raise AssertionError("a matplotlib figure was created")

    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", refuse)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(12, 20)).astype(np.float32)
    probs[:4, :5] = np.nan  # background
    colors = class_colors(3)
    heat = png_array(heatmap_png(probs, CLASSES, colors, "slide: 200 tiles"))
    assert heat.shape[1] > 4 * heat.shape[0] // 2  # 1 class map + 3 probability panels side by side
    argmax = np.nan_to_num(probs, nan=-1).argmax(-1)[np.isfinite(probs[..., 0])]
    counts = np.array([colour_count(heat, c) for c in colors], dtype=float)
    shares = np.bincount(argmax, minlength=3) / argmax.size
    # the class map's area per colour follows the tiles (legend swatches add a little)
    np.testing.assert_allclose(counts / counts.sum(), shares, atol=0.03)

    thumb = np.full((80, 100, 3), 230, np.uint8)
    grid = np.full((4, 5), -1)
    grid[1, 1], grid[2, 3] = 0, 2
    over = png_array(overlay_png(thumb, grid, 20.0, (100, 80), colors, CLASSES))
    assert over.shape[0] > 80 and over.shape[1] == 240  # thumbnail + legend strip below
    legend = over[80:]
    for c in colors:  # a swatch per class, even one without tiles
        assert colour_count(legend, c) > 20
    blended = np.rint(0.55 * 230 + 0.45 * colors[0].astype(float)).astype(np.uint8)
    assert (over[30, 30] == blended).all() and (over[5, 5] == 230).all()


def test_slide_folders_one_per_slide(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "s1.svs", tmp_path / "y" / "s1.svs"
    assert slide_folders([tmp_path / "s0.svs", a], tmp_path / "o") == [
        tmp_path / "o" / "s0", tmp_path / "o" / "s1"]
    assert slide_folders([a, b], tmp_path / "o") == [tmp_path / "o" / "x_s1",
                                                      tmp_path / "o" / "y_s1"]
    with pytest.raises(DataError, match="twice"):
        slide_folders([a, a], tmp_path / "o")


# --------------------------------------------------------------------------- on the real slide
def test_geojson_matches_the_tile_table(slide_path, model_file, tmp_path, single_thread):
    s = predict_wsi(slide_path, model_file, tmp_path / "o", mpp=2.0, progress=False)
    doc = json.loads((tmp_path / "o" / "tiles.geojson").read_text())
    rows = read_rows(tmp_path / "o")
    assert len(doc["features"]) == len(rows) == s["n_tiles_tissue"] > 0
    assert s["files"]["tiles.geojson"] == str(tmp_path / "o" / "tiles.geojson")
    for feature, row in zip(doc["features"], rows, strict=True):
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == pytest.approx([int(row["x"]), int(row["y"])], abs=0.5)
        assert ring[2][0] - ring[0][0] == pytest.approx(float(row["size"]), rel=1e-4)
        props = feature["properties"]
        assert props["classification"]["name"] == row["prediction"]
        assert props["measurements"]["probability"] == pytest.approx(
            max(float(row[f"prob_{c}"]) for c in CLASSES), abs=1e-5)


def test_parallel_readers_read_the_same_tiles(slide_path, single_thread):
    slide = wsi_module.open_slide(slide_path)
    try:
        keep = np.random.default_rng(1).random((20, 30)) < 0.4
        one, four = (np.concatenate(list(wsi_module._read_tiles(
            slide, 0, 1.5, 24, 36.0, keep, "s", workers=w))) for w in (1, 4))
    finally:
        slide.close()
    assert one.shape == (keep.sum(), 24, 24, 3)
    np.testing.assert_array_equal(one, four)


def test_the_model_files_mpp_is_used_without_mpp(slide_path, tmp_path, single_thread):
    torch.manual_seed(0)
    path = save_model(create_model("small_resnet", len(CLASSES), **KWARGS),
                      {**META, "mpp": 2.0}, tmp_path / "m.pt")
    s = predict_wsi(slide_path, path, tmp_path / "o", progress=False)
    assert s["mpp"] == pytest.approx(2.0) and s["model_mpp"] == 2.0
    assert s["resolution_rule"] == "model file: trained at 2 mpp"
    assert s["downsample"] == pytest.approx(2.0 / SLIDE_MPP)
    explicit = predict_wsi(slide_path, path, tmp_path / "o4", mpp=4.0, progress=False)
    assert explicit["mpp"] == pytest.approx(4.0)  # an explicit mpp still wins


def test_several_slides_one_folder_each(slide_path, model_file, tmp_path, single_thread):
    second = tmp_path / "copies" / "second.svs"
    second.parent.mkdir()
    shutil.copy(slide_path, second)
    out = tmp_path / "out"
    summaries = predict_slides([slide_path, second], model_file, out, mpp=4.0, progress=False)
    assert [Path(s["slide"]) for s in summaries] == [slide_path, second]
    assert sorted(p.name for p in out.iterdir()) == sorted([slide_path.stem, "second",
                                                            "slides.csv"])
    for s in summaries:
        folder = Path(s["files"]["summary.json"]).parent
        assert (folder / "tiles.geojson").is_file() and (folder / "overlay.png").is_file()
    with (out / "slides.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["folder"] for r in table] == [slide_path.stem, "second"]
    assert [int(r["tissue_tiles"]) for r in table] == [s["n_tiles_tissue"] for s in summaries]
    assert summaries[0]["class_counts"] == summaries[1]["class_counts"]  # the same pixels

    # a missing slide stops the call before any slide is processed
    with pytest.raises(DataError, match="nope.svs"):
        predict_slides([slide_path, tmp_path / "nope.svs"], model_file, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_cli_several_slides_and_device(slide_path, model_file, tmp_path, monkeypatch, capsys,
                                       single_thread):
    from medistill import cli

    second = tmp_path / "b.svs"
    shutil.copy(slide_path, second)
    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["medistill", "predict-wsi", str(slide_path), str(second),
                                      "--model", str(model_file), "--out", str(out), "--mpp",
                                      "4", "--no-progress", "--readers", "2"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code in (0, None)
    text = capsys.readouterr().out
    assert text.count("slide: ") == 2 and str(out / "slides.csv") in text
    assert (out / "b" / "tiles.geojson").is_file()

    monkeypatch.setattr(sys, "argv", ["medistill", "predict-wsi", str(slide_path), "--model",
                                      str(model_file), "--out", str(tmp_path / "d"),
                                      "--device", "cuda:99"])
    with pytest.raises(SystemExit) as failed:
        cli.main()
    assert failed.value.code == 2
    assert "--device" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_thumbnail_is_a_pyramid_level_read_as_is(pyramid, slide_path):
    from medistill.deploy.wsi_slide import read_thumbnail

    slide = wsi_module.open_slide(pyramid)
    try:
        level1 = np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]))[..., :3]
        thumb = read_thumbnail(slide, 128.0)  # 32 px per tile at level 1 (552 x 740)
        np.testing.assert_array_equal(thumb, level1)
        # level 1 has 3 px per tile, level 0 is far larger than needed: get_thumbnail
        assert read_thumbnail(slide, 12.0).shape == (1024, 764, 3)
    finally:
        slide.close()
    single = wsi_module.open_slide(slide_path)  # one level of 2220 x 2967: shrunk to 1024
    try:
        assert max(read_thumbnail(single, 64.0).shape) == 1024
    finally:
        single.close()
