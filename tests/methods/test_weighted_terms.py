"""Every multi-term method reports its WEIGHTED terms (``term/<name>``), which sum to the loss
and keep their graph, so the trainer can measure each one's share of the gradient."""

from __future__ import annotations

import functools
import operator

import pytest
import torch
import torch.nn.functional as F

from medistill.engine.diagnostics import gradient_shares, trainable_parameters
from medistill.methods import FusionKD, GraphRelationKD, JointEmbedding, ResolutionKD
from medistill.methods.base import loss_terms
from medistill.methods.graph_relation import InstanceEmbedding
from medistill.methods.hlfd import PRESETS, SegmentationKD
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _g(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _resolution():
    torch.manual_seed(0)
    m = ResolutionKD(create_model("small_resnet", 3), create_model("small_resnet", 3),
                     soft_weight=0.5, pixel_weight=2.0, label_weight=0.3)
    batch = {"views": {"teacher": torch.randn(2, 3, 64, 64, generator=_g()),
                       "student": torch.randn(2, 3, 32, 32, generator=_g(2))},
             "label": torch.tensor([0, 2]), "index": torch.arange(2)}
    return m, batch, {"soft": 0.5, "pixel": 2.0, "ce": 0.3}


def _hlfd():
    torch.manual_seed(0)
    t = create_model("unetpp", 2, features=[4, 4, 8, 8, 16, 4])
    s = create_model("resnet18_unet", 2, widths=[8, 8, 16, 16], decoder_widths=[16, 8, 8, 4, 4])
    batch = {"image": torch.randn(2, 3, 32, 32, generator=_g()),
             "mask": torch.randint(0, 2, (2, 32, 32), generator=_g()), "index": torch.arange(2)}
    # lambda x the authors' halves: 0.1 x 0.5 (UPD, sum of IPD), 0.9 x 0.5 (UFD, sum of IFD)
    weights = {"seg": 1.0, "upd": 0.05, "ipd": 0.05, "ufd": 0.45, "ifd": 0.45, "upd_probe": 1.0}
    return SegmentationKD(t, s, PRESETS["hlfd"]), batch, weights


def _graph():
    torch.manual_seed(0)
    t = create_model("resunet_embedding", 2, widths=[4, 4, 8], embedding_dim=4)
    s = create_model("resunet_embedding", 2, widths=[2, 2, 4], embedding_dim=4)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 2:7, 2:7], labels[:, 9:14, 8:15] = 1, 2
    batch = {"image": torch.randn(2, 3, 16, 16, generator=_g()), "labels": labels,
             "index": torch.arange(2)}
    m = GraphRelationKD(t, s, foreground_weight=0.5)
    m.training_step(batch)  # fill the memory bank: the inter-image terms have a gradient
    weights = {"affinity": 1.0, "foreground": 0.5, "agd": 10.0, "igd_node": 0.1,
               "igd_edge": 0.1, "inter_agd": 1.0, "inter_igd": 1.0}
    return m, batch, weights


def _instance():
    m, batch, _ = _graph()
    return InstanceEmbedding(m.model, affinity_weight=2.0), batch, {"affinity": 2.0,
                                                                    "foreground": 1.0}


def _mil():
    tiny = {"backbone_kwargs": {"widths": [8, 8, 16, 16], "groups": 4}}
    torch.manual_seed(0)
    t, s = create_model("mil_segmenter", 2, **tiny), create_model("mil_segmenter", 2, **tiny)
    batch = {"image": torch.randn(4, 3, 32, 32, generator=_g()),
             "label": torch.tensor([1, 0, 1, 0]), "index": torch.arange(4)}
    return (FusionKD(t, s, wce_weight=0.5, mil_weight=0.25), batch,
            {"fusion_kd": 1.0, "wce": 0.5, "mil": 0.25})


def _vicreg():
    torch.manual_seed(0)
    m = JointEmbedding(create_model("small_resnet", 3), create_model("small_resnet", 3),
                       expander_width=32)
    dense = torch.randn(4, 3, 32, 32, generator=_g())
    sparse = F.interpolate(F.interpolate(dense, size=4, mode="area"), size=32, mode="bilinear")
    return (m, {"views": {"dense": dense, "sparse": sparse}, "label": torch.arange(4) % 3},
            {"invariance": 25.0, "variance": 25.0, "covariance": 1.0})


@pytest.mark.parametrize("build", [_resolution, _hlfd, _graph, _instance, _mil, _vicreg],
                         ids=lambda b: b.__name__[1:])
def test_terms_are_the_weighted_components_and_sum_to_the_loss(build):
    method, batch, weights = build()
    method.train()
    out = method.training_step(batch)
    terms = loss_terms(out)
    assert list(terms) == list(weights)
    for name, w in weights.items():
        assert terms[name].requires_grad, name
        assert torch.allclose(terms[name], w * out[name]), name
    assert torch.equal(functools.reduce(operator.add, terms.values()), out["loss"])
    stats = gradient_shares(terms, out["loss"], trainable_parameters(method))
    assert sum(stats[f"share_{t}"] for t in terms) == pytest.approx(1.0)
    assert all(stats[f"norm_{t}"] > 0 for t in terms)  # every term reaches the trainables
