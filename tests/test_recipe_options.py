"""Recipe options for quick and adjusted runs: ``--set`` list indexing, auxiliary data read only
by ``kd_aux`` runs, and ``data.subsample`` in every recipe's data loading (issue #16)."""

from __future__ import annotations

from collections import Counter

import pytest
from instance_fixtures import write_instance_dataset
from seg_fixtures import write_seg_dataset
from weak_fixtures import write_weak_dataset

from medistill.config import apply_overrides, validate
from medistill.data.subsample import subsample_indices
from medistill.errors import DataError, RecipeError
from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe


def test_set_indexes_and_appends_to_lists():
    raw = {"aux_data": [{"root": "a", "csv": "x.csv"}], "train": {"lr": 1}}
    out = apply_overrides(raw, ["aux_data.0.root=b", "aux_data.1={root: c}",
                                "aux_data.2.root=d", "seeds=[0, 1]", "seeds.1=5"])
    assert out["aux_data"] == [{"root": "b", "csv": "x.csv"}, {"root": "c"}, {"root": "d"}]
    assert out["seeds"] == [0, 5]


@pytest.mark.parametrize("item, message", [
    ("aux_data.3.root=x", "--set aux_data.3.root: index 3 out of range (aux_data has 1 item(s); "
                          "1 appends one)"),
    ("aux_data.root=x", "--set aux_data.root: aux_data is a list; index it by number "
                        "(aux_data.0.root)"),
    ("train.lr.x=1", "--set train.lr.x: train.lr is not a section or a list"),
    ("aux_data.-1.root=x", "--set aux_data.-1.root: aux_data is a list"),
    ("train..lr=1", "--set train..lr: empty key part"),
])
def test_bad_list_index_or_key_is_one_line_naming_the_key(item, message):
    with pytest.raises(RecipeError) as e:
        apply_overrides({"aux_data": [{"root": "a"}], "train": {"lr": 1}}, [item])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_indexed_override_reaches_validation_with_the_key():
    with pytest.raises(RecipeError, match=r"aux_data\.0\.use_splits: Input should be a valid "
                                          r"list"):
        load_recipe(demo_recipe_path(), ["aux_data.0.use_splits=7"],
                    {"demo_data": str(demo_data_root())})


def _demo_pipeline(tmp_path, *overrides):
    from medistill.pipelines.resolution import ResolutionPipeline

    recipe = load_recipe(demo_recipe_path(), list(overrides), {"demo_data": str(demo_data_root())})
    return ResolutionPipeline(recipe, tmp_path / "out")


def test_aux_data_is_read_only_for_kd_aux_runs(tmp_path):
    gone = tmp_path / "no_such_data"
    pipe = _demo_pipeline(tmp_path, f"aux_data.0.root={gone}", "runs=[baseline, kd]")
    pipe._load_data()  # the unused (missing) auxiliary data is not read
    assert pipe.aux_samples.samples == [] and len(pipe.train_samples.samples) == 160
    pipe = _demo_pipeline(tmp_path, f"aux_data.0.root={gone}")
    with pytest.raises(DataError) as e:
        pipe._load_data()
    assert str(e.value).startswith(f"aux_data.0 (root {gone}): ")
    assert not (tmp_path / "out").exists()


def test_subsample_indices_are_seeded_stratified_and_keep_every_class():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    keep = subsample_indices(100, 20, 0, labels)
    assert keep == sorted(keep) and len(set(keep)) == 20
    assert Counter(labels[i] for i in keep) == {0: 12, 1: 6, 2: 2}
    assert keep == subsample_indices(100, 20, 0, labels)
    assert keep != subsample_indices(100, 20, 1, labels)
    rare = [0] * 98 + [1, 2]
    assert Counter(rare[i] for i in subsample_indices(100, 5, 0, rare)) == {0: 3, 1: 1, 2: 1}
    assert subsample_indices(5, 10, 0) == [0, 1, 2, 3, 4]
    assert subsample_indices(5, None, 0) == [0, 1, 2, 3, 4]
    assert len(subsample_indices(50, 7, 3)) == 7


def test_classification_recipes_subsample_each_role(tmp_path):
    pipe = _demo_pipeline(tmp_path, "data.subsample={train: 24, test: 12, seed: 1}",
                          "aux_data.0.subsample.train=10")
    pipe._load_data()
    train, val, test = pipe.train_samples, pipe.val_samples, pipe.test_samples
    assert (len(train.samples), len(val.samples), len(test.samples)) == (24, 39, 12)
    assert {s.label for s in train.samples} == set(range(4))  # every class kept
    assert len(pipe.aux_samples.samples) == 10 + 154  # the aux train role: 10; unlabeled: all
    full = _demo_pipeline(tmp_path)
    full._load_data()
    assert {s.path for s in train.samples} < {s.path for s in full.train_samples.samples}


def test_segmentation_weak_and_instance_data_honour_subsample(tmp_path):
    from medistill.pipelines.instance_data import InstanceDataConfig, load_instance_split
    from medistill.pipelines.seg_data import SegDataConfig, load_seg_split
    from medistill.pipelines.weak_data import WeakDataConfig, load_weak_split

    seg = write_seg_dataset(tmp_path / "seg", {"train": 6, "val": 3, "test": 3})
    cfg = validate(SegDataConfig, {"root": str(seg), "image_size": 32,
                                   "subsample": {"train": 2, "test": 1}}, "data")
    assert [len(load_seg_split(cfg, r)) for r in ("train", "val", "test")] == [2, 3, 1]
    weak = write_weak_dataset(tmp_path / "weak", {"train": 8, "val": 4, "test": 4})
    cfg = validate(WeakDataConfig, {"root": str(weak), "positive": ["tumour"],
                                    "negative": ["benign"], "subsample": {"train": 4}}, "data")
    items, labels = load_weak_split(cfg, "train")
    assert len(items) == 4 and Counter(labels) == {0: 2, 1: 2}
    inst = write_instance_dataset(tmp_path / "inst", {"train": 4, "test": 2})
    cfg = validate(InstanceDataConfig, {"root": str(inst), "subsample": {"train": 3}}, "data")
    assert len(load_instance_split(cfg, "train")) == 3
    with pytest.raises(RecipeError, match="data: subsample.train: Input should be greater"):
        validate(SegDataConfig, {"root": str(seg), "subsample": {"train": 0}}, "data")
