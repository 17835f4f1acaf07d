"""``medistill recipes``, packaged recipes by name, ``--print-config`` (issue #16)."""

from __future__ import annotations

from pathlib import Path

import yaml
from test_cli import medistill

from medistill.pipelines import load_recipe
from medistill.pipelines.catalog import find_recipe, packaged_recipes

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_recipe_ships_with_the_package():
    packaged = packaged_recipes()
    sources = sorted((ROOT / "recipes").glob("*.yaml"))
    assert sources
    for src in sources:
        assert packaged[src.stem].read_bytes() == src.read_bytes()
    assert set(packaged) == {p.stem for p in sources} | {"demo"}


def test_recipes_lists_name_method_and_title():
    res = medistill("recipes")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in res.stdout.splitlines()}
    assert set(rows) == set(packaged_recipes())
    assert rows["hlfd_glas"] == ["hlfd", "HLFD on GlaS (gland segmentation)"]
    assert rows["resolution_kd"][0] == "resolution_kd"


def test_run_takes_a_packaged_recipe_name_and_print_config_writes_nothing(tmp_path):
    data = tmp_path / "data"
    res = medistill("run", "hlfd_glas", "--print-config", "--set", f"data.root={data}",
                    "--set", "data.subsample.train=8", "--out", str(tmp_path / "o"),
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    assert printed["method"] == "hlfd" and res.stdout.startswith("method: hlfd\ntitle: ")
    assert printed["data"]["root"] == str(data)
    assert printed["data"]["subsample"] == {"train": 8, "val": None, "test": None, "seed": 0}
    assert printed["train"]["max_loss_factor"] == 1e4  # defaults filled in
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output folder, no runs/
    # the printed recipe is a recipe: it loads back to the same settings
    again = tmp_path / "again.yaml"
    again.write_text(res.stdout)
    assert load_recipe(again).model_dump(mode="json") == printed


def test_demo_print_config_resolves_the_demo_data_and_validates(tmp_path):
    res = medistill("demo", "--print-config", "--out", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    assert "{demo_data}" not in res.stdout and Path(printed["data"]["root"]).is_dir()
    assert not (tmp_path / "d").exists()
    res = medistill("demo", "--print-config", "--set", "aux_data.4.root=x")
    assert res.returncode == 2 and not res.stdout
    assert res.stderr.strip() == ("error: --set aux_data.4.root: index 4 out of range "
                                  "(aux_data has 1 item(s); 1 appends one)")


def test_an_unknown_recipe_name_lists_the_packaged_ones(tmp_path):
    res = medistill("run", "resolution", "--print-config", cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "recipe not found: resolution" in res.stderr and "resolution_kd" in res.stderr
    # a file path still wins over a name, and a path is never taken for a name
    (tmp_path / "hlfd_glas.yaml").write_text("method: magic\n")
    assert find_recipe(tmp_path / "hlfd_glas.yaml") == tmp_path / "hlfd_glas.yaml"
    assert find_recipe("hlfd_glas.yaml") == packaged_recipes()["hlfd_glas"]
    res = medistill("run", "sub/hlfd_glas", cwd=tmp_path)
    assert res.returncode == 2 and "recipe not found: sub/hlfd_glas" in res.stderr
