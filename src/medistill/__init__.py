"""medistill: knowledge distillation for medical and histopathology imaging."""

__version__ = "0.1.0"
