"""Benchmark: is the `medistill demo` result robust over seeds? (issue #13)

Runs the demo recipe (``src/medistill/recipes/demo.yaml``, unchanged) once per seed, each seed
in its own folder (resumable: an interrupted seed continues from its checkpoints), and prints
the markdown table of ``benchmarks/RESULTS.md`` ("demo"): teacher, baseline, KD and KD+aux
test accuracy, the paired differences with their 95% CIs, and the summary over seeds.

    OMP_NUM_THREADS=1 python benchmarks/demo_seeds.py --seeds 0 1 2 3 4

``--set key=value`` overrides the recipe (e.g. ``'runs=[baseline,kd]'``); a finished run in a
seed's folder is reused, so a seed can be completed run by run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from medistill.metrics.paired import over_seeds
from medistill.pipelines import demo_data_root, demo_recipe_path, load_recipe, run_recipe

STUDENTS = ("kd", "kd_aux")


def _ci(m: dict[str, float]) -> str:
    return f"{100 * m['value']:+.1f} [{100 * m['low']:+.1f}, {100 * m['high']:+.1f}]"


def table(results: list[dict]) -> list[str]:
    lines = ["| seed | teacher acc | baseline acc | KD acc | KD+aux acc | KD - baseline, points "
             "[95% CI] | KD+aux - baseline, points [95% CI] |", "|---|---|---|---|---|---|---|"]
    comps: dict[str, list] = {m: [] for m in STUDENTS}
    for res in results:
        acc = {r["role"]: f"{100 * r['metrics']['accuracy']['value']:.1f}" for r in res["runs"]}
        by_model = {c["model"]: c for c in res["comparisons"]}
        cells = []
        for m in STUDENTS:
            if m in by_model:
                comps[m].append(by_model[m])
                cells.append(_ci(by_model[m]["metrics"]["accuracy"]))
            else:
                cells.append("–")
        lines.append(f"| {res['runs'][0]['seed']} | " + " | ".join(
            acc.get(k, "–") for k in ("teacher", "baseline", *STUDENTS)) + " | "
            + " | ".join(cells) + " |")
    lines.append("")
    for m in STUDENTS:
        for metric in ("accuracy", "macro_f1"):
            if comps[m]:
                o = over_seeds(comps[m], metric)
                sd = f" ± {100 * o['sd']:.1f}" if o["sd"] is not None else ""
                lines.append(f"- {m} - baseline, {metric}: {100 * o['mean']:+.1f}{sd} points "
                             f"over {o['n_seeds']} seeds; > 0 in {o['n_positive']}, CI above 0 "
                             f"in {o['n_ci_above_zero']}, CI below 0 in {o['n_ci_below_zero']}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="benchmarks/out/demo_seeds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarize", action="store_true", help="only print finished seeds")
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="recipe overrides (key=value), e.g. 'runs=[baseline,kd]'")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        if not args.summarize:
            cfg = load_recipe(demo_recipe_path(), [*args.overrides, f"seeds=[{seed}]"],
                              {"demo_data": str(demo_data_root())})
            t0, c0 = time.time(), time.process_time()
            run_recipe(cfg, out, resume=(out / "recipe.json").exists(), progress=False)
            print(f"seed {seed}: {time.time() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s CPU", flush=True)
        if (out / "results.json").is_file():
            results.append(json.loads((out / "results.json").read_text()))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
