"""Model files are read weights-only: a crafted pickle is refused by every entry point, unrun.

Each test builds an otherwise valid model / training file that also carries a payload whose
unpickling writes a marker file (through ``exec`` or ``os.system``), checks that plain
unpickling WOULD run it, then feeds it to an entry point and asserts the one-line refusal and
that the marker was never written.
"""

from __future__ import annotations

import builtins
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medistill.engine import Trainer
from medistill.engine.checkpoint import MODEL_FORMAT, load_checkpoint, load_model, save_checkpoint
from medistill.engine.trainer import TRAINER_FORMAT
from medistill.errors import CheckpointError
from medistill.models import create_model
from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
REFUSED = "is not a medistill model file"
META = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": ["a", "b"],
        "view": {"factor": 4, "upsample": False}, "image_size": 32,
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}

pytestmark = pytest.mark.usefixtures("single_thread")


class ExecPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class SystemPayload(ExecPayload):
    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


PAYLOADS = [ExecPayload, SystemPayload]


def evil_model_file(path: Path, marker: Path, payload: type = ExecPayload,
                    legacy: bool = False) -> Path:
    """A real small_resnet model file with a payload in its metadata."""
    obj = {"format": MODEL_FORMAT, **META, "notes": payload(marker),
           "state_dict": create_model("small_resnet", 2).state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if legacy:  # a bare pickle, not torch's zip format
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    return path


def test_the_payload_is_live_when_unpickled(tmp_path):
    # the control: without weights-only loading the file runs its code
    for payload in PAYLOADS:
        marker = tmp_path / f"{payload.__name__}.marker"
        path = evil_model_file(tmp_path / "evil.pkl", marker, payload, legacy=True)
        pickle.loads(path.read_bytes())
        assert marker.is_file()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "bare_pickle"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: p.__name__)
def test_load_checkpoint_and_load_model_refuse_and_never_run_it(tmp_path, payload, legacy):
    marker = tmp_path / "marker"
    path = evil_model_file(tmp_path / "best.pt", marker, payload, legacy)
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match=REFUSED) as info:
            load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_trainer_resume_refuses_an_evil_last_pt(tmp_path):
    from medistill.config import TrainConfig
    from medistill.data import PairedViewDataset, ResolutionView, read_manifest
    from medistill.methods import Supervised

    marker = tmp_path / "marker"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": TRAINER_FORMAT, "state": {"epoch": 1}, "rng": ExecPayload(marker)},
               out / "last.pt")
    samples = read_manifest(demo_data_root() / "labels.csv", "train").samples[:4]
    train = PairedViewDataset(samples, {"input": ResolutionView(factor=8)})
    cfg = TrainConfig(epochs=1, batch_size=4, progress=False, tensorboard=False)
    trainer = Trainer(Supervised(create_model("small_resnet", 4)), train, None, cfg, out)
    with pytest.raises(CheckpointError, match=REFUSED):
        trainer.fit(resume=True)
    assert not marker.exists()


def test_trainer_checkpoints_and_model_files_load_weights_only(tmp_path):
    """What the trainer writes (optimizer, scheduler, numpy/python RNG, history) reads back."""
    import random

    from medistill.engine.trainer import rng_state, set_rng_state

    np.random.seed(7)
    random.seed(7)
    np.random.rand(3)  # move the states off their seeded start
    random.random()
    state = rng_state()
    path = save_checkpoint({"format": TRAINER_FORMAT, "rng": state}, tmp_path / "last.pt")
    expected = (np.random.rand(5), [random.random() for _ in range(5)], torch.rand(5))
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    set_rng_state(load_checkpoint(path)["rng"])
    got = (np.random.rand(5), [random.random() for _ in range(5)], torch.rand(5))
    assert np.array_equal(expected[0], got[0]) and expected[1] == got[1]
    assert torch.equal(expected[2], got[2])


@pytest.mark.parametrize("value, kind", [(Path("x"), "PosixPath"), (np.float64(1.0), "float64"),
                                         (np.zeros(2), "ndarray"), ({1, 2}, "set")])
def test_save_refuses_what_a_weights_only_load_would_refuse(tmp_path, value, kind):
    with pytest.raises(CheckpointError, match=rf"best\.pt\.meta\.data\[1\] is a .*{kind}"):
        save_checkpoint({"meta": {"data": [1, value]}}, tmp_path / "best.pt")
    assert not (tmp_path / "best.pt").exists()


def test_no_weights_only_false_in_the_sources():
    sources = {p: p.read_text() for p in (ROOT / "src").rglob("*.py")}
    assert not [p for p, text in sources.items() if "weights_only=False" in text]
    loads = [(p, m) for p, text in sources.items()
             for m in re.findall(r"torch\.load\([^)]*\)", text)]
    assert loads and all("weights_only=True" in m for _, m in loads)


# --------------------------------------------------------------------------- recipes


def _recipe(name: str, evil: Path, data: Path):
    if name == "resolution_kd":
        return load_recipe(demo_recipe_path(), [
            "teacher_factor=4", "student_factors=[2]", "runs=[baseline]", "train.epochs=1",
            "train.tensorboard=false", f"teacher_checkpoint={evil}"],
            {"demo_data": str(demo_data_root())})
    yaml = {"hlfd": "hlfd_glas.yaml", "graph_relation": "graph_relation_monuseg.yaml"}[name]
    return load_recipe(ROOT / "recipes" / yaml, [f"data.root={data}",
                                                 f"teacher_checkpoint={evil}"])


@pytest.mark.parametrize("name", ["resolution_kd", "hlfd", "graph_relation"])
def test_teacher_checkpoint_in_a_recipe_is_refused(tmp_path, name):
    marker = tmp_path / "marker"
    evil = evil_model_file(tmp_path / "teacher.pt", marker)
    with pytest.raises(CheckpointError, match=REFUSED):
        run_recipe(_recipe(name, evil, tmp_path / "data"), tmp_path / "out", progress=False)
    assert not marker.exists()


def test_resuming_a_run_refuses_an_evil_last_pt(tmp_path):
    from instance_fixtures import write_instance_dataset

    from medistill.pipelines.base import Pipeline

    root = write_instance_dataset(tmp_path / "data", {"train": 2, "val": 1, "test": 1})
    recipe = load_recipe(ROOT / "recipes" / "graph_relation_monuseg.yaml", [
        f"data.root={root}", "data.crop_size=24", "data.splits={train: train, val: val, "
        "test: test}", "seeds=[0]", "train.tensorboard=false", "train.progress=false"])
    out = tmp_path / "run"
    Pipeline(recipe, out).start()  # a medistill run folder with this recipe
    marker = tmp_path / "marker"
    evil_model_file(out / "seed0" / "teacher" / "last.pt", marker)
    with pytest.raises(CheckpointError, match=REFUSED):
        run_recipe(recipe, out, resume=True, progress=False)
    assert not marker.exists()


def test_a_model_file_without_its_spec_is_refused(tmp_path):
    path = save_checkpoint({"format": MODEL_FORMAT, "classes": ["a"]}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="m.pt is not a medistill model file"):
        load_model(path)


# --------------------------------------------------------------------------- command line


def _slide(path: Path) -> Path:
    import tifffile

    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256),
                     photometric="rgb")
    return path


@pytest.mark.parametrize("command", ["evaluate", "export", "profile", "predict-wsi"])
def test_every_cli_entry_point_refuses(tmp_path, command):
    marker = tmp_path / "marker"
    evil = str(evil_model_file(tmp_path / "best.pt", marker, SystemPayload))
    args = {"evaluate": ["evaluate", evil, "--data", str(demo_data_root())],
            "export": ["export", evil, "--out", str(tmp_path / "m.onnx")],
            "profile": ["profile", "--checkpoint", evil, "--repeats", "1"],
            "predict-wsi": ["predict-wsi", str(_slide(tmp_path / "s.tif")), "--model", evil,
                            "--out", str(tmp_path / "wsi"), "--no-progress"]}[command]
    if command == "predict-wsi":
        pytest.importorskip("openslide")
    res = subprocess.run([sys.executable, "-m", "medistill.cli", *args], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        f"error: {evil} is not a medistill model file: it holds Python objects other than "
        "tensors and plain data (refused unread; it may run code)")
    assert not marker.exists()
