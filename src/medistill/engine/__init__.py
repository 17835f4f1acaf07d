"""Training engine: the trainer, checkpoints and logs shared by every method."""

from medistill.engine.checkpoint import load_model, save_model
from medistill.engine.trainer import Trainer, predict_loader, seed_everything

__all__ = ["Trainer", "load_model", "predict_loader", "save_model", "seed_everything"]
