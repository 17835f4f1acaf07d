"""``medistill profile``: the model file's input size, latency as median (IQR), --device."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from medistill.cli import app
from medistill.engine import save_model
from medistill.models import create_model

KWARGS = {"widths": [8, 16, 16, 16], "groups": 4}


@pytest.fixture
def model_file(tmp_path):
    meta = {"model": {"name": "small_resnet", "kwargs": KWARGS}, "classes": ["a", "b"],
            "view": {"factor": 2, "upsample": False}, "image_size": 64,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    return save_model(create_model("small_resnet", 2, **KWARGS), meta, tmp_path / "m.pt")


def profile(*args: str):
    return CliRunner().invoke(app, ["profile", *args])


def test_checkpoint_is_profiled_at_its_own_input_size(model_file):
    res = profile("--checkpoint", str(model_file), "--repeats", "3")
    assert res.exit_code == 0, res.output
    assert "input: 3x32x32" in res.output  # image_size 64 seen through a factor-2 view
    match = re.search(r"latency: ([\d.]+) ms/image median \(IQR ([\d.]+)-([\d.]+); batch 1, "
                      r"1 thread", res.output)
    assert match, res.output
    median, low, high = (float(g) for g in match.groups())
    assert 0 < low <= median <= high
    res = profile("--checkpoint", str(model_file), "--size", "48", "--repeats", "2")
    assert res.exit_code == 0 and "input: 3x48x48" in res.output


@pytest.mark.parametrize("device, message", [("gpu7", "is not a device"),
                                             ("cuda:99", "cuda:99")])
def test_bad_device_is_refused_before_the_model_is_read(tmp_path, device, message):
    res = profile("--checkpoint", str(tmp_path / "missing.pt"), "--device", device)
    assert res.exit_code == 2
    assert "--device" in res.output and message in res.output
    assert "missing.pt" not in res.output
