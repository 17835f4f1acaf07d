"""Views from their description in a model file (``meta["view"]``).

A trained model records the view it was trained on so that evaluation, export and prediction
feed it the same input:

* ``{"kind": "resolution", "factor": f, "upsample": bool}`` (``kind`` may be left out):
  :class:`~medistill.data.ResolutionView`, downsampling by ``f`` (resolution distillation);
* ``{"kind": "sparse", "k": k, "size": s}``: :class:`~medistill.data.SparseView`, down to
  ``k`` px and back up to ``s`` px (More From Less);
* ``{"kind": "nuclei"}``: :class:`~medistill.data.NucleiMaskView` with the classical
  nuclei segmenter (More From Less, tissue-nuclei distillation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medistill.data.sparse import NucleiMaskView, SparseView
from medistill.data.transforms import ResolutionView
from medistill.errors import DataError

View = ResolutionView | SparseView | NucleiMaskView


def view_from_spec(spec: Mapping[str, Any], source: str = "model") -> View:
    kind = spec.get("kind", "resolution")
    try:
        if kind == "resolution":
            return ResolutionView(factor=float(spec["factor"]),
                                  upsample=bool(spec.get("upsample", False)))
        if kind == "sparse":
            return SparseView(int(spec["k"]), size=spec.get("size"))
        if kind == "nuclei":
            return NucleiMaskView()
    except KeyError as e:
        raise DataError(f"{source}: view of kind {kind!r} has no {e.args[0]!r}") from None
    raise DataError(f"{source}: unknown view kind {kind!r} (resolution, sparse or nuclei)")


def view_input_size(spec: Mapping[str, Any], original_hw: tuple[int, int]) -> tuple[int, int]:
    """The model input size for an original image of ``original_hw``."""
    return tuple(view_from_spec(spec).size_for(*original_hw))  # type: ignore[return-value]
