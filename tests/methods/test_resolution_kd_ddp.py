"""Resolution KD's optional label cross-entropy under DDP: the mean over the labelled images of
the GLOBAL batch (2 gloo processes equal 1), not a mean of per-rank means (the ranks can hold
different numbers of labelled images: unlabeled auxiliary images have label -1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medistill.engine.distributed import is_distributed, launch, rank, world_size
from medistill.methods import ResolutionKD
from medistill.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
#: global positions 0, 2 go to rank 0 (2 labelled), 1, 3 to rank 1 (1 labelled)
LABELS = torch.tensor([1, -1, 0, 1])


def step(out: str) -> None:
    """One step of a label-weighted ResolutionKD on this rank's share of 4 images; the
    gradients averaged over ranks as DDP does; rank 0 saves loss terms and gradients."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = ResolutionKD(create_model("small_resnet", 2),
                          create_model("small_resnet", 2, input_size=16), label_weight=1.0)
    method.eval()  # batch-independent outputs: only the losses' reduction couples the images
    g = torch.Generator().manual_seed(1)
    views = {"teacher": torch.randn(4, 3, 32, 32, generator=g),
             "student": torch.randn(4, 3, 16, 16, generator=g)}
    shard = slice(rank(), None, world_size())  # EpochSampler's share of the global batch
    batch = {"views": {k: v[shard] for k, v in views.items()}, "label": LABELS[shard]}
    terms = method.training_step(batch)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    if is_distributed():
        import torch.distributed as dist

        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= world_size()
    if rank() == 0:
        torch.save({"ce": terms["ce"].detach(), "grads": grads}, out)


def test_the_label_cross_entropy_is_the_global_mean_under_ddp(tmp_path: Path) -> None:
    step(str(tmp_path / "one.pt"))
    launch(step, 2, str(tmp_path / "two.pt"), backend="gloo", threads=1)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert torch.allclose(one["ce"], two["ce"], atol=1e-6)
    assert one["grads"].keys() == two["grads"].keys() and one["grads"]
    for name, grad in one["grads"].items():
        assert torch.allclose(grad, two["grads"][name], rtol=1e-4, atol=1e-6), name
