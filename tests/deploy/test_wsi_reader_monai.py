"""Our whole-slide tile reader against MONAI's ``WSIReader`` (issue #16: prefer the field's
libraries where they do the same job). Inside the slide both give the same pixels; past its
edge MONAI returns black where we composite onto the slide's background colour."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA

from medistill.deploy.wsi_slide import _read_tiles, open_slide

SLIDE = (SHARED_DATA / "cmu1_small_region_wsi" / "CMU-1-Small-Region.svs").resolve()
pytestmark = pytest.mark.skipif(not SLIDE.is_file(), reason="shared slide not present")


def _monai_tiles(rows: int, cols: int, row0: int, col0: int, tile: int) -> np.ndarray:
    from monai.data import WSIReader

    reader = WSIReader(backend="openslide")
    wsi = reader.read(str(SLIDE))
    img, _ = reader.get_data(wsi, location=(row0 * tile, col0 * tile),
                             size=(rows * tile, cols * tile), level=0)
    rgb = np.asarray(img).transpose(1, 2, 0)  # (H, W, 3), location/size given as (y, x)
    return rgb.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4).reshape(-1, tile,
                                                                                   tile, 3)


def _our_tiles(grid: tuple[int, int], keep_rows: slice, keep_cols: slice, tile: int):
    keep = np.zeros(grid, bool)
    keep[keep_rows, keep_cols] = True
    slide = open_slide(SLIDE)
    return np.concatenate(list(_read_tiles(slide, 0, 1.0, tile, float(tile), keep, "s")))


def test_interior_tiles_equal_monai_wsireader() -> None:
    ours = _our_tiles((10, 10), slice(2, 4), slice(3, 6), 64)
    assert ours.shape == (6, 64, 64, 3)
    assert np.array_equal(ours, _monai_tiles(2, 3, 2, 3, 64))


def test_past_the_edge_we_fill_the_background_monai_black() -> None:
    slide = open_slide(SLIDE)
    width, height = slide.dimensions
    tile = 256
    rows, cols = -(-height // tile), -(-width // tile)  # the last row/column overhangs
    ours = _our_tiles((rows, cols), slice(rows - 1, rows), slice(cols - 1, cols), tile)[0]
    theirs = _monai_tiles(1, 1, rows - 1, cols - 1, tile)[0]
    inside_h, inside_w = height - (rows - 1) * tile, width - (cols - 1) * tile
    assert np.array_equal(ours[:inside_h, :inside_w], theirs[:inside_h, :inside_w])
    assert (ours[-1, -1] == 255).all()  # the slide's background (white)
    assert (theirs[-1, -1] == 0).all()  # MONAI: black, which a model reads as dark tissue
