"""The registry of training objectives, and the :class:`Method` interface they implement
(defined in :mod:`medistill.engine.method`, which the trainer drives; importable from here)."""

from __future__ import annotations

from torch import nn

from medistill.engine.method import (  # noqa: F401  (the old import paths keep working)
    TERM_PREFIX,
    Method,
    loss_terms,
    weighted_loss,
)
from medistill.registry import Registry

#: training objectives by name; add one with :func:`register_method`
METHODS: Registry[Method] = Registry("method")


def register_method(name: str):
    """``@register_method("my_kd")`` on a :class:`Method` subclass: listed in :data:`METHODS`
    (and so covered by the method contract tests, tests/contracts)."""

    def decorator(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"method {name!r}: {cls!r} is not a Method subclass")
        return METHODS.register(name)(cls)

    return decorator


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients and put in eval mode."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
