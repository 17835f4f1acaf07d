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
    args = p.parse_args()
    if args.summarize:
        print(summary(collect(args.out)))
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
    print(f"\nwall time {time.time() - start:.0f} s; report: {args.out}/report.html\n")
    print(summary(collect(args.out)))


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


if __name__ == "__main__":
    main()
