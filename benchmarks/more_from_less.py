"""Benchmark: More From Less (asymmetric vs symmetric vs supervised) on EBHI-Seg (issue #3).

Runs ``recipes/more_from_less_vicreg.yaml`` with both losses (VICReg and SimCLR), asymmetric
and symmetric pairs and the supervised baseline at the sparse levels (default 14 and 7 px of
the 224 px originals), over several seeds, with GlaS benign/malignant as the transfer task;
then prints markdown tables of linear-probe test accuracy for ``benchmarks/RESULTS.md``.

    python benchmarks/more_from_less.py --data ../shared/data/ebhi_seg \\
        --glas ../shared/data/glas --seeds 0 1 2

Sizes default to what a 2-core CPU can do in about an hour (32 px inputs, 15 epochs); raise
``--input-size``/``--epochs``/``--set ssl.expander_width=8192`` on a GPU. Interrupted runs
continue where they stopped.

After training, every asymmetric encoder is also probed on the DENSE view (the teacher side:
``MoreFromLessPipeline.probe_dense_views``), and ``--summarize`` adds the paired comparisons
of issue #13 on the same test images (``paired_bootstrap``: 95 % CI per seed, mean ± sd over
seeds, verdicts): the dense - sparse gap of the same encoder first (no gap, nothing to
distil), then asymmetric (distilled from the dense view) - symmetric (the same SSL without
it), and each against the supervised baseline; plus every SSL run's loss terms over epochs
and their mean gradient shares (``steps.csv``). Runs split over several ``--out`` folders
(one per process) are summarised together with ``--summarize --out <parent>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

from medistill.pipelines import load_recipe, run_recipe
from medistill.pipelines.more_from_less import MoreFromLessPipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("MEDISTILL_EBHI", "../shared/data/ebhi_seg"))
    p.add_argument("--glas", default=os.environ.get("MEDISTILL_GLAS", "../shared/data/glas"),
                   help="transfer task data ('' to skip the transfer task)")
    p.add_argument("--out", default="benchmarks/out/more_from_less")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--levels", type=int, nargs="+", default=[14, 7])
    p.add_argument("--losses", nargs="+", default=["vicreg", "simclr"])
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 avoids oversubscription on a shared CPU)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true",
                   help="only print the tables of the runs already evaluated in --out")
    p.add_argument("--no-dense-probe", action="store_true",
                   help="skip the dense-view probes of the asymmetric encoders")
    p.add_argument("--dense-probe-only", action="store_true",
                   help="only probe the dense view of the finished asymmetric encoders in "
                        "--out, with its saved recipe.json")
    args = p.parse_args()
    if args.dense_probe_only:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        saved = load_recipe(Path(args.out) / "recipe.json")
        MoreFromLessPipeline(saved, args.out, resume=True, progress=False).probe_dense_views()
        return
    if args.summarize:
        records = collect(args.out)
        print(summary(records))
        print("\n" + paired_summary(records))
        print("\n" + ssl_terms(args.out))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    overrides = [
        f"data.root={args.data}",
        f"transfer.root={args.glas}" if args.glas else "transfer=null",
        f"seeds={json.dumps(args.seeds)}",
        f"levels={json.dumps(args.levels)}",
        f"losses={json.dumps(args.losses)}",
        f"input_size={args.input_size}",
        f"train.epochs={args.epochs}",
        "train.device=cpu",
        f"stages.supervised={{epochs: {args.epochs}, lr: 0.001, weight_decay: 0.0001}}",
        "stages.probe={epochs: 100, lr: 0.001, batch_size: 256}",
        "ssl.expander_width=512",
        "eval.latency_repeats=5",
        *args.overrides,
    ]
    recipe = load_recipe(ROOT / "recipes" / "more_from_less_vicreg.yaml", overrides)
    recipe.title = "More From Less on EBHI-Seg (VICReg and SimCLR)"
    start = time.time()
    run_recipe(recipe, args.out, resume=True, progress=False)
    if not args.no_dense_probe:
        MoreFromLessPipeline(recipe, args.out, resume=True, progress=False).probe_dense_views()
    print(f"\nwall time {time.time() - start:.0f} s; report: {args.out}/report.html\n")
    records = collect(args.out)
    print(summary(records))
    print("\n" + paired_summary(records))
    print("\n" + ssl_terms(args.out))


def collect(out: str) -> list[dict]:
    """Every evaluated run (``eval.json``) below ``out``."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).rglob("eval.json"))]


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary(records: list[dict]) -> str:
    """Per task and loss: rows = level, columns asymmetric / symmetric / supervised (mean ± sd
    over seeds of linear-probe accuracy), plus the per-seed values with their 95% CIs."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("view") == "dense":
            continue  # in the paired tables
        loss = r.get("loss", "-")
        cells[(r["task"], r["level"], r["pair"], loss)].append(r)
    lines = []
    levels = sorted({r["level"] for r in records}, key=lambda v: -int(v.rstrip("px"))
                    if v.endswith("px") else 0)
    for task in ("main", "transfer"):
        for loss in sorted({r["loss"] for r in records if "loss" in r}):
            lines += [f"\n### {task} task, {loss}\n",
                      "| sparse input | asymmetric | symmetric | supervised | per-seed "
                      "accuracy [95% CI] (asym; sym; sup) |", "|---|---|---|---|---|"]
            for level in levels:
                row, seeds = [], []
                for pair in ("asymmetric", "symmetric", "supervised"):
                    got = sorted(cells[(task, level, pair, loss if pair != "supervised"
                                        else "-")], key=lambda r: r["seed"])
                    row.append(_fmt([r["metrics"]["accuracy"]["value"] for r in got]))
                    seeds.append(", ".join(
                        f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"
                        for m in (r["metrics"]["accuracy"] for r in got)))
                lines.append(f"| {level} | {' | '.join(row)} | {'; '.join(seeds)} |")
    return "\n".join(lines)


#: (model, reference) pairs compared on the main task, in this order; "dense" is the
#: asymmetric encoder probed on the dense view (the teacher side)
COMPARISONS = [("dense", "asymmetric"), ("dense", "symmetric"), ("asymmetric", "symmetric"),
               ("asymmetric", "supervised"), ("symmetric", "supervised")]
_LABEL = {"dense": "dense view (teacher)", "asymmetric": "asymmetric", "symmetric": "symmetric",
          "supervised": "supervised"}


def paired_summary(records: list[dict], n_resamples: int = 10_000) -> str:
    """Markdown: per (level, loss) and comparison, the paired difference in linear-probe
    accuracy and macro F1 on the same main-task test images, 95 % CI per seed
    (:func:`~medistill.metrics.paired.paired_bootstrap`), mean ± sd over seeds
    (:func:`~medistill.metrics.paired.over_seeds`) and one verdict line per seed."""
    from medistill.metrics.paired import over_seeds, paired_bootstrap, verdict

    main = [r for r in records if r["task"] == "main"]
    by: dict[tuple, dict] = {}
    for r in main:
        pair = "dense" if r.get("view") == "dense" else r["pair"]
        by[(r["seed"], r["level"], r.get("loss", "-") if pair != "supervised" else "-",
            pair)] = r
    lines = ["| sparse input | loss | comparison | seed | model acc | reference acc "
             "| accuracy difference [95% CI] | macro F1 difference [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    overall, verdicts = [], []
    levels = sorted({r["level"] for r in main})
    losses = sorted({r["loss"] for r in main if "loss" in r})
    for level in levels:
        for loss in losses:
            for model, ref in COMPARISONS:
                rows = []
                for seed in sorted({r["seed"] for r in main}):
                    a = by.get((seed, level, "-" if model == "supervised" else loss, model))
                    b = by.get((seed, level, "-" if ref == "supervised" else loss, ref))
                    if a is None or b is None:
                        continue
                    if a["labels"] != b["labels"]:
                        raise SystemExit(f"{a['role']} and {b['role']} (seed {seed}) were not "
                                         "evaluated on the same images")
                    k = len(a["confusion_matrix"])
                    res = paired_bootstrap(a["labels"], a["predictions"], b["predictions"], k,
                                           n_resamples=n_resamples)
                    rows.append(res)
                    acc, f1 = res["metrics"]["accuracy"], res["metrics"]["macro_f1"]
                    name = f"{_LABEL[model]} - {_LABEL[ref]}"
                    lines.append(
                        f"| {level} | {loss} | {name} | {seed} | {acc['model']:.3f} "
                        f"| {acc['reference']:.3f} | {acc['value']:+.3f} [{acc['low']:+.3f}, "
                        f"{acc['high']:+.3f}] | {f1['value']:+.3f} [{f1['low']:+.3f}, "
                        f"{f1['high']:+.3f}] |")
                    verdicts.append(f"- {level} {loss}, seed {seed}: " + verdict(
                        acc, _LABEL[model], _LABEL[ref], "accuracy"))
                if rows:
                    o = {m: over_seeds(rows, m) for m in ("accuracy", "macro_f1")}
                    overall.append((level, loss, f"{_LABEL[model]} - {_LABEL[ref]}", o))
    lines += ["", "| sparse input | loss | comparison | seeds | accuracy diff. (mean ± sd) "
              "| seeds > 0 | CIs above 0 | CIs below 0 | macro F1 diff. (mean ± sd) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for level, loss, name, o in overall:
        a, f = o["accuracy"], o["macro_f1"]
        sd = "" if a["sd"] is None else f" ± {a['sd']:.3f}"
        fsd = "" if f["sd"] is None else f" ± {f['sd']:.3f}"
        lines.append(f"| {level} | {loss} | {name} | {a['n_seeds']} | {a['mean']:+.3f}{sd} "
                     f"| {a['n_positive']} | {a['n_ci_above_zero']} | {a['n_ci_below_zero']} "
                     f"| {f['mean']:+.3f}{fsd} |")
    return "\n".join(lines + [""] + verdicts)


def ssl_terms(out: str) -> str:
    """Markdown: every SSL run's training loss (epoch means: first, middle, last; the change
    over its last 3 epochs, to see whether the curve has flattened), the VICReg variance term
    at the end, and each term's mean gradient share over the diagnostic steps."""
    from medistill.engine.diagnostics import read_steps, summarise_steps
    from medistill.pipelines.evaluate import read_history

    lines = ["| run | epochs | loss: first / middle / last epoch | last 3 epochs: change "
             "| variance term, last | mean gradient share per term (cosine with the total) |",
             "|---|---|---|---|---|---|"]
    for log in sorted(Path(out).rglob("ssl/log.csv")):
        h = read_history(log)
        if not h:
            continue
        loss = [e["train_loss"] for e in h]
        tail = (loss[-1] - loss[-4]) / abs(loss[-4]) if len(loss) >= 4 else float("nan")
        shares = ", ".join(f"{t.name} {100 * t.mean_share:.1f}% ({t.mean_cos:+.2f})"
                           for t in summarise_steps(read_steps(log.parent / "steps.csv"))
                           if t.mean_share is not None and t.mean_cos is not None)
        var = h[-1].get("train_variance", float("nan"))
        run = log.parent.parent.relative_to(Path(out)).as_posix()
        lines.append(f"| {run} | {len(h)} | {loss[0]:.3f} / {loss[len(loss) // 2]:.3f} / "
                     f"{loss[-1]:.3f} | {tail:+.1%} | {var:.3f} | {shares or '–'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
