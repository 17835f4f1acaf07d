"""Views rebuilt from a model file's ``meta["view"]``."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.data import NucleiMaskView, ResolutionView, SparseView
from medistill.data.views import view_from_spec, view_input_size
from medistill.errors import DataError


def test_each_kind_builds_its_view() -> None:
    assert view_from_spec({"factor": 4}) == ResolutionView(4.0)
    assert view_from_spec({"kind": "resolution", "factor": 2, "upsample": True}) == \
        ResolutionView(2.0, upsample=True)
    assert view_from_spec({"kind": "sparse", "k": 7, "size": 56}) == SparseView(7, size=56)
    assert isinstance(view_from_spec({"kind": "nuclei"}), NucleiMaskView)


def test_input_sizes() -> None:
    assert view_input_size({"factor": 4}, (224, 224)) == (56, 56)
    assert view_input_size({"factor": 4, "upsample": True}, (224, 224)) == (224, 224)
    assert view_input_size({"kind": "sparse", "k": 7, "size": 64}, (224, 224)) == (64, 64)
    image = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert view_from_spec({"kind": "sparse", "k": 7, "size": 64})(image).shape == (64, 64, 3)


def test_bad_specs_name_the_problem() -> None:
    with pytest.raises(DataError, match="'k'"):
        view_from_spec({"kind": "sparse"}, "m.pt")
    with pytest.raises(DataError, match="unknown view kind 'blur'"):
        view_from_spec({"kind": "blur"})
