"""Benchmark: weakly supervised segmentation, MIL teacher + iterative fusion KD (issue #6), on
GlaS and EBHI-Seg.

Runs ``recipes/mil_fusion_glas.yaml`` / ``recipes/mil_fusion_ebhi.yaml`` sized for a shared
2-core CPU (96 px inputs, the small ResNet backbone, few epochs): the MIL teacher alone, fusion
KD without role reversal (``fusion_kd``) and the full method (``ikd``), over several seeds.
Prints a markdown table for RESULTS.md: test pixel F1 (the authors' per-image F1 of the image's
own class, all images; positive images only), our tumour-class F1 over all images
(``pixel_f1_positive``) and image AUC as mean ± sd over seeds, the per-seed 95% bootstrap CIs,
and the per-seed difference to the MIL teacher. Then the paired comparison the method is judged
by (issue #13): per seed, the final model of each run minus the same seed's MIL teacher (its
no-KD reference: same architecture, image labels only), the mean of the per-image differences
of test ``pixel_f1`` with a paired 95% bootstrap CI over the same test images and the one-sided
p(Δ <= 0); over seeds the mean ± sd of Δ; and every distillation round's student against the
MIL teacher the same way (scored here from its model file; the rounds' validation scores and
swaps from ``rounds.json``).

    python benchmarks/mil_fusion.py --dataset glas --seeds 0 1 2
    python benchmarks/mil_fusion.py --dataset ebhi --seeds 0 1 2

Everything is a flag (GPU users: ``--image-size 256 --backbone resnet18 --teacher-epochs 60
--round-epochs 30 --max-train-per-class 0 --device cuda``). Interrupted runs continue where
they stopped (``--resume`` is implied when the output folder exists). ``--summarize`` only
prints the table of the runs already evaluated in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

RECIPES = {"glas": "mil_fusion_glas.yaml", "ebhi": "mil_fusion_ebhi.yaml"}
DEFAULT_DATA = {"glas": "../shared/data/glas", "ebhi": "../shared/data/ebhi_seg"}
ORDER = ["mil_teacher", "fusion_kd", "ikd"]
NAMES = {"mil_teacher": "MIL teacher", "fusion_kd": "fusion KD, no role reversal",
         "ikd": "iterative fusion KD (full)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(RECIPES), default="glas")
    p.add_argument("--data", default=None, help="dataset root (default ../shared/data/...)")
    p.add_argument("--out", default=None, help="default benchmarks/out/mil_fusion/<dataset>")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--backbone", default="small_resnet")
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--round-epochs", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-train-per-class", type=int, default=None, help="0 = all")
    p.add_argument("--max-val-per-class", type=int, default=None, help="0 = all")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true")
    args = p.parse_args()
    out = Path(args.out or f"benchmarks/out/mil_fusion/{args.dataset}")
    root = Path(__file__).resolve().parents[1]
    data = args.data or DEFAULT_DATA[args.dataset]
    if args.summarize:
        print(summary_table(collect(out)))
        print(reference_table(root / "recipes" / RECIPES[args.dataset], data))
        print(paired_report(out))
        return

    import torch

    from medistill.pipelines import load_recipe, run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        f"data.root={data}",
        f"data.image_size={args.image_size}",
        f"model.kwargs={{backbone: {args.backbone}}}",
        f"seeds={json.dumps(args.seeds)}",
        f"train.epochs={args.teacher_epochs}",
        f"stages.round={{epochs: {args.round_epochs}}}",
        f"fusion.rounds={args.rounds}",
        f"train.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.device={args.device}",
        "train.progress=false",
    ]
    for key, value in (("max_train_per_class", args.max_train_per_class),
                       ("max_val_per_class", args.max_val_per_class)):
        if value is not None:
            overrides.append(f"data.{key}={value or 'null'}")
    recipe = load_recipe(root / "recipes" / RECIPES[args.dataset], overrides + args.overrides)
    start = time.perf_counter()
    run_recipe(recipe, out, resume=(out / "recipe.json").exists(), progress=False)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; report: {out / 'report.md'}\n")
    print(summary_table(collect(out)))
    print(reference_table(root / "recipes" / RECIPES[args.dataset], data))
    print(paired_report(out))


def reference_table(recipe_path: Path, data: str) -> str:
    """Test pixel F1 of two trivial predictions, from the masks alone: everything tumour and
    nothing tumour (per image at the original size; negatives have an empty target). Both F1
    definitions agree on these: a negative scores 0 (background F1 with no background
    predicted) and 1 (nothing predicted) respectively under the authors' as under ours."""
    import numpy as np

    from medistill.data.segmentation import load_mask
    from medistill.metrics import bootstrap_mean
    from medistill.pipelines import load_recipe
    from medistill.pipelines.weak_data import load_weak_split

    cfg = load_recipe(recipe_path, [f"data.root={data}"]).data
    items, labels = load_weak_split(cfg, "test")
    f1_all_ones = []
    for item, label in zip(items, labels, strict=True):
        mask = load_mask(item.mask, "binary") if label else None
        f1_all_ones.append(2 * mask.mean() / (1 + mask.mean()) if label else 0.0)
    ones, y = np.array(f1_all_ones), np.array(labels, bool)
    zeros = (~y).astype(float)
    rows = ["| Trivial prediction | Test pixel F1, all (95% CI) | F1 positives |",
            "|---|---:|---:|"]
    for name, f1 in (("everything tumour", ones), ("nothing tumour", zeros)):
        m = bootstrap_mean(f1)
        rows.append(f"| {name} | {_ci(m)} | {f1[y].mean():.3f} |")
    return "\n".join(rows)


def collect(out: Path) -> list[dict]:
    runs = []
    for path in sorted(out.glob("seed*/*/eval.json")):
        runs.append(json.loads(path.read_text()))
    return runs


def _ms(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _ci(m: dict) -> str:
    return f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})"


def summary_table(runs: list[dict]) -> str:
    if not runs:
        return "(no evaluated runs)"
    by_role: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in runs:
        by_role[r["role"]][r["seed"]] = r
    base = by_role.get("mil_teacher", {})
    lines = ["| Run | Seeds | Test pixel F1, all (mean ± sd) | F1 positives (mean ± sd) | "
             "Tumour F1, all (mean ± sd) | Image AUC (mean ± sd) | "
             "Δ F1 vs MIL teacher (mean ± sd) | Per-seed pixel F1 (95% CI) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for role in ORDER:
        seeds = by_role.get(role)
        if not seeds:
            continue
        rs = [seeds[s] for s in sorted(seeds)]
        f1 = [r["metrics"]["pixel_f1"]["value"] for r in rs]
        pos = [r["metrics"]["pixel_f1_pos"]["value"] for r in rs]
        tumour = [r["metrics"].get("pixel_f1_positive", {}).get("value") for r in rs]
        auc = [r["metrics"]["image_auc"]["value"] for r in rs]
        delta = [seeds[s]["metrics"]["pixel_f1"]["value"] - base[s]["metrics"]["pixel_f1"]["value"]
                 for s in sorted(seeds) if s in base]
        per_seed = "; ".join(f"s{r['seed']}: {_ci(r['metrics']['pixel_f1'])}" for r in rs)
        tumour_cell = _ms(tumour) if None not in tumour else "–"  # runs from before #12
        lines.append(f"| {NAMES[role]} | {len(rs)} | {_ms(f1)} | {_ms(pos)} | {tumour_cell} | "
                     f"{_ms(auc)} | "
                     f"{_ms(delta) if role != 'mil_teacher' else '–'} | {per_seed} |")
    return "\n".join(lines)


def per_image(record: dict, metric: str = "pixel_f1") -> dict[str, float]:
    """``{test image name: metric}`` of one evaluated run (``eval.json``'s ``cases``)."""
    return {c["name"]: float(c[metric]) for c in record["cases"]}


def paired_delta(model: dict[str, float], ref: dict[str, float], n_resamples: int = 10_000,
                 seed: int = 0) -> dict:
    """Paired bootstrap of ``mean(model) - mean(ref)`` over the images both were scored on."""
    from medistill.metrics.paired import paired_by_name

    return paired_by_name(model, ref, "the two runs", n_resamples, seed)


def _delta(d: dict) -> str:
    return f"{d['value']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"


def round_cases(out: Path, paths: list[str]) -> dict[str, dict[str, float]]:
    """Per-image test ``pixel_f1`` of model files (the rounds' students), evaluated exactly as
    the pipeline evaluates its runs (recipe.json's data and eval settings)."""
    from medistill.data.weak import WeakSegDataset
    from medistill.engine.checkpoint import load_model
    from medistill.pipelines import load_recipe
    from medistill.pipelines.evaluate_weak import weak_cases
    from medistill.pipelines.weak_data import load_weak_split

    if not paths:
        return {}
    r = load_recipe(out / "recipe.json")
    items, labels = load_weak_split(r.data, "test")
    e, res = r.eval, {}
    for path in paths:
        model, meta = load_model(path)
        norm = meta["normalization"]
        ds = WeakSegDataset(items, labels, 2, r.data.image_size, norm["mean"], norm["std"],
                            None, r.data.mask_mode, 0)
        cases = weak_cases(model, ds, e.threshold, e.sigma, sigma_at=e.sigma_at)
        res[path] = {it.name: float(c["pixel_f1"]) for it, c in zip(items, cases, strict=True)}
    return res


def paired_report(out: Path, n_resamples: int = 10_000) -> str:
    """The paired tables of issue #13 (see the module doc) as markdown."""
    from medistill.metrics.paired import over_seeds, verdict

    by_role: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in collect(out):
        by_role[r["role"]][r["seed"]] = r
    base = by_role.get("mil_teacher", {})
    if not base:
        return "(no evaluated MIL teacher: no paired comparison)"
    lines = ["", "Paired test `pixel_f1` difference to the same seed's MIL teacher (mean of "
             "per-image differences, 95% paired bootstrap CI, p = share of resamples with "
             "Δ <= 0):", "",
             "| Run | Seed | MIL teacher | Run | Δ (95% CI) | p(Δ <= 0) | Verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for role in ORDER[1:]:
        seeds = sorted(s for s in by_role.get(role, {}) if s in base)
        deltas = []
        for s in seeds:
            rec, ref = by_role[role][s], base[s]
            d = paired_delta(per_image(rec), per_image(ref), n_resamples)
            same = Path(rec["model_path"]).resolve() == Path(ref["model_path"]).resolve()
            deltas.append({"pixel_f1": d})
            note = ("returned the MIL teacher" if same
                    else verdict(d, "KD", "the MIL teacher", "pixel F1"))
            lines.append(f"| {NAMES[role]} | {s} | {ref['metrics']['pixel_f1']['value']:.3f} | "
                         f"{rec['metrics']['pixel_f1']['value']:.3f} | {_delta(d)} | "
                         f"{d['p_not_better']:.3f} | "
                         f"{note} |")
        if deltas:
            o = over_seeds(deltas, "pixel_f1")
            sd = f" ± {o['sd']:.3f}" if o["sd"] is not None else ""
            lines.append(f"| {NAMES[role]}: over seeds | {o['n_seeds']} | | | "
                         f"{o['mean']:+.3f}{sd} (mean ± sd) | | {o['n_positive']} seeds Δ > 0, "
                         f"{o['n_ci_above_zero']} with CI > 0, {o['n_ci_below_zero']} with "
                         "CI < 0 |")
    rounds_path = out / "rounds.json"
    rounds = json.loads(rounds_path.read_text()) if rounds_path.exists() else []
    rounds = [r for r in rounds if r["seed"] in base]
    if rounds:
        # a run's final model already has its per-image values in its eval.json
        known = {str(Path(r["model_path"]).resolve()): per_image(r) for role in by_role.values()
                 for r in role.values()}
        todo = sorted({r["student"] for r in rounds if str(Path(r["student"]).resolve())
                       not in known})
        cases = round_cases(out, todo)
        cases.update({r["student"]: known[str(Path(r["student"]).resolve())] for r in rounds
                      if r["student"] not in cases})
        lines += ["", "Every round's student against the MIL teacher (validation scores decide "
                  "the swap; test Δ paired as above):", "",
                  "| Run | Seed | Round | Val teacher | Val student | Swap | Test teacher | "
                  "Test student | Test Δ student − MIL teacher (95% CI) |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
        for r in rounds:
            d = paired_delta(cases[r["student"]], per_image(base[r["seed"]]), n_resamples)
            lines.append(f"| {r['run']} | {r['seed']} | {r['round']} | {r['teacher_val']:.3f} | "
                         f"{r['student_val']:.3f} | {'yes' if r['swapped'] else 'no'} | "
                         f"{r['teacher_test_f1']:.3f} | {r['student_test_f1']:.3f} | "
                         f"{_delta(d)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
