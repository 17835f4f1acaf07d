"""Benchmark: resolution-based distillation on EBHI-Seg (issue: core + resolution KD).

Runs ``recipes/resolution_kd.yaml`` with the teacher at half resolution (112 px) and students at
factors 4, 8 and 16 below it (28, 14, 7 px), baseline / KD / KD+auxiliary, over several seeds,
then prints a markdown table of test metrics (mean +- std over seeds, and the per-seed 95%
bootstrap CIs) for ``benchmarks/RESULTS.md``.

    python benchmarks/resolution_kd.py --data ../shared/data/ebhi_seg --seeds 0 1 2

Interrupted runs continue where they stopped (the pipeline resumes from its checkpoints).
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
    p.add_argument("--out", default="benchmarks/out/resolution_kd")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher-factor", type=float, default=2.0)
    p.add_argument("--factors", type=float, nargs="+", default=[4, 8, 16])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--teacher-epochs", type=int, default=25)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true",
                   help="only print the table of the runs already evaluated in --out")
    args = p.parse_args()
    if args.summarize:
        print(summary_table(collect(args.out)))
        return

    overrides = [
        f"data.root={args.data}",
        f"aux_data=[{{format: csv, root: '{args.data}', use_splits: [train, val]}}]",
        f"teacher_factor={args.teacher_factor}",
        f"student_factors={json.dumps(args.factors)}",
        f"seeds={json.dumps(args.seeds)}",
        f"train.epochs={args.epochs}",
        "train.device=cpu",
        f"stages.teacher={{epochs: {args.teacher_epochs}}}",
        "stages.finetune={epochs: 10}",
        *args.overrides,
    ]
    recipe = load_recipe(ROOT / "recipes" / "resolution_kd.yaml", overrides)
    start = time.time()
    results = run_recipe(recipe, args.out, resume=True, progress=False)
    print(f"\nwall time {time.time() - start:.0f} s; report: {args.out}/report.html\n")
    print(summary_table(results["runs"]))


def collect(out: str | Path) -> list[dict]:
    """Every evaluated run in a (possibly unfinished) benchmark folder."""
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("seed*/**/eval.json"))]


def summary_table(runs: list[dict], order: list[str] | None = None) -> str:
    """Markdown table: one row per (factor, role), mean ± sd over seeds + per-seed CIs."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["factor"], r["role"])].append(r)
    rank = {role: i for i, role in enumerate(order or ["teacher", "baseline", "kd", "kd_aux"])}
    lines = [
        "| magnification | input px | run | seeds | accuracy (mean ± sd) | macro F1 (mean ± sd) "
        "| per-seed accuracy [95% CI] | GFLOPs | params |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (_factor, role), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], rank[kv[0][1]])):
        acc = [r["metrics"]["accuracy"]["value"] for r in rs]
        f1 = [r["metrics"]["macro_f1"]["value"] for r in rs]
        def sd(v: list[float]) -> float:
            return statistics.stdev(v) if len(v) > 1 else 0.0

        cis = "; ".join(
            f"{r['metrics']['accuracy']['value']:.3f} [{r['metrics']['accuracy']['low']:.3f}, "
            f"{r['metrics']['accuracy']['high']:.3f}]" for r in rs
        )
        e = rs[0]["efficiency"]
        lines.append(
            f"| {rs[0]['magnification']} | {rs[0]['input_size'][0]} | {role} | {len(rs)} "
            f"| {statistics.mean(acc):.3f} ± {sd(acc):.3f} | {statistics.mean(f1):.3f} ± "
            f"{sd(f1):.3f} | {cis} | {e['gflops']:.4f} | {e['params'] / 1e6:.2f} M |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
