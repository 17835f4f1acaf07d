"""A user's own ``nn.Module`` as a medistill classifier, without subclassing.

Methods talk to classifiers through :class:`~medistill.models.base.Classifier`: ``forward``
returns ``(final conv map, logits)``, ``taps(x)`` the named intermediate outputs, ``head`` is
the final linear layer and ``feature_channels`` the map's channels. :class:`TappedModel` gives
any network that interface by naming its submodules, as torchvision's
``create_feature_extractor`` names the nodes to return (here with forward hooks, so the network
runs unchanged)::

    from medistill.models import TappedModel
    from medistill.methods import ResolutionKD

    net = torchvision.models.resnet18(num_classes=4)       # or any nn.Module of yours
    student = TappedModel(net, features="layer4", taps={"mid": "layer2"})
    feats, logits = student(x)                              # layer4's output, net(x)
    student.taps(x)                                         # {"mid", "features", "logits"}
    kd = ResolutionKD(teacher, student)

The wrapped module's own output must be the logits ``(N, K)``. Names are the dotted paths of
``net.named_modules()`` (``"layer4"``, ``"features.6"`` in an ``nn.Sequential``). To use it in
recipes and the CLI, register a factory that returns one (``@register_model("my_net")``) in a
module the recipe lists under ``imports:``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from medistill.models.base import Classifier


def _submodule(module: nn.Module, path: str, what: str) -> nn.Module:
    try:
        return module.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ValueError(f"{what}: the module has no submodule {path!r} (it has: {shown})") \
            from None


class TappedModel(Classifier):
    """``module`` with the outputs of named submodules as taps.

    Args:
        module: any network whose ``forward(x)`` returns the class logits ``(N, K)``.
        features: the submodule whose output is the final convolutional feature map
            ``(N, C, h, w)`` (the ``features`` tap, the first element of ``forward``'s pair).
        taps: more taps: ``{tap name: submodule}``, or submodule names used as tap names.
        head: the final ``nn.Linear`` (default: the last ``nn.Linear`` in ``module``); its
            ``out_features`` is the number of classes.
        feature_channels: ``C`` of the feature map (default: ``head.in_features``).
    """

    def __init__(self, module: nn.Module, features: str,
                 taps: Mapping[str, str] | Sequence[str] = (), head: str | None = None,
                 feature_channels: int | None = None) -> None:
        super().__init__()
        self.module = module
        named = dict(taps) if isinstance(taps, Mapping) else {str(t): str(t) for t in taps}
        for reserved in ("features", "logits"):
            if reserved in named:
                raise ValueError(f"taps: {reserved!r} is reserved (the features map and the "
                                 "module's output)")
        self._paths = {**named, "features": features}
        self.tap_names = (*named, "features", "logits")
        for name, path in self._paths.items():
            _submodule(module, path, f"tap {name!r}").register_forward_hook(_Record(self, name))
        if head is None:
            linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError("head: the module has no nn.Linear; name its final layer")
            head = linears[-1]
        found = _submodule(module, head, "head")
        if not isinstance(found, nn.Linear):
            raise ValueError(f"head: {head!r} is a {type(found).__name__}, not an nn.Linear")
        self.head = found
        self.feature_channels = int(feature_channels or found.in_features)
        self.num_classes = found.out_features
        self._captured: dict[str, torch.Tensor] | None = None

    def taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        try:
            logits = self.module(x)
            captured = self._captured
        finally:
            self._captured = None
        missing = [n for n in self._paths if n not in captured]
        if missing:
            raise ValueError(f"taps {missing}: submodule(s) "
                             f"{[self._paths[n] for n in missing]} did not run in forward")
        if not torch.is_tensor(logits) or logits.dim() != 2:
            raise ValueError("the wrapped module must return the logits (N, K); got "
                             + (f"shape {tuple(logits.shape)}" if torch.is_tensor(logits)
                                else type(logits).__name__))
        if captured["features"].dim() != 4:
            raise ValueError(f"features: {self._paths['features']!r} returns shape "
                             f"{tuple(captured['features'].shape)}, not a (N, C, h, w) map")
        return {**{n: captured[n] for n in self.tap_names[:-1]}, "logits": logits}


class _Record:
    """A forward hook storing a submodule's output under a tap name (a plain object, not a
    closure, so a deep copy of the model records into the copy)."""

    def __init__(self, owner: TappedModel, name: str) -> None:
        self.owner, self.name = owner, name

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        captured = self.owner._captured
        if captured is not None:
            captured[self.name] = output
