"""Training objectives that plug into :class:`medistill.engine.Trainer`."""

from medistill.methods.base import Method, freeze
from medistill.methods.resolution_kd import ResolutionKD
from medistill.methods.supervised import Supervised

__all__ = ["Method", "ResolutionKD", "Supervised", "freeze"]
