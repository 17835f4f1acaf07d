"""The mil_fusion recipe end to end on tiny synthetic weakly labelled data (issue #6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from weak_fixtures import write_weak_dataset

from medistill.cli import app
from medistill.data.weak import WeakSegDataset
from medistill.errors import DataError, RecipeError
from medistill.losses import MILDiceLoss, MILPoolingLoss
from medistill.pipelines import load_recipe, run_recipe
from medistill.pipelines.mil_fusion import MILFusionPipeline
from medistill.pipelines.weak_data import load_weak_split

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "data.setup=custom",
    "data.image_pattern='images/{name}.png'",
    "data.positive=[tumour]",
    "data.negative=[benign]",
    "data.splits={train: train, val: val, test: test}",
    "data.image_size=32",
    "model.kwargs={backbone_kwargs: {widths: [8, 8, 16, 16], groups: 4}}",
    "seeds=[0]",
    "train.epochs=1",
    "train.batch_size=4",
    "train.device=cpu",
    "train.tensorboard=false",
    "train.progress=false",
    "stages.round={epochs: 1}",
    "fusion.rounds=2",
    "eval.n_resamples=50",
    "eval.overlays=2",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weak") / "data"
    return write_weak_dataset(root, {"train": 6, "val": 4, "test": 4})


def tiny(root: Path, *extra: str):
    return load_recipe(ROOT / "recipes" / "mil_fusion_glas.yaml",
                       [f"data.root={root}", *TINY, *extra])


def test_negative_images_have_an_empty_target_whatever_their_mask_file_holds(data_root):
    recipe = tiny(data_root)
    items, labels = load_weak_split(recipe.data, "test")
    ds = WeakSegDataset(items, labels, 2, 32)
    for i, label in enumerate(labels):
        assert ds.pair(i)[1].any() == bool(label)
        assert ds[i]["label"] == label


def test_glas_setup_carves_validation_from_train_and_tests_on_testa_and_testb(tmp_path):
    root = tmp_path / "glas"
    write_weak_dataset(root, {"train": 10, "testA": 4, "testB": 2})
    recipe = load_recipe(ROOT / "recipes" / "mil_fusion_glas.yaml", [
        f"data.root={root}", "data.image_pattern='images/{name}.png'",
        "data.positive=[tumour]", "data.negative=[benign]"])
    train, val = (load_weak_split(recipe.data, r) for r in ("train", "val"))
    test = load_weak_split(recipe.data, "test")
    names = [{i.name for i in s[0]} for s in (train, val, test)]
    assert len(names[1]) == 2 and not names[0] & names[1]  # 20%, stratified: one per label
    assert sorted(val[1]) == [0, 1]
    assert len(names[2]) == 6 and all(n.startswith("test") for n in names[2])


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory, single_thread):
    import medistill.pipelines.mil_fusion as mf
    import medistill.pipelines.role_reversal as rr

    out = tmp_path_factory.mktemp("run") / "out"
    recipe = tiny(data_root)
    # Spy: scores on the TEST split are shifted by +10, so a decision that read them would
    # see a value >= 10. Role reversal must only ever compare validation scores.
    real_scores, real_swap, decisions = mf.weak_scores, rr.decide_swap, []
    test_names = {i.name for i in load_weak_split(recipe.data, "test")[0]}

    def spy_scores(model, dataset, *args, **kwargs):
        out_ = real_scores(model, dataset, *args, **kwargs)
        if {i.name for i in dataset.items} == test_names:
            out_ = {k: v + 10.0 for k, v in out_.items()}
        return out_

    def spy_swap(teacher, student, min_delta=0.0):
        decisions.append((teacher, student))
        return real_swap(teacher, student, min_delta)

    mp = pytest.MonkeyPatch()
    mp.setattr(mf, "weak_scores", spy_scores)
    mp.setattr(rr, "decide_swap", spy_swap)
    try:
        results = run_recipe(recipe, out, progress=False)
    finally:
        mp.undo()
    return out, results, decisions


def test_role_reversal_is_decided_on_the_validation_split_never_the_test_split(full_run):
    out, results, decisions = full_run
    assert decisions and all(t < 10 and s < 10 for t, s in decisions)
    rounds = json.loads((out / "rounds.json").read_text())
    assert all(r["teacher_val"] < 10 and r["student_val"] < 10 for r in rounds)
    assert all(r["student_test_f1"] >= 10 for r in rounds)  # test scores: report only


def test_pipeline_writes_runs_rounds_and_report(full_run):
    out, results, _ = full_run
    roles = [r["role"] for r in results["runs"]]
    assert roles == ["mil_teacher", "fusion_kd", "ikd"]
    for r in results["runs"]:
        m = r["metrics"]
        for key in ("pixel_f1", "pixel_f1_pos", "pixel_f1_neg", "pixel_f1_positive",
                    "neg_clean", "iou", "image_auc"):
            assert np.isfinite(m[key]["value"]) and m[key]["low"] <= m[key]["high"]
        assert r["n"] == 4 and r["n_positive"] == 2
        # the authors' F1 on every image = the mean of its positive and negative parts
        n_pos = r["n_positive"]
        assert m["pixel_f1"]["value"] == pytest.approx(
            (n_pos * m["pixel_f1_pos"]["value"]
             + (r["n"] - n_pos) * m["pixel_f1_neg"]["value"])
            / r["n"])
    rounds = json.loads((out / "rounds.json").read_text())
    no_rr = [r for r in rounds if r["run"] == "fusion_kd"]
    assert len(no_rr) == 2 and not any(r["swapped"] for r in no_rr)
    assert {r["student"] for r in rounds if r["round"] == 1} == {
        str(out / "seed0" / "kd_round1" / "best.pt")}  # round 1 shared by both runs
    md = (out / "report.md").read_text()
    assert "Iterative fusion KD: rounds" in md and "figures/overlays.png" in md
    assert "Tumour F1, all" in md and "per-image Dice" in md  # columns and objective note
    assert (out / "figures" / "overlays.png").is_file()


def test_refuses_to_overwrite_and_resumes(full_run, data_root):
    out, results, _ = full_run
    with pytest.raises(RecipeError, match="already has a run"):
        run_recipe(tiny(data_root), out, progress=False)
    again = run_recipe(tiny(data_root), out, resume=True, progress=False)
    assert [r["metrics"]["pixel_f1"] for r in again["runs"]] == [
        r["metrics"]["pixel_f1"] for r in results["runs"]]


def test_bad_data_fails_with_one_line_errors(data_root, tmp_path):
    with pytest.raises(DataError, match="positive and negative"):
        run_recipe(tiny(data_root, "data.negative=[nothing]"), tmp_path / "a", progress=False)
    with pytest.raises(DataError, match="no column 'grade'"):
        run_recipe(tiny(data_root, "data.label_column=grade"), tmp_path / "b", progress=False)
    with pytest.raises(RecipeError, match="fusion.rounds"):
        tiny(data_root, "fusion.rounds=0")


def test_cli_run(data_root, tmp_path, single_thread):
    out = tmp_path / "cli"
    args = ["run", str(ROOT / "recipes" / "mil_fusion_glas.yaml"), "--out", str(out),
            "--no-progress", "--set", f"data.root={data_root}"]
    for o in TINY + ["runs=[ikd]", "fusion.rounds=1", "eval.overlays=0"]:
        args += ["--set", o]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "pixel F1" in res.output and "seed0/ikd" in res.output


def test_cli_evaluate_a_weak_model(full_run, data_root, tmp_path):
    out, results, _ = full_run
    best = out / "seed0" / "mil_teacher" / "best.pt"
    res = CliRunner().invoke(app, ["evaluate", str(best), "--data", str(data_root),
                                   "--split", "test", "--n-resamples", "50",
                                   "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert record["n"] == 4 and "pixel_f1_pos" in record["metrics"]
    # the same model file on the same split: the pipeline's numbers (same smoothing, threshold)
    assert record["metrics"]["pixel_f1"]["value"] == pytest.approx(
        results["runs"][0]["metrics"]["pixel_f1"]["value"])


@pytest.mark.parametrize("name,setup,positive", [("glas", "glas", ["1"]),
                                                 ("ebhi", "ebhi_seg", ["adenocarcinoma"])])
def test_shipped_recipes_validate_and_pick_their_setup(name, setup, positive):
    recipe = load_recipe(ROOT / "recipes" / f"mil_fusion_{name}.yaml",
                         ["data.root=/elsewhere", "data.splits.val=[v]"])
    d = recipe.data
    assert d.setup == setup and d.positive == positive and d.root == "/elsewhere"
    assert d.splits.val == ["v"] and d.splits.train == ["train"]  # partial override keeps rest
    assert recipe.fusion.compare_metric == "pixel_f1" and recipe.eval.sigma == 3.0
    # issue #12: the authors' MIL objective and evaluation are the shipped defaults
    assert recipe.mil.objective == "dice" and recipe.mil.reduction == "sum"
    assert recipe.mil.smooth == 1.0 and recipe.eval.sigma_at == "input"
    assert recipe.train.select_metric == "pixel_f1"


@pytest.mark.parametrize("extra,kind", [([], MILDiceLoss),
                                        (["mil.objective=pooled_bce"], MILPoolingLoss)])
def test_mil_objective_is_the_authors_dice_unless_pooled_bce_is_asked_for(data_root, extra,
                                                                          kind, tmp_path):
    pipe = MILFusionPipeline(tiny(data_root, *extra), tmp_path)
    pipe.split = {"train": ([], [1, 1, 0])}
    loss = pipe._mil_loss()
    assert isinstance(loss, kind) and loss.pos_weight == 1.0  # no class balance by default
    pipe.r.mil.balance = True
    assert pipe._mil_loss().pos_weight == pytest.approx(0.5)  # n_neg / n_pos
