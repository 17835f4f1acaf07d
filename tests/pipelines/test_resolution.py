"""The resolution-distillation recipe end to end on the embedded demo data (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medistill.engine import load_model, save_model
from medistill.errors import DataError, RecipeError
from medistill.models import create_model
from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe

TINY = [
    "teacher_factor=4",  # 56 px teacher
    "student_factors=[2]",  # 28 px students
    "train.epochs=1",
    "train.batch_size=16",
    "train.tensorboard=false",
    "eval.n_resamples=200",
    "eval.latency_repeats=2",
]


def tiny_recipe(*extra: str, root: Path | None = None):
    root = root or demo_data_root()
    return load_recipe(demo_recipe_path(), [*TINY, *extra], {"demo_data": str(root)})


#: the recipe's 40-epoch teacher is not what these tests are about
SHORT_TEACHER = "stages.teacher.epochs=2"
AUX = f"aux_data=[{{format: images, root: '{demo_data_root() / 'train'}'}}]"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe("runs=[baseline, kd, kd_aux]", AUX, SHORT_TEACHER)
    return out, run_recipe(recipe, out, progress=False)


def test_every_run_is_trained_evaluated_and_reported(full_run):
    out, results = full_run
    roles = [(r["role"], r["factor"], tuple(r["input_size"])) for r in results["runs"]]
    assert roles == [("teacher", 4, (56, 56)), ("baseline", 8, (28, 28)), ("kd", 8, (28, 28)),
                     ("kd_aux", 8, (28, 28))]
    for r in results["runs"]:
        for name in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "ovr_accuracy"):
            m = r["metrics"][name]
            assert m["low"] <= m["value"] <= m["high"]
        assert sum(map(sum, r["confusion_matrix"])) == 129  # the demo test split
        assert r["efficiency"]["gflops"] > 0 and r["efficiency"]["params"] > 1e6
    from medistill.metrics import count_gflops

    teacher, student = results["runs"][0], results["runs"][1]
    # the demo's resolution-aware student (input_size 28: stem stride 1, no max-pool) is
    # profiled as built: 4x4 final map, hence MORE compute than a standard-stem 56 px teacher
    light = create_model("small_resnet", 4, input_size=28)
    assert student["efficiency"]["gflops"] == pytest.approx(count_gflops(light, (3, 28, 28)))
    assert teacher["efficiency"]["gflops"] == pytest.approx(
        count_gflops(create_model("small_resnet", 4), (3, 56, 56)))
    assert json.loads((out / "results.json").read_text())["runs"][0]["name"] == "seed0/teacher"
    html = (out / "report.html").read_text()
    assert "seed0/x2/kd_aux" in html and "data:image/png;base64," in html
    assert (out / "report.md").is_file()


def test_students_are_compared_with_the_baseline_paired(full_run):
    """results.json and the report carry "KD minus baseline" on the same test images."""
    from medistill.metrics.paired import paired_bootstrap

    out, results = full_run
    runs = {r["role"]: r for r in results["runs"]}
    comps = {c["model"]: c for c in results["comparisons"]}
    assert set(comps) == {"kd", "kd_aux"}
    kd, base = runs["kd"], runs["baseline"]
    assert kd["labels"] == base["labels"] and len(kd["predictions"]) == 129
    again = paired_bootstrap(kd["labels"], kd["predictions"], base["predictions"], 4,
                             n_resamples=200, seed=0)
    assert comps["kd"]["metrics"] == again["metrics"]
    acc = comps["kd"]["metrics"]["accuracy"]
    assert acc["value"] == pytest.approx(kd["metrics"]["accuracy"]["value"]
                                         - base["metrics"]["accuracy"]["value"])
    (summary,) = [s for s in results["comparison_summary"] if s["model"] == "kd"]
    assert summary["accuracy"]["n_seeds"] == 1 and summary["accuracy"]["sd"] is None
    md = (out / "report.md").read_text()
    assert "KD minus baseline, paired, 95% CI" in md and "kd - baseline" in md


def test_kd_aux_finetunes_only_the_head(full_run):
    out, _ = full_run
    distilled, _ = load_model(out / "seed0/x2/kd_aux_distill/best.pt")
    tuned, _ = load_model(out / "seed0/x2/kd_aux/best.pt")
    d, t = distilled.state_dict(), tuned.state_dict()
    changed = {k for k in d if not (d[k] == t[k]).all()}
    assert changed == {"head.weight", "head.bias"}


def test_existing_output_needs_resume(full_run):
    out, _ = full_run
    with pytest.raises(RecipeError, match="--resume"):
        run_recipe(tiny_recipe("runs=[baseline]"), out, progress=False)
    # with resume, finished runs are reused, not retrained (the recipe must be the same, but
    # for the runs listed)
    results = run_recipe(tiny_recipe("runs=[baseline]", AUX, SHORT_TEACHER), out, resume=True,
                         progress=False)
    assert [r["role"] for r in results["runs"]] == ["teacher", "baseline"]


def test_teacher_checkpoint_with_other_classes_is_rejected(tmp_path):
    path = tmp_path / "teacher.pt"
    meta = {"model": {"name": "small_resnet", "kwargs": {}}, "classes": ["a", "b", "c"],
            "view": {"factor": 4, "upsample": False},
            "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}}
    save_model(create_model("small_resnet", 3), meta, path)
    with pytest.raises(RecipeError, match="classes"):
        run_recipe(tiny_recipe(f"teacher_checkpoint={path}"), tmp_path / "o", progress=False)


def test_corrupt_image_names_the_file_and_leaves_no_report(tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(demo_data_root(), root)
    bad = sorted((root / "train" / "polyp").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:300])  # truncated JPEG
    with pytest.raises(DataError, match=bad.name):
        run_recipe(tiny_recipe(root=root), tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "report.html").exists()
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=many", "train.epochs"),
        ("train.epoch=3", "train.epoch: unknown key"),
        ("kd.resize=[nearest]", "kd.resize.0"),
        ("stages.teacher={lr: -1}", "stages.teacher: lr"),
        ("aux_data=[]", "aux_data"),  # the demo recipe runs kd_aux
    ],
)
def test_bad_recipe_values_name_the_key(override, message, tmp_path):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        recipe = tiny_recipe(override)
        run_recipe(recipe, tmp_path, progress=False)


def test_resolutions_in_microns_per_pixel_become_factors():
    r = tiny_recipe("data.source_mpp=0.5", "teacher_mpp=1.0", "student_mpps=[4.0, 8.0]")
    assert r.teacher_factor == 2 and r.student_factors == [4, 8]
    with pytest.raises(RecipeError, match="source_mpp"):
        tiny_recipe("teacher_mpp=1.0")


def test_upsampled_student_sees_the_original_size(tmp_path):
    recipe = tiny_recipe("runs=[baseline]", "upsample_student=true", "eval.latency=false",
                         "data.subsample={train: 16, val: 8, test: 8}",  # 224 px: keep it small
                         "stages={teacher: {epochs: 1}}")
    results = run_recipe(recipe, tmp_path, progress=False)
    assert results["runs"][1]["input_size"] == [224, 224]
    _, meta = load_model(tmp_path / "seed0/x2/baseline/best.pt")
    assert meta["view"] == {"factor": 8, "upsample": True}


def test_a_run_does_not_depend_on_the_other_runs_of_the_recipe(full_run, tmp_path):
    """Same seed, same settings -> the same KD student, whether or not a baseline ran first."""
    out, results = full_run
    alone = run_recipe(tiny_recipe("runs=[kd]", SHORT_TEACHER), tmp_path, progress=False)
    kd = [r for r in results["runs"] if r["role"] == "kd"][0]
    assert alone["runs"][1]["role"] == "kd"
    assert alone["runs"][1]["confusion_matrix"] == kd["confusion_matrix"]
    a, _ = load_model(out / "seed0/x2/kd/best.pt")
    b, _ = load_model(tmp_path / "seed0/x2/kd/best.pt")
    assert all((a.state_dict()[k] == b.state_dict()[k]).all() for k in a.state_dict())


def test_cached_teacher_trains_the_same_student(tmp_path, single_thread):
    common = ["runs=[kd]", "augment.enabled=false", "train.epochs=2",
              "data.subsample={train: 48, val: 8, test: 8}", "stages={teacher: {epochs: 1}}"]
    for mode in ("none", "disk"):
        run_recipe(tiny_recipe(*common, f"kd.cache_teacher={mode}"), tmp_path / mode,
                   progress=False)
    plain, _ = load_model(tmp_path / "none/seed0/x2/kd/best.pt")
    cached, _ = load_model(tmp_path / "disk/seed0/x2/kd/best.pt")
    for (k, a), b in zip(plain.state_dict().items(), cached.state_dict().values(),
                         strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    assert len(list((tmp_path / "disk/teacher_cache").iterdir())) == 1


def test_teacher_cache_refuses_augmented_views():
    with pytest.raises(RecipeError, match="cache_teacher needs augment.enabled: false"):
        tiny_recipe("kd.cache_teacher=memory")


def test_aux_pool_leaves_out_the_validation_and_test_images(tmp_path):
    """The validation split picks the distilled student's epoch: its images must not be
    distilled on, even unlabeled (issue #12); test images neither. Opt back in by a flag."""
    from medistill.pipelines.resolution import ResolutionPipeline

    root = demo_data_root()
    aux = (f"aux_data=[{{format: csv, root: '{root}', csv: labels.csv, "
           "use_splits: [train, val, test]}]")
    pipe = ResolutionPipeline(tiny_recipe(aux, "runs=[kd_aux]"), tmp_path)
    pipe._load_data()
    held_out = {s.path for s in pipe.val_samples.samples + pipe.test_samples.samples}
    assert len(pipe.aux_samples.samples) == 160 and pipe.aux_dropped == 168
    assert not held_out & {s.path for s in pipe.aux_samples.samples}
    keep = ResolutionPipeline(tiny_recipe(aux, "runs=[kd_aux]", "aux_keep_eval_images=true"),
                              tmp_path)
    keep._load_data()
    assert len(keep.aux_samples.samples) == 328 and keep.aux_dropped == 0
    only_val = f"aux_data=[{{format: images, root: '{root / 'val'}'}}]"
    with pytest.raises(RecipeError, match="validation or test"):
        ResolutionPipeline(tiny_recipe(only_val, "runs=[kd_aux]"), tmp_path)._load_data()
