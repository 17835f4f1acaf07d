"""Turning network outputs into instance maps."""

from medistill.postprocess.affinity import (
    POSTPROCESSORS,
    affinities_to_instances,
    decode_embeddings,
    has_mutex_watershed,
    mutex_watershed,
    seeded_watershed,
)

__all__ = ["POSTPROCESSORS", "affinities_to_instances", "decode_embeddings", "has_mutex_watershed",
           "mutex_watershed", "seeded_watershed"]
