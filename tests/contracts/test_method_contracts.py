"""What every registered method promises (issue #14): a training step gives a finite scalar
loss; only trainable parameters get gradients; a frozen teacher (``frozen_prefixes``) stays in
eval mode, gets no gradient and is bit-identical after an optimiser step, buffers included
(BatchNorm statistics); the deployable model is one of the method's own modules.

Every name in ``METHODS`` needs a case in :data:`CASES` (tiny models and a batch), so a new
method cannot skip these checks.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from medistill.methods import (
    METHODS,
    FusionKD,
    GraphRelationKD,
    InstanceEmbedding,
    JointEmbedding,
    LinearProbe,
    Method,
    MILTraining,
    ResolutionKD,
    SegmentationKD,
    SegSupervised,
    Supervised,
)
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")

UNET = {"widths": [8, 8, 16, 16], "decoder_widths": [16, 8, 8, 4, 4]}
MIL = {"backbone_kwargs": {"widths": [8, 8, 16, 16], "groups": 4}}
N = 4


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def classifier(seed: int, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet18", 3, **kw)  # BatchNorm: a teacher in train mode would drift


def views(*names: str, size: int = 32) -> dict:
    g = _g()
    return {"views": {n: torch.randn(N, 3, size, size, generator=g) for n in names},
            "label": torch.arange(N) % 3, "index": torch.arange(N)}


def seg_batch(k: int = 2, size: int = 32) -> dict:
    g = _g()
    return {"image": torch.randn(N, 3, size, size, generator=g),
            "mask": torch.randint(0, k, (N, size, size), generator=g),
            "label": torch.tensor([1, 0, 1, 0]), "index": torch.arange(N)}


def instance_batch(size: int = 16) -> dict:
    labels = torch.zeros(N, size, size, dtype=torch.long)
    labels[:, 2:7, 2:7] = 1
    labels[:, 9:14, 8:15] = 2
    return {"image": torch.randn(N, 3, size, size, generator=_g()), "labels": labels,
            "index": torch.arange(N)}


def seg(name: str, seed: int, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, 2, **kw)


def embed(seed: int, widths: list[int]) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resunet_embedding", 2, widths=widths, embedding_dim=4)


#: method name -> () -> (method, batch)
CASES: dict[str, Callable[[], tuple[Method, dict]]] = {
    "supervised": lambda: (Supervised(classifier(0)), views("input")),
    "resolution_kd": lambda: (ResolutionKD(classifier(0), classifier(1), label_weight=0.5),
                              {**views("teacher"), "views": {
                                  "teacher": views("teacher", size=64)["views"]["teacher"],
                                  "student": views("student")["views"]["student"]}}),
    "joint_embedding": lambda: (JointEmbedding(classifier(0), classifier(1), expander_width=32),
                                views("dense", "sparse")),
    "linear_probe": lambda: (LinearProbe(classifier(0), 3), views("sparse")),
    "seg_supervised": lambda: (SegSupervised(seg("resnet18_unet", 0, **UNET)), seg_batch()),
    "segmentation_kd": lambda: (SegmentationKD(seg("unetpp", 0, features=[4, 4, 8, 8, 16, 4]),
                                               seg("resnet18_unet", 1, **UNET)), seg_batch()),
    "mil_training": lambda: (MILTraining(seg("mil_segmenter", 0, **MIL)), seg_batch()),
    "fusion_kd": lambda: (FusionKD(seg("mil_segmenter", 0, **MIL),
                                   seg("mil_segmenter", 1, **MIL), mil_weight=0.5), seg_batch()),
    "instance_embedding": lambda: (InstanceEmbedding(embed(0, [4, 4, 8])), instance_batch()),
    "graph_relation_kd": lambda: (GraphRelationKD(embed(0, [4, 4, 8]), embed(1, [2, 2, 4]),
                                                  bank_seed=0), instance_batch()),
}

#: trainable parameters a method's loss does not reach (see test_model_contracts.UNUSED)
UNUSED = {
    "mil_training": ("model.backbone.layer4.", "model.backbone.head."),
    "fusion_kd": ("student.backbone.layer4.", "student.backbone.head."),
    "joint_embedding": ("encoder_a.head.", "encoder_b.head."),  # SSL trains features only
}


def test_every_registered_method_has_a_case():
    assert sorted(CASES) == METHODS.names()


def frozen_state(method: Method) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in method.state_dict().items()
            if k.split(".", 1)[0] in method.frozen_prefixes}


@pytest.mark.parametrize("name", sorted(CASES))
def test_step_loss_gradients_and_frozen_modules(name):
    method, batch = CASES[name]()
    assert isinstance(method, METHODS.get(name))
    before = frozen_state(method)
    method.train()
    for prefix in method.frozen_prefixes:
        frozen = getattr(method, prefix)
        assert not frozen.training and not any(m.training for m in frozen.modules())
        assert not any(p.requires_grad for p in frozen.parameters())
    out = method.training_step(batch)
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss), out
    loss.backward()
    params = dict(method.named_parameters())
    with_grad = {n for n, p in params.items() if p.grad is not None}
    assert all(params[n].requires_grad for n in with_grad)  # only trainable ones
    assert all(torch.isfinite(params[n].grad).all() for n in with_grad)
    trainable = {n for n, p in params.items() if p.requires_grad}
    skipped = {n for n in trainable if n.startswith(UNUSED.get(name, ()))}
    assert trainable - with_grad == skipped, sorted(trainable - with_grad)[:5]
    torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1).step()
    after = frozen_state(method)
    assert set(after) == set(before)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"the frozen modules changed: {changed[:5]}"
    assert not any(k.split(".", 1)[0] in method.frozen_prefixes
                   for k in method.trainable_state())
    deployable = method.deployable()
    assert isinstance(deployable, torch.nn.Module)
    own = {id(p) for p in method.parameters()}
    assert all(id(p) in own for p in deployable.parameters())
