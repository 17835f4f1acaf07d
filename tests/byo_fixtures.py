"""Helpers for the bring-your-own tests: a user's model file written into tmp_path, and a
fixture that puts every registry back as it was (a user module registers names process-wide)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medistill import plugins
from medistill.methods.base import METHODS
from medistill.models.registry import MODELS
from medistill.pipelines import RECIPES, demo_data_root

#: a model a user writes in their own file: a Classifier subclass registered by name
USER_MODEL = '''
import torch
from torch import nn

from medistill.models import Classifier, register_model
from {helper} import WIDTH


class TinyNet(Classifier):
    tap_names = ("features", "logits")

    def __init__(self, num_classes: int, width: int = WIDTH) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(width, num_classes)
        self.feature_channels = width

    def taps(self, x):
        f = self.body(x)
        return {{"features": f, "logits": self.head(f.mean((2, 3)))}}


@register_model("{name}")
def factory(num_classes: int, width: int = WIDTH) -> TinyNet:
    return TinyNet(num_classes, width)
'''


def write_user_model(folder: Path, name: str = "user_tiny_net") -> Path:
    """``folder/user_model.py`` registering ``name``; it imports a module next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    helper = f"user_helper_{name}"
    (folder / f"{helper}.py").write_text("WIDTH = 8\n")
    path = folder / "user_model.py"
    path.write_text(USER_MODEL.format(name=name, helper=helper))
    return path


def tiny_recipe_text(model: str = "user_tiny_net", imports: str = "[user_model.py]") -> str:
    """The smallest resolution-KD recipe (the tiny settings of tests/pipelines), user model."""
    return f"""method: resolution_kd
imports: {imports}
data: {{format: csv, root: "{demo_data_root()}", csv: labels.csv}}
teacher: {{name: {model}}}
student: {{name: {model}, kwargs: {{width: 4}}}}
teacher_factor: 4
student_factors: [2]
runs: [kd]
seeds: [0]
train: {{epochs: 1, batch_size: 16, tensorboard: false, progress: false}}
eval: {{n_resamples: 200, latency_repeats: 2}}
"""


def forget_user_code() -> None:
    """As in a fresh process: no name registered by a user import, no user module loaded."""
    for registry in (MODELS, METHODS):
        for name in [n for n in registry.names() if registry.origin(n)]:
            registry._factories.pop(name)
            registry._origins.pop(name)
    for path, module in list(plugins._FILES.items()):
        sys.modules.pop(module.__name__, None)
        plugins._FILES.pop(path)
    for name in [m for m in sys.modules if m.startswith("user_helper_")]:
        sys.modules.pop(name)


@pytest.fixture
def clean_registries():
    """Every registry and loaded-plugin table as before the test."""
    saved = [(r, dict(r._factories), dict(r._origins)) for r in (MODELS, METHODS)]
    recipes, files, loaded = dict(RECIPES), dict(plugins._FILES), plugins._entry_points_loaded
    modules = set(sys.modules)
    yield
    for registry, factories, origins in saved:
        registry._factories.clear()
        registry._factories.update(factories)
        registry._origins.clear()
        registry._origins.update(origins)
    RECIPES.clear()
    RECIPES.update(recipes)
    plugins._FILES.clear()
    plugins._FILES.update(files)
    plugins._entry_points_loaded = loaded
    for name in set(sys.modules) - modules:
        if name.startswith(("medistill_user", "user_helper_", "byo_")):
            sys.modules.pop(name)
