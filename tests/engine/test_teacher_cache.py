"""TeacherCache: outputs computed once, reused, invalidated by a new fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medistill.data import ResolutionView
from medistill.engine.teacher_cache import TeacherCache, fingerprint
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, indices: torch.Tensor):
        def compute():
            self.calls += 1
            x = indices.float()[:, None]
            return {"logits": torch.cat([x, -x], 1), "features": x[:, :, None, None].repeat(1, 2,
                                                                                          3, 3)}
        return compute


def test_memory_cache_computes_each_sample_once() -> None:
    cache, count = TeacherCache(6, "k"), Counter()
    a = torch.tensor([0, 3, 5])
    first = cache.get_or_compute(a, count(a))
    again = cache.get_or_compute(a, count(a))
    assert count.calls == 1 and cache.hits == 3 and cache.misses == 3
    for name in first:
        assert torch.equal(first[name], again[name])
    assert again["features"].shape == (3, 2, 3, 3)
    b = torch.tensor([3, 1])  # 1 is new: the batch is computed again
    cache.get_or_compute(b, count(b))
    assert count.calls == 2
    assert torch.equal(cache.get_or_compute(torch.tensor([1]), count(b))["logits"],
                       torch.tensor([[1.0, -1.0]]))
    assert count.calls == 2


def test_disk_cache_persists_and_a_new_key_replaces_it(tmp_path: Path) -> None:
    idx, count = torch.tensor([0, 1, 2, 3]), Counter()
    TeacherCache(4, "old", tmp_path).get_or_compute(idx, count(idx))
    reopened = TeacherCache(4, "old", tmp_path)
    out = reopened.get_or_compute(idx, count(idx))
    assert count.calls == 1 and torch.equal(out["logits"][:, 0], idx.float())
    TeacherCache(4, "new", tmp_path).get_or_compute(idx, count(idx))
    assert count.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_float16_serves_the_same_values_every_epoch() -> None:
    cache = TeacherCache(2, "k", dtype="float16")
    idx = torch.tensor([0, 1])
    x = {"logits": torch.tensor([[0.1, 1 / 3], [2.0001, 7.0]])}
    first = cache.get_or_compute(idx, lambda: x)
    assert torch.equal(first["logits"], cache.get_or_compute(idx, lambda: x)["logits"])


def test_fingerprint_tracks_weights_files_and_view(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"123")
    torch.manual_seed(0)
    teacher = create_model("small_resnet", num_classes=2)
    base = fingerprint(teacher, [image], view=ResolutionView(2))
    assert base == fingerprint(teacher, [image], view=ResolutionView(2))
    assert base != fingerprint(teacher, [image], view=ResolutionView(4))
    with torch.no_grad():
        teacher.head.bias.add_(1e-3)
    assert base != fingerprint(teacher, [image], view=ResolutionView(2))
    changed = fingerprint(teacher, [image], view=ResolutionView(2))
    image.write_bytes(b"1234")
    assert changed != fingerprint(teacher, [image], view=ResolutionView(2))


def test_fingerprint_tracks_the_teachers_code(tmp_path: Path, monkeypatch) -> None:
    """Editing the file that defines the teacher's class opens a new cache (same weights)."""
    import importlib.util
    import sys

    def load(body: str) -> torch.nn.Module:
        src = tmp_path / "lab_teacher.py"
        src.write_text("import torch\n\nclass Teacher(torch.nn.Module):\n"
                       "    def __init__(self):\n        super().__init__()\n"
                       "        self.fc = torch.nn.Linear(2, 2)\n\n"
                       f"    def forward(self, x):\n        return {body}\n")
        spec = importlib.util.spec_from_file_location("lab_teacher", src)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "lab_teacher", module)
        spec.loader.exec_module(module)
        torch.manual_seed(0)
        return module.Teacher()

    image = tmp_path / "a.png"
    image.write_bytes(b"123")
    before = fingerprint(load("self.fc(x)"), [image])
    assert before == fingerprint(load("self.fc(x)"), [image])
    assert before != fingerprint(load("self.fc(x) * 2"), [image])
