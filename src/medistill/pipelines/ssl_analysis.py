"""Report sections of the More From Less recipe: the paper's Table 1 layout, linear CKA
heatmaps between the layers of two encoders, and Grad-CAM overlays (section 2.2, Figs. 3-4)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medistill.analysis import gradcam, linear_cka_matrix
from medistill.engine.checkpoint import atomic_write_bytes, load_model
from medistill.reports.report import fmt_ci, fmt_mean_std

if TYPE_CHECKING:
    from medistill.pipelines.more_from_less import MoreFromLessPipeline, MoreFromLessRecipe

COLUMNS = ("asymmetric", "symmetric", "supervised")


def _cell(runs: list[dict[str, Any]]) -> str:
    """One seed: accuracy with its bootstrap CI; several: mean ± sd over seeds."""
    accs = [r["metrics"]["accuracy"] for r in runs]
    if len(accs) == 1:
        return fmt_ci((accs[0]["value"], accs[0]["low"], accs[0]["high"]))
    return fmt_mean_std([a["value"] for a in accs])


def table_sections(runs: list[dict[str, Any]], r: MoreFromLessRecipe) -> list[dict[str, Any]]:
    """Table 1 per loss and task: rows = sparsity level, columns = pair type / supervised."""
    from medistill.pipelines.more_from_less import level_name

    sections = []
    for task in ("main", "transfer"):
        for loss in r.losses:
            rows = []
            for level in (level_name(v) for v in r.levels):
                row: list[Any] = [level]
                for col in COLUMNS:
                    chosen = [x for x in runs if x["task"] == task and x["level"] == level
                              and x.get("pair") == col
                              and (col == "supervised" or x.get("loss") == loss)]
                    row.append(_cell(chosen) if chosen else "–")
                rows.append(row)
            if all(c == "–" for row in rows for c in row[1:]):
                continue
            what = "test" if task == "main" else "transfer-task test"
            sections.append({
                "title": f"Table 1 ({loss}, {'transfer task' if task != 'main' else 'main task'})",
                "text": f"Linear-probe {what} accuracy of the sparse encoder ({loss}; supervised "
                        "= the same encoder trained with labels on the sparse view"
                        + (", then linearly probed on the transfer task" if task != "main"
                           else "") + "). One seed: value (95% bootstrap CI); several: "
                        "mean ± sd over seeds.",
                "table": {"headers": ["sparse input", *COLUMNS], "rows": rows},
            })
    return sections


def _pick(runs: list[dict[str, Any]], seed: int, level: str, pair: str,
          loss: str | None) -> dict[str, Any] | None:
    for x in runs:
        if (x["task"] == "main" and x["seed"] == seed and x["level"] == level
                and x.get("pair") == pair and (loss is None or x.get("loss") == loss)):
            return x
    return None


@torch.no_grad()
def _taps(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    out = model.eval().taps(x)
    return {k: v.flatten(1).double().numpy() for k, v in out.items() if v.dim() == 4
            and k != "features"}


def analyse(p: MoreFromLessPipeline, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CKA (asymmetric vs symmetric, asymmetric vs supervised) and Grad-CAM overlays of the
    first seed's models at ``analysis.level`` (default: the sparsest level), first loss."""
    from medistill.pipelines.more_from_less import level_name
    from medistill.reports.analysis_plots import cka_heatmap, gradcam_overlays

    r, a = p.r, p.r.analysis
    levels = [v for v in r.levels if v != "nuclei"]
    level = a.level if a.level is not None else (min(levels) if levels else r.levels[0])
    name, seed, loss = level_name(level), r.seeds[0], r.losses[0]
    chosen = {pair: _pick(runs, seed, name, pair, None if pair == "supervised" else loss)
              for pair in COLUMNS}
    models = {pair: load_model(Path(x["model_path"]))[0] for pair, x in chosen.items() if x}
    if not models:
        return []
    from medistill.data.views import view_from_spec

    dataset = p.dataset(p.test, {"input": view_from_spec(p.view_spec(level))})
    n = min(a.cka_images, len(dataset))
    idx = np.random.default_rng(0).permutation(len(dataset))[:n]
    x = torch.stack([dataset[int(i)]["views"]["input"] for i in idx])
    labels = [p.classes[dataset.samples[int(i)].label] for i in idx]
    figures = []
    acts = {pair: _taps(m, x) for pair, m in models.items()}
    fig_dir = p.out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for other in ("symmetric", "supervised"):
        if "asymmetric" not in acts or other not in acts:
            continue
        layers = list(acts["asymmetric"])
        matrix = linear_cka_matrix([acts["asymmetric"][k] for k in layers],
                                   [acts[other][k] for k in layers])
        file = f"figures/cka_asymmetric_vs_{other}.png"
        png = cka_heatmap(matrix, layers, layers, f"asymmetric ({loss})", other)
        atomic_write_bytes(p.out / file, lambda f, png=png: f.write(png))
        figures.append({"file": file, "caption": (
            f"Linear CKA between the layer outputs of the asymmetric ({loss}) and {other} "
            f"encoders at {name}, seed {seed}, on {n} test images (diagonal: same layer).")})
    k = min(a.gradcam_images, n)
    maps = {}
    for pair, m in models.items():
        if a.gradcam_layer in m.tap_names:
            maps[pair] = gradcam(m.eval(), x[:k], a.gradcam_layer)[0].numpy()
    if maps:
        images = [dataset.view_array(int(i), "input") for i in idx[:k]]
        file = "figures/gradcam.png"
        png = gradcam_overlays(images, maps, labels[:k])
        atomic_write_bytes(p.out / file, lambda f: f.write(png))
        figures.append({"file": file, "caption": (
            f"Grad-CAM at {a.gradcam_layer} for the predicted class (linear-probe heads), "
            f"{name} inputs, seed {seed}; columns: test images titled with their true class.")})
    return [{"title": f"Representation analysis ({name})",
             "text": "How similar the layers of the sparse encoders are (CKA; Kornblith et "
                     "al., 2019) and where their probes look (Grad-CAM; Selvaraju et al., "
                     "2017).",
             "figures": figures}]
