"""Reports only render: the overlay figures are drawn from predictions the caller passes in
(:mod:`medistill.pipelines.overlays` loads the models and predicts)."""

import numpy as np
import pytest

from medistill.reports.instance import write_instance_figure
from medistill.reports.segmentation import write_overlay_figure
from medistill.reports.weak_segmentation import write_weak_figure

PNG = b"\x89PNG"


def rows(n_labels: int):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    truth = np.zeros((24, 24), np.int64)
    truth[4:10, 4:10], truth[14:20, 12:22] = 1, n_labels
    return [("case_a", image, {"truth": truth, "student": np.roll(truth, 2, axis=0)})]


@pytest.mark.parametrize("write, name, n_labels", [
    (lambda out, r: write_overlay_figure(out, r, seed=3), "overlays.png", 2),
    (write_instance_figure, "instance_overlays.png", 2),
    (write_weak_figure, "overlays.png", 1),
])
def test_a_figure_from_given_predictions(tmp_path, write, name, n_labels):
    entry = write(tmp_path, rows(n_labels))
    assert entry[0]["path"] == f"figures/{name}"
    assert (tmp_path / "figures" / name).read_bytes().startswith(PNG)
    assert write(tmp_path / "none", []) == [] and not (tmp_path / "none").exists()


def test_the_segmentation_caption_names_the_seed(tmp_path):
    assert "(seed 3)" in write_overlay_figure(tmp_path, rows(2), seed=3)[0]["caption"]
