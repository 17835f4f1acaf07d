"""The install contract: CI runs the README's test command, and every import is declared."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

# import name -> distribution name, where they differ
DIST = {
    "PIL": "pillow", "skimage": "scikit-image", "yaml": "pyyaml", "openslide": "openslide-python",
}


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [ln for ln in block.splitlines() if ln and not ln.startswith("#")]


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = _readme_commands()[1]
    assert "pytest" in test_cmd
    assert test_cmd in ci.splitlines()
    assert "python3 -m venv" in ci and "mktemp -d" in ci
    # the venv is activated before the README command runs
    assert ci.index("activate") < ci.index(test_cmd)


def _declared() -> set[str]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra in proj["optional-dependencies"].values():
        reqs += extra
    names = set()
    for r in reqs:
        name = re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower()
        names.add(name)
        m = re.search(r"\[(.*?)\]", r)
        if name == "monai" and m:  # MONAI's extras are packages we may import directly
            names.update(x.strip().lower() for x in m.group(1).split(","))
    return names


def test_every_third_party_import_in_src_is_declared():
    stdlib = set(sys.stdlib_module_names)
    declared = _declared()
    missing = {}
    for path in (ROOT / "src" / "medistill").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top == "medistill":
                    continue
                dist = DIST.get(top, top).lower()
                if dist not in declared:
                    missing.setdefault(dist, str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
