"""medistill: knowledge distillation for medical and histopathology imaging.

Layering (lowest first; a package imports only its own layer and the ones below, and the
package graph has no cycle; tests/test_layering.py checks every import, function-level ones
included)::

    errors, this root (__version__)
    registry, output (checked, atomic writes), plugins, files (weights-only model-file format)
    data, models, losses, metrics, postprocess, analysis
    reports        render only: results in, HTML / figures out (no model, no model file)
    config         the recipe schema (it checks model names against the model registry)
    tasks          what a model predicts and how it is scored (model cards, the one
                   inference and metric path): model files (engine) and validation (methods)
                   use it
    engine         Trainer, the Method interface it drives, model files, devices, logging
    methods        the training objectives (implement engine.method.Method)
    pipelines, deploy   recipes (train, evaluate, predict the report's figures); export, predict
    cli

A helper two layers need lives in the lower one (e.g. ``gap_closed`` in metrics, not in the
graph-relation pipeline); a function-level import is for deferring a heavy dependency
(MONAI, matplotlib, onnx), never for hiding a cycle.
"""

__version__ = "0.1.0"
