"""The More From Less recipe end to end on the embedded demo data (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medistill.data.views import view_from_spec
from medistill.engine import load_model
from medistill.errors import RecipeError
from medistill.methods import JointEmbedding
from medistill.pipelines import demo_data_root, load_recipe, run_recipe
from medistill.pipelines.more_from_less import MoreFromLessPipeline

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "more_from_less_vicreg.yaml"


def tiny(*extra: str):
    demo = demo_data_root()
    return load_recipe(RECIPE, [
        f"data.root={demo}",
        # the demo data again as a "second task" (its val split as the transfer test split)
        f"transfer={{format: csv, root: '{demo}', splits: {{train: train, val: val, "
        "test: val}}",
        "seeds=[0]", "levels=[7]", "input_size=16", "ssl.expander_width=32",
        "train.epochs=1", "train.batch_size=32", "train.tensorboard=false",
        "stages.probe={epochs: 2, batch_size: 64}", "stages.supervised={epochs: 1}",
        "eval.n_resamples=100", "eval.latency=false",
        "analysis={cka_images: 16, gradcam_images: 2, gradcam_layer: layer2}",
        *extra,
    ])


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("mfl")
    return out, run_recipe(tiny(), out, progress=False)


def test_every_encoder_is_probed_on_both_tasks(run) -> None:
    out, results = run
    got = {(r["pair"], r["task"]) for r in results["runs"]}
    assert got == {(p, t) for p in ("asymmetric", "symmetric", "supervised")
                   for t in ("main", "transfer")}
    for r in results["runs"]:
        m = r["metrics"]["accuracy"]
        assert m["low"] <= m["value"] <= m["high"]
        assert r["input_size"] == [16, 16] and r["level"] == "7px"
        expected = 129 if r["task"] == "main" else 39  # the demo subset's test images
        assert sum(map(sum, r["confusion_matrix"])) == expected


def test_probe_keeps_the_ssl_encoder_frozen(run) -> None:
    out, _ = run
    encoder, _ = load_model(out / "seed0/7px/vicreg_asymmetric/ssl/best.pt")
    probed, meta = load_model(out / "seed0/7px/vicreg_asymmetric/probe_main/best.pt")
    assert meta["view"] == {"kind": "sparse", "k": 7, "size": 16}
    enc, prb = encoder.state_dict(), probed.state_dict()
    for k, v in enc.items():
        if not k.startswith("head."):
            assert torch.equal(v, prb[k]), k


def test_dense_view_probe_is_the_asymmetric_encoder_on_the_dense_view(run) -> None:
    """The teacher side (issue #13): the frozen asymmetric encoder probed on the dense view,
    on the same test images as its sparse probe (so the two can be paired)."""
    out, results = run
    recs = MoreFromLessPipeline(tiny(), out, resume=True).probe_dense_views()
    assert [(r["pair"], r["view"], r["seed"], r["level"]) for r in recs] == [
        ("asymmetric_dense", "dense", 0, "7px")]
    encoder, _ = load_model(out / "seed0/7px/vicreg_asymmetric/ssl/best.pt")
    probed, meta = load_model(out / "seed0/7px/vicreg_asymmetric/probe_main_dense/best.pt")
    assert meta["view"] == {"kind": "sparse", "k": 16, "size": 16}  # k = input size: dense
    enc, prb = encoder.state_dict(), probed.state_dict()
    assert all(torch.equal(v, prb[k]) for k, v in enc.items() if not k.startswith("head."))
    sparse = next(r for r in results["runs"] if r["pair"] == "asymmetric" and r["task"] ==
                  "main")
    assert recs[0]["labels"] == sparse["labels"] and len(recs[0]["predictions"]) == 129
    again = MoreFromLessPipeline(tiny(), out, resume=True).probe_dense_views()
    assert again[0]["predictions"] == recs[0]["predictions"]  # cached, not retrained


def test_report_has_table_1_and_analysis_figures(run) -> None:
    out, results = run
    titles = [s["title"] for s in results["sections"]]
    assert "Table 1 (vicreg, main task)" in titles and "Table 1 (vicreg, transfer task)" in titles
    table = results["sections"][0]["table"]
    assert table["headers"] == ["sparse input", "asymmetric", "symmetric", "supervised"]
    assert table["rows"][0][0] == "7px" and all(c != "–" for c in table["rows"][0])
    for name in ("cka_asymmetric_vs_symmetric", "cka_asymmetric_vs_supervised", "gradcam"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "Table 1 (vicreg, main task)" in html and 'id="gradcam"' in html
    assert json.loads((out / "results.json").read_text())["sections"] == results["sections"]


def test_symmetric_pairs_see_two_independently_augmented_sparse_views(tmp_path,
                                                                     monkeypatch) -> None:
    p = MoreFromLessPipeline(tiny(), tmp_path)
    p._load_data()
    seen = {}

    def capture(self, run, method, train_set, val_set, cfg, meta, n):
        seen[run] = (method, train_set)
        return tmp_path / "unused.pt"

    monkeypatch.setattr(MoreFromLessPipeline, "fit", capture)
    p._ssl("sym", 7, "vicreg", "symmetric", 0)
    p._ssl("asym", 7, "simclr", "asymmetric", 0)
    method, data = seen["sym"]
    assert isinstance(method, JointEmbedding) and method.views == {"a": "sparse_a", "b": "sparse"}
    views = data[0]["views"]
    assert not torch.equal(views["sparse_a"], views["sparse"])
    method, data = seen["asym"]
    assert method.views == {"a": "dense", "b": "sparse"} and method.loss_name == "simclr"
    # before augmentation, the dense view carries more detail than the 7 px one
    dense, sparse = (data.view_array(0, v).astype(float) for v in ("dense", "sparse"))
    assert dense.shape == sparse.shape == (16, 16, 3)
    assert abs(dense[1:] - dense[:-1]).mean() > 1.5 * abs(sparse[1:] - sparse[:-1]).mean()


def test_existing_output_is_refused_without_resume(run) -> None:
    out, _ = run
    with pytest.raises(RecipeError, match="already has a run"):
        run_recipe(tiny(), out, progress=False)


def test_bad_level_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match="levels"):
        tiny("levels=[blurry]")


def test_nuclei_level_feeds_nuclear_masks(tmp_path) -> None:
    p = MoreFromLessPipeline(tiny("levels=[nuclei]", "input_size=64"), tmp_path)
    p._load_data()
    assert p.view_spec("nuclei") == {"kind": "nuclei"}
    data = p.dataset(p.test, {"input": view_from_spec(p.view_spec("nuclei"))})
    mask = data.view_array(0, "input")
    assert mask.shape[2] == 3 and len(np.unique(mask.reshape(-1, 3), axis=0)) <= 2
    assert (mask > 0).any() and (mask == 0).any()  # nuclei on background
