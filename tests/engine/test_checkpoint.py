"""Atomic checkpoint writing, clear loading errors and strict state loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medistill.engine.checkpoint import (
    MODEL_FORMAT,
    atomic_write_text,
    check_state,
    load_checkpoint,
    load_model,
    load_state_strict,
    save_checkpoint,
    save_model,
)
from medistill.errors import CheckpointError
from medistill.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


class Tiny(nn.Module):
    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(2, width)
        self.norm = nn.BatchNorm1d(width)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- writing


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    obj = {"epoch": 3, "weights": torch.arange(4.0), "nested": {"a": [1, 2]}}
    path = save_checkpoint(obj, tmp_path / "sub" / "ckpt.pt")
    assert path == tmp_path / "sub" / "ckpt.pt" and path.is_file()
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3 and loaded["nested"] == {"a": [1, 2]}
    assert torch.equal(loaded["weights"], torch.arange(4.0))
    assert _files(path.parent) == ["ckpt.pt"]  # no temporary file left behind


def test_save_is_atomic_when_torch_save_fails(tmp_path: Path, monkeypatch) -> None:
    def half_written_then_crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", half_written_then_crash)
    target = tmp_path / "ckpt.pt"
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"x": 1}, target)
    assert not target.exists()
    assert _files(tmp_path) == []  # no temp file either


def test_failed_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, target)

    def crash(obj, f, *args, **kwargs):
        f.write(b"garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert load_checkpoint(target) == {"epoch": 1}
    assert _files(tmp_path) == ["last.pt"]


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, target)
    save_checkpoint({"epoch": 2}, target)
    assert load_checkpoint(target) == {"epoch": 2}
    assert _files(tmp_path) == ["last.pt"]


def test_atomic_write_text(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a" / "log.json", '{"ok": true}')
    assert path.read_text() == '{"ok": true}'


# --------------------------------------------------------------------------- reading


def test_load_missing_checkpoint_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint", b"PK\x03\x04trunc"])
def test_load_corrupt_checkpoint_raises_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_checkpoint(path)


def test_load_truncated_checkpoint_raises_naming_it(tmp_path: Path) -> None:
    path = save_checkpoint({"w": torch.zeros(1000)}, tmp_path / "cut.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(path)


def test_load_non_dict_raises(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="list.pt"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- strict state


def test_load_state_strict_accepts_a_matching_state() -> None:
    torch.manual_seed(0)
    source, target = Tiny(), Tiny()
    load_state_strict(target, source.state_dict(), "teacher.pt")
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v)


def test_teacher_load_is_strict_unlike_authors_non_strict_load() -> None:
    # The authors load the teacher with strict=False, so a mismatched checkpoint silently leaves
    # layers at their random initialisation. Here any mismatch is an error naming the source.
    state = Tiny().state_dict()
    del state["fc.weight"]
    target = Tiny()
    before = target.fc.bias.detach().clone()
    with pytest.raises(CheckpointError, match="teacher.pt") as info:
        load_state_strict(target, state, "teacher.pt")
    assert "missing" in str(info.value) and "fc.weight" in str(info.value)
    assert torch.equal(target.fc.bias, before)  # nothing was half-loaded


def test_load_state_strict_rejects_unexpected_keys() -> None:
    state = {**Tiny().state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="unexpected") as info:
        load_state_strict(Tiny(), state, "ckpt.pt")
    assert "extra.weight" in str(info.value)


def test_load_state_strict_rejects_mis_shaped_keys() -> None:
    with pytest.raises(CheckpointError, match="shape mismatch") as info:
        load_state_strict(Tiny(3), Tiny(4).state_dict(), "ckpt.pt")
    message = str(info.value)
    assert "(4, 2)" in message and "(3, 2)" in message
    assert "\n" not in message  # one line


def test_check_state_reports_all_kinds_at_once() -> None:
    own = {"a": torch.zeros(2), "b": torch.zeros(2), "c": torch.zeros(3)}
    state = {"b": torch.zeros(2), "c": torch.zeros(4), "d": torch.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        check_state(own, state, "src")
    message = str(info.value)
    assert "1 missing keys (e.g. a)" in message
    assert "1 unexpected keys (e.g. d)" in message
    assert "shape mismatch at c" in message


# --------------------------------------------------------------------------- model files


def test_save_model_load_model_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=4).eval()
    meta = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": ["a", "b", "c", "d"],
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    path = save_model(model, meta, tmp_path / "model.pt")
    loaded, loaded_meta = load_model(path)
    assert not loaded.training
    assert loaded_meta["format"] == MODEL_FORMAT
    assert loaded_meta["classes"] == meta["classes"]
    assert loaded_meta["normalization"] == meta["normalization"]
    assert "state_dict" not in loaded_meta
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_load_model_round_trip_keeps_batchnorm_statistics(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=2)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32) * 3 + 1)  # move the running statistics
    model.eval()
    meta = {"model": {"name": "resnet18", "kwargs": {"norm": "batch"}}, "classes": ["x", "y"]}
    loaded, _ = load_model(save_model(model, meta, tmp_path / "m.pt"))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[1], loaded(x)[1])


def test_load_model_rejects_a_training_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint({"epoch": 1, "state": {}}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="not a medistill model file"):
        load_model(path)


def test_load_model_with_wrong_class_count_raises(tmp_path: Path) -> None:
    model = create_model("small_resnet", num_classes=4)
    meta = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": ["a", "b"]}
    path = save_model(model, meta, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="shape mismatch at head"):
        load_model(path)
