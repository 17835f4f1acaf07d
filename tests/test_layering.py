"""The package layering of :mod:`medistill` (see its module docstring), checked on the source.

Every ``import`` / ``from ... import`` under ``src/medistill`` is read with :mod:`ast`, at module
level AND inside functions (a function-level import is still a dependency; it only hides a
cycle), relative ones included; ``if TYPE_CHECKING:`` imports count too. Each is mapped to the
top-level package it names (``medistill.engine.trainer`` -> ``engine``). The package graph must
have no cycle, and no package may import one of a higher layer.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medistill"

#: lowest first; a package may import its own layer (if no cycle arises) and the ones below
LAYERS: list[set[str]] = [
    {"medistill", "errors"},  # "medistill": the package root (``__version__`` only)
    {"registry", "output", "plugins", "files"},
    {"data", "models", "losses", "metrics", "postprocess", "analysis"},
    {"reports"},  # render only: results in, HTML / figures out
    {"config"},  # the recipe schema (checks model names against the registry)
    # what a model predicts and how it is scored (issue #14): model cards, one inference and
    # metric path; below the engine (load_model reads the cards) and the methods (which
    # validate through it)
    {"tasks"},
    {"engine"},  # Trainer, checkpoints, the Method interface, device / logging
    {"methods"},  # training objectives
    {"pipelines", "deploy"},  # recipes; export / predict
    {"cli"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> tuple[list[str], bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return parts[:-1], True
    return parts, False


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in ``path`` (``from a import b``: ``a.b``, so
    ``from medistill import reports`` names the package it loads)."""
    parts, is_pkg = module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
    return found


def package_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    if parts[0] != "medistill":
        return None
    if len(parts) == 1 or parts[1] in ("__version__", "__init__"):
        return "medistill"
    return parts[1] if parts[1] in RANK else "medistill"


def import_edges() -> dict[tuple[str, str], list[str]]:
    """``(importer, imported) -> ["file:line", ...]`` between different packages."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        parts, _ = module_name(path)
        src = package_of(".".join(parts))
        for line, mod in imported_modules(path):
            dst = package_of(mod)
            where = f"{path.relative_to(SRC.parent)}:{line}"
            if dst is not None and dst != src and where not in edges[(src, dst)]:
                edges[(src, dst)].append(where)
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"} | {"medistill"}
    assert packages - set(RANK) == set(), "add the new package to LAYERS"


def test_no_import_goes_up_a_layer():
    up = [f"{loc}: {a} (layer {RANK[a]}) imports {b} (layer {RANK[b]})"
          for (a, b), locs in sorted(import_edges().items()) if RANK[b] > RANK[a] for loc in locs]
    assert not up, "imports from a lower to a higher layer:\n" + "\n".join(up)


def test_no_import_cycle_between_packages():
    edges = import_edges()
    cycle = find_cycle(edges)
    where = [] if cycle is None else [
        f"{a} -> {b}: {', '.join(edges[(a, b)])}" for a, b in zip(cycle, cycle[1:], strict=False)]
    assert cycle is None, "import cycle " + " -> ".join(cycle or []) + ":\n" + "\n".join(where)


@pytest.mark.parametrize("code, expected", [
    ("import medistill.engine.trainer as t", {"engine"}),
    ("from medistill import reports", {"reports"}),
    ("from medistill.data import records", set()),
    ("from medistill import __version__", {"medistill"}),
    ("def f():\n    from ..pipelines.base import Pipeline", {"pipelines"}),
    ("from . import plots", set()),
    ("if TYPE_CHECKING:\n    from medistill.config import ModelConfig", {"config"}),
])
def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch, code, expected):
    fake = tmp_path / "medistill"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text(code + "\n")
    monkeypatch.setattr(f"{__name__}.SRC", fake)
    assert {b for (_, b) in import_edges()} == expected


def test_the_checker_finds_a_cycle():
    assert find_cycle({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == ["a", "b", "c", "a"]
    assert find_cycle({("a", "b"): [], ("a", "c"): [], ("b", "c"): []}) is None


#: what a report module may import of medistill: results go in, HTML / figures come out
REPORT_IMPORTS = {"medistill", "errors", "output", "metrics", "reports"}
#: metric modules that run a model (the callers of the report use them, the report does not)
MODEL_RUNNING = ("medistill.metrics.weak_scoring",)


def test_reports_only_render():
    bad = []
    for path in sorted((SRC / "reports").rglob("*.py")):
        for line, mod in imported_modules(path):
            where = f"{path.relative_to(SRC.parent)}:{line}: {mod}"
            if mod.split(".")[0] == "torch" or mod.startswith(MODEL_RUNNING):
                bad.append(where)
            elif package_of(mod) not in (None, *REPORT_IMPORTS):
                bad.append(where)
        text = path.read_text(encoding="utf-8")
        bad += [f"{path.relative_to(SRC.parent)}: calls {call}" for call in
                ("torch.load", "load_model(", "load_checkpoint(") if call in text]
    assert not bad, ("reports only render (no model files, no models, no inference; the "
                     "caller passes the predictions in):\n" + "\n".join(bad))
