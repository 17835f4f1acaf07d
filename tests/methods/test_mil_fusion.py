"""MIL training, one fusion-KD round, and the role-reversal loop (issue #6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medistill.errors import RecipeError
from medistill.losses import MILDiceLoss
from medistill.methods import FusionKD, MILTraining, decide_swap
from medistill.models import create_model
from medistill.pipelines.role_reversal import IterativeFusion

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = {"backbone_kwargs": {"widths": [8, 8, 16, 16], "groups": 4}}


def _model(seed: int):
    torch.manual_seed(seed)
    return create_model("mil_segmenter", 2, **TINY)


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(4, 3, 32, 32, generator=g),
            "mask": torch.zeros(4, 32, 32, dtype=torch.long),
            "label": torch.tensor([1, 0, 1, 0]), "index": torch.arange(4)}


def test_mil_training_reads_image_labels_only():
    method = MILTraining(_model(0))
    assert isinstance(method.mil, MILDiceLoss)  # the authors' objective by default (issue #12)
    batch = _batch()
    batch["mask"] = None  # masks are never read in training
    out = method.training_step(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is not None for n, p in method.named_parameters() if "heads" in n)


def test_fusion_kd_trains_the_student_only_from_a_frozen_teacher():
    teacher, student = _model(0), _model(1)
    method = FusionKD(teacher, student, wce_weight=0.5, mil_weight=0.25)
    method.train()
    assert not method.teacher.training
    out = method.training_step(_batch())
    expected = out["fusion_kd"] + 0.5 * out["wce"] + 0.25 * out["mil"]
    assert torch.allclose(out["loss"], expected)
    out["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert any(p.grad is not None for p in method.student.parameters())
    assert method.deployable() is student
    assert all(not k.startswith("teacher.") for k in method.trainable_state())
    with pytest.raises(RecipeError, match="mil_segmenter"):
        FusionKD(teacher, torch.nn.Conv2d(3, 1, 1))  # type: ignore[arg-type]


def test_decide_swap():
    assert decide_swap(0.5, 0.6)
    assert not decide_swap(0.5, 0.5)
    assert not decide_swap(0.5, 0.55, min_delta=0.1)


class _Fake:
    """Model 'files' are names; a round's student is named after its round and teacher."""

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores, self.calls = scores, []

    def train_round(self, r: int, teacher: Path, init: Path | None) -> Path:
        self.calls.append((r, str(teacher), None if init is None else str(init)))
        return Path(f"s{r}")

    def score(self, path: Path) -> float:
        return self.scores[str(path)]


def test_role_reversal_swaps_on_better_validation_scores_and_stops_on_patience():
    fake = _Fake({"mil": 0.5, "s1": 0.6, "s2": 0.55, "s3": 0.58})
    final, records = IterativeFusion(fake.train_round, fake.score, rounds=5,
                                     patience=2).run(Path("mil"))
    assert [r.swapped for r in records] == [True, False, False]  # stopped after 2 stale rounds
    assert fake.calls == [(1, "mil", None), (2, "s1", "mil"), (3, "s1", "s2")]
    assert final == Path("s1")  # the best on validation


def test_without_role_reversal_the_teacher_stays_and_the_last_student_is_returned():
    fake = _Fake({"mil": 0.5, "s1": 0.6, "s2": 0.7, "s3": 0.4})
    final, records = IterativeFusion(fake.train_round, fake.score, rounds=3,
                                     reverse=False).run(Path("mil"))
    assert [r.swapped for r in records] == [False] * 3
    assert [c[1] for c in fake.calls] == ["mil"] * 3
    assert final == Path("s3")
