"""Initial weights (``init_checkpoint:``): medistill files, plain state dicts, torchvision / timm
ResNet names mapped onto ours, strict by default with a one-line report (issue #14)."""

from __future__ import annotations

import pickle

import pytest
import torch

from medistill.config import ModelConfig, build_models_once
from medistill.engine import save_model
from medistill.errors import CheckpointError, RecipeError
from medistill.models import build_model, create_model
from medistill.models.pretrained import map_resnet_keys, read_state_dict, resnet_prefix

OURS_TO_TORCHVISION = (("stem.0.", "conv1."), ("stem.1.", "bn1."), ("head.", "fc."))


def trained_like(name: str, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """Our model with non-trivial norm statistics and zero shortcut biases (torchvision's
    shortcut convolutions have none, so this is a net a torchvision file can describe)."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("running_var"):
                value.uniform_(0.5, 1.5)
            elif key.endswith("running_mean") or key.endswith("bn1.weight"):
                value.uniform_(-0.2, 0.2)
            elif key.endswith("downsample.0.bias"):
                value.zero_()
    return model.eval()


def torchvision_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our ResNet state dict as torchvision / timm name it (no shortcut-conv bias)."""
    out = {}
    for key, value in state.items():
        if key.endswith("downsample.0.bias"):
            continue
        for ours, theirs in OURS_TO_TORCHVISION:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        out[key] = value.clone()
    return out


def spec(name: str, path, **kw) -> ModelConfig:
    return ModelConfig(name=name, init_checkpoint=str(path), **kw)


def test_a_torchvision_named_resnet18_loads_exactly(tmp_path):
    source = trained_like("resnet18", 5)
    tv = torchvision_names(source.state_dict())
    assert "conv1.weight" in tv and "layer1.0.conv1.weight" in tv and "fc.weight" in tv
    assert "layer2.0.downsample.0.weight" in tv and "layer2.0.downsample.0.bias" not in tv
    torch.save(tv, tmp_path / "tv.pth")
    torch.manual_seed(1)  # another initialisation: every tensor must come from the file
    model = build_model(spec("resnet18", tmp_path / "tv.pth"), 5).eval()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x)[1], source(x)[1])


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module."])
def test_state_dict_containers_and_ddp_prefix(tmp_path, wrap):
    source = trained_like("small_resnet", 3)
    tv = torchvision_names(source.state_dict())
    obj = {"plain": tv, "state_dict": {"state_dict": tv, "epoch": 90},
           "model": {"model": tv, "args": "lr=0.1"},
           "module.": {f"module.{k}": v for k, v in tv.items()}}[wrap]
    torch.save(obj, tmp_path / "w.pt")
    model = build_model(spec("small_resnet", tmp_path / "w.pt"), 3)
    assert torch.equal(model.head.weight, source.head.weight)


def test_a_medistill_model_file_starts_a_model(tmp_path):
    source = trained_like("resnet18_unet_small", 2)
    path = save_model(source, {"model": {"name": "resnet18_unet_small", "kwargs": {}},
                               "classes": ["bg", "gland"]}, tmp_path / "best.pt")
    model = build_model(spec("resnet18_unet_small", path), 2)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


def test_strict_by_default_with_a_one_line_report_and_partial_when_asked(tmp_path):
    imagenet = torchvision_names(trained_like("resnet18", 1000).state_dict())
    torch.save(imagenet, tmp_path / "imagenet.pth")
    with pytest.raises(CheckpointError) as err:
        build_model(spec("resnet18", tmp_path / "imagenet.pth"), 4)
    msg = str(err.value)
    assert "\n" not in msg and "does not match model 'resnet18'" in msg
    assert ("2 shape mismatches (head.weight: file (1000, 512) vs model (4, 512), head.bias: "
            "file (1000,) vs model (4,))") in msg and "init_strict: false" in msg

    torch.manual_seed(3)
    fresh_head = create_model("resnet18", 4).head.weight.clone()
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="loaded 123 of 125 tensors .* 2 shape mismatches"):
        model = build_model(spec("resnet18", tmp_path / "imagenet.pth", init_strict=False), 4)
    assert torch.equal(model.head.weight, fresh_head)  # the new head keeps its initialisation
    assert torch.equal(model.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    tv = torchvision_names(trained_like("resnet18", 4).state_dict())
    del tv["layer4.1.conv2.weight"], tv["layer4.1.bn2.weight"]
    tv["extra.weight"] = torch.zeros(3)
    torch.save(tv, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"2 missing \(layer4\.1\.conv2\.weight, "
                       r"layer4\.1\.bn2\.weight\); 1 unexpected \(extra\.weight\)"):
        build_model(spec("resnet18", tmp_path / "w.pth"), 4)
    # a wholly different network: even a partial load refuses a file of which nothing fits
    torch.save(create_model("unetpp", 2).state_dict(), tmp_path / "unet.pt")
    with pytest.raises(CheckpointError, match="no key matches model 'resnet18'"):
        build_model(spec("resnet18", tmp_path / "unet.pt", init_strict=False), 4)


def test_a_resnet_encoder_of_a_segmenter_starts_from_imagenet_names(tmp_path):
    """resnet18_unet has our ResNet-18 names at the top; the file's fc has no place there."""
    imagenet = torchvision_names(trained_like("resnet18", 1000).state_dict())
    torch.save(imagenet, tmp_path / "imagenet.pth")
    unet = create_model("resnet18_unet", 2)
    assert resnet_prefix(unet.state_dict()) == ""
    assert resnet_prefix(create_model("mil_segmenter", 2).state_dict()) == "backbone."
    assert resnet_prefix(create_model("unetpp", 2).state_dict()) is None
    with pytest.warns(UserWarning, match="not loaded: .*decoder"):
        model = build_model(spec("resnet18_unet", tmp_path / "imagenet.pth", init_strict=False),
                            2)
    assert torch.equal(model.stem[0].weight, imagenet["conv1.weight"])
    assert torch.equal(model.layer3[0].downsample[1].running_var,
                       imagenet["layer3.0.downsample.1.running_var"])


def test_names_that_already_match_are_not_renamed():
    own = create_model("small_resnet", 2).state_dict()
    assert map_resnet_keys(own, own) is own


@pytest.mark.parametrize("content, message", [
    ({"epoch": 3, "lr": 0.1}, "no state dict in it"),
    ({"state_dict": {"a": torch.zeros(1), "b": 3}}, "'b' is not a tensor"),
])
def test_files_that_are_not_weights_are_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=message):
        read_state_dict(tmp_path / "x.pt")


class Payload:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_pickle_with_code_is_refused_unread(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused unread"):
        build_model(spec("small_resnet", tmp_path / "evil.pt"), 2)
    assert "ran" not in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_model(spec("small_resnet", tmp_path / "nope.pt"), 2)


def test_recipe_checks_the_file_and_key_names_before_anything_runs(tmp_path):
    """build_models_once (run_recipe's first step) builds with 2 classes: a head of another
    size passes there (checked when the model is built), wrong names or a missing file stop."""
    from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe

    torch.save(torchvision_names(trained_like("small_resnet", 4).state_dict()),
               tmp_path / "t.pth")

    def recipe(path):
        return load_recipe(demo_recipe_path(), [f"teacher.init_checkpoint={path}"],
                           {"demo_data": str(demo_data_root())})

    build_models_once(recipe(tmp_path / "t.pth"))
    with pytest.raises(RecipeError, match="^teacher: checkpoint not found: .*missing.pth"):
        build_models_once(recipe(tmp_path / "missing.pth"))
    bad = torchvision_names(trained_like("small_resnet", 4).state_dict())
    bad["layer9.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(RecipeError, match=r"^teacher: init_checkpoint .* 1 unexpected "
                                          r"\(layer9\.weight\)"):
        build_models_once(recipe(tmp_path / "bad.pth"))


def test_without_init_checkpoint_the_section_dumps_as_before():
    assert ModelConfig(name="small_resnet").model_dump() == {"name": "small_resnet",
                                                             "kwargs": {}}
    assert ModelConfig(name="small_resnet", init_checkpoint="a.pt",
                       init_strict=False).model_dump() == {
        "name": "small_resnet", "kwargs": {}, "init_checkpoint": "a.pt", "init_strict": False}


@pytest.mark.slow
def test_a_pretrained_state_dict_starts_the_teacher_of_a_recipe(tmp_path):
    """The tiny demo recipe (tests/pipelines) with a torchvision-named teacher file and a
    learning rate too small to move it: the trained teacher is the file's network."""
    from medistill.engine import load_model
    from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe

    source = trained_like("small_resnet", 4, seed=5)
    torch.save({"state_dict": torchvision_names(source.state_dict())}, tmp_path / "t.pth")
    tiny = ["teacher_factor=4", "student_factors=[2]", "train.epochs=1", "train.batch_size=32",
            "train.tensorboard=false", "train.progress=false", "eval.n_resamples=50",
            "eval.latency=false", "runs=[baseline]", "stages.teacher.lr=1e-12",
            f"teacher.init_checkpoint={tmp_path / 't.pth'}"]
    recipe = load_recipe(demo_recipe_path(), tiny, {"demo_data": str(demo_data_root())})
    run_recipe(recipe, tmp_path / "run", progress=False)
    teacher, meta = load_model(tmp_path / "run" / "seed0" / "teacher" / "best.pt")
    assert meta["model"]["init_checkpoint"] == str(tmp_path / "t.pth")
    for key, value in source.state_dict().items():
        assert torch.allclose(teacher.state_dict()[key], value, atol=1e-6), key
