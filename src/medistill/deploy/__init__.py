"""Deployment: export a trained model to ONNX / TorchScript and run it on a folder of images.

``export_model`` writes the exported graph (normalised (N, 3, H, W) float32 in, class logits
out) plus a JSON sidecar ``<file>.json`` holding everything needed to feed it (classes, view,
normalisation, input size), after checking the export against PyTorch. ``predict_folder`` runs
such an exported model with the same Lanczos degradation and normalisation as training.
"""

from medistill.deploy.export import EXPORT_FORMATS, export_input_size, export_model
from medistill.deploy.predict import (
    ExportedModel,
    load_exported,
    predict_folder,
    read_sidecar,
    sidecar_path,
)
from medistill.deploy.wsi import predict_wsi

__all__ = [
    "EXPORT_FORMATS",
    "ExportedModel",
    "export_input_size",
    "export_model",
    "load_exported",
    "predict_folder",
    "predict_wsi",
    "read_sidecar",
    "sidecar_path",
]
