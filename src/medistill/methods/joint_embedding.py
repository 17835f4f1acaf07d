"""Self-supervised joint-embedding distillation ("More From Less", Farndale et al., 2023).

Two branches, each an encoder followed by an expander, see two views of the same image (section
2.1, Fig. 1): an information-DENSE view (the full-resolution image) and an information-SPARSE
one (the image downsampled to k x k px, or its nuclear mask; see :mod:`medistill.data.sparse`).
An *asymmetric* pair is dense/sparse, a *symmetric* pair two views of the same kind. The
branches are trained with VICReg (Bardes et al., 2022) or SimCLR's NT-Xent (Chen et al., 2020),
which both admit different inputs (and architectures) per branch (section 1). After training,
the sparse-branch encoder is frozen and evaluated with a linear probe, "a classifier (dense
layer with softmax)" trained with Adam at 1e-3 (section 2.2) -> :class:`LinearProbe`.

Details (section 2.2 and the authors' code, see ``shared/papers/README.md``):

* the representation is the global-average-pooled final feature map of the encoder (ResNet-50:
  2048-d in the paper);
* the expander has three dense layers, width 8192 in the paper (:class:`Expander`);
* VICReg with lambda = mu = 25, nu = 1 in its STANDARD form (:class:`~medistill.losses.
  VICRegLoss`, not the authors' variant); NT-Xent with temperature 0.5;
* weights shared (one encoder and one expander for both branches) or independent (one encoder
  and one expander per branch); both are compared in Table S3.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medistill.errors import RecipeError, TrainingError
from medistill.losses import NTXentLoss, VICRegLoss
from medistill.methods.base import Method, freeze, register_method, weighted_loss
from medistill.models.base import Classifier

Branch = Literal["a", "b"]


def pooled_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The representation: the encoder's final feature map ``encoder(x)[0]``, averaged over
    space -> (N, feature_channels)."""
    features = encoder(x)[0]
    return torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)


class Expander(nn.Sequential):
    """The projector/expander: ``layers`` dense layers, Linear-BN-ReLU blocks then a Linear.

    With ``layers=3`` (the paper, section 2.2: "three dense layers with ReLU activations and
    output size 8192"): Linear-BN-ReLU, Linear-BN-ReLU, Linear, as in VICReg's reference
    expander (the last layer without bias). Every layer has ``width`` outputs.

    Shapes: (N, in_dim) -> (N, width). Batch norm needs N >= 2 in training mode.
    """

    def __init__(self, in_dim: int, width: int = 8192, layers: int = 3) -> None:
        if in_dim < 1 or width < 1:
            raise RecipeError(f"expander dims must be >= 1, got in_dim={in_dim}, width={width}")
        if layers < 1:
            raise RecipeError(f"expander needs at least 1 layer, got {layers}")
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            blocks += [nn.Linear(dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            dim = width
        blocks.append(nn.Linear(dim, width, bias=False))
        super().__init__(*blocks)
        self.in_dim, self.width, self.layers = in_dim, width, layers


@register_method("joint_embedding")
class JointEmbedding(Method):
    """Dense/sparse joint-embedding SSL (Farndale et al., 2023, section 2.1, Fig. 1).

    Branch ``a`` encodes ``batch["views"][view_a]``, branch ``b`` ``batch["views"][view_b]``;
    each representation (pooled final feature map) goes through its branch's expander and the
    two embeddings are compared by the loss:

    * ``"vicreg"``: ``sim_weight * s + var_weight * v + cov_weight * c`` (VICReg eq. 6, with the
      paper's lambda = mu = 25, nu = 1);
    * ``"simclr"``: NT-Xent (SimCLR eq. 1) at ``temperature`` (0.5 in the paper).

    Args:
        encoder_a: a registered model (returns ``(features, logits)``); its classification head
            is not used (and so not trained) here.
        encoder_b: the second branch's encoder (independent weights; may be another
            architecture). Leave None with ``shared=True``.
        shared: one encoder AND one expander for both branches (Table S3 "shared weights").
        view_a, view_b: the view names read from the batch. Defaults: ``a`` = dense,
            ``b`` = sparse. For a symmetric pair name two views of the same kind.
        loss: ``"vicreg"`` or ``"simclr"``.
        expander_width, expander_layers: see :class:`Expander` (8192 and 3 in the paper).
        deploy_branch: the branch whose encoder :meth:`deployable` returns: the one that sees
            the sparse data at inference (``"b"`` with the default view names).

    Augmentation: as in VICReg/SimCLR, each branch's view should be augmented independently
    (the paper's Table S1). :class:`~medistill.data.PairedViewDataset` applies ONE shared
    augmentation to all views of a sample, so two views of the same kind (a symmetric pair)
    come out identical there and the pair teaches nothing; symmetric pairs need a dataset
    that augments each view with its own random parameters.

    ``training_step`` returns ``loss`` and its unweighted terms (``invariance``, ``variance``,
    ``covariance`` for VICReg; ``ntxent`` for SimCLR). Batches need at least 2 samples.

    ``predict`` raises: a self-supervised model has no classifier, so there is nothing to
    validate with classification metrics. Train it with ``Trainer(..., val_set=None)`` (the
    trainer then keeps the epoch with the lowest training loss as ``best.pt``), then fit a
    :class:`LinearProbe` on the frozen :meth:`deployable` encoder. :meth:`embed` gives the
    representations for analysis (e.g. CKA).
    """

    def __init__(
        self,
        encoder_a: Classifier,
        encoder_b: Classifier | None = None,
        *,
        shared: bool = False,
        view_a: str = "dense",
        view_b: str = "sparse",
        loss: Literal["vicreg", "simclr"] = "vicreg",
        expander_width: int = 8192,
        expander_layers: int = 3,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        eps: float = 1e-4,
        temperature: float = 0.5,
        deploy_branch: Branch = "b",
    ) -> None:
        super().__init__()
        if shared and encoder_b is not None:
            raise RecipeError("shared=True uses encoder_a for both branches: leave encoder_b out")
        if not shared:
            if encoder_b is None:
                raise RecipeError(
                    "independent branches need encoder_b (or pass shared=True to share weights)"
                )
            ids_a = {id(p) for p in encoder_a.parameters()}
            if encoder_b is encoder_a or any(id(p) in ids_a for p in encoder_b.parameters()):
                raise RecipeError(
                    "encoder_b shares weights with encoder_a: build two models, or pass "
                    "shared=True"
                )
        if deploy_branch not in ("a", "b"):
            raise RecipeError(f"deploy_branch must be 'a' or 'b', got {deploy_branch!r}")
        if view_a == view_b:
            raise RecipeError(
                f"view_a and view_b are both {view_a!r}: a pair needs two views (for a "
                "symmetric pair, two views of the same kind under different names)"
            )
        if loss == "vicreg":
            criterion: nn.Module = VICRegLoss(sim_weight, var_weight, cov_weight, eps)
        elif loss == "simclr":
            criterion = NTXentLoss(temperature)
        else:
            raise RecipeError(f"loss must be 'vicreg' or 'simclr', got {loss!r}")
        self.shared = shared
        self.views = {"a": view_a, "b": view_b}
        self.criterion = criterion
        self.deploy_branch = deploy_branch
        self.loss_name = loss
        self.encoder_a = encoder_a
        self.expander_a = Expander(encoder_a.feature_channels, expander_width, expander_layers)
        if shared:
            self.encoder_b = None
            self.expander_b = None
        else:
            self.encoder_b = encoder_b
            self.expander_b = Expander(encoder_b.feature_channels, expander_width,
                                       expander_layers)

    # -- branches ---------------------------------------------------------------------------
    def encoder(self, branch: Branch) -> Classifier:
        """The encoder of branch ``"a"`` or ``"b"`` (the same module when shared)."""
        if branch not in ("a", "b"):
            raise RecipeError(f"branch must be 'a' or 'b', got {branch!r}")
        return self.encoder_a if self.shared or branch == "a" else self.encoder_b

    def expander(self, branch: Branch) -> Expander:
        if branch not in ("a", "b"):
            raise RecipeError(f"branch must be 'a' or 'b', got {branch!r}")
        return self.expander_a if self.shared or branch == "a" else self.expander_b

    def _images(self, batch: dict, branch: Branch) -> torch.Tensor:
        name = self.views[branch]
        views = batch["views"]
        if name not in views:
            raise TrainingError(
                f"JointEmbedding: the batch has no view {name!r} for branch {branch} "
                f"(views: {', '.join(views)})"
            )
        return views[name]

    def embed(self, batch: dict, branch: Branch) -> torch.Tensor:
        """Representations (pooled encoder features, before the expander) of one branch."""
        return pooled_features(self.encoder(branch), self._images(batch, branch))

    # -- Method interface ---------------------------------------------------------------------
    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        x_a, x_b = self._images(batch, "a"), self._images(batch, "b")
        if x_a.shape[0] < 2:
            raise TrainingError(
                f"JointEmbedding needs batches of at least 2 images (got {x_a.shape[0]}): "
                "VICReg/NT-Xent compare samples within a batch; choose a batch size that "
                "leaves no final batch of 1"
            )
        # each view gets its own forward pass (batch statistics of the encoder, if any, are
        # computed per view, as in the reference VICReg/SimCLR code)
        z_a = self.expander("a")(pooled_features(self.encoder("a"), x_a))
        z_b = self.expander("b")(pooled_features(self.encoder("b"), x_b))
        from medistill.engine.distributed import global_batch
        z_a, z_b = global_batch(z_a, z_b)  # DDP: VICReg / NT-Xent over the global batch
        if self.loss_name == "vicreg":
            terms = self.criterion.terms(z_a, z_b)
            out = {k: v.detach() for k, v in terms.items()}
            return weighted_loss(out, self.criterion.weighted(terms))
        loss = self.criterion(z_a, z_b)
        return {"ntxent": loss.detach(), "loss": loss}

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise TrainingError(
            "JointEmbedding is self-supervised and has no classifier to validate: train it "
            "with val_set=None, then fit a LinearProbe on the frozen deployable() encoder"
        )

    def deployable(self) -> Classifier:
        """The encoder used at inference on sparse data (branch ``deploy_branch``).

        Its own classification head is untrained; :class:`LinearProbe` fits one.
        """
        return self.encoder(self.deploy_branch)


class ProbedClassifier(Classifier):
    """A frozen encoder with a new linear head, as one :class:`Classifier`.

    The encoder's layers are registered under their own names and ``head`` is the probe, so the
    state dict has exactly the keys of the encoder's architecture built with the probe's
    number of classes (it loads into ``create_model(name, num_classes)``, e.g. via
    :func:`medistill.engine.load_model`). The encoder's original head is neither used nor
    saved.
    """

    def __init__(self, encoder: Classifier, head: nn.Linear) -> None:
        super().__init__()
        if encoder._parameters or encoder._buffers:
            raise RecipeError(
                f"{type(encoder).__name__} holds parameters outside its submodules; "
                "ProbedClassifier cannot wrap it"
            )
        object.__setattr__(self, "_encoder", encoder)  # not a submodule: no duplicate keys
        for name, child in encoder.named_children():
            if name != "head":
                self.add_module(name, child)
        self.head = head
        self.feature_channels = encoder.feature_channels
        self.tap_names = tuple(encoder.tap_names)
        self.num_classes = head.out_features

    def taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = dict(self._encoder.taps(x))
        out["logits"] = self.head(torch.flatten(F.adaptive_avg_pool2d(out["features"], 1), 1))
        return out


@register_method("linear_probe")
class LinearProbe(Method):
    """Linear evaluation of a frozen encoder (Farndale et al., 2023, section 2.2).

    "With the encoder's weights frozen, we assess model performance by training a classifier
    (dense layer with softmax) for 100 epochs using an Adam optimiser and learning rate of
    10^-3": the encoder is frozen (no gradients, kept in eval mode, left out of training
    checkpoints) and only ``head = nn.Linear(feature_channels, num_classes)`` on the pooled
    final feature map is trained with cross-entropy (the softmax is inside the loss). The
    authors' code uses a small MLP; the paper's linear head is what is implemented here. The
    optimiser and its learning rate are the trainer's config.

    Args:
        encoder: e.g. ``JointEmbedding.deployable()``. It is frozen IN PLACE.
        num_classes: classes of the downstream task.
        view: the batch view the encoder sees (the sparse data, e.g. ``"sparse"``).
    """

    frozen_prefixes = ("encoder",)

    def __init__(self, encoder: Classifier, num_classes: int, view: str = "sparse") -> None:
        super().__init__()
        if num_classes < 2:
            raise RecipeError(f"a linear probe needs at least 2 classes, got {num_classes}")
        self.encoder = freeze(encoder)
        self.head = nn.Linear(encoder.feature_channels, num_classes)
        self.view = view

    def features(self, batch: dict) -> torch.Tensor:
        """Pooled frozen-encoder features of the batch's view, or ``batch["features"]`` when
        the batch already carries them (see :class:`FeatureDataset`: with a frozen encoder and
        no augmentation the features are the same every epoch, so they are computed once)."""
        if "features" in batch:
            return batch["features"]
        with torch.no_grad():
            return pooled_features(self.encoder, batch["views"][self.view])

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(batch))
        return {"loss": F.cross_entropy(logits, batch["label"])}

    def predict(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(batch)), batch["label"]

    def deployable(self) -> ProbedClassifier:
        """Encoder + probe head as one model returning ``(features, logits)``."""
        return ProbedClassifier(self.encoder, self.head)


class FeatureDataset(torch.utils.data.Dataset):
    """Pooled features of a frozen encoder, computed once: items ``{"features", "label",
    "index"}`` for :class:`LinearProbe` (100 probe epochs cost one encoder pass)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if len(features) != len(labels):
            raise TrainingError(f"{len(features)} feature rows for {len(labels)} labels")
        self.features, self.labels = features, labels

    @classmethod
    @torch.no_grad()
    def extract(cls, encoder: Classifier, dataset: torch.utils.data.Dataset, view: str,
                batch_size: int = 64, device: str | torch.device = "cpu") -> FeatureDataset:
        """Run ``encoder`` (in eval mode) over ``dataset``'s ``view``."""
        was_training = encoder.training
        encoder.eval().to(device)
        feats, labels = [], []
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for batch in loader:
            feats.append(pooled_features(encoder, batch["views"][view].to(device)).cpu())
            labels.append(torch.as_tensor(batch["label"]))
        encoder.train(was_training)
        return cls(torch.cat(feats), torch.cat(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[index], "label": self.labels[index], "index": index}
